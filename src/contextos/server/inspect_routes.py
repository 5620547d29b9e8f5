"""JSON the inspector page needs that ``/v1`` does not give: filtered memory pages
with a total, a window with its cache breakpoints and segment usage, and the
cache replay of a session (per call: cache-read share and money saved).

Every route takes the tenant from the caller's key through the same
:class:`~contextos.server.auth.Authenticator` as ``/v1`` and reads only through
that tenant's :class:`~contextos.memory.Memory` or a :class:`~contextos.types.Scope`
carrying that tenant, so the page can show nothing the key could not read
through ``/v1``. The routes stay out of the OpenAPI schema: they serve one page
and may change with it.

(No ``from __future__ import annotations``: FastAPI reads the handlers'
annotations at runtime.)
"""

import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AfterValidator

from contextos.engine.compaction import HistoryState
from contextos.engine.conversation import conversation
from contextos.engine.session import context_window, turn_items, window_budget
from contextos.llm.models import ModelInfo, get_model
from contextos.llm.tokens import Tokenizer

from ..cache import CacheSimulator, WireFormat, cache_request, report
from ..cache.accounting import read_share
from ..errors import RateLimited
from ..types import Filter, Scope, Turn
from . import ops
from . import schemas as s
from .auth import Authenticator
from .errors import error_body
from .routes import (
    AfterSeq,
    Limit,
    ListAfter,
    Offset,
    OptScopeId,
    SessionPath,
    caller,
    json_response,
)
from .tenants import TenantMemories
from .window_slots import WindowSlots
from .windowing import DEFAULT_MODEL, build_window, request_body, window_dict

#: The replay prices at most this many calls (the newest). Each replayed call builds,
#: renders and hashes its whole window, so a replay costs O(calls x turns read) ...
MAX_REPLAY_CALLS = 100
#: ... and it reads at most this many turns (the newest) of the log, so a page's cost is
#: bounded whatever the log's length (a 10,000-turn log once took tens of seconds of a
#: shared server thread). A log no longer than this is replayed whole, as before.
MAX_REPLAY_TURNS = 1000

#: Replays running at once in this process. A replay is about a second of pure-Python
#: CPU on the thread pool every sync route shares: 60 at once from one tenant pushed
#: another tenant's trivial reads from 48 ms to 4.5 s (40 s at worst).
MAX_CONCURRENT_REPLAYS = 2
#: How long a replay waits (on the event loop, holding no thread) for a free slot
#: before it is answered 503 with Retry-After.
REPLAY_WAIT_S = 10.0
#: The Retry-After of a refused replay, in seconds (about one replay's time).
REPLAY_RETRY_AFTER_S = 1

Validity = Literal["current", "all"]
ModelName = Annotated[str, Query(min_length=1, max_length=100), AfterValidator(s.check_text)]
#: A session id in the query, for the routes the page uses: a URL's path cannot carry
#: every id the library takes ("." and ".." are removed from it), a query value can. (The
#: path routes take the id with the path converter: one holding "/" reaches them too.)
SessionQuery = Annotated[
    str,
    Query(min_length=1, max_length=s.MAX_ID),
    AfterValidator(s.check_text),
    AfterValidator(s.check_scope_id),
]


@dataclass(frozen=True)
class CallCost:
    """One replayed call of a session: what the prompt cache did and what it saved."""

    seq: int
    input_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    read_share: float
    cost_usd: float
    cost_without_cache_usd: float
    saved_usd: float


def wire_of(model: ModelInfo) -> WireFormat:
    """The wire format whose cache rules apply to ``model``."""
    return "anthropic" if model.provider == "anthropic" else "openai"


def replay_turns(turns: Sequence[Turn], max_turns: int = MAX_REPLAY_TURNS) -> list[Turn]:
    """The part of a log that the replay reads: all of it when it has at most
    ``max_turns`` turns; else its newest ``max_turns`` from the first user turn among
    them on, so each replayed window holds the history from that call on, as if the
    session had been compacted there (without a summary): older turns are in no window.
    """
    if max_turns < 1:
        raise ValueError("max_turns must be at least 1")
    if len(turns) <= max_turns:
        return list(turns)
    tail = turns[len(turns) - max_turns :]
    start = next((i for i, t in enumerate(tail) if t.message.role == "user"), len(tail))
    return list(tail[start:])


def replay_costs(
    turns: Sequence[Turn],
    model: ModelInfo,
    tokenizer: Tokenizer,
    *,
    max_calls: int = MAX_REPLAY_CALLS,
    max_turns: int = MAX_REPLAY_TURNS,
) -> list[CallCost]:
    """Replay a session log as the calls that produced it, through the cache simulator.

    Each user turn is one call: the window holds the turns before it (uncompacted,
    no retrieved memories) with the user turn as the question, sent at the turn's
    time; the next assistant turn is its output. Only the newest ``max_calls``
    calls are replayed and priced, after one more that warms the cache: a call reads
    the longest cached prefix, which is the one the call before it wrote. Of a log
    longer than ``max_turns`` only :func:`replay_turns` is read (its windows start
    there), so the cost is O(max_calls x max_turns) whatever the log's length.
    """
    if max_calls < 1:
        raise ValueError("max_calls must be at least 1")
    turns = replay_turns(turns, max_turns)
    sim = CacheSimulator(wire_of(model), min_tokens=model.min_cache_tokens)
    budget = window_budget(model)
    calls = [i for i, t in enumerate(turns) if t.message.role == "user"]
    first = max(0, len(calls) - max_calls)
    out: list[CallCost] = []
    state = HistoryState()
    for n, i in enumerate(calls[max(0, first - 1) :], start=max(0, first - 1)):
        turn = turns[i]
        window = context_window(
            budget,
            tokenizer=tokenizer,
            # A user turn with no text (an image, a blank line) asks nothing: a window
            # refuses a blank question, and one such turn must not fail the whole page.
            question=turn.message.content if turn.message.content.strip() else None,
            min_cache_tokens=model.min_cache_tokens,
            # The conversation as the model saw it then: an answer a regenerate
            # replaced (``redo_of``), or a cut reply, is in the log but not in it.
            turns=turn_items(conversation(turns[: i + 1])[:-1], state, tokenizer),
        )
        reply = turns[i + 1] if i + 1 < len(turns) else None
        output = reply.tokens if reply is not None and reply.message.role == "assistant" else 0
        req = cache_request(
            window, model, wire_of(model), at=turn.created_at.timestamp(), output_tokens=output
        )
        usage = sim.send(req)
        if n < first:
            continue  # the warm-up call
        priced = report([usage], model)
        out.append(
            CallCost(
                seq=turn.seq,
                input_tokens=priced.input_tokens,
                cache_read_tokens=priced.cache_read_tokens,
                cache_write_tokens=priced.cache_write_5m_tokens + priced.cache_write_1h_tokens,
                read_share=priced.hit_ratio,
                cost_usd=priced.cost_usd,
                cost_without_cache_usd=priced.cost_without_cache_usd,
                saved_usd=priced.saved_usd,
            )
        )
    return out


class ReplayBusy(Exception):
    """Every replay slot stayed taken for the whole wait (answered 503 + Retry-After)."""


class ReplayGate:
    """Admission for cache replays, so one tenant cannot stall the others.

    At most ``slots`` replays run at once in the process and at most one per tenant:
    a tenant's second replay while its first runs is refused at once
    (:class:`~contextos.errors.RateLimited`: 429 + Retry-After), so one tenant holds
    at most one slot whatever it sends. A replay that finds every slot taken by other
    tenants waits up to ``wait_s`` for one, then :class:`ReplayBusy` (503). Waiting
    polls on the event loop rather than blocking a worker thread: a blocked thread
    would take from the pool every other request needs, which is the starvation this
    gate prevents. The counters are read and changed on the event loop only; the lock
    keeps them right if that ever changes.
    """

    def __init__(self, slots: int = MAX_CONCURRENT_REPLAYS, wait_s: float = REPLAY_WAIT_S) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._running: set[str] = set()  # tenants with a replay running
        self._waiting: set[str] = set()  # tenants with a replay waiting for a slot

    def _claim(self, tenant: str) -> bool:
        with self._lock:
            if len(self._running) >= self.slots:
                return False
            self._running.add(tenant)
            return True

    @asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[None]:
        """Hold one replay slot for ``tenant`` while the body runs."""
        with self._lock:
            if tenant in self._running or tenant in self._waiting:
                raise RateLimited(
                    "a cache replay for this tenant is already running; retry when it is done",
                    retry_after=REPLAY_RETRY_AFTER_S,
                )
            self._waiting.add(tenant)
        try:
            deadline = time.monotonic() + self.wait_s
            while not self._claim(tenant):
                if time.monotonic() >= deadline:
                    raise ReplayBusy("the server is busy replaying other sessions; retry later")
                await anyio.sleep(0.05)
        finally:
            with self._lock:
                self._waiting.discard(tenant)
        try:
            yield
        finally:
            with self._lock:
                self._running.discard(tenant)


def inspect_router(
    auth: Authenticator,
    tenants: TenantMemories,
    tokenizer: Tokenizer,
    replays: ReplayGate | None = None,
    *,
    windows: WindowSlots | None = None,
) -> APIRouter:
    """Routes under ``/ui/api``, each scoped to the tenant of the caller's key.

    The cache-replay routes run under ``replays`` (default: a :class:`ReplayGate`
    of this router, i.e. per process)."""
    router = APIRouter(prefix="/ui/api", include_in_schema=False)

    def tenant_of(request: Request) -> str:
        # Behind the AuthGate (app.API_PREFIXES): the key was checked, throttled on
        # failure and charged once there, before the body was read.
        return auth.tenant_for(caller(auth, request))

    Tenant = Annotated[str, Depends(tenant_of)]

    @router.get("/whoami")
    def whoami(tenant: Tenant) -> dict[str, str]:
        """The tenant the key acts for (the page shows it after sign-in)."""
        return {"tenant": tenant}

    @router.get("/memories")
    def memories(
        tenant: Tenant,
        user_id: OptScopeId = None,
        agent_id: OptScopeId = None,
        session_id: OptScopeId = None,
        memory_type: Annotated[list[s.MemoryTypeName] | None, Query(max_length=3)] = None,
        validity: Validity = "current",
        as_of: s.Time | None = None,
        created_before: s.Time | None = None,
        after: ListAfter = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """One page of memories, newest first, with the total matching the filters.

        ``validity=all`` includes superseded and deleted facts (their ``valid_to``
        is set); ``as_of`` keeps those valid at an instant; ``created_before``: only
        those written before it. ``after``: the page after the memory whose key it is
        (the ``next_after`` of the page before; ``offset`` is then only where the page
        says it starts), else the page at ``offset``. Paged by a key, a page holds only
        memories after the last one shown, whatever was written or deleted meanwhile:
        paged by offset under the first page's clock time, a memory written meanwhile
        could still be older than that time (stamped before its write waited for the
        store's lock), and the next page began with the last row of the one before
        (a review).
        """
        scope = Scope(tenant=tenant, user_id=user_id, agent_id=agent_id, session_id=session_id)
        scope.for_reading()
        flt = Filter(
            scope=scope,
            memory_types=tuple(memory_type or ()),
            as_of=as_of,
            created_before=created_before,
            include_invalid=validity == "all",
        )
        # Through /v1's own check: a key the store did not make is a 422 InvalidRequest
        # there and here (here it was the store's ValueError, a 400: a review).
        records, next_after = ops.memory_page(
            tenants.store, flt, after=after, offset=0 if after else offset, limit=limit
        )
        return {
            "results": [s.RecordOut.of(r).model_dump(mode="json") for r in records],
            "total": tenants.store.count(flt),
            "limit": limit,
            "offset": offset,
            "next_offset": None if next_after is None else offset + len(records),
            "next_after": next_after,
        }

    @router.get("/turns")
    def turns(
        session_id: SessionQuery, tenant: Tenant, after_seq: AfterSeq = -1, limit: Limit = 100
    ) -> Response:
        """``GET /v1/sessions/{id}/turns``, the session named in the query."""
        scope = Scope(tenant=tenant, session_id=session_id)
        found, after = ops.turns_page(tenants.store, scope, after_seq=after_seq, limit=limit)
        out = [s.TurnOut.of(t) for t in found]
        return json_response(s.TurnList(results=out, next_after_seq=after))

    slots = windows or WindowSlots()

    async def window_of(
        session_id: str, body: s.WindowRequestIn, tenant: str, request: Request
    ) -> dict[str, Any]:
        """The window ``/v1`` would assemble, plus its segment usage and cache breakpoints,
        built in the tenant's window slots as ``/v1``'s (:class:`WindowSlots`: on a long
        log a window costs CPU in proportion, and these held the shared thread pool)."""

        def build() -> dict[str, Any]:
            req = body.for_session(session_id)
            built = build_window(tenants, tenant, req, tokenizer)
            return {
                **window_dict(built),
                "segments": [asdict(u) for u in built.usage],
                "breakpoints": [asdict(b) for b in built.breakpoints],
                "request": request_body(built, req),
            }

        return await slots.run(tenant, build, client_gone=request.is_disconnected)

    @router.post("/sessions/{session_id:anything}/window")
    async def window(
        session_id: SessionPath, body: s.WindowRequestIn, tenant: Tenant, request: Request
    ) -> dict[str, Any]:
        """:func:`window_of` the session in the path."""
        return await window_of(session_id, body, tenant, request)

    @router.post("/window")
    async def window_q(
        session_id: SessionQuery, body: s.WindowRequestIn, tenant: Tenant, request: Request
    ) -> dict[str, Any]:
        """:func:`window_of` the session in the query (any id; the page uses this one)."""
        return await window_of(session_id, body, tenant, request)

    add_cache_routes(router, tenants, tokenizer, tenant_of, replays or ReplayGate())
    return router


def add_cache_routes(
    router: APIRouter,
    tenants: TenantMemories,
    tokenizer: Tokenizer,
    tenant_of: Callable[[Request], str],
    gate: ReplayGate,
) -> None:
    """The cache-replay routes of :func:`inspect_router`: JSON with the chart, and the
    chart alone; every replay runs under ``gate``."""
    from .ui.chart import cost_chart_svg

    Tenant = Annotated[str, Depends(tenant_of)]

    def replay(
        tenant: str, session_id: str, info: ModelInfo
    ) -> tuple[list[CallCost], dict[str, Any]]:
        """The replayed calls, and what part of the log they read (for the page)."""
        scope = Scope(tenant=tenant, session_id=session_id)
        # One turn more than is replayed: a longer log is cut at a user turn (replay_turns).
        log = replay_turns(tenants.store.turns(scope, limit=MAX_REPLAY_TURNS + 1, newest=True))
        first = tenants.store.turns(scope, limit=1)  # empty if erased meanwhile
        older_left_out = bool(log and first) and first[0].seq < log[0].seq
        part = {
            "from_seq": log[0].seq if log else None,
            "older_turns_left_out": older_left_out,
            "note": (
                f"newest {len(log)} turns replayed: windows hold the turns from seq "
                f"{log[0].seq} on, older ones are left out"
                if older_left_out
                else ""
            ),
        }
        return replay_costs(log, info, tokenizer), part

    async def gated_replay(
        tenant: str, session_id: str, info: ModelInfo
    ) -> tuple[list[CallCost], dict[str, Any]]:
        """:func:`replay` in a worker thread once ``gate`` admits it. The thread is not
        abandoned if the client leaves: the slot is held until the work really ends."""
        async with gate.slot(tenant):
            return await anyio.to_thread.run_sync(replay, tenant, session_id, info)

    def busy(exc: ReplayBusy) -> JSONResponse:
        return JSONResponse(
            error_body("ServerBusy", str(exc)),
            503,
            headers={"Retry-After": str(REPLAY_RETRY_AFTER_S)},
        )

    async def cache_of(session_id: str, tenant: str, model: str) -> Any:
        """Per replayed call: cache-read share and money saved, with totals and the
        chart (the page needs both; one replay serves them)."""
        info = get_model(model)
        try:
            calls, part = await gated_replay(tenant, session_id, info)
        except ReplayBusy as exc:
            return busy(exc)
        total_in = sum(c.input_tokens for c in calls)
        svg = await anyio.to_thread.run_sync(
            lambda: cost_chart_svg(calls, title=f"{session_id} · {info.name}", note=part["note"])
        )
        return {
            "model": info.name,
            "calls": [asdict(c) for c in calls],
            "read_share": read_share(sum(c.cache_read_tokens for c in calls), total_in),
            "saved_usd": sum(c.saved_usd for c in calls),
            **part,
            "svg": svg,
        }

    @router.get("/sessions/{session_id:anything}/cache")
    async def cache(
        session_id: SessionPath, tenant: Tenant, model: ModelName = DEFAULT_MODEL
    ) -> Any:
        """:func:`cache_of` the session in the path."""
        return await cache_of(session_id, tenant, model)

    @router.get("/cache")
    async def cache_q(
        session_id: SessionQuery, tenant: Tenant, model: ModelName = DEFAULT_MODEL
    ) -> Any:
        """:func:`cache_of` the session in the query (any id; the page uses this one)."""
        return await cache_of(session_id, tenant, model)

    @router.get("/sessions/{session_id:anything}/cache.svg")
    async def cache_svg(
        session_id: SessionPath, tenant: Tenant, model: ModelName = DEFAULT_MODEL
    ) -> Any:
        """The same replay drawn as an SVG chart (made here: no chart library, no CDN)."""
        info = get_model(model)
        try:
            calls, part = await gated_replay(tenant, session_id, info)
        except ReplayBusy as exc:
            return busy(exc)
        svg = await anyio.to_thread.run_sync(
            lambda: cost_chart_svg(calls, title=f"{session_id} · {info.name}", note=part["note"])
        )
        return Response(svg, media_type="image/svg+xml")
