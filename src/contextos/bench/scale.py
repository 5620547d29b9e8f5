"""``contextos bench scale``: add latency, embedding cost, search latency and
database size as a store grows to ``n`` memories.

Before the store is filled, the embedder is timed on its own: one short question
at a time (``query_embed_ms``, what a search pays) and LoCoMo-like turns in batches
of 64 (``embed_per_s``, what the background worker sustains), each also in CPU time
of the calling thread (``query_embed_cpu_ms``, ``embed_per_cpu_s``), which stays
meaningful when other jobs load the machine. With a LoCoMo file, the same rate on its
real turns too (``locomo_embed_per_s``, ``locomo_embed_per_cpu_s``): the synthetic
turns carry more extracted facts than LoCoMo's, so they cost more to embed.

Records are synthetic chat turns (templated sentences over a varied
vocabulary), added one ``Memory.add`` call at a time while the background
worker embeds them with the real model, as in an application. Embedding 100k
texts takes minutes, so at each checkpoint the records
the worker has not reached yet get stand-in vectors: real embeddings of other
records plus noise, re-normalised. Search cost depends on the number and
dimension of vectors, not their content, so latency is measured faithfully;
the report says how many vectors were real. Queries are embedded for real.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..embed import Embedder, default_embedder
from ..errors import ConfigError
from ..memory import Memory
from ..store.sqlite import SQLiteStore
from ..types import Filter, MemoryRecord, Scope
from .stats import percentile

_PEOPLE = [
    "Ana",
    "Ben",
    "Chloe",
    "Dev",
    "Elif",
    "Farah",
    "Goran",
    "Hana",
    "Ivan",
    "Jun",
    "Kofi",
    "Lena",
    "Mateo",
    "Nia",
    "Omar",
    "Priya",
]
_VERBS = [
    "visited",
    "cooked",
    "painted",
    "read about",
    "talked about",
    "bought",
    "fixed",
    "planned",
    "photographed",
    "wrote about",
    "learned",
    "lost",
    "found",
    "recommended",
]
_THINGS = [
    "a pottery class",
    "the lake house",
    "a vintage camera",
    "sourdough bread",
    "a marathon",
    "the science museum",
    "an adoption agency",
    "a jazz concert",
    "a camping trip",
    "a new guitar",
    "the community garden",
    "a job interview",
    "a chess tournament",
    "a road trip to Utah",
    "a yoga retreat",
    "a charity run",
    "the farmers market",
    "a coding bootcamp",
    "a birthday party",
    "a hiking trail",
]
_WHEN = [
    "yesterday",
    "last week",
    "this morning",
    "two days ago",
    "last month",
    "on Friday",
    "over the weekend",
    "in May",
    "last summer",
    "a while ago",
]
_TAILS = [
    "and it was great",
    "with the kids",
    "and felt proud",
    "but it rained",
    "for the first time",
    "with an old friend",
    "and took notes",
    "on a budget",
    "",
    "",
]


def synthetic_turn(rng: random.Random) -> str:
    return (
        " ".join(
            filter(
                None,
                [
                    rng.choice(_PEOPLE),
                    rng.choice(_VERBS),
                    rng.choice(_THINGS),
                    rng.choice(_WHEN),
                    rng.choice(_TAILS),
                ],
            )
        )
        + "."
    )


def synthetic_query(rng: random.Random) -> str:
    return f"When did {rng.choice(_PEOPLE)} {rng.choice(_VERBS)} {rng.choice(_THINGS)}?"


#: How many different questions :func:`synthetic_query` can make.
QUESTIONS = len(_PEOPLE) * len(_VERBS) * len(_THINGS)


def new_query(rng: random.Random, asked: set[str]) -> str:
    """A synthetic question not in ``asked`` (then added to it).

    Why: the retriever keeps the vectors of the queries it embedded
    (``HybridRetriever._query_vector``), so a question asked again in a run would be
    timed without its forward pass; every timed search pays for one."""
    if len(asked) >= QUESTIONS:
        raise ValueError(f"every one of the {QUESTIONS} synthetic questions was asked")
    while (query := synthetic_query(rng)) in asked:
        pass
    asked.add(query)
    return query


def fill_pending_vectors(store: SQLiteStore, embedder: Embedder, rng: np.random.Generator) -> int:
    """Give records the worker has not embedded yet stand-in vectors (see module doc),
    stored as the embedder's own (``vector_model``): a stand-in is a real embedding of
    another text, and a vector of another model would be queued again at the next open."""
    from ..memory.render import vector_model

    dims, model = embedder.dimensions, vector_model(embedder.model_id)
    real = store._fresh_index(dims)  # noqa: SLF001 - benchmark peeks at the index it fills
    pool = real.vectors()
    if not len(pool):
        pool = np.zeros((1, dims), dtype=np.float32)
        pool[0, 0] = 1.0
    filled = 0
    while pending := store.pending_vectors(limit=5000):
        base = pool[rng.integers(0, len(pool), len(pending))]
        noisy = base + rng.normal(0, 0.05, base.shape).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        by_tenant: dict[str, list[int]] = {}
        for i, r in enumerate(pending):
            by_tenant.setdefault(r.tenant, []).append(i)
        for tenant, rows in by_tenant.items():
            store.set_vectors(tenant, [pending[i].id for i in rows], noisy[rows], model)
        filled += len(pending)
    return filled


def _measure_search(
    memory: Memory, users: Sequence[str], rng: random.Random, queries: int, asked: set[str]
) -> tuple[list[float], list[float]]:
    """Wall-clock seconds of each search, and the process CPU seconds it used (the
    query embedding runs on another thread; the worker has nothing left to embed).
    Each asks a question not ``asked`` before (:func:`new_query`)."""
    times, cpus = [], []
    for _ in range(queries):
        q = new_query(rng, asked)
        start, cpu = time.perf_counter(), time.process_time()
        memory.search(q, user_id=rng.choice(users), limit=10)
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return times, cpus


#: The phases :func:`run_scale` tells its ``stage``: the embedder timed alone, then
#: the memories added (and searched at each checkpoint).
CALIBRATE = "time the embedder"
ADD = "add memories"
#: Memories added between two calls of :func:`run_scale`'s ``progress``.
PROGRESS_EVERY = 100


def run_scale(
    n: int = 100_000,
    *,
    checkpoints: Sequence[int] = (10_000, 100_000),
    users: int = 10,
    queries: int = 200,
    workdir: str | Path | None = None,
    embedder: Embedder | None = None,
    progress: Callable[[int], None] | None = None,
    locomo: str | Path | None = None,
    stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Grow a store to ``n`` memories and measure at each checkpoint ≤ n.

    ``locomo``: a LoCoMo file; the embedding rate is then also measured on its real
    turns (:func:`measure_locomo_embed_rate`). ``stage`` is told each phase as it
    begins: :data:`CALIBRATE` (the embedder timed alone, before any add), then
    :data:`ADD` (``progress`` then counts the memories added, every
    :data:`PROGRESS_EVERY`). Why: the CLI's bar said "add memories 0/N" for the ~12 s
    the calibration took, and moved every 1,000 adds (a review, s57)."""
    points = sorted({c for c in checkpoints if c <= n} | {n})
    rng = random.Random(7)
    nprng = np.random.default_rng(7)
    embedder = embedder or default_embedder()
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    db = Path(workdir or tmp.name) / "scale.db"  # type: ignore[union-attr]
    user_ids = [f"user-{i}" for i in range(users)]
    results: list[dict[str, Any]] = []
    added = reported = 0  # memories added, and added as far as progress was told
    stand_ins = 0  # stand-in vectors written so far (they stay in the store)
    if QUERY_TIMINGS + 1 + queries * len(points) > QUESTIONS:
        raise ValueError(
            f"{queries} searches at each of {len(points)} checkpoints ask more than the "
            f"{QUESTIONS} different synthetic questions"
        )
    asked: set[str] = set()  # no question is timed twice (see new_query)
    tell = stage or (lambda _name: None)
    tell(CALIBRATE)
    embed_costs = {**measure_query_latency(embedder, asked=asked), **measure_embed_rate(embedder)}
    locomo_rate = measure_locomo_embed_rate(embedder, locomo) if locomo is not None else {}
    tell(ADD)
    memory = Memory(db, embedder=embedder)
    try:
        for point in points:
            add_times: list[float] = []
            start = time.perf_counter()
            while added < point:
                text = synthetic_turn(rng)
                t0 = time.perf_counter()
                memory.add(text, user_id=rng.choice(user_ids), session_id=f"s{added // 50}")
                add_times.append(time.perf_counter() - t0)
                added += 1
                if progress and (added % PROGRESS_EVERY == 0 or added == point):
                    progress(added - reported)  # to the end: --n 1500 ended at 1000/1500
                    reported = added
            ingest_seconds = time.perf_counter() - start
            # Stop the worker before counting: counted while it still ran, vectors it
            # wrote after the count were in neither number (the test failed 1 in 4).
            memory.close()
            store = SQLiteStore(db)
            n_real = store.count_vectors() - stand_ins
            # A plain add in a session also stores the turn's extracted facts.
            records = sum(store.count(_every(memory.tenant, u)) for u in user_ids)
            stand_ins += fill_pending_vectors(store, embedder, nprng)
            store.close()
            memory = Memory(db, embedder=embedder)
            # The in-process indexes load on first use: the vector index every user's
            # rows at once, the keyword index each user's at that user's first search.
            # Steady-state searches are measured; the first ones are reported apart.
            first = []
            for user in user_ids:
                t0 = time.perf_counter()
                # A text of its own each, so none is a kept query vector (see new_query).
                memory.search(f"warm up the indexes of {user} at {point}", user_id=user)
                first.append(time.perf_counter() - t0)
            search_times, search_cpus = _measure_search(memory, user_ids, rng, queries, asked)
            results.append(
                {
                    "n": point,
                    "add_p50_ms": round(percentile(add_times, 50) * 1000, 3),
                    "add_p95_ms": round(percentile(add_times, 95) * 1000, 3),
                    "ingest_per_s": round(len(add_times) / ingest_seconds, 1),
                    **embed_costs,
                    "records": records,
                    "real_vectors": n_real,
                    "stand_in_vectors": stand_ins,
                    "search_p50_ms": round(percentile(search_times, 50) * 1000, 3),
                    "search_p95_ms": round(percentile(search_times, 95) * 1000, 3),
                    # a user's first search in the process: the indexes load
                    "first_search_max_ms": round(max(first) * 1000, 3),
                    # CPU time per search: what it costs with the cores to itself, and
                    # far less changed than wall time by other work on the machine.
                    "search_cpu_p50_ms": round(percentile(search_cpus, 50) * 1000, 3),
                    "search_cpu_p95_ms": round(percentile(search_cpus, 95) * 1000, 3),
                    "db_mb": round(_db_size(db) / 1e6, 1),
                }
            )
    finally:
        memory.close()
        if tmp is not None:
            tmp.cleanup()
    return {
        "results": results,
        "users": users,
        "queries_per_point": queries,
        "embedder": embedder.model_id,
        **embed_costs,
        **locomo_rate,
    }


def _every(tenant: str, user_id: str) -> Filter:
    return Filter(scope=Scope(tenant=tenant, user_id=user_id), include_invalid=True)


def locomo_like_turn(rng: random.Random) -> str:
    """A turn as long as LoCoMo's: 1-5 synthetic sentences, ~35 tokens on average
    (LoCoMo dev turns average 39 MiniLM tokens, 94 at most)."""
    return " ".join(synthetic_turn(rng) for _ in range(rng.randint(1, 5)))


def measure_embed_rate(
    embedder: Embedder, *, texts: int = 1024, batch: int = 64
) -> dict[str, float]:
    """Embedding throughput on LoCoMo-like synthetic turns, in batches of ``batch``
    through the path the background worker uses (:func:`embed_rate`).

    ``embed_per_s`` is turns per wall-clock second; ``embed_per_cpu_s`` per second of
    this thread's CPU time, which a loaded machine changes far less (the MiniLM
    embedder runs on the calling thread with one intra-op thread)."""
    rng = random.Random(11)
    when = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    sample = [
        MemoryRecord(
            id=str(n),
            text=locomo_like_turn(rng),
            scope=Scope(tenant="bench", user_id="u", session_id="s1"),
            metadata={"role": "user", "speaker": "Ana"},
            created_at=when,
            event_time=when,
        )
        for n in range(texts)
    ]
    per_s, per_cpu_s = embed_rate(embedder, sample, batch=batch)
    return {"embed_per_s": per_s, "embed_per_cpu_s": per_cpu_s}


def measure_locomo_embed_rate(
    embedder: Embedder, data: str | Path, *, texts: int = 1024, batch: int = 64
) -> dict[str, Any]:
    """The same rate on real LoCoMo turns (what issue #12's target names): ``texts``
    turns spread evenly over the file's conversations, each built into the record
    ``Memory.add`` stores for it in ``bench locomo`` (speaker, caption, date, the turn
    it answers), so their facts are the ones the worker embeds in use.

    ``locomo_embed_per_s`` / ``locomo_embed_per_cpu_s``; without the file (it is never
    copied into the repository), ``locomo_embed_skipped`` says why instead."""
    from ..memory.ingest import AddOptions, build_records, to_messages
    from .locomo_data import load_locomo
    from .locomo_memory import session_id, turn_message

    try:
        conversations = load_locomo(data)
    except (FileNotFoundError, ConfigError) as exc:  # missing, or not LoCoMo data
        return {"locomo_embed_skipped": str(exc)}
    records: list[MemoryRecord] = []
    for conv in conversations:
        previous: MemoryRecord | None = None
        for turn in conv.turns:
            scope = Scope(
                tenant="bench", user_id=conv.sample_id, session_id=session_id(conv, turn.session)
            )
            if previous is not None and previous.scope != scope:
                previous = None
            opts = AddOptions(scope, {}, turn.time, "episodic")
            (previous,) = build_records(to_messages(turn_message(turn)), opts, previous)
            records.append(previous)
    if not records:
        return {"locomo_embed_skipped": f"no turns in {data}"}
    # Evenly spaced over the whole file, the last conversation included.
    picks = np.linspace(0, len(records) - 1, min(texts, len(records))).round().astype(int)
    per_s, per_cpu_s = embed_rate(embedder, [records[i] for i in picks], batch=batch)
    return {"locomo_embed_per_s": per_s, "locomo_embed_per_cpu_s": per_cpu_s}


def embed_rate(
    embedder: Embedder, records: Sequence[MemoryRecord], *, batch: int = 64
) -> tuple[float, float]:
    """Records per wall-clock second and per CPU-second of this thread, embedded in
    batches of ``batch`` by ``turn_vectors.embed_records`` (the worker's path: a
    turn's offline facts are extracted, appended to its text and embedded on their
    own too), through ``embed_batch`` where the embedder has one. The first batch
    is embedded once before timing, so loading the model is not counted."""
    from ..memory.turn_vectors import embed_records

    embed = getattr(embedder, "embed_batch", embedder.embed)
    embed_records(embed, records[:batch])
    start, cpu = time.perf_counter(), time.thread_time()
    for i in range(0, len(records), batch):
        embed_records(embed, records[i : i + batch])
    wall, cpu = time.perf_counter() - start, time.thread_time() - cpu
    return round(len(records) / wall, 1), round(len(records) / max(cpu, 1e-9), 1)


#: Query embeddings :func:`measure_query_latency` times.
QUERY_TIMINGS = 200


def measure_query_latency(
    embedder: Embedder, *, queries: int = QUERY_TIMINGS, asked: set[str] | None = None
) -> dict[str, float]:
    """Median milliseconds to embed one short question alone (as a search does), after
    the model is loaded: wall clock (``query_embed_ms``) and this thread's CPU time
    (``query_embed_cpu_ms``, what the query costs with a core to itself). Each question
    is one not ``asked`` before (:func:`new_query`), so none comes from a cache."""
    rng = random.Random(13)
    asked = set() if asked is None else asked
    embedder.embed([new_query(rng, asked)])  # load the model first
    walls, cpus = [], []
    for _ in range(queries):
        q = new_query(rng, asked)
        start, cpu = time.perf_counter(), time.thread_time()
        embedder.embed([q])
        walls.append(time.perf_counter() - start)
        cpus.append(time.thread_time() - cpu)
    return {
        "query_embed_ms": round(percentile(walls, 50) * 1000, 3),
        "query_embed_cpu_ms": round(percentile(cpus, 50) * 1000, 3),
    }


def _db_size(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
