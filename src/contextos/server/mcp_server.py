"""The MCP server: memory tools for agents, over stdio or streamable HTTP.

Tools: ``add_memory``, ``search_memory``, ``list_memories``, ``get_memory``,
``update_memory``, ``memory_history``, ``delete_memory``, ``assemble_window``
(retrieved memories placed in a token budget around a question with
:func:`contextos.engine.window.assemble`) and ``compact_session``. Arguments are
validated by the HTTP API's models, so both protocols accept and refuse the same
input. Every tool acts for one tenant, decided by an API key and never by a tool
argument:

* stdio: the key given at start (``--key`` / ``CONTEXTOS_API_KEY``), checked at start
  and again on every tool call (from the key cache, as the HTTP API does), so a key
  revoked while the server runs gets a tool error from its next call on;
* streamable HTTP: each request's key (``Authorization: Bearer`` or ``X-API-Key``),
  checked per request by the gate in front, as the HTTP API's, which hands its
  caller to the SDK's token-verifier hook (:class:`GateKey`; no key, no tools);
  stateless, so no tenant can fill a server-wide table of sessions (see
  :func:`mcp_http_app`).

Written for the ``mcp`` 2.x SDK (``MCPServer``) and falling back to 1.x
(``FastMCP``), whichever is installed.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from ..agent.tools import WRITING_TOOLS as AGENT_WRITES
from ..errors import ContextosError, MissingExtraError, NotFound

try:  # the tools validate with pydantic models, which the mcp extra brings
    import pydantic
except ImportError as _missing:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError("mcp", "mcp") from _missing

from contextos.llm.tokens import Tokenizer, default_tokenizer

from ..types import MemoryType
from . import mcp_results as results
from . import ops
from . import schemas as s
from .auth import DEFAULT_AUTH_FAILURES, Authenticator, Principal, Unauthenticated, bearer_secret
from .bodylimit import DEFAULT_MAX_BODY, BodyLimitMiddleware
from .errors import describe, package_version, public_message
from .gate import AuthGate, headers_of, principal_in
from .keys import KeyStore
from .ratelimit import RateLimit, TokenBucketLimiter
from .tenants import TenantMemories
from .window_slots import READS_LOG, WindowSlots
from .write_threads import run_write

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


def _one_or_more(value: Any) -> Any:
    """A type filter given as one name (``"semantic"``) as the list it stands for."""
    return [value] if isinstance(value, str) else value


#: A type filter: a list of memory types, or one of them alone. Why one alone: a model
#: that wrote ``"semantic"`` got ``Input should be a valid list`` (a review).
MemoryTypes = Annotated[list[MemoryType], pydantic.BeforeValidator(_one_or_more)]


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
        event_time: s.Time | None = None,
        memory_type: MemoryType | None = None,
        infer: bool = False,
        text: str | None = None,
    ) -> dict[str, Any]:
        """Remember messages (a text, or a list of {"role", "content"}) for a user, agent
        or session (at least one is required). With infer=true the facts in them are
        extracted and reconciled with what is already stored (add, update or drop)
        instead of storing them verbatim (each fact then gets its type from the
        extractor: memory_type, episodic when left out, is for verbatim adds only).
        event_time: ISO 8601, when it happened.
        `text` is the deprecated name of `messages` (a single text).
        Answers {"results": [the memories stored]}. No session turns are logged.
        A call that timed out may still have stored: search before adding again."""
        if text is not None:
            if messages is not None:
                raise ValueError("give messages or its deprecated alias text, not both")
            messages, text = text, None
        body = s.parse(s.AddRequest, **_arguments(locals()))
        added = [r.to_dict() for r in ops.add(self._memory(), body)]
        return results.page({"results": added})

    def search_memory(
        self,
        query: str,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        limit: s.JsonInt = 10,
        token_budget: s.JsonInt | None = None,
        memory_types: MemoryTypes | None = None,
        as_of: s.Time | None = None,
        event_after: s.Time | None = None,
        event_before: s.Time | None = None,
        metadata: dict[str, Any] | None = None,
        min_score: s.MinScore | None = None,
    ) -> dict[str, Any]:
        """Find the memories most relevant to a query within a user/agent/session
        (memory_types: only these of episodic, semantic, procedural; as_of: ISO 8601,
        only memories valid at that instant; event_after/event_before: ISO 8601, only
        memories whose event time lies in that range; metadata: equality filters,
        dotted keys look into nested objects; min_score: a floor on each hit's
        relevance, the query-memory cosine in -1..1).
        Answers {"results": [hits, best first], "cut": bool}: texts over 2,000
        characters are shortened and marked truncated (get_memory reads one whole),
        and hits past about 40,000 characters are left out (cut: true, a note says
        how many)."""
        body = s.parse(s.SearchRequest, **_arguments(locals()))
        hits, cut = ops.search(self._memory(), body)
        return results.listed([h.to_dict() for h in hits], cut=cut)

    def list_memories(
        self,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        limit: s.JsonInt = 50,
        offset: s.JsonInt = 0,
        after: str | None = None,
        memory_types: MemoryTypes | None = None,
        validity: Literal["current", "all"] = "current",
        memory_type: MemoryTypes | None = None,
    ) -> dict[str, Any]:
        """List memories of a user/agent/session, newest first, one page at a time:
        {"results": [...], "next_after": ..., ...}. For the next page call again with
        after = this answer's next_after, until it is null: nothing is skipped or
        repeated while others write (a page holds at most about 40,000 characters of
        memories, so it may hold fewer than limit before the end; texts over 2,000
        characters are shortened and marked truncated: get_memory reads one whole).
        offset (counted from after, or from the newest) repeats and skips memories
        while others add or delete. memory_types: only these types (all when left
        out; `memory_type` is its deprecated name); validity "all": superseded facts
        too."""
        if memory_type is not None:
            if memory_types is not None:
                raise ValueError("give memory_types or its deprecated alias memory_type, not both")
            memory_types = memory_type
        body = s.parse(
            s.ListRequest,
            user_id=user_id,
            agent_id=agent_id,
            session_id=session_id,
            limit=limit,
            offset=offset,
            after=after,
            memory_type=memory_types,
            validity=validity,
        )
        records, next_offset, next_after = ops.list_page(
            self._memory(), body, max_bytes=results.RESULT_CHARS, after_field="after"
        )
        listed = s.RecordList(
            results=[s.RecordOut.of(r) for r in records],
            limit=body.limit,
            offset=body.offset,
            next_offset=next_offset,
            next_after=next_after,
        )
        return results.page(listed.model_dump(mode="json"))

    def get_memory(self, memory_id: str) -> dict[str, Any]:
        """One memory by id, whole (text and metadata)."""
        key = s.parse(s.MemoryIdIn, memory_id=memory_id)
        return self._memory().get(key.memory_id).to_dict()

    def update_memory(
        self,
        memory_id: str,
        text: str | None = None,
        metadata: dict[str, Any] | None = None,
        expected_text: str | None = None,
        expected_updated_at: str | None = None,
    ) -> dict[str, Any]:
        """Change a memory's text and/or metadata (the old text stays in its history).
        With expected_text (the text you read) or expected_updated_at (its updated_at,
        ISO-8601), the change is made only if the memory is still as you read it; else
        the tool fails with a conflict and nothing is written: read it again."""
        key = s.parse(s.MemoryIdIn, memory_id=memory_id)
        body = s.parse(
            s.UpdateRequest,
            text=text,
            metadata=metadata,
            expected_text=expected_text,
            expected_updated_at=expected_updated_at,
        )
        return ops.update(self._memory(), key.memory_id, body).to_dict()

    def memory_history(
        self, memory_id: str, after_seq: s.JsonInt = -1, limit: s.JsonInt = 100
    ) -> dict[str, Any]:
        """A memory's changes (ADD, UPDATE, DELETE), oldest first, one page at a time:
        {"results": [...], "next_after_seq": ...}. Events are numbered from 0; for the
        next page call again with after_seq = this answer's next_after_seq, until it is
        null (a page holds at most about 40,000 characters of texts, so it may hold
        fewer than limit before the end; at least one event)."""
        key = s.parse(s.MemoryIdIn, memory_id=memory_id)
        page = s.parse(s.HistoryPageIn, after_seq=after_seq, limit=limit)
        events, after = ops.history_page(
            self._memory(), key.memory_id, page, max_bytes=results.RESULT_CHARS
        )
        listed = s.HistoryList(results=[s.HistoryOut.of(e) for e in events], next_after_seq=after)
        return listed.model_dump(mode="json")

    def delete_memory(
        self,
        memory_id: str,
        purge: bool = False,
        expected_text: str | None = None,
        expected_updated_at: str | None = None,
    ) -> dict[str, Any]:
        """Delete one memory by id. Its history keeps the DELETE event; with purge=true
        the text also leaves the history, the search index and every copy of it. With
        expected_text or expected_updated_at (as update_memory takes them), only if the
        memory is still as you read it; else a conflict and nothing is deleted."""
        key = s.parse(s.MemoryIdIn, memory_id=memory_id)
        expected = s.parse(
            s.Expected, expected_text=expected_text, expected_updated_at=expected_updated_at
        )
        self._memory().delete(
            key.memory_id,
            purge=purge,
            expected_text=expected.expected_text,
            expected_updated_at=expected.expected_updated_at,
        )
        return s.Deleted(deleted=key.memory_id, purged=purge).model_dump(exclude_none=True)

    def assemble_window(
        self,
        question: str,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        token_budget: s.JsonInt = 2000,
        limit: s.JsonInt = 20,
        model: str | None = None,
        system: str | None = None,
        rules: list[str] | None = None,
        tools: list[dict[str, Any]] | None = None,
        format: Literal["anthropic", "openai"] | None = None,
        max_tokens: s.JsonInt | None = None,
    ) -> dict[str, Any]:
        """Build a context window for a question within token_budget: the tools, system
        prompt and rules first (cached), the session's summary and recent turns (when
        session_id is given), the relevant memories with the strongest at the edges, and
        the question last. format ("anthropic" or "openai"): also return the provider's
        request body for it in `request`, with cache_control where `breakpoints` are, and
        max_tokens (default: the model's output reserve, at most 16,384)."""
        body = s.parse(s.WindowToolIn, **_arguments(locals()))
        from .windowing import build_window, window_answer  # the engine, on first use

        req = body.for_session(body.session_id)
        return window_answer(build_window(self.tenants, self.tenant(), req, self.tokenizer), req)

    def compact_session(
        self,
        session_id: str,
        budget: s.JsonInt,
        strategy: Literal["truncate", "clear_tool_results", "summarize", "offload"] = "summarize",
        force: bool = False,
        user_id: str | None = None,
        agent_id: str | None = None,
    ) -> dict[str, Any]:
        """Compact a session's history to fit budget (tokens: the history's share of the
        window) so later windows stay small: summarize (default), truncate,
        clear_tool_results, or offload (archive the rotated turns as memories, found by
        search_memory). force: compact even under the trigger threshold. Returns
        compacted, plan, state, archived; an error when another writer changed the
        session meanwhile (nothing done: call again). A session's turns are logged over
        HTTP or by the application, not by these tools."""
        body = s.parse(s.CompactToolIn, **_arguments(locals()))
        from .compacting import compact_session  # the engine, on first use

        req = body.for_session(body.session_id)
        try:
            return compact_session(self.tenants, self.tenant(), req, self.tokenizer)
        except NotFound as exc:
            raise NotFound(f"{exc}: {results.NO_TURNS}") from None

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
            self.compact_session,
        ]


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Library errors become a tool error with their public message (never a traceback);
    of a coroutine function too. An answer becomes one block of compact JSON
    (:func:`~.mcp_results.tool_result`)."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awaited(*args: Any, **kwargs: Any) -> Any:
            try:
                return results.tool_result(await fn(*args, **kwargs))
            except (ContextosError, ValueError, TypeError) as exc:
                raise _tool_error()(f"{type(exc).__name__}: {public_message(exc)}") from None

        return awaited

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return results.tool_result(fn(*args, **kwargs))
        except (ContextosError, ValueError, TypeError) as exc:
            # The same text an HTTP client gets: a store failure says "busy or
            # unavailable, retry", never a path, host or database name.
            raise _tool_error()(f"{type(exc).__name__}: {public_message(exc)}") from None

    return wrapper


def _in_window_slots(
    fn: Callable[..., Any], slots: WindowSlots, tenant: Callable[[], str]
) -> Callable[..., Any]:
    """``fn`` (a tool of :data:`READS_LOG`) run in the caller's tenant's window slots
    (:class:`~contextos.server.window_slots.WindowSlots`), as the HTTP window route: a
    window on a long log costs CPU in proportion (``conversation_search`` reads the
    whole log), and the SDK ran each call on the thread pool every tool shares, so one
    tenant's calls held it and the interpreter lock."""

    @functools.wraps(fn)
    async def windowed(*args: Any, **kwargs: Any) -> Any:
        return await slots.run(tenant(), functools.partial(fn, *args, **kwargs))

    return windowed


#: The tools that write: the memory verbs' and the agent's (``agent.tools``).
WRITING_TOOLS = frozenset({"add_memory", "update_memory", "delete_memory"}) | AGENT_WRITES


def _on_write_threads(fn: Callable[..., Any], tenant: Callable[[], str]) -> Callable[..., Any]:
    """``fn`` (a tool of :data:`WRITING_TOOLS`) run on the server's write threads, in
    the caller's tenant's share of them, as the HTTP write routes (:mod:`.write_threads`):
    the SDK ran each call on the thread pool every tool shares, so writes waiting for
    the database's write lock (another process's vacuum, a long forget) could take every
    thread from the reads, and one tenant's burst made the others' writes wait."""

    @functools.wraps(fn)
    async def written(*args: Any, **kwargs: Any) -> Any:
        return await run_write(functools.partial(fn, *args, **kwargs), tenant=tenant())

    return written


def _on_its_threads(
    fn: Callable[..., Any], windows: WindowSlots, tenant: Callable[[], str]
) -> Callable[..., Any]:
    """``fn`` on the threads its kind of work runs on in the server: a tool that reads a
    whole log in the tenant's window slots, a write on the write threads, any other on
    the SDK's shared pool."""
    if fn.__name__ in READS_LOG:
        return _in_window_slots(fn, windows, tenant)
    if fn.__name__ in WRITING_TOOLS:
        return _on_write_threads(fn, tenant)
    return fn


class ArgumentsInvalid(pydantic.ValidationError):
    """A tool's arguments refused by the SDK's own argument model (a wrong type, an
    unknown argument), reading as the HTTP API's 422 does (``limit: Input should be a
    valid integer, ...``): the SDK puts ``str()`` of the error in the tool error, and
    pydantic's own text named the model (``search_memoryArguments``), echoed the input
    and linked to errors.pydantic.dev. Its ``errors()`` are pydantic's, which the SDK
    logs (field names only). An unknown argument close to one the tool takes names it
    (``memory_type: Extra inputs are not permitted (did you mean memory_types?)``).
    """

    #: The arguments the tool takes (set by :func:`_validate_like_http`).
    known: tuple[str, ...] = ()

    def __str__(self) -> str:
        # The text of the same refusal by the tools' own check (schemas.parse + _guard).
        return f"ValueError: {describe(self.errors())}{_did_you_mean(self.errors(), self.known)}"


def _did_you_mean(errors: list[Any], known: tuple[str, ...]) -> str:
    """`` (did you mean X?)`` for the first unknown argument in ``errors`` that is close
    to one of ``known``, else nothing."""
    import difflib

    for err in errors:
        loc = err.get("loc", ())
        if err.get("type") == "extra_forbidden" and len(loc) == 1 and isinstance(loc[0], str):
            close = difflib.get_close_matches(loc[0][:100], known, n=1, cutoff=0.75)
            if close:
                return f" (did you mean {close[0]}?)"
    return ""


_PYDANTIC_MODEL_VALIDATE: Any = pydantic.BaseModel.model_validate.__func__  # type: ignore[attr-defined]


def _validate_like_http(
    cls: type[pydantic.BaseModel], obj: Any, *args: Any, **kwargs: Any
) -> pydantic.BaseModel:
    """``model_validate`` of a tool's argument model (the SDK's one validation call, in
    1.x and 2.x alike) with its errors raised as :class:`ArgumentsInvalid`. It runs
    pydantic's own ``model_validate`` with ``cls`` as the class, so a subclass of the
    argument model validates as itself."""
    try:
        validated: pydantic.BaseModel = _PYDANTIC_MODEL_VALIDATE(cls, obj, *args, **kwargs)
    except pydantic.ValidationError as exc:
        errors: list[Any] = exc.errors()
        try:  # the same errors (type, loc, input, ctx), pydantic rewrites each msg
            refused = ArgumentsInvalid.from_exception_data(exc.title, errors)
        except Exception:  # pragma: no cover - an error pydantic cannot rebuild
            raise exc from None
        refused.known = tuple(cls.model_fields)
        raise refused from None
    return validated


def _refuse_unknown_arguments(tool: Any) -> None:
    """Make ``tool`` refuse arguments it does not take, as the HTTP API's bodies do
    (422 naming the field). The SDK validates arguments with a pydantic model built
    from the function's signature, which ignores extra keys: a ``tenant`` (or a
    misspelt ``user_id``) was dropped without a word. Its subclass here forbids them,
    so the call is a tool error naming each unknown argument, and the advertised input
    schema says ``additionalProperties: false``. Every refusal by that model (a wrong
    type too) reads as over HTTP (:class:`ArgumentsInvalid`), and a string argument
    reaches the tool as sent (:func:`_keep_strings`)."""
    base: type[pydantic.BaseModel] = tool.fn_metadata.arg_model
    strict: type[pydantic.BaseModel] = type(
        base.__name__,
        (base,),
        {
            "model_config": pydantic.ConfigDict(extra="forbid"),
            "model_validate": classmethod(_validate_like_http),
            "__module__": base.__module__,
        },
    )
    tool.fn_metadata = _keep_strings(tool.fn_metadata)
    tool.fn_metadata.arg_model = strict
    tool.parameters = strict.model_json_schema(by_alias=True)


#: The HTTP API's models each memory tool validates its arguments with
#: (:func:`contextos.server.schemas.parse`), whose JSON schemas its advertised input
#: schema is made of (:func:`advertised_schema`).
TOOL_MODELS: dict[str, tuple[type[pydantic.BaseModel], ...]] = {
    "add_memory": (s.AddRequest,),
    "search_memory": (s.SearchRequest,),
    "list_memories": (s.ListRequest,),
    "get_memory": (s.MemoryIdIn,),
    "update_memory": (s.MemoryIdIn, s.UpdateRequest),
    "memory_history": (s.MemoryIdIn, s.HistoryPageIn),
    "delete_memory": (s.MemoryIdIn, s.Expected),
    "assemble_window": (s.WindowToolIn,),
    "compact_session": (s.CompactToolIn,),
}


def advertised_schema(tool: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The input schema ``tool`` advertises: ``schema`` (the SDK's, from the function's
    signature, ``additionalProperties: false``) with each argument that a model of
    :data:`TOOL_MODELS` has described by that model, as the HTTP API's OpenAPI
    describes it, and required where the model requires it.

    Why: the signature's types said less than the tool enforces (``messages`` items
    as any object, ``limit`` as any integer, a window's ``tools`` without their
    required ``name``): a client or a model that wrote its arguments from the schema
    learnt the rest from a failed call (a review). The signature still says which
    arguments there are, and its default where the tool has its own
    (``list_memories``: 50 where the route's is 100); an argument no model has
    (``delete_memory``'s ``purge``) keeps the SDK's schema."""
    properties: dict[str, Any] = dict(schema.get("properties", {}))
    required: list[str] = list(schema.get("required", []))
    for model in TOOL_MODELS[tool]:
        described = _inlined(model.model_json_schema())
        for name, prop in described["properties"].items():
            if name not in properties:  # a field the route has and the tool does not
                continue
            own = properties[name].get("default")
            properties[name] = prop if own is None else {**prop, "default": own}
            if name in described.get("required", ()) and name not in required:
                required.append(name)
    if tool == "list_memories":  # the filter's name in search_memory too
        properties["memory_types"] = {**properties["memory_type"]}
        properties["memory_type"] = {
            **properties["memory_type"],
            "deprecated": True,
            "description": "Deprecated: give the types as `memory_types`.",
        }
    if tool == "add_memory":  # the deprecated name of a text `messages`
        text = next(b for b in properties["messages"]["anyOf"] if b.get("type") == "string")
        properties["text"] = {
            **text,
            "deprecated": True,
            "description": "Deprecated: give the text as `messages`.",
        }
    advertised = {**schema, "properties": properties}
    if required:
        advertised["required"] = required
    return advertised


def _inlined(schema: Any, defs: dict[str, Any] | None = None) -> Any:
    """``schema`` (a model's JSON schema) self-contained and read as its model
    validates: each ``$ref`` replaced by its definition (no model here is recursive;
    some clients follow no ``$ref``), a ``oneOf`` (pydantic's for a union the schemas
    choose a branch of by the value's type) as ``anyOf`` (an integer is also a
    ``number``: under ``oneOf`` an integer filter value fitted two branches and was
    invalid), and an object whose keys must match a pattern closed to other keys."""
    if defs is None and isinstance(schema, dict):
        defs = schema.get("$defs", {})
    if isinstance(schema, list):
        return [_inlined(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        target = {k: v for k, v in (defs or {})[name].items() if k not in ("title", "description")}
        return _inlined(target, defs)
    out = {
        ("anyOf" if key == "oneOf" else key): _inlined(value, defs)
        for key, value in schema.items()
        if key != "$defs"
    }
    if "patternProperties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _admits_str(annotation: Any) -> bool:
    """Whether a parameter annotated ``annotation`` takes a string as it is (a time
    does: an ISO-8601 text, read by the HTTP API's own validator, ``schemas.Time``)."""
    import datetime
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _admits_str(args[0])
    if origin is typing.Literal:
        return any(isinstance(arg, str) for arg in args)
    if origin is typing.Union or origin is types.UnionType:
        return any(_admits_str(arg) for arg in args)
    if origin is not None:
        return False
    return annotation is Any or (
        isinstance(annotation, type) and issubclass(annotation, str | datetime.datetime)
    )


def _keep_strings(metadata: Any) -> Any:
    """``metadata`` (the SDK's FuncMetadata of a tool) with its ``pre_parse_json``
    limited to the parameters that cannot take a string.

    The SDK runs ``json.loads`` on every string argument whose parameter is not
    annotated plain ``str`` (for clients that send a list or an object as JSON
    text), so ``user_id="null"`` (``str | None``) arrived as None, a search
    within agent "bot" for user "null" returned every user's memories of that agent,
    and ``messages='[{"role": "system", "content": "obey"}]'`` was stored as a
    system message. Where a parameter takes a string (``str | None``, ``str |
    list[...]``, a Literal of strings) the string is now the value, as over HTTP;
    ``metadata`` (a dict only) is still read from JSON text."""
    cls: type[pydantic.BaseModel] = type(metadata)
    return _text_keeping(cls).model_construct(
        **{name: getattr(metadata, name) for name in cls.model_fields}
    )


@functools.cache
def _text_keeping(base: type[pydantic.BaseModel]) -> type[pydantic.BaseModel]:
    """The subclass of the SDK's FuncMetadata that :func:`_keep_strings` makes."""

    def pre_parse_json(self: Any, data: dict[str, Any]) -> dict[str, Any]:
        text: set[str] = set()
        for name, field in self.arg_model.model_fields.items():
            if _admits_str(field.annotation):
                text.update(key for key in (name, field.alias) if key)
        parsed = base.pre_parse_json(  # type: ignore[attr-defined]
            self, {k: v for k, v in data.items() if k not in text}
        )
        return {**data, **parsed}

    return type(
        base.__name__,
        (base,),
        {"pre_parse_json": pre_parse_json, "__module__": base.__module__},
    )


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


#: The caller the gate verified for the request in progress (:class:`GateKey`).
_ADMITTED: ContextVar[Principal | None] = ContextVar("contextos_mcp_admitted", default=None)
#: The headers a key may stand in; :class:`GateKey` leaves the SDK only its own one.
_KEY_HEADERS = (b"authorization", b"x-api-key")


class GateKey:
    """Pure ASGI middleware between the :class:`~contextos.server.gate.AuthGate` and the
    SDK: the key the gate verified becomes the one ``Authorization: Bearer`` header the
    SDK reads, and the gate's caller is what :class:`KeyVerifier` answers with.

    Why: the gate takes a key in ``X-API-Key`` too, as the HTTP API does, and charged
    it, but the SDK reads only the first ``Authorization`` header: a valid key sent so
    got the SDK's 401 ``{"error": "invalid_token", ...}``, "Authentication required",
    in another shape than every other error (a review). One check a request now, the
    gate's, so the SDK also never runs a request as a key other than the one charged."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        principal = principal_in(scope)
        secret = bearer_secret(headers_of(scope)) if principal is not None else None
        if principal is None or secret is None:
            await self.app(scope, receive, send)
            return
        keyless = [(k, v) for k, v in scope["headers"] if k.lower() not in _KEY_HEADERS]
        headers = [*keyless, (b"authorization", b"Bearer " + secret.encode("latin-1"))]
        admitted = _ADMITTED.set(principal)
        try:
            await self.app({**scope, "headers": headers}, receive, send)
        finally:
            _ADMITTED.reset(admitted)


class KeyVerifier:
    """The SDK's TokenVerifier: a contextos API key becomes an AccessToken of its tenant
    (the caller :class:`GateKey` lends, or else the key's own row)."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    async def verify_token(self, token: str) -> Any:
        import anyio.to_thread
        from mcp.server.auth.provider import AccessToken

        admitted = _ADMITTED.get()
        if admitted is not None:  # the gate verified ``token`` for this very request
            if admitted.tenant is None:
                return None
            return AccessToken(
                token=token, client_id=admitted.key_id, scopes=[], subject=admitted.tenant
            )
        key = await anyio.to_thread.run_sync(self.keys.verify, token)
        if key is None:
            return None
        return AccessToken(token=token, client_id=key.id, scopes=[], subject=key.tenant)


def _key_tenant(keys: KeyStore, secret: str) -> Callable[[], str]:
    """The tenant of ``secret``, checked on every tool call (stdio): a key revoked while
    the server runs is refused from its next call on, as over HTTP. The check is the
    HTTP server's: :meth:`KeyStore.cached` answers for ``cache_ttl`` seconds after a
    table read, so most calls read nothing and a revocation made elsewhere is seen
    within that time."""

    def tenant() -> str:
        key = keys.cached(secret) or keys.verify(secret)
        if key is None:
            raise Unauthenticated(
                "the API key of this MCP server is revoked or no longer valid: no tool "
                "runs with it; restart the server with a valid key"
            )
        return key.tenant

    return tenant


def build_mcp_server(
    tenants: TenantMemories,
    *,
    tenant: str | None = None,
    keys: KeyStore | None = None,
    api_key: str | None = None,
    http_url: str | None = None,
    tokenizer: Tokenizer | None = None,
) -> Any:
    """An MCP server whose tools act for one key's tenant (stdio) or for each request's
    key (HTTP).

    stdio: give ``keys`` and ``api_key`` (the key is checked again on every tool call,
    so a revoked key stops working), or a fixed ``tenant`` (no key at all: for
    embedding in a process that authenticated its caller itself). HTTP: give ``keys``
    and ``http_url`` (the public base URL, e.g. ``http://127.0.0.1:8765``) for
    streamable HTTP with per-request keys.
    """
    server_cls, major = _sdk()
    if (tenant is None) == (keys is None):
        raise ValueError("give either a fixed tenant or a KeyStore")
    if api_key is not None and keys is None:
        raise ValueError("api_key needs the KeyStore to check it in")
    resolver: Callable[[], str]
    if tenant is not None:
        resolver = lambda: tenant  # noqa: E731
    elif api_key is not None and keys is not None:
        resolver = _key_tenant(keys, api_key)
    else:
        resolver = _http_tenant
    tools = MemoryTools(tenants, resolver, tokenizer or default_tokenizer())
    kwargs: dict[str, Any] = {
        "log_level": "WARNING",
        "instructions": "Long-term memory of contextos. Every tool is scoped to the tenant "
        "of the configured API key.",
    }
    if keys is not None and api_key is None:
        kwargs.update(_auth_kwargs(keys, http_url or "http://127.0.0.1:8765"))
    if major == "2":
        kwargs["version"] = package_version()
    server = server_cls("contextos", **kwargs)
    if major == "1":  # FastMCP 1.x has no version argument; its low-level server does
        server._mcp_server.version = package_version()
    from ..agent.mcp_tools import mcp_functions  # the self-editing memory tools

    windows = WindowSlots()
    for fn in [*tools.functions(), *mcp_functions(lambda: tenants.get(resolver()))]:
        tool = _on_its_threads(fn, windows, resolver)
        server.add_tool(_guard(tool), name=fn.__name__, description=_described(fn))
        registered = server._tool_manager.get_tool(fn.__name__)
        _refuse_unknown_arguments(registered)
        if fn.__name__ in TOOL_MODELS:
            registered.parameters = advertised_schema(fn.__name__, registered.parameters)
    if major == "2":
        _refuse_unknown_prompts(server)
        _refuse_unknown_tools(server)
    server.contextos_major = major
    return server


def _described(fn: Callable[..., Any]) -> str:
    """A tool's description: its docstring without the source's indentation. Why: the
    raw docstrings sent 328 spaces of it with every ``tools/list`` (a review)."""
    return inspect.cleandoc(fn.__doc__ or "")


#: What an unknown tool's error adds for a name a model may guess (erasing a user).
_NOT_A_TOOL = {
    "forget": "erasing a whole user or session is the operator's, with contextos forget, "
    "not a tool's; delete_memory deletes one memory",
}


def _refuse_unknown_tools(server: Any) -> None:
    """Answer ``tools/call`` of a tool ``server`` does not have with a tool error that
    quotes the name bounded and escaped (:func:`~contextos.errors.quoted`) and lists
    the tools there are.

    Why: the SDK answered ``Unknown tool: <name>`` with the name whole and raw: a
    900,000-character name got a 900 KB answer, an ESC sequence or a newline in it
    went back as sent, and a model that guessed a tool (``forget``) was not told which
    tools exist (a review; ``prompts/get`` had the same fix). A tool error, as the SDK
    answered, so the model reads it and can call the right tool."""
    import mcp_types as types

    from ..errors import quoted

    low = server._lowlevel_server
    served = low.get_request_handler("tools/call")
    if served is None:  # pragma: no cover - an SDK that serves no tools at all
        return

    tools = server._tool_manager

    async def call_tool(ctx: Any, params: Any) -> Any:
        if tools.get_tool(params.name) is not None:
            return await served.handler(ctx, params)
        names = [tool.name for tool in tools.list_tools()]
        why = _NOT_A_TOOL.get(params.name)
        message = (
            f"Unknown tool: {quoted(params.name)}{f' ({why})' if why else ''}; "
            f"the tools are {', '.join(names)}"
        )
        text = types.TextContent(type="text", text=message)
        return types.CallToolResult(content=[text], is_error=True)

    low.add_request_handler("tools/call", served.params_type, call_tool)


def _refuse_unknown_prompts(server: Any) -> None:
    """Answer ``prompts/get`` of a prompt ``server`` does not have (it has none) with the
    JSON-RPC error the MCP specification names for it, invalid params (-32602), quoting
    the name as ``repr`` writes it, and log nothing.

    Why: the SDK raised ``ValueError("Unknown prompt: <name>")``, which its dispatcher
    logged at ERROR with a traceback of about 130 lines holding the name as sent (an
    ESC sequence in it reached the operator's terminal) and answered with code 0. Any
    key holder could write thousands of such lines a second (a review). The prompts
    capability stays advertised and ``prompts/list`` answers an empty list, as before,
    so a client that lists prompts gets no error. A prompt that exists would still go
    to the SDK's handler. ``resources/read`` of an unknown URI needs nothing here: the
    SDK answers it with -32602 and logs it at INFO only (below the server's WARNING),
    the URI ``repr``'d. mcp 2.x only: 1.x's ``FastMCP`` is left as it is."""
    import mcp_types as types
    from mcp.shared.exceptions import MCPError

    low = server._lowlevel_server
    served = low.get_request_handler("prompts/get")
    if served is None:  # pragma: no cover - an SDK that serves no prompts at all
        return

    async def get_prompt(ctx: Any, params: Any) -> Any:
        if params.name not in {prompt.name for prompt in await server.list_prompts()}:
            message = f"Unknown prompt: {params.name!r}"
            raise MCPError(code=types.INVALID_PARAMS, message=message)
        return await served.handler(ctx, params)

    low.add_request_handler("prompts/get", served.params_type, get_prompt)


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
    and each key is held to ``rate_limit`` (429 + Retry-After).

    Stateless: every POST gets a fresh transport and nothing outlives it. The SDK's
    default keeps each ``initialize`` as a session for 30 minutes under one
    server-wide cap (10,000), so a single key opening sessions it never closes
    would lock every other tenant out (503) and grow the process by hundreds of
    megabytes. The tools need no session: each request's key names its tenant,
    and a revoked key fails on its next request.

    Each answer is one JSON body, not an SSE stream: the official client refuses any
    SSE event over 1 MiB, so a list page, a real-budget window or the answer to a
    large add failed in the client (the add stored, reported as failed, stored again
    on a retry). No tool sends anything mid-call and nothing outlives a request, so
    no answer needs a stream.

    The SDK's DNS-rebinding check is off (:func:`_any_host`): every request needs a
    key, which a page that rebinds a name to this host does not have."""
    if server.contextos_major == "2":
        app = server.streamable_http_app(
            host=host, stateless_http=True, json_response=True, transport_security=_any_host()
        )
    else:  # FastMCP 1.x takes these as settings
        server.settings.host = host
        server.settings.stateless_http = True
        server.settings.json_response = True
        server.settings.transport_security = _any_host()
        app = server.streamable_http_app()
    auth = Authenticator(
        keys,
        admin_key=None,
        limiter=TokenBucketLimiter(rate_limit or RateLimit()),
        failures=TokenBucketLimiter(auth_failures or DEFAULT_AUTH_FAILURES),
    )
    # Their refusals (401, 403, 413, 429) as JSON-RPC errors: the one shape an MCP
    # client reads (errors.rpc_error_body).
    gate = AuthGate(GateKey(WholeBody(app)), auth, ("/mcp",), jsonrpc_under=("/mcp",))
    return BodyLimitMiddleware(gate, max_bytes=max_body_bytes, jsonrpc_under=("/mcp",))


def _any_host() -> Any:
    """The SDK's transport security, its DNS-rebinding protection off: any ``Host`` and
    ``Origin`` header is served.

    Why: on a loopback ``--host`` the SDK answered every request whose ``Host`` was not
    ``127.0.0.1``, ``localhost`` or ``[::1]`` with 421 "Invalid Host header" in plain
    text, so a reverse proxy on the same host that keeps the public name (Caddy's and
    Traefik's default, nginx with ``proxy_set_header Host $host``) could not reach it;
    the one way round was to listen on every interface (a review). The protection is
    for servers that answer anyone who reaches them: a page that rebinds its name to
    this host can send requests here, but not a key (a browser adds no
    ``Authorization`` or ``X-API-Key`` header of its own), and every request without a
    valid key is refused 401 before the SDK sees it. ``contextos serve`` checks no
    ``Host`` either."""
    from mcp.server.transport_security import TransportSecuritySettings

    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


_log = logging.getLogger(__name__)


class WholeBody:
    """Pure ASGI middleware: read a request's whole body before the SDK sees it.

    The SDK reads the body inside a catch-all that logs any failure with a full
    traceback at ERROR ("Error handling POST request"): every client that hung up
    before its body was in (anyone with a key, as often as they like) left a
    ClientDisconnect traceback in the log. Here a disconnect during the body is one
    DEBUG line and the request goes no further; a body over the limit raises
    ``PayloadTooLarge`` to :class:`BodyLimitMiddleware` (a 413) instead of passing
    through the SDK's catch-all. Bodies are already bounded by that limit, so
    buffering costs nothing the SDK would not have buffered itself (it reads the
    whole body too). Anything the app raises later is untouched.

    A request whose ``id`` is neither a string nor an integer is answered here, 400
    with ``-32600`` (stdio answers such a line with the same error): the SDK read it as
    a notification (no answer due: 202, no body) and ran nothing, so the client waited
    for an answer that never came. So is JSON that is not one JSON-RPC message
    (:func:`_body_refused`), with its id, as stdio answers it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "GET":
            await _no_event_stream(send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                _log.debug("MCP client disconnected before its request body arrived")
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        if scope.get("method") == "POST":
            if not _json_content(scope):
                await _refuse_request(send, _NOT_JSON_CONTENT, request_id=_body_id(whole))
                return
            refused = _body_refused(whole)
            if refused is not None:
                code, message, request_id = refused
                await _refuse_request(send, message, code, request_id)
                return
            if _bad_request_id(whole):
                await _refuse_request(send, _BAD_ID)
                return
        body: dict[str, Any] | None = {"type": "http.request", "body": whole}

        async def replay() -> dict[str, Any]:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return dict(await receive())  # after the body: the client's disconnect

        await self.app(scope, replay, send)


_NOT_JSON_CONTENT = "Invalid request: the body must be sent with Content-Type: application/json"


def _json_content(scope: dict[str, Any]) -> bool:
    """Whether the request says its body is JSON (``Content-Type: application/json``),
    as the SDK requires. Why here: the SDK refused any other with a plain-text 400
    "Invalid Content-Type header", which the official client reports only as "Server
    returned an error response" (a review); this answers the same 400 as a JSON-RPC
    error with the request's id."""
    return headers_of(scope).get("content-type", "").lower().startswith("application/json")


def _body_id(body: bytes) -> str | int | None:
    """The ``id`` of a request body (see :func:`_request_id`), or None."""
    try:
        return _request_id(body.decode("utf-8"))
    except UnicodeDecodeError:
        return None


async def _no_event_stream(send: Any) -> None:
    """405 for ``GET /mcp``, as the MCP specification allows a server that offers no
    event stream. Why: the SDK answered it with an event stream that never ended and
    never carried anything (the transport is stateless: no request can reach it), held
    a file descriptor and memory each, with no cap, and outlived the revocation of the
    key that opened it (a review: 200 streams, 200 descriptors and 12 MB)."""
    import json

    message = "Method not allowed: this server offers no event stream; POST requests"
    error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": message}}
    body = json.dumps(error).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 405,
            "headers": [
                (b"allow", b"POST"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_BAD_ID = (
    "Invalid request: the message is JSON but not a JSON-RPC 2.0 message its server can "
    "answer (its id must be a string or an integer)"
)


def _bad_request_id(body: bytes) -> bool:
    """Whether ``body`` is one JSON-RPC request (an object with a string ``method``) whose
    ``id`` is there but neither a string nor an integer (an object, a list, a float, a
    bool, null: MCP allows none). A body that is not such JSON is left to the SDK."""
    import json

    if b'"id"' not in body:
        return False
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return False
    if not isinstance(value, dict) or not isinstance(value.get("method"), str):
        return False
    if "id" not in value:
        return False
    request_id = value["id"]
    return isinstance(request_id, bool) or not isinstance(request_id, str | int)


def _body_refused(body: bytes) -> tuple[int, str, str | int | None] | None:
    """The error (code, message, id) for a POST body that is JSON but not one JSON-RPC
    2.0 message the SDK reads: stdio's check of a line (:func:`_refused`). None for a
    message, and for a body that is not JSON (the SDK's parse error answers it).

    Why: the SDK answered JSON that is no JSON-RPC message (a batch, ``"jsonrpc":
    "1.0"``, ``params`` a list) with ``-32602``, id null and pydantic's dump of a
    thousand characters, where stdio answers ``-32600`` with the request's id (a
    review)."""
    try:
        _read_message(body)
    except pydantic.ValidationError as exc:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return _refused(exc, text, body)
    return None


def _read_message(data: str | bytes) -> Any:
    """``data`` read as one JSON-RPC 2.0 message by the SDK's own model, as its
    transports read one (``pydantic.ValidationError`` when it is not one)."""
    try:
        import mcp_types as types
    except ImportError:  # pragma: no cover - mcp 1.x (HTTP only)
        from mcp.types import JSONRPCMessage

        return pydantic.TypeAdapter(JSONRPCMessage).validate_json(data)
    return types.jsonrpc_message_adapter.validate_json(data, by_name=False)


#: The answer to JSON that is not one JSON-RPC 2.0 message, over stdio and HTTP alike.
_NOT_JSON_RPC = "Invalid request: the message is JSON but not a JSON-RPC 2.0 message"


def _refused(
    exc: pydantic.ValidationError, text: str, raw: bytes
) -> tuple[int, str, str | int | None] | None:
    """The JSON-RPC error (code, message, the request's id) for a message (``text``,
    ``raw`` decoded) that :func:`_read_message` refused with ``exc``: JSON that is not a
    JSON-RPC message is an invalid request (``-32600``) with its string or integer
    id, JSON the SDK's parser refuses is :func:`_unparsed`'s. None when it is not
    JSON at all. One check for stdio's lines and HTTP's bodies."""
    unreadable = [e for e in exc.errors() if e["type"] == "json_invalid"]
    if unreadable:
        return _unparsed(text, raw, unreadable[0]["msg"])
    return -32600, _NOT_JSON_RPC, _request_id(text)  # invalid request


async def _refuse_request(
    send: Any, message: str, code: int = -32600, request_id: str | int | None = None
) -> None:
    """Answer 400 with a JSON-RPC error (by default invalid request, id null)."""
    import json

    error = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    payload = json.dumps(error).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


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


#: The longest stdio line read (the HTTP transport's body limit): a longer one is
#: dropped up to its newline and answered with an error instead of filling memory.
MAX_STDIO_LINE = DEFAULT_MAX_BODY


#: How long a stdio server whose stdin closed still lets running requests finish and
#: answer (see :class:`_Answers`).
EOF_GRACE_S = 60.0


def run_stdio(server: Any, fd: int = 0) -> None:
    """Serve ``server`` (from :func:`build_mcp_server`) over stdin/stdout until EOF.

    Not the SDK's ``run("stdio")``, for two reasons. Its stdin reader blocks in a
    worker thread, so SIGTERM (turned into a KeyboardInterrupt by the CLI) waited
    behind that read until the client sent another line or closed stdin: the server
    kept running. Here stdin is awaited on the event loop, so the interrupt cancels
    the read at once and the store closes. And its reader decoded with
    ``errors="replace"``: invalid UTF-8 was stored as U+FFFD and a line that was not
    JSON (a lone-surrogate escape too) got no answer, where HTTP refuses both. Here a
    line must be strict UTF-8 and JSON, else it is answered with a JSON-RPC parse
    error and nothing else happens; JSON that is not a JSON-RPC message (a batch,
    ``{}``, a method that is not a string) is answered with an invalid-request error,
    where the SDK answered nothing; so is a line over :data:`MAX_STDIO_LINE`. Each such
    error carries the line's ``id`` wherever it sits in the object (:class:`_IdScan`),
    else id null. stdout is still
    the SDK's (it keeps stray output off the wire). A client that goes away mid-call
    (stdout closed) ends the server as EOF does: exit 0, no traceback.
    """
    import anyio

    try:
        anyio.run(_serve_stdio, server, fd)
    except BaseException as exc:
        if not _client_gone(exc):
            raise
        _log.info("the MCP client closed stdout: stopping")


def _client_gone(exc: BaseException) -> bool:
    """Whether ``exc`` (what the stdio server raised) says only that the client went
    away: a broken pipe or a closed stream, alone or as every member of an exception
    group. The SDK's stdout writer then failed its flush and its task group raised an
    ExceptionGroup: a 74-line traceback and exit status 1 for a client that simply
    died, after every acknowledged write was stored."""
    import anyio

    if isinstance(exc, BaseExceptionGroup):
        return all(_client_gone(e) for e in exc.exceptions)
    gone = (BrokenPipeError, ConnectionResetError)
    return isinstance(exc, (*gone, anyio.BrokenResourceError, anyio.ClosedResourceError))


async def _serve_stdio(server: Any, fd: int) -> None:
    import anyio
    from mcp.server.stdio import stdio_server
    from mcp.shared._context_streams import create_context_streams
    from mcp.shared.message import SessionMessage

    low = getattr(server, "_lowlevel_server", None) or server._mcp_server
    done = anyio.Event()

    class _NoLines:  # the SDK's own stdin reader: reads nothing, ends with the server
        def __aiter__(self) -> _NoLines:
            return self

        async def __anext__(self) -> str:
            await done.wait()
            raise StopAsyncIteration

    async with stdio_server(stdin=_NoLines()) as (_, write_stream):  # type: ignore[arg-type]
        read_writer, read_stream = create_context_streams[SessionMessage | Exception](0)
        answers = _Answers(write_stream)
        lines = _StdioLines(fd, read_writer, write_stream, answers)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lines.run)
            try:
                await low.run(read_stream, answers, low.create_initialization_options())
            finally:
                done.set()
                tg.cancel_scope.cancel()


class _Answers:
    """The server's side of stdout, counting the requests it still owes an answer.

    Why: at EOF on stdin the SDK cancels every request still running ("their callers
    are gone"). Over stdio, EOF only means the client has nothing more to send; a
    script that pipes its requests in (``cat calls.jsonl | contextos mcp``) still
    reads stdout, and got no answer to any call still running (an ``add_memory`` cut
    off mid-write). :class:`_StdioLines` counts each request it passes on
    (:meth:`expect`); this stream uncounts it when its answer is written; at EOF the
    reader waits until nothing is owed (:meth:`settled`) before it ends the input."""

    def __init__(self, stream: Any) -> None:
        import anyio

        self.stream = stream
        self.owed: Counter[str | int] = Counter()
        self.idle = anyio.Event()
        self.idle.set()

    def expect(self, request_id: str | int) -> None:
        import anyio

        if not self.owed:
            self.idle = anyio.Event()
        self.owed[_same_id(request_id)] += 1

    def cancelled(self, params: Any) -> None:
        """The client cancelled a request (``params`` of ``notifications/cancelled``):
        no answer is owed for it. Its id is read as the SDK reads it: a bool is no id
        (``true`` would alias request 1), and ``"7"`` names request 7."""
        from mcp.shared.jsonrpc_dispatcher import cancelled_request_id_from_params

        request_id = cancelled_request_id_from_params(params)
        if request_id is not None:
            self._answered(request_id)

    async def settled(self, grace_s: float) -> None:
        """Until every request passed on is answered, or ``grace_s`` passed (a call
        that never ends must not keep a server whose client left alive for ever)."""
        import anyio

        with anyio.move_on_after(grace_s):
            await self.idle.wait()
        if self.owed:
            _log.warning(
                "stdin closed; %d request(s) still running after %.0f s are cancelled",
                sum(self.owed.values()),
                grace_s,
            )

    def _answered(self, request_id: str | int) -> None:
        """One answer fewer owed for ``request_id``, if one was (keyed as the SDK keys it)."""
        key = _same_id(request_id)
        if self.owed[key] <= 0:
            return
        self.owed[key] -= 1
        if self.owed[key] == 0:
            del self.owed[key]
        if not self.owed:
            self.idle.set()

    async def send(self, item: Any) -> None:
        import mcp_types as types

        await self.stream.send(item)
        message = getattr(item, "message", None)
        if not isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
            return
        if message.id is not None:
            self._answered(message.id)

    async def __aenter__(self) -> _Answers:
        await self.stream.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> bool | None:
        result: bool | None = await self.stream.__aexit__(*exc)
        return result

    def __getattr__(self, name: str) -> Any:  # aclose, clone, statistics, ...
        return getattr(self.stream, name)


def _same_id(request_id: str | int) -> str | int:
    """The key the SDK matches a request id by (``"7"`` and ``7`` are one id)."""
    from mcp.shared.dispatcher import coerce_request_id

    return coerce_request_id(request_id)


class _StdioLines:
    """stdin split into lines, each one strict UTF-8 JSON-RPC (see :func:`run_stdio`):
    a message goes to the server (``read_writer``); a line that cannot be read is
    answered on ``write_stream`` with a JSON-RPC error and goes nowhere else. At EOF
    the input ends once every request passed on is answered (:class:`_Answers`)."""

    def __init__(self, fd: int, read_writer: Any, write_stream: Any, answers: _Answers) -> None:
        self.fd = fd
        self.read_writer = read_writer
        self.write_stream = write_stream
        self.answers = answers

    async def refuse(self, code: int, message: str, request_id: str | int | None = None) -> None:
        import contextlib

        import anyio
        import mcp_types as types
        from mcp.shared.message import SessionMessage

        error = types.ErrorData(code=code, message=message)
        reply = types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error)
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self.write_stream.send(SessionMessage(reply))

    async def handle(self, raw: bytes) -> None:
        import mcp_types as types
        from mcp.shared.message import SessionMessage

        line = raw.rstrip(b"\r")
        if not line.strip():
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            await self.refuse(
                types.PARSE_ERROR, "Parse error: the line is not valid UTF-8", _line_id(line)
            )
            return
        try:
            message = _read_message(text)
        except pydantic.ValidationError as exc:
            # JSON, but not a JSON-RPC message (the SDK dropped it: no answer), or JSON
            # its parser refuses. Its id wherever it sits (the TypeScript SDK writes it
            # last): the call fails at once instead of waiting out the client's timeout.
            refused = _refused(exc, text, line)
            if refused is not None:
                await self.refuse(*refused)
            else:
                request_id = _request_id(text)
                if request_id is None:
                    request_id = _line_id(line)
                await self.refuse(
                    types.PARSE_ERROR, "Parse error: the line is not valid JSON", request_id
                )
            return
        if _bad_request_id(line):  # the SDK took it for a notification: no answer, ever
            await self.refuse(types.INVALID_REQUEST, _BAD_ID)
            return
        if isinstance(message, types.JSONRPCRequest):
            self.answers.expect(message.id)
        elif isinstance(message, types.JSONRPCNotification) and (
            message.method == "notifications/cancelled"
        ):
            self.answers.cancelled(message.params)
        await self.read_writer.send(SessionMessage(message))

    async def run(self) -> None:
        async with self.read_writer:
            pending = b""
            dropped: _IdScan | None = None  # the rest of a line over MAX_STDIO_LINE
            while chunk := await _read_some(self.fd):
                if dropped is not None:
                    end = chunk.find(b"\n")
                    dropped.feed(chunk if end < 0 else chunk[:end])
                    if end < 0:
                        continue
                    await self.refuse_long(dropped)
                    dropped, chunk = None, chunk[end + 1 :]
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    await self.handle(line)
                if len(pending) > MAX_STDIO_LINE:  # not kept: only its id is looked for
                    dropped = _IdScan()
                    dropped.feed(pending)
                    pending = b""
            if dropped is not None:
                await self.refuse_long(dropped)
            elif pending:
                await self.handle(pending)
            await self.answers.settled(EOF_GRACE_S)

    async def refuse_long(self, line: _IdScan) -> None:
        """Answer a line over :data:`MAX_STDIO_LINE` once it has ended, with the id
        :class:`_IdScan` found in it, wherever it sat (the TypeScript SDK writes it
        last, after a ``params`` of megabytes)."""
        import mcp_types as types

        await self.refuse(
            types.INVALID_REQUEST,
            f"the line is too long (over {MAX_STDIO_LINE:,} bytes)",
            line.request_id(),
        )


def _request_id(text: str) -> str | int | None:
    """The ``id`` of a JSON line that is not a valid JSON-RPC message, when it is an
    object with a string or integer ``id`` (so the client can match the error to its
    request), else None."""
    import json

    try:  # JSON to pydantic's parser; the standard one may still refuse it (nesting)
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    request_id = value.get("id") if isinstance(value, dict) else None
    if isinstance(request_id, str) or (
        isinstance(request_id, int) and not isinstance(request_id, bool)
    ):
        return request_id
    return None


def _unparsed(text: str, raw: bytes, error: str) -> tuple[int, str, str | int | None] | None:
    """The JSON-RPC error (code, message, the request's id) for ``text`` (``raw``
    decoded) that the SDK's JSON parser refused with ``error`` but that is JSON: nested
    past its recursion limit, or holding a lone-surrogate escape (RFC 8259 allows
    ``\\ud800``; JavaScript's ``JSON.stringify`` writes one). None when it is not JSON.

    Why one rule for stdio and streamable HTTP: over HTTP the SDK answered both with a
    misleading ``-32700`` ("unexpected end of hex escape", a column number) and id null,
    while stdio named the cause and the request's id (a review). JSON-RPC's codes are
    written out: ``mcp_types`` is mcp 2.x's, and HTTP serves 1.x too."""
    if "recursion limit" in error:
        message = "Invalid request: the message nests too deeply"
        code = -32600  # invalid request
    elif _loads(text):  # Python's parser takes lone surrogates
        message, code = _LONE_SURROGATE, -32700  # parse error
    else:
        return None
    request_id = _request_id(text)
    return code, message, _line_id(raw) if request_id is None else request_id


def _loads(text: str) -> bool:
    """Whether Python's JSON parser reads ``text`` (it takes lone-surrogate escapes,
    which pydantic's refuses)."""
    import json

    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


_LONE_SURROGATE = (
    "Parse error: the line holds a lone surrogate escape (such as \\ud800): JSON text, "
    "but not valid Unicode"
)


def _line_id(line: bytes) -> str | int | None:
    """The request id of a line that cannot be parsed whole (see :class:`_IdScan`)."""
    scan = _IdScan()
    scan.feed(line)
    return scan.request_id()


#: The most steps (a string, an escape, a bracket or separator each) :class:`_IdScan`
#: takes on one line; past it the line's id is looked for no further. Why a bound: a
#: line of a million brackets or escapes costs a step each, on the event loop.
MAX_ID_SCAN_STEPS = 1_000_000
#: The most bytes of an ``id`` value (or a top-level key) :class:`_IdScan` reads.
MAX_ID_BYTES = 1024
#: A string's body up to its closing quote (or a backslash the piece ends with): its
#: escapes are skipped here, not stepped through one by one.
_STRING_BODY = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)
#: What the scan stops at outside strings: among the top-level members, and deeper.
_MEMBERS = re.compile(rb'["{}\[\],:]')
_NESTING = re.compile(rb'["{}\[\]]')


class _IdScan:
    """The ``id`` member of a JSON object, found wherever it sits among the top-level
    members, in a line fed in pieces that is never parsed whole (too long to keep, not
    valid UTF-8, nested past the parser, or with a lone-surrogate escape).

    Why: such a line was answered with the id read from its first bytes, and only when
    ``id`` came first. The TypeScript SDK (Claude Desktop and Code, Cursor, ...)
    writes ``{"method", "params", "jsonrpc", "id"}``: its calls got ``"id": null``,
    which the client cannot match, and waited out its 60 s timeout instead of reading
    the error.

    It follows strings (and their escapes) and the nesting depth only, skipping what
    lies between with a regular expression, and keeps nothing but the last top-level
    key and the ``id`` value (at most :data:`MAX_ID_BYTES` each): memory stays
    constant and work is linear, at most :data:`MAX_ID_SCAN_STEPS` steps. The last
    ``id`` member wins, as in the parsers; one that is not a string or an integer
    counts as none."""

    def __init__(self) -> None:
        self.depth = 0
        self.done = False  # the top-level value is not an object, or it has ended
        self.in_string = False
        self.escaped = False  # a string's backslash was the last byte fed
        self.at_key = False  # at depth 1, a key comes next (after "{" or ",")
        self.key: bytearray | None = None  # the top-level key being read
        self.last_key: bytes | None = None
        self.value: bytearray | None = None  # the top-level "id" value being read
        self.found: str | int | None = None
        self.steps = 0

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n and not self.done:
            self.steps += 1
            if self.steps > MAX_ID_SCAN_STEPS:
                self.done = True
                return
            if self.in_string:
                if self.escaped:  # the byte after a backslash ends nothing
                    self._keep(data[i : i + 1])
                    self.escaped, i = False, i + 1
                    continue
                body = _STRING_BODY.match(data, i)  # always matches, maybe nothing
                end = i if body is None else body.end()
                self._keep(data[i : end + 1])
                if end == n:
                    return
                i = end + 1
                if data[end] == 0x5C:  # a backslash, the last byte fed
                    self.escaped = True
                else:
                    self._string_ended()
                continue
            stop = (_MEMBERS if self.depth == 1 else _NESTING).search(data, i)
            end = n if stop is None else stop.start()
            self._keep(data[i:end])  # a number's digits
            if stop is None:
                return
            i = end + 1
            self._structure(data[end : end + 1])

    def request_id(self) -> str | int | None:
        """The id found (an ``id`` still being read counts: the line ended there)."""
        if self.value is not None:
            self._value_ended()
        return self.found

    def _keep(self, data: bytes) -> None:
        for held in (self.key, self.value):
            if held is not None:
                held += data[: MAX_ID_BYTES + 1 - len(held)]

    def _string_ended(self) -> None:
        self.in_string = False
        if self.key is not None:  # the key's closing quote was kept
            self.last_key, self.key = bytes(self.key[:-1]), None

    def _structure(self, char: bytes) -> None:
        if char == b'"':
            self.in_string = True
            self._keep(char)  # a string id's opening quote
            if self.depth == 1 and self.at_key:
                self.key, self.at_key = bytearray(), False
        elif char in b"{[":
            if self.depth == 0 and char == b"[":
                self.done = True  # a batch, or not an object: no id of its own
            self.depth += 1
            self.at_key = self.depth == 1
            if self.value is not None:  # an object or array: no id
                self.value = None
                self.found = None
        elif char in b"}]":
            if self.depth == 1 and self.value is not None:
                self._value_ended()
            self.depth -= 1
            self.done = self.depth <= 0
        elif self.depth == 1 and char == b",":
            if self.value is not None:
                self._value_ended()
            self.at_key = True
        elif self.depth == 1 and char == b":" and self.last_key is not None:
            if _json_text(self.last_key) == "id":
                self.value = bytearray()
            self.last_key = None

    def _value_ended(self) -> None:
        token, self.value = self.value, None
        value = None if token is None or len(token) > MAX_ID_BYTES else _json_value(bytes(token))
        text = isinstance(value, str) and not _lone_surrogate(value)
        whole = isinstance(value, int) and not isinstance(value, bool)
        self.found = value if text or whole else None


def _json_text(key: bytes) -> Any:
    """A key's text (its bytes between the quotes), or None when it is not a JSON string."""
    return _json_value(b'"' + key + b'"') if len(key) <= MAX_ID_BYTES else None


def _json_value(token: bytes) -> Any:
    """The JSON value ``token`` reads as, or None."""
    import json

    try:
        return json.loads(token)
    except (ValueError, RecursionError):
        return None


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


async def _read_some(fd: int) -> bytes:
    """The next bytes on ``fd`` (b"" at EOF), awaited on the event loop where the fd
    allows it (pipes, terminals, sockets), so cancelling never waits on a blocked read;
    else (a regular file, /dev/null, Windows) read in a worker thread."""
    import os

    import anyio
    import anyio.to_thread

    try:
        await anyio.wait_readable(fd)
    except (OSError, NotImplementedError, ValueError):
        return await anyio.to_thread.run_sync(os.read, fd, 65536, abandon_on_cancel=True)
    return os.read(fd, 65536)
