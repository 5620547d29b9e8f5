"""``contextos bench online``: LoCoMo streamed through a running server, asked while it streams.

Every other memory benchmark adds a whole conversation, flushes, and only then
asks. Applications interleave: turns keep arriving while questions are asked,
in a process that stays up. This benchmark uses ``contextos serve`` that way:

- one server on loopback (subprocess, the real embedder unless told otherwise),
  one API key, HTTP through httpx;
- per conversation a *writer* adds the turns one request at a time, in the
  conversation's own order, each with its session as ``session_id`` and its
  date as ``event_time`` (as ``bench locomo`` adds them), all writers sharing
  one pace (``rate`` turns/s, as the users of an app talk at once);
- per conversation a *reader* asks each question (categories 1-4) as soon as
  the last turn of the session holding its latest evidence is acknowledged,
  while the writer goes on streaming the later turns;
- a *prober* samples one acknowledged add now and then (one probe in flight)
  and polls a search whose query is that record's own text, scoped to its
  session, until the record comes back with a dense rank: the vector lag, from
  the add's acknowledgement to the probe response that shows it searchable by
  meaning (so it includes one search's latency: an upper bound);
- then *batch*: the server is stopped (shutdown waits for every vector), a
  fresh one is started on the same store, and the same questions are asked of
  the same records: the add-everything-flush-then-ask reference. Each question
  is asked twice there: over every turn (``batch``) and over only the turns
  that had been acknowledged when it was asked online (``batch_same_turns``,
  by ``event_before``). An online ask has not yet met the later turns, which
  are distractors to batch, so online can beat ``batch`` while its index is
  stale; against ``batch_same_turns`` only staleness differs.

Both phases are scored by ``bench locomo``'s scoring (turn-level evidence
recall at k and within token budgets), so the two recalls differ only in when
the question was asked. Each turn goes in as ``bench locomo`` adds it, its
``dia_id`` and image caption as the message's own metadata (the caption is
indexed, the ``dia_id`` is the provenance).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..embed import DEFAULT_EMBEDDER
from ..times import opt_utc
from ..types import Hit, MemoryRecord
from .locomo import MAIN_CATEGORIES, aggregate, score_question
from .locomo_data import DEFAULT_LOCOMO, LocomoConversation, LocomoQA, load_locomo
from .locomo_memory import session_id
from .serve import _redact, _revoke, running_server
from .stats import percentile

#: Hits asked for per question: enough for recall@25 and the 2,000-token budget.
SEARCH_LIMIT = 100

Progress = Callable[[str, int], None]


class OnlineBenchError(RuntimeError):
    """The server refused or failed a request the benchmark needs (one line)."""


@dataclass(frozen=True)
class OnlineBenchConfig:
    """What ``contextos bench online`` runs; every field is one CLI option."""

    data: str = DEFAULT_LOCOMO
    #: SQLite path or postgresql:// URL; None: a temporary SQLite file.
    store: str | None = None
    conversations: int | None = None
    #: Only the first N turns of each conversation (questions whose evidence all
    #: lies in them); None: every turn.
    limit: int | None = None
    embedder: str = DEFAULT_EMBEDDER
    #: Turns per second over all writers together; 0: as fast as adds are acknowledged.
    rate: float = 10.0
    #: Probe the vector lag of (at most) one add in this many.
    lag_every: int = 10
    #: A probed record not searchable by meaning after this long counts as unseen.
    lag_timeout: float = 10.0
    startup_timeout: float = 180.0

    def __post_init__(self) -> None:
        if self.store is not None and not self.store.strip():
            raise ValueError("store must be a SQLite path or postgresql:// URL, not empty")
        if self.conversations is not None and self.conversations < 1:
            raise ValueError("conversations must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be at least 1 turn")
        if self.rate < 0:
            raise ValueError("rate must be >= 0 (0: no pacing)")
        if self.lag_every < 1:
            raise ValueError("lag_every must be at least 1")
        if self.lag_timeout <= 0:
            raise ValueError("lag_timeout must be positive")


@dataclass(frozen=True)
class _Question:
    conv: LocomoConversation
    qa: LocomoQA
    release: int  # position of the turn after whose acknowledgement it is asked


@dataclass
class _Run:
    """What the streaming phase measured."""

    add_s: list[float] = field(default_factory=list)
    search_s: list[float] = field(default_factory=list)
    lag_s: list[float] = field(default_factory=list)
    unseen: int = 0
    rows: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    #: Each question with the last turn acknowledged when it was asked.
    asked: list[tuple[_Question, int]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: What probes that ended early raised (the run raises the first).
    probe_errors: list[BaseException] = field(default_factory=list)
    probing: bool = False
    since_probe: int = 0


def plan(
    convs: Sequence[LocomoConversation], limit: int | None
) -> list[tuple[LocomoConversation, list[_Question]]]:
    """Each conversation's (sliced) questions in categories 1-4 with the turn they follow.

    A question is released after the last streamed turn of the session that holds
    its latest evidence; questions with evidence outside the slice are left out.
    """
    out = []
    for conv in convs:
        turns = conv.turns[:limit]
        pos = {t.dia_id: i for i, t in enumerate(turns)}
        last_of_session = {t.session: i for i, t in enumerate(turns)}
        questions = []
        for qa in conv.qa:
            if qa.category not in MAIN_CATEGORIES or not qa.evidence:
                continue
            if not all(e in pos for e in qa.evidence):
                continue
            latest = max(pos[e] for e in qa.evidence)
            questions.append(_Question(conv, qa, last_of_session[turns[latest].session]))
        out.append((conv, questions))
    return out


def _add_body(conv: LocomoConversation, position: int) -> dict[str, Any]:
    """One turn as ``bench locomo`` adds it: dia_id and caption are the message's own
    metadata, so the caption is indexed and the dia_id becomes the provenance."""
    turn = conv.turns[position]
    metadata: dict[str, Any] = {"dia_id": turn.dia_id}
    if turn.caption:
        metadata["caption"] = turn.caption
    message = {"role": "user", "content": turn.text, "name": turn.speaker, "metadata": metadata}
    return {
        "messages": [message],
        "user_id": conv.sample_id,
        "session_id": session_id(conv, turn.session),
        "event_time": turn.time.isoformat(),
    }


def hits_of(results: Sequence[dict[str, Any]]) -> list[Hit]:
    """Search results (HTTP JSON) as hits ``score_question`` reads: provenance, tokens,
    and what ``render`` shows (text, speaker, caption, date)."""
    hits = []
    for r in results:
        m = r["memory"]
        dia = m.get("metadata", {}).get("dia_id")
        provenance = tuple(m.get("provenance") or ()) or ((str(dia),) if dia else ())
        record = MemoryRecord(
            id=m["id"],
            text=m["text"],
            provenance=provenance,
            metadata=m.get("metadata") or {},
            event_time=opt_utc(m.get("event_time"), "event_time"),
        )
        hits.append(Hit(record, r["score"], r["lexical_rank"], r["dense_rank"], tokens=r["tokens"]))
    return hits


async def _post(client: Any, path: str, body: dict[str, Any]) -> tuple[Any, float]:
    """POST and return (JSON, seconds); any non-2xx is a one-line OnlineBenchError."""
    import httpx

    start = time.perf_counter()
    try:
        resp = await client.post(path, json=body)
    except httpx.HTTPError as exc:
        raise OnlineBenchError(f"{path} failed: {type(exc).__name__}: {exc}") from exc
    elapsed = time.perf_counter() - start
    if resp.status_code >= 300:
        raise OnlineBenchError(f"{path} answered HTTP {resp.status_code}: {resp.text[:200]}")
    return resp.json(), elapsed


async def _ask(
    client: Any, q: _Question, seen: int | None = None
) -> tuple[dict[str, float], float]:
    """Ask ``q`` and score it; with ``seen``, only turns up to that position are searched."""
    body: dict[str, Any] = {
        "query": q.qa.question,
        "user_id": q.conv.sample_id,
        "limit": SEARCH_LIMIT,
    }
    if seen is not None:  # turns are dated a minute or more apart, in conversation order
        body["event_before"] = (q.conv.turns[seen].time + timedelta(seconds=1)).isoformat()
    data, elapsed = await _post(client, "/v1/memories/search", body)
    return score_question(q.qa, hits_of(data["results"])), elapsed


class _Stream:
    """The writers, readers and prober of the streaming phase (one event loop)."""

    def __init__(self, client: Any, cfg: OnlineBenchConfig, progress: Progress | None) -> None:
        self.client = client
        self.cfg = cfg
        self.progress = progress or (lambda kind, n: None)
        self.run = _Run()
        self.interval = 1.0 / cfg.rate if cfg.rate else 0.0
        self.next_slot = time.monotonic()
        self.written: dict[str, int] = {}  # latest acknowledged position per conversation

    async def pace(self) -> None:
        """Wait for this writer's turn under the shared rate (all writers together)."""
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(now, self.next_slot)
        self.next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)

    async def writer(
        self, conv: LocomoConversation, questions: list[_Question], queue: asyncio.Queue[Any]
    ) -> None:
        due: dict[int, list[_Question]] = {}
        for q in questions:
            due.setdefault(q.release, []).append(q)
        for position in range(len(conv.turns[: self.cfg.limit])):
            await self.pace()
            data, elapsed = await _post(self.client, "/v1/memories", _add_body(conv, position))
            acked = time.perf_counter()
            self.run.add_s.append(elapsed)
            self.written[conv.sample_id] = position
            self.progress("stream", 1)
            self.maybe_probe(conv, position, data["results"][0], acked)
            for q in due.get(position, ()):
                queue.put_nowait(q)
        queue.put_nowait(None)

    async def reader(self, conv: LocomoConversation, queue: asyncio.Queue[Any]) -> None:
        while (q := await queue.get()) is not None:
            scores, elapsed = await _ask(self.client, q)
            self.run.search_s.append(elapsed)
            self.run.rows.append((q.qa.category, scores))
            self.run.asked.append((q, self.written[conv.sample_id]))
            self.progress("online", 1)

    def maybe_probe(
        self, conv: LocomoConversation, position: int, record: dict[str, Any], acked: float
    ) -> None:
        """Start a lag probe for this add when one is due and none is in flight."""
        self.run.since_probe += 1
        if self.run.probing or self.run.since_probe < self.cfg.lag_every:
            return
        self.run.probing, self.run.since_probe = True, 0
        session = session_id(conv, conv.turns[position].session)
        task = asyncio.create_task(self.probe(conv.sample_id, session, record, acked))
        self.run.tasks.add(task)
        task.add_done_callback(self.probe_done)

    def probe_done(self, task: asyncio.Task[None]) -> None:
        """Forget a finished probe, keeping what it raised: unkept, a probe that failed
        (the server gone) printed "Task exception was never retrieved" and a traceback
        after the run's own one-line error."""
        self.run.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.run.probe_errors.append(exc)

    async def probe(self, user: str, session: str, record: dict[str, Any], acked: float) -> None:
        """Poll a self-search until ``record`` has a dense rank (or the timeout)."""
        body = {"query": record["text"], "user_id": user, "session_id": session}
        body["limit"] = SEARCH_LIMIT
        delay = 0.02
        try:
            while time.perf_counter() - acked < self.cfg.lag_timeout:
                data, _ = await _post(self.client, "/v1/memories/search", body)
                if any(
                    h["memory"]["id"] == record["id"] and h["dense_rank"] is not None
                    for h in data["results"]
                ):
                    self.run.lag_s.append(time.perf_counter() - acked)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
            self.run.unseen += 1
        finally:
            self.run.probing = False

    async def main(self, planned: list[tuple[LocomoConversation, list[_Question]]]) -> float:
        self.written = {conv.sample_id: -1 for conv, _ in planned}
        start = time.perf_counter()
        jobs = []
        for conv, questions in planned:
            queue: asyncio.Queue[Any] = asyncio.Queue()
            jobs += [self.writer(conv, questions, queue), self.reader(conv, queue)]
        await asyncio.gather(*jobs)
        elapsed = time.perf_counter() - start
        if self.run.tasks:
            await asyncio.gather(*self.run.tasks, return_exceptions=True)
        if self.run.probe_errors:
            raise self.run.probe_errors[0]
        return elapsed


def _client(url: str, key: str) -> Any:
    """The HTTP client of the server under test. No proxy (``trust_env=False``): the
    server is on loopback, which an ``HTTP_PROXY`` setting would send through the proxy."""
    import httpx

    # Idle connections expire on the client first (server keep-alive is 65 s).
    limits = httpx.Limits(max_keepalive_connections=32, keepalive_expiry=5)
    return httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
        limits=limits,
        trust_env=False,
    )


async def _stream(
    url: str,
    key: str,
    cfg: OnlineBenchConfig,
    planned: list[tuple[LocomoConversation, list[_Question]]],
    progress: Progress | None,
) -> tuple[_Run, float]:
    async with _client(url, key) as client:
        # Load the model before the clock starts (the first search embeds a query).
        await _post(client, "/v1/memories/search", {"query": "warm up", "user_id": "warm-up"})
        stream = _Stream(client, cfg, progress)
        elapsed = await stream.main(planned)
    return stream.run, elapsed


@dataclass
class _Batch:
    """What the batch phase measured."""

    rows: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    #: The same questions limited to the turns the online ask had: only staleness differs.
    prefix_rows: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    search_s: list[float] = field(default_factory=list)


async def _batch(
    url: str,
    key: str,
    asked: list[tuple[_Question, int]],
    progress: Progress | None,
    forget: Sequence[str],
) -> _Batch:
    out = _Batch()
    async with _client(url, key) as client:
        await _post(client, "/v1/memories/search", {"query": "warm up", "user_id": "warm-up"})
        for q, seen in asked:
            scores, elapsed = await _ask(client, q)
            out.rows.append((q.qa.category, scores))
            out.search_s.append(elapsed)
            out.prefix_rows.append((q.qa.category, (await _ask(client, q, seen))[0]))
            if progress:
                progress("batch", 1)
        for user in forget:  # a store the caller keeps: leave none of the run's users behind
            await _post(client, "/v1/memories/forget", {"user_id": user})
    return out


def _delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: round(a[k] - b[k], 4) for k in ("recall@10", "recall@1000t") if k in a and k in b}


def _ms(values: Sequence[float], q: float) -> float:
    return round(percentile(values, q) * 1000, 1)


def run_online_bench(cfg: OnlineBenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Stream, ask online, restart, ask in batch; return the report (module docstring).

    ``progress(kind, n)`` is called with kind ``stream`` (turns), ``online`` and
    ``batch`` (questions). With ``cfg.store``, the run's users are forgotten at the end
    and its key revoked, however the run ends; a run stopped early leaves its rows.
    """
    from ..server.keys import KeyStore

    convs = load_locomo(cfg.data)[: cfg.conversations]
    planned = plan(convs, cfg.limit)
    extra = ("--embedder", cfg.embedder, "--rate", "0", "--log-level", "error")
    with tempfile.TemporaryDirectory(prefix="ctx-bench-online-") as tmp:
        db = cfg.store or str(Path(tmp) / "online.db")
        keystore = KeyStore(db)
        try:
            issued = keystore.create(f"bench-online-{secrets.token_hex(4)}", "bench online")
        finally:
            keystore.close()
        key = issued.secret
        try:
            with running_server(db, *extra, timeout=cfg.startup_timeout) as (url, _):
                run, stream_s = asyncio.run(_stream(url, key, cfg, planned, progress))
            # Leaving the block stopped the server, and its shutdown waited for every
            # vector: a fresh process on the same store is the flushed reference.
            with running_server(db, *extra, timeout=cfg.startup_timeout) as (url, _):
                users = [c.sample_id for c in convs] if cfg.store is not None else []
                done = asyncio.run(_batch(url, key, run.asked, progress, forget=users))
        finally:
            if cfg.store is not None:  # a store that outlives the run keeps no live bench key
                _revoke(db, issued.key.id)
    online = aggregate(run.rows, MAIN_CATEGORIES)
    batch = aggregate(done.rows, MAIN_CATEGORIES)
    prefix = aggregate(done.prefix_rows, MAIN_CATEGORIES)
    turns = sum(len(c.turns[: cfg.limit]) for c in convs)
    categories = sorted({c for c, _ in done.rows})
    behind = [seen - q.release for q, seen in run.asked]
    samples = run.lag_s + [cfg.lag_timeout] * run.unseen  # unseen: censored at the timeout
    return {
        "data": str(cfg.data),
        "store": "sqlite (temporary file)" if cfg.store is None else _redact(cfg.store),
        "config": {**asdict(cfg), "store": None if cfg.store is None else _redact(cfg.store)},
        "conversations": [c.sample_id for c in convs],
        "turns": turns,
        "questions": len(done.rows),
        "online": online,
        "batch": batch,
        # Batch over only the turns the online ask could see: isolates staleness from
        # the online ask's advantage of not yet having the later turns as distractors.
        "batch_same_turns": prefix,
        "online_minus_batch": _delta(online, batch),
        "online_minus_batch_same_turns": _delta(online, prefix),
        "by_category": {
            str(c): {
                "online": aggregate(run.rows, (c,)),
                "batch": aggregate(done.rows, (c,)),
                "batch_same_turns": aggregate(done.prefix_rows, (c,)),
            }
            for c in categories
        },
        "vector_lag_ms": {
            "p50": _ms(samples, 50),
            "p95": _ms(samples, 95),
            "max": _ms(samples, 100),
            "probed": len(samples),
            "unseen": run.unseen,
            "timeout_ms": round(cfg.lag_timeout * 1000),
        },
        "latency_ms": {
            "add_p50": _ms(run.add_s, 50),
            "add_p95": _ms(run.add_s, 95),
            "search_p50": _ms(run.search_s, 50),
            "search_p95": _ms(run.search_s, 95),
            "batch_search_p50": _ms(done.search_s, 50),
            "batch_search_p95": _ms(done.search_s, 95),
        },
        # How many later turns had been added when each online question was answered.
        "turns_added_before_answer": {
            "p50": percentile(behind, 50),
            "max": max(behind, default=0),
        },
        "stream_s": round(stream_s, 1),
        "turns_per_s": round(turns / stream_s, 1) if stream_s else None,
        "cpu_count": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }
