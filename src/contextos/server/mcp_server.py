"""The MCP server: memory tools for agents, over stdio or streamable HTTP.

Tools: ``add_memory``, ``search_memory``, ``list_memories``, ``delete_memory``
and ``assemble_window`` (retrieved memories placed in a token budget around a
question with :func:`contextos.window.assemble`). Every tool acts for one
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
from typing import Any

from ..errors import ContextosError, MissingExtraError
from ..tokens import Tokenizer, default_tokenizer
from ..types import Hit, MemoryRecord, MemoryType
from .auth import Unauthenticated
from .keys import KeyStore
from .tenants import TenantMemories


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


def record_dict(r: MemoryRecord) -> dict[str, Any]:
    """A memory as plain JSON for a tool result."""
    return {
        "id": r.id,
        "text": r.text,
        "user_id": r.user_id,
        "agent_id": r.agent_id,
        "session_id": r.session_id,
        "memory_type": r.memory_type,
        "metadata": dict(r.metadata),
        "event_time": r.event_time.isoformat() if r.event_time else None,
        "created_at": r.created_at.isoformat() if r.created_at else None,
    }


def hit_dict(h: Hit) -> dict[str, Any]:
    return {**record_dict(h.record), "score": h.score, "tokens": h.tokens}


@dataclass
class MemoryTools:
    """The tool functions, bound to a tenant resolver; usable without any MCP SDK."""

    tenants: TenantMemories
    tenant: Callable[[], str]
    tokenizer: Tokenizer

    def add_memory(
        self,
        text: str,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        memory_type: MemoryType = "episodic",
        infer: bool = False,
    ) -> list[dict[str, Any]]:
        """Remember a text for a user, agent or session (at least one is required).
        With infer=true the facts in it are extracted and reconciled with what is
        already stored (add, update or drop) instead of storing the text verbatim."""
        mem = self.tenants.get(self.tenant())
        records = mem.add(
            text,
            user_id=user_id,
            agent_id=agent_id,
            session_id=session_id,
            metadata=metadata,
            memory_type=memory_type,
            infer=infer,
        )
        return [record_dict(r) for r in records]

    def search_memory(
        self,
        query: str,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        limit: int = 10,
        token_budget: int | None = None,
    ) -> list[dict[str, Any]]:
        """Find the memories most relevant to a query within a user/agent/session."""
        mem = self.tenants.get(self.tenant())
        hits = mem.search(
            query,
            user_id=user_id,
            agent_id=agent_id,
            session_id=session_id,
            limit=limit,
            token_budget=token_budget,
        )
        return [hit_dict(h) for h in hits]

    def list_memories(
        self,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """List memories of a user/agent/session, newest first (paginate with offset)."""
        mem = self.tenants.get(self.tenant())
        records = mem.get_all(
            user_id=user_id, agent_id=agent_id, session_id=session_id, limit=limit, offset=offset
        )
        return [record_dict(r) for r in records]

    def delete_memory(self, memory_id: str) -> dict[str, str]:
        """Delete one memory by id."""
        self.tenants.get(self.tenant()).delete(memory_id)
        return {"deleted": memory_id}

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
        from .windowing import WindowRequest, build_window, window_dict

        req = WindowRequest(
            question=question,
            user_id=user_id,
            agent_id=agent_id,
            session_id=session_id,
            token_budget=token_budget,
            limit=limit,
        )
        return window_dict(build_window(self.tenants, self.tenant(), req, self.tokenizer))

    def functions(self) -> list[Callable[..., Any]]:
        return [
            self.add_memory,
            self.search_memory,
            self.list_memories,
            self.delete_memory,
            self.assemble_window,
        ]


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Library errors become a tool error with their message (never a traceback)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ContextosError, ValueError, TypeError) as exc:
            raise _tool_error()(f"{type(exc).__name__}: {exc}") from exc

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
    server = server_cls("contextos", **kwargs)
    from ..agent.mcp_tools import mcp_functions  # the self-editing memory tools

    for fn in [*tools.functions(), *mcp_functions(lambda: tenants.get(resolver()))]:
        server.add_tool(_guard(fn), name=fn.__name__, description=fn.__doc__)
    server.contextos_major = major
    return server


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
