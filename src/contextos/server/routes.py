"""HTTP routes mirroring the Python API: ``Memory`` methods and the session log.

Each handler parses, calls one API method on the caller's tenant, and shapes
the result; there is no branching beyond validation. Handlers are sync: FastAPI
runs them in its threadpool, which suits the blocking store and embedder. The
routes that write are async and make their call on the write threads instead
(:func:`~contextos.server.write_threads.run_write`), so writes waiting for the
database's write lock never take the threads reads need.
(No ``from __future__ import annotations`` here: FastAPI reads the handlers'
annotations at runtime, and they name types local to the router factories.)
"""

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request, Response, Security
from fastapi.security import HTTPBearer
from pydantic import AfterValidator, BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.convertors import PathConvertor, register_url_convertor

from contextos.engine.session import Session, never_sent
from contextos.llm.tokens import Tokenizer

from ..store.base import Erasure, ErasurePending
from ..types import Scope
from . import ops
from . import schemas as s
from .auth import Authenticator, Principal
from .compacting import compact_session
from .gate import principal_in
from .tenants import TenantMemories
from .window_slots import WindowSlots
from .windowing import build_window, window_answer
from .write_threads import run_write

if TYPE_CHECKING:
    from ..memory import Memory

log = logging.getLogger("contextos.server")
AnswerT = TypeVar("AnswerT", bound=BaseModel)

bearer = HTTPBearer(auto_error=False, description="A tenant API key: `ctx_...`")

#: Documented error answers of every route (one JSON shape, see app.error_body).
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorOut, "description": text}
    for code, text in (
        (400, "Invalid request (e.g. an unscoped search)"),
        (401, "Missing or invalid API key"),
        (403, "Key not allowed here"),
        (404, "Not found in the caller's tenant"),
        (413, "Body too large"),
        (422, "Malformed body or parameters"),
        (429, "Rate limited; see Retry-After"),
        (500, "The store failed on this request (StoreFault), or a server bug"),
        (503, "Store unavailable"),
    )
}

# Paths and query values pass the same checks as body fields (schemas.check_text: no NUL,
# valid Unicode), with the same limits.
IdPath = Annotated[str, Path(min_length=1, max_length=s.MAX_ID), AfterValidator(s.check_text)]
Limit = Annotated[int, Query(ge=1, le=s.MAX_LIST_LIMIT)]
Offset = Annotated[int, Query(ge=0, le=s.MAX_OFFSET)]
OptIdent = Annotated[
    str | None,
    Query(min_length=1, max_length=s.MAX_ID),
    AfterValidator(lambda v: None if v is None else s.check_text(v)),
]
#: Where a page of a session's turns starts: after this seq (-1: from the first).
AfterSeq = Annotated[int, Query(ge=-1, le=s.MAX_SEQ)]
#: A list key (``next_after`` of the page before): opaque, made by the store.
ListAfter = Annotated[str | None, Query(min_length=1, max_length=100)]
#: The order of ``GET /v1/sessions``: by last activity, oldest or newest first, or by id.
SessionOrder = Annotated[Literal["oldest", "newest", "id"], Query()]
#: A user/agent/session id in a path or a query, by the one id rule of the bodies (s.ScopeId).
#: In a path it is declared ``{session_id:anything}`` before a fixed last segment: the
#: routes are matched on the decoded path, so an id holding "/" (sent as "%2F" or as is)
#: was a bare 404 under every session route though the library takes it (a review); the
#: route's pattern is anchored at both ends, so the last segment still picks the route.
SessionPath = Annotated[IdPath, AfterValidator(s.check_scope_id)]


class AnythingConvertor(PathConvertor):
    """Starlette's ``path`` converter, of any character: its regex ``.*`` is compiled
    without DOTALL, so an id holding a newline ("team%0Achat", which ``POST
    /v1/memories`` and the library take, and ``GET /v1/sessions`` lists) matched no
    route, a bare 404 under every session route (a review)."""

    regex = r"[\s\S]*"


#: The converter's name in a route's path (``{session_id:anything}``), registered once.
ANYTHING = "anything"
register_url_convertor(ANYTHING, AnythingConvertor())

#: ``DELETE``'s precondition on the text (``PATCH``'s ``expected_text``, in the query).
ExpectedText = Annotated[
    str | None,
    Query(min_length=1, max_length=s.MAX_TEXT),
    AfterValidator(lambda v: v if v is None else s.check_text(v)),
]
OptScopeId = Annotated[
    OptIdent, AfterValidator(lambda v: None if v is None else s.check_scope_id(v))
]


def json_response(
    model: BaseModel, status_code: int = 200, *, exclude_none: bool = False
) -> Response:
    """``model`` as the response body, serialised once.

    Why not return the model: with a ``response_model``, FastAPI dumps what a route
    returns to Python objects, validates them against the model again and only then
    serialises them, three passes over every hit of every search. The routes keep
    ``response_model`` for the OpenAPI schema; a Response passes through it untouched."""
    body = model.model_dump_json(exclude_none=exclude_none)
    return Response(body, status_code, media_type="application/json")


def caller(auth: Authenticator, request: Request) -> Principal:
    """The verified caller: from the AuthGate in front of the app (which has already
    charged its rate limit), or checked here when the routes are mounted without it."""
    principal = principal_in(request.scope)
    if principal is None:
        client = request.client.host if request.client else "unknown"
        principal = auth.admit(request.headers, client)
    return principal


def _added(mem: "Memory", body: s.AddRequest) -> Response:
    """``POST /v1/memories``'s write and its answer (made on the write thread too)."""
    records = s.RecordList(results=[s.RecordOut.of(r) for r in ops.add(mem, body)])
    return json_response(records, 201)


async def erased(
    erase: Callable[[], object],
    answer: Callable[[Erasure], AnswerT],
    mem: "Memory",
    request: Request,
) -> AnswerT | Response:
    """Run an erasure (a forget, a purge) on the tenant's write thread and ``answer``
    with what it returned (an ``Erasure``: memories, session logs and turns; a plain
    count is memories only); one that committed but left old bytes in the SQLite file
    (``ErasurePending``) is a 202 of the same answer with ``pending`` saying why. It
    was a 503 "busy, retry": the retry answered that nothing was left to erase, and how
    much had been was said nowhere (a review)."""
    try:
        done = await run_write(erase, tenant=mem.tenant, client_gone=request.is_disconnected)
    except ErasurePending as exc:
        log.warning("erasure left old bytes: %s", exc)
        pending = answer(_erasure(exc.erased)).model_copy(update={"pending": exc.reason})
        return json_response(pending, 202, exclude_none=True)
    return answer(_erasure(done))


def _erasure(done: object) -> Erasure:
    """What an erasure returned, as an ``Erasure`` (nothing counted: 0)."""
    if isinstance(done, Erasure):
        return done
    return Erasure(done if isinstance(done, int) else 0)


def _forgotten(body: s.ForgetRequest, erasure: Erasure) -> s.Forgotten:
    """``forget``'s answer: the memories, and the session logs and turns, it erased.
    Why the logs': a forget of a session's 500 turns answered ``forgotten: 0`` (a
    review)."""
    return s.Forgotten(
        user_id=body.user_id,
        session_id=body.session_id,
        forgotten=erasure.memories,
        sessions_forgotten=erasure.sessions,
        turns_forgotten=erasure.turns,
    )


def memory_router(auth: Authenticator, tenants: TenantMemories) -> APIRouter:
    """Routes under ``/v1/memories``, all scoped to the tenant of the caller's key."""
    router = APIRouter(prefix="/v1/memories", tags=["memories"], responses=ERRORS)

    async def tenant_memory(
        request: Request, _: Annotated[Any, Security(bearer)] = None
    ) -> "Memory":
        # Async, so FastAPI does not spend a thread hop on it: behind the AuthGate the
        # caller is already in the scope and the tenant's Memory is usually cached.
        principal = principal_in(request.scope)
        if principal is None:
            principal = await run_in_threadpool(caller, auth, request)
        tenant = auth.tenant_for(principal)
        memory = tenants.cached(tenant)
        if memory is None:
            memory = await run_in_threadpool(tenants.get, tenant)
        return memory

    Mem = Annotated[Any, Depends(tenant_memory)]

    @router.post(
        "",
        status_code=201,
        response_model=s.RecordList,
        summary="add",
        responses={409: {"model": s.ErrorOut, "description": "Lost a race: nothing written"}},
    )
    async def add(body: s.AddRequest, mem: Mem, request: Request) -> Response:
        """Store messages (or one text) as memories of the given user/agent/session."""
        return await run_write(
            lambda: _added(mem, body), tenant=mem.tenant, client_gone=request.is_disconnected
        )

    @router.post("/search", response_model=s.HitList, summary="search")
    def search(body: s.SearchRequest, mem: Mem) -> Response:
        """Hybrid search within a user/agent/session of the caller's tenant."""
        hits, cut = ops.search(mem, body)
        return json_response(s.HitList(results=[s.HitOut.of(h) for h in hits], cut=cut))

    @router.post(
        "/forget",
        response_model=s.Forgotten,
        response_model_exclude_none=True,
        summary="forget",
        responses={
            202: {"model": s.Forgotten, "description": "Erased, old bytes left: see pending"}
        },
    )
    async def forget(body: s.ForgetRequest, mem: Mem, request: Request) -> s.Forgotten | Response:
        """Erase everything stored about a user (records, history, vectors, session
        logs), or one session (its log and every memory of it): exactly one of
        ``user_id`` and ``session_id``."""
        return await erased(
            lambda: mem.forget(body.user_id, session_id=body.session_id),
            lambda erasure: _forgotten(body, erasure),
            mem,
            request,
        )

    @router.get("", response_model=s.RecordList, summary="get_all")
    def get_all(
        mem: Mem,
        user_id: OptScopeId = None,
        agent_id: OptScopeId = None,
        session_id: OptScopeId = None,
        limit: Limit = 100,
        offset: Offset = 0,
        after: ListAfter = None,
        memory_type: Annotated[list[s.MemoryTypeName] | None, Query(max_length=3)] = None,
        validity: Annotated[Literal["current", "all"], Query()] = "current",
    ) -> Response:
        """List memories, newest first, one page at a time: the next page is the one
        ``after`` this one's ``next_after`` (nothing skipped or repeated while others
        write), or at its ``next_offset``. ``memory_type`` (repeatable): only those
        types; ``validity=all``: superseded facts too."""
        page = s.ListRequest(
            user_id=user_id,
            agent_id=agent_id,
            session_id=session_id,
            limit=limit,
            offset=offset,
            after=after,
            memory_type=memory_type,
            validity=validity,
        )
        records, next_offset, next_after = ops.list_page(mem, page)
        out = [s.RecordOut.of(r) for r in records]
        listed = s.RecordList(
            results=out, limit=limit, offset=offset, next_offset=next_offset, next_after=next_after
        )
        return json_response(listed)

    @router.get("/{memory_id}", response_model=s.RecordOut, summary="get")
    def get(memory_id: IdPath, mem: Mem) -> s.RecordOut:
        """One memory by id (404 when it is not in the caller's tenant)."""
        return s.RecordOut.of(mem.get(memory_id))

    @router.patch(
        "/{memory_id}",
        response_model=s.RecordOut,
        summary="update",
        responses={409: {"model": s.ErrorOut, "description": "Changed since it was read"}},
    )
    async def update(
        memory_id: IdPath, body: s.UpdateRequest, mem: Mem, request: Request
    ) -> s.RecordOut:
        """Change a memory's text and/or metadata (logged in its history); with
        ``expected_text`` or ``expected_updated_at`` only if the memory is still as the
        caller read it (409 and nothing written otherwise)."""
        updated = await run_write(
            lambda: ops.update(mem, memory_id, body),
            tenant=mem.tenant,
            client_gone=request.is_disconnected,
        )
        return s.RecordOut.of(updated)

    @router.delete(
        "/{memory_id}",
        response_model=s.Deleted,
        response_model_exclude_none=True,
        summary="delete",
        responses={
            202: {"model": s.Deleted, "description": "Purged, old bytes left: see pending"},
            409: {"model": s.ErrorOut, "description": "Changed since it was read"},
        },
    )
    async def delete(
        memory_id: IdPath,
        mem: Mem,
        request: Request,
        purge: bool = False,
        expected_text: ExpectedText = None,
        expected_updated_at: Annotated[s.Time | None, Query()] = None,
    ) -> s.Deleted | Response:
        """Delete a memory. Its history keeps the DELETE event; with purge=true the
        text also leaves the history, the search index and every copy of it. With
        ``expected_text`` or ``expected_updated_at`` (as ``PATCH`` takes them) only if
        the memory is still as the caller read it (409 and nothing deleted otherwise)."""
        return await erased(
            lambda: mem.delete(
                memory_id,
                purge=purge,
                expected_text=expected_text,
                expected_updated_at=expected_updated_at,
            ),
            lambda _: s.Deleted(deleted=memory_id, purged=purge),
            mem,
            request,
        )

    @router.get("/{memory_id}/history", response_model=s.HistoryList, summary="history")
    def history(
        memory_id: IdPath, mem: Mem, after_seq: AfterSeq = -1, limit: Limit = 100
    ) -> Response:
        """A memory's changes, oldest first, one page at a time: the events numbered
        after ``after_seq`` (the first is 0); the next page is the one after this one's
        ``next_after_seq`` (null at the end). 404 when the caller's tenant has neither
        the memory nor any history of it; a deleted memory's history stays."""
        page = s.HistoryPageIn(after_seq=after_seq, limit=limit)
        events, after = ops.history_page(mem, memory_id, page)
        out = [s.HistoryOut.of(e) for e in events]
        return json_response(s.HistoryList(results=out, next_after_seq=after))

    return router


def session_router(
    auth: Authenticator,
    tenants: TenantMemories,
    tokenizer: Tokenizer,
    windows: WindowSlots | None = None,
) -> APIRouter:
    """Routes under ``/v1/sessions``: the durable, append-only session log. Windows are
    built in ``windows`` (the app's, shared with the inspector's window routes)."""
    router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses=ERRORS)

    def tenant_of(request: Request, _: Annotated[Any, Security(bearer)] = None) -> str:
        return auth.tenant_for(caller(auth, request))

    Tenant = Annotated[str, Depends(tenant_of)]

    @router.post(
        "/{session_id:anything}/turns",
        status_code=201,
        response_model=s.AppendedTurns,
        summary="append_turns",
        responses={
            409: {"model": s.ErrorOut, "description": "The log's last turn is not `newest`"}
        },
    )
    async def append_turns(
        session_id: SessionPath, body: s.AppendTurnsRequest, tenant: Tenant, request: Request
    ) -> s.AppendedTurns:
        """Append messages to a session's log, durably, numbered in order (Session.add);
        ``warnings`` says why a tool result logged can never be in a window."""

        def write() -> s.AppendedTurns:
            session = Session(
                tenants.store,
                session_id,
                tenant=tenant,
                user_id=body.user_id,
                agent_id=body.agent_id,
                tokenizer=tokenizer,
            )
            turns = session.add(*(m.to_message() for m in body.messages), newest=body.newest)
            return s.AppendedTurns(
                results=[s.TurnOut.of(t) for t in turns], warnings=never_sent(session, turns)
            )

        return await run_write(write, tenant=tenant, client_gone=request.is_disconnected)

    @router.get("/{session_id:anything}/turns", response_model=s.TurnList, summary="turns")
    def turns(
        session_id: SessionPath,
        tenant: Tenant,
        after_seq: AfterSeq = -1,
        limit: Limit = 100,
    ) -> s.TurnList:
        """A session's turns with seq > after_seq, in order."""
        scope = Scope(tenant=tenant, session_id=session_id)
        found, after = ops.turns_page(tenants.store, scope, after_seq=after_seq, limit=limit)
        return s.TurnList(results=[s.TurnOut.of(t) for t in found], next_after_seq=after)

    slots = windows or WindowSlots()

    @router.post("/{session_id:anything}/window", response_model=s.WindowOut, summary="window")
    async def window(
        session_id: SessionPath, body: s.WindowRequestIn, tenant: Tenant, request: Request
    ) -> s.WindowOut:
        """Assemble the context window for a question: summary, recent turns,
        retrieved memories at the edges, question last, within token_budget."""
        # Async, to build it in the tenant's window slots (windowing.WindowSlots), off
        # the thread pool that every other route shares.
        req = body.for_session(session_id)
        answer = await slots.run(
            tenant,
            lambda: window_answer(build_window(tenants, tenant, req, tokenizer), req),
            client_gone=request.is_disconnected,
        )
        return s.WindowOut(**answer)

    @router.post(
        "/{session_id:anything}/compact",
        response_model=s.CompactionOut,
        summary="compact",
        responses={409: {"model": s.ErrorOut, "description": "Lost a race: nothing done"}},
    )
    async def compact(
        session_id: SessionPath, body: s.CompactRequestIn, tenant: Tenant, request: Request
    ) -> s.CompactionOut:
        """Compact a session's history to fit ``budget`` (Session.compact, as the CLI's
        ``compact``); 404 when it has no turns, 409 when another writer changed it
        meanwhile (nothing done; retry)."""
        # In the tenant's window slots, as the window: compaction reads the history and
        # summarizes it, CPU work in proportion to the log, and it uses the Session the
        # windows keep (live_sessions), so the next window sees it at once.
        req = body.for_session(session_id)
        answer = await slots.run(
            tenant,
            lambda: compact_session(tenants, tenant, req, tokenizer),
            client_gone=request.is_disconnected,  # not begun for a client gone: nothing done
        )
        return s.CompactionOut(**answer)

    @router.get("", response_model=s.SessionList, summary="sessions")
    def sessions(
        tenant: Tenant,
        user_id: OptScopeId = None,
        agent_id: OptScopeId = None,
        limit: Limit = 100,
        offset: Offset = 0,
        order: SessionOrder = "oldest",
        after: OptScopeId = None,
    ) -> s.SessionList | Response:
        """Session ids of the caller's tenant, optionally of one user/agent, one page at
        a time: least recently active first, or with order=newest most recently active
        first (so the newest are on the first page however many there are), or with
        order=id in id order, where ``next_after`` is the next page's key (``after``):
        nothing skipped or repeated while others log (activity order moves a session at
        each turn)."""
        memory = tenants.get(tenant)
        page = memory.sessions(
            user_id=user_id, agent_id=agent_id, order=order, limit=limit, offset=offset, after=after
        )
        if order != "id" and after is None:  # no key to give: the answer as it was
            listed = s.SessionList(results=page, limit=limit, offset=offset)
            return Response(
                listed.model_dump_json(exclude={"next_after"}), media_type="application/json"
            )
        more = len(page) == limit and memory.sessions(  # the next page's first id
            user_id=user_id, agent_id=agent_id, limit=1, after=page[-1]
        )
        next_after = page[-1] if more else None
        return s.SessionList(results=page, limit=limit, offset=offset, next_after=next_after)

    return router


def key_router(auth: Authenticator) -> APIRouter:
    """Routes under ``/v1/keys``: key management, for the admin key only."""
    router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=ERRORS)

    def admin(request: Request, _: Annotated[Any, Security(bearer)] = None) -> None:
        auth.require_admin(lambda: caller(auth, request))

    deps = [Depends(admin)]
    out = s.KeyOut.of

    @router.post(
        "", status_code=201, response_model=s.IssuedKeyOut, dependencies=deps, summary="create_key"
    )
    def create_key(body: s.CreateKeyRequest) -> s.IssuedKeyOut:
        """Issue a key bound to a tenant; the secret is in this response only."""
        issued = auth.keys.create(body.tenant, body.name)
        return s.IssuedKeyOut(**out(issued.key).model_dump(), key=issued.secret)

    @router.get("", response_model=s.KeyList, dependencies=deps, summary="list_keys")
    def list_keys(tenant: OptIdent = None, limit: Limit = 100, offset: Offset = 0) -> s.KeyList:
        """Keys (never their secrets), oldest first, optionally of one tenant."""
        page = auth.keys.list(tenant)[offset : offset + limit]
        return s.KeyList(results=[out(k) for k in page], limit=limit, offset=offset)

    @router.delete("/{key_id}", response_model=s.KeyOut, dependencies=deps, summary="revoke_key")
    def revoke_key(key_id: IdPath) -> s.KeyOut:
        """Revoke a key; requests with it get 401 from then on."""
        return out(auth.keys.revoke(key_id))

    return router
