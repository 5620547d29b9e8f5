"""The MCP server: memory tools for agents, over stdio or streamable HTTP.

Tools: ``add_memory``, ``search_memory``, ``list_memories``, ``get_memory``,
``update_memory``, ``memory_history``, ``delete_memory`` and ``assemble_window``
(retrieved memories placed in a token budget around a question with
:func:`contextos.engine.window.assemble`). Arguments are validated by the HTTP API's
models, so both protocols accept and refuse the same input. Every tool acts for one
tenant, decided by an API key and never by a tool argument:

* stdio: the key given at start (``--key`` / ``CONTEXTOS_API_KEY``), checked once;
* streamable HTTP: each request's ``Authorization: Bearer`` key, checked per
  request through the SDK's token-verifier hook (no key, no tools).

Written for the ``mcp`` 2.x SDK (``MCPServer``) and falling back to 1.x
(``FastMCP``), whichever is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ContextosError, MissingExtraError

try:  # the tools validate with pydantic models, which the mcp extra brings
    import pydantic  # noqa: F401
except ImportError as _missing:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError("mcp", "mcp") from _missing

from contextos.llm.tokens import Tokenizer, default_tokenizer

from ..types import MemoryType
from . import ops
from . import schemas as s
from .auth import DEFAULT_AUTH_FAILURES, Authenticator, Unauthenticated
from .bodylimit import DEFAULT_MAX_BODY, BodyLimitMiddleware
from .errors import package_version, public_message
from .gate import AuthGate
from .keys import KeyStore
from .ratelimit import RateLimit, TokenBucketLimiter
from .tenants import TenantMemories

if TYPE_CHECKING:
    from ..memory import Memory


def _sdk() -> tuple[type[Any], str]:
    """The installed SDK's server class and its major version."""
    import importlib

    for module, name, major in (
        ("mcp.server.mcpserver", "MCPServer", "2"),
        ("mcp.server.fastmcp", "FastMCP", "1"),
    ):
        try:
            return getattr(importlib.import_module(module), name), major
        except (ImportError, AttributeError):
            continue
    raise MissingExtraError("mcp", "mcp")


def _arguments(frame_locals: dict[str, Any]) -> dict[str, Any]:
    """A tool's arguments (its ``locals()`` on entry, ``self`` left out) as the fields
    of its request model: each tool's parameters are named after that model's fields,
    so the signature (which is the tool's MCP schema) lists them once."""
    return {name: value for name, value in frame_locals.items() if name != "self"}


@dataclass
class MemoryTools:
    """The tool functions, bound to a tenant resolver; usable without any MCP SDK.

    Every tool validates its arguments with the HTTP API's models
    (:func:`contextos.server.schemas.parse`) and runs the same operation as the
    HTTP route (:mod:`contextos.server.ops`): what HTTP refuses, MCP refuses."""

    tenants: TenantMemories
    tenant: Callable[[], str]
    tokenizer: Tokenizer

    def _memory(self) -> Memory:
        return self.tenants.get(self.tenant())

    def add_memory(
        self,
        messages: str | list[dict[str, Any]] | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        event_time: str | None = None,
        memory_type: MemoryType = "episodic",
        infer: bool = False,
        text: str | None = None,
    ) -> list[dict[str, Any]]:
        """Remember messages (a text, or a list of {"role", "content"}) for a user, agent
        or session (at least one is required). With infer=true the facts in them are
        extracted and reconciled with what is already stored (add, update or drop)
        instead of storing them verbatim. event_time: ISO 8601, when it happened.
        `text` is the deprecated name of `messages` (a single text)."""
        if text is not None:
            if messages is not None:
                raise ValueError("give messages or its deprecated alias text, not both")
            messages, text = text, None
        body = s.parse(s.AddRequest, **_arguments(locals()))
        return [r.to_dict() for r in ops.add(self._memory(), body)]

    def search_memory(
        self,
        query: str,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        limit: int = 10,
        token_budget: int | None = None,
        metadata: dict[str, Any] | None = None,
        min_score: float | None = None,
    ) -> list[dict[str, Any]]:
        """Find the memories most relevant to a query within a user/agent/session
        (metadata: equality filters, dotted keys look into nested objects; min_score: a
        floor on each hit's relevance, the query-memory cosine in -1..1)."""
        body = s.parse(s.SearchRequest, **_arguments(locals()))
        return [h.to_dict() for h in ops.search(self._memory(), body)]

    def list_memories(
        self,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """List memories of a user/agent/session, newest first (paginate with offset)."""
        body = s.parse(s.ListRequest, **_arguments(locals()))
        return [r.to_dict() for r in ops.list_page(self._memory(), body)]

    def get_memory(self, memory_id: str) -> dict[str, Any]:
        """One memory by id."""
        key = s.parse(s.MemoryIdIn, memory_id=memory_id)
        return self._memory().get(key.memory_id).to_dict()

    def update_memory(
        self, memory_id: str, text: str | None = None, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Change a memory's text and/or metadata (the old text stays in its history)."""
        key = s.parse(s.MemoryIdIn, memory_id=memory_id)
        body = s.parse(s.UpdateRequest, text=text, metadata=metadata)
        return ops.update(self._memory(), key.memory_id, body).to_dict()

    def memory_history(self, memory_id: str) -> list[dict[str, Any]]:
        """Every change to a memory (ADD, UPDATE, DELETE), oldest first."""
        key = s.parse(s.MemoryIdIn, memory_id=memory_id)
        events = self._memory().history(key.memory_id)
        return [s.HistoryOut.of(e).model_dump(mode="json") for e in events]

    def delete_memory(self, memory_id: str, purge: bool = False) -> dict[str, Any]:
        """Delete one memory by id. Its history keeps the DELETE event; with purge=true
        the text also leaves the history, the search index and every copy of it."""
        key = s.parse(s.MemoryIdIn, memory_id=memory_id)
        self._memory().delete(key.memory_id, purge=purge)
        return s.Deleted(deleted=key.memory_id, purged=purge).model_dump()

    def assemble_window(
        self,
        question: str,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        token_budget: int = 2000,
        limit: int = 20,
    ) -> dict[str, Any]:
        """Build a context window for a question within token_budget: the session's
        summary and recent turns (when session_id is given), the relevant memories with
        the strongest at the edges, and the question last."""
        body = s.parse(s.WindowToolIn, **_arguments(locals()))
        from .windowing import build_window, window_dict  # the engine, on first use

        req = body.for_session(body.session_id)
        return window_dict(build_window(self.tenants, self.tenant(), req, self.tokenizer))

    def functions(self) -> list[Callable[..., Any]]:
        return [
            self.add_memory,
            self.search_memory,
            self.list_memories,
            self.get_memory,
            self.update_memory,
            self.memory_history,
            self.delete_memory,
            self.assemble_window,
        ]


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Library errors become a tool error with their public message (never a traceback)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ContextosError, ValueError, TypeError) as exc:
            # The same text an HTTP client gets: a store failure says "busy or
            # unavailable, retry", never a path, host or database name.
            raise _tool_error()(f"{type(exc).__name__}: {public_message(exc)}") from None

    return wrapper


def _tool_error() -> type[Exception]:
    """The SDK's ToolError: its message is what the client sees as the tool's error."""
    import importlib

    for module in ("mcp.server.mcpserver.exceptions", "mcp.server.fastmcp.exceptions"):
        try:
            error: type[Exception] = importlib.import_module(module).ToolError
            return error
        except (ImportError, AttributeError):
            continue
    raise MissingExtraError("mcp", "mcp")


def _http_tenant() -> str:
    """The tenant of the HTTP request's verified key (set by the SDK's auth middleware)."""
    from mcp.server.auth.middleware.auth_context import get_access_token

    token = get_access_token()
    if token is None or not token.subject:
        raise Unauthenticated("no verified API key on this request")
    return token.subject


class KeyVerifier:
    """The SDK's TokenVerifier: a contextos API key becomes an AccessToken of its tenant."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    async def verify_token(self, token: str) -> Any:
        import anyio.to_thread
        from mcp.server.auth.provider import AccessToken

        key = await anyio.to_thread.run_sync(self.keys.verify, token)
        if key is None:
            return None
        return AccessToken(token=token, client_id=key.id, scopes=[], subject=key.tenant)


def build_mcp_server(
    tenants: TenantMemories,
    *,
    tenant: str | None = None,
    keys: KeyStore | None = None,
    http_url: str | None = None,
    tokenizer: Tokenizer | None = None,
) -> Any:
    """An MCP server whose tools act for ``tenant`` (stdio) or for each request's key (HTTP).

    Give ``tenant`` for stdio; give ``keys`` and ``http_url`` (the public base URL,
    e.g. ``http://127.0.0.1:8765``) for streamable HTTP with per-request keys.
    """
    server_cls, major = _sdk()
    if (tenant is None) == (keys is None):
        raise ValueError("give either a fixed tenant (stdio) or a KeyStore (HTTP)")
    resolver: Callable[[], str] = (lambda: tenant) if tenant is not None else _http_tenant
    tools = MemoryTools(tenants, resolver, tokenizer or default_tokenizer())
    kwargs: dict[str, Any] = {
        "log_level": "WARNING",
        "instructions": "Long-term memory of contextos. Every tool is scoped to the tenant "
        "of the configured API key.",
    }
    if keys is not None:
        kwargs.update(_auth_kwargs(keys, http_url or "http://127.0.0.1:8765"))
    if major == "2":
        kwargs["version"] = package_version()
    server = server_cls("contextos", **kwargs)
    if major == "1":  # FastMCP 1.x has no version argument; its low-level server does
        server._mcp_server.version = package_version()
    from ..agent.mcp_tools import mcp_functions  # the self-editing memory tools

    for fn in [*tools.functions(), *mcp_functions(lambda: tenants.get(resolver()))]:
        server.add_tool(_guard(fn), name=fn.__name__, description=fn.__doc__)
    server.contextos_major = major
    return server


def mcp_http_app(
    server: Any,
    keys: KeyStore,
    *,
    host: str = "127.0.0.1",
    rate_limit: RateLimit | None = None,
    auth_failures: RateLimit | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
) -> Any:
    """The ASGI app of ``server`` (built with ``keys``) for streamable HTTP, behind the
    same gate as the HTTP API: bodies over ``max_body_bytes`` get 413, a request without
    a valid key 401 before its body is read (429 once its client has failed too often),
    and each key is held to ``rate_limit`` (429 + Retry-After)."""
    app = server.streamable_http_app(host=host) if server.contextos_major == "2" else None
    if app is None:  # FastMCP 1.x takes host/port as settings
        server.settings.host = host
        app = server.streamable_http_app()
    auth = Authenticator(
        keys,
        admin_key=None,
        limiter=TokenBucketLimiter(rate_limit or RateLimit()),
        failures=TokenBucketLimiter(auth_failures or DEFAULT_AUTH_FAILURES),
    )
    return BodyLimitMiddleware(AuthGate(app, auth, ("/mcp",)), max_bytes=max_body_bytes)


def _auth_kwargs(keys: KeyStore, base_url: str) -> dict[str, Any]:
    from mcp.server.auth.settings import AuthSettings
    from pydantic import AnyHttpUrl

    base = base_url.rstrip("/")
    auth = AuthSettings(
        issuer_url=AnyHttpUrl(base),
        resource_server_url=AnyHttpUrl(f"{base}/mcp"),
        validate_token_resource=False,
    )
    return {"auth": auth, "token_verifier": KeyVerifier(keys)}
