"""Speed properties that a functional test cannot see: work that must not grow with
the size of the store, and the server's embedding path sharing forward passes.

Latency is not asserted (the machine is shared); the SQLite tests count the virtual
machine instructions a call executes instead, which is deterministic: a lookup of a
few records by id must cost the same in a tenant of 300 records as in one of 3,000.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from contextos.server.batching import BatchingEmbedder
from contextos.store.base import Patch
from contextos.store.sqlite import SQLiteStore
from contextos.store.sqlite.vector_index import IndexRow, VectorIndex
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, MemoryRecord, Scope, content_hash


def _record(i: int, user: str) -> MemoryRecord:
    text = f"note {i} about tea and the garden"
    return MemoryRecord(
        id=f"id-{i:06d}",
        text=text,
        scope=Scope(tenant="t1", user_id=user),
        hash=content_hash(text),
        created_at=datetime.now(UTC),
    )


def _filled(path: Path, n: int) -> SQLiteStore:
    store = SQLiteStore(path)
    store.put([_record(i, f"u{i % 10}") for i in range(n)])
    return store


@contextmanager
def _counting(*connections: sqlite3.Connection) -> Iterator[Callable[[], int]]:
    """Count SQLite VM instructions (in steps of 10) run on ``connections``."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    for conn in connections:
        conn.set_progress_handler(tick, 10)
    try:
        yield lambda: steps[0]
    finally:
        for conn in connections:
            conn.set_progress_handler(None, 10)


def _cost(store: SQLiteStore, call: Callable[[], object]) -> int:
    # The store's two connections (writer, reader): what a call runs on either counts.
    with _counting(store._db, store._reader) as steps:  # noqa: SLF001 - instrumenting
        call()
        return steps()


@pytest.mark.parametrize("operation", ["get_many", "set_vectors", "find_by_hash"])
def test_lookups_by_id_or_hash_do_not_walk_the_tenant(tmp_path: Path, operation: str) -> None:
    """get_many, set_vectors (the embedding worker's write, under the write lock) and
    find_by_hash (every add outside a session) once walked every record of the tenant:
    70 ms per search and 20 ms adds at 100k records."""
    ids = [f"id-{i:06d}" for i in (1, 7, 42, 99, 250)]
    vectors = np.full((len(ids), 4), 0.5, dtype=np.float32)
    calls: dict[str, Callable[[SQLiteStore], object]] = {
        "get_many": lambda store: store.get_many("t1", ids),
        "set_vectors": lambda store: store.set_vectors("t1", ids, vectors, "m"),
        "find_by_hash": lambda store: store.find_by_hash(
            Scope(tenant="t1", user_id="u1"), content_hash("note 1 about tea and the garden")
        ),
    }
    costs = []
    for n in (300, 3000):
        store = _filled(tmp_path / f"{operation}-{n}.db", n)
        costs.append(_cost(store, lambda: calls[operation](store)))  # noqa: B023 - called now
        store.close()
    small, large = costs
    assert large < small * 1.5 + 50, f"{operation}: {small} steps at 300 records, {large} at 3000"


def test_the_latest_record_of_a_session_is_read_without_walking_the_tenant(
    tmp_path: Path,
) -> None:
    """Every add in a session first reads the session's latest record of that user
    (``list(limit=1)``). For a user new to the session the planner walked the tenant's
    whole created_at index: one add in five of ``bench scale`` took 20 ms at 100k."""
    costs = []
    for n in (300, 3000):
        store = SQLiteStore(tmp_path / f"session-{n}.db")
        store.put(
            [
                MemoryRecord(
                    id=f"id-{i:06d}",
                    text=f"turn {i}",
                    scope=Scope(tenant="t1", user_id=f"u{i % 10}", session_id=f"s{i // 50}"),
                    hash=content_hash(f"turn {i}"),
                    created_at=datetime.now(UTC),
                )
                for i in range(n)
            ]
        )
        last = Scope(tenant="t1", user_id="u-new", session_id=f"s{(n - 1) // 50}")
        flt = Filter(scope=last, include_invalid=True)
        costs.append(_cost(store, lambda: store.list(flt, limit=1)))  # noqa: B023 - called now
        assert store.list(flt, limit=1) == []
        store.close()
    small, large = costs
    assert large < small * 1.5 + 50, f"{small} steps at 300 records, {large} at 3000"


def test_keyword_search_ranks_only_the_callers_rows(tmp_path: Path) -> None:
    """FTS5 ranked every row of the file matching any query word, all users', and the
    SQL filter then dropped the others': at 100k records the largest cost of a search.
    Here the caller has 30 matching rows among 300 or 3,000 of other users."""
    costs = []
    for n in (300, 3000):
        store = SQLiteStore(tmp_path / f"fts-{n}.db")
        mine = [_record(i, "me") for i in range(30)]
        store.put(mine + [_record(i, f"u{i % 10}") for i in range(30, 30 + n)])
        flt = Filter(scope=Scope(tenant="t1", user_id="me"))
        costs.append(_cost(store, lambda: store.keyword_search(flt, "tea garden", limit=10)))  # noqa: B023
        hits = store.keyword_search(flt, "tea garden", limit=10)
        assert {r.id for r in hits} <= {r.id for r in mine} and len(hits) == 10
        store.close()
    small, large = costs
    assert large < small * 1.5 + 50, f"{small} steps at 300 records, {large} at 3000"


def test_submit_returns_a_future_and_concurrent_queries_share_a_batch() -> None:
    """The retriever queues its query with ``submit`` and runs the keyword search while
    it is embedded; queries queued together are taken together, each embedded alone."""
    calls: list[list[str]] = []
    gate = threading.Event()

    class Held(HashEmbedder):
        def embed(self, texts):  # type: ignore[no-untyped-def]
            gate.wait(10)
            calls.append(list(texts))
            if "boom" in texts:
                raise RuntimeError("embedder failed")
            return super().embed(texts)

    emb = BatchingEmbedder(Held())
    try:
        first = emb.submit(["warm"])  # the batching thread now waits inside this call
        time.sleep(0.1)
        futures = {q: emb.submit([q]) for q in ("tea", "coffee", "bike")}
        assert not any(f.done() for f in futures.values())
        gate.set()
        plain = HashEmbedder()
        first.result(10)
        for q, future in futures.items():
            np.testing.assert_array_equal(future.result(10), plain.embed([q]))
        # taken together, embedded one by one: a query's vector is the one it gets alone
        assert calls[0] == ["warm"] and sorted(calls[1:4]) == [["bike"], ["coffee"], ["tea"]]
        failed = emb.submit(["boom"])
        with pytest.raises(RuntimeError, match="embedder failed"):
            failed.result(10)
        assert emb.submit([]).result(1).shape == (0, emb.dimensions)
    finally:
        gate.set()
        emb.close()


def _naive_search(
    rows: dict[str, tuple[IndexRow, np.ndarray]], query: np.ndarray, flt: Filter, limit: int
) -> list[str]:
    """What the index must return: every live row checked one by one."""
    scope = flt.scope
    scored = []
    for row, vec in rows.values():
        if row.tenant != scope.tenant:
            continue
        if any(
            want is not None and getattr(row, f) != want
            for f, want in (
                ("user_id", scope.user_id),
                ("agent_id", scope.agent_id),
                ("session_id", scope.session_id),
            )
        ):
            continue
        if flt.memory_types and row.memory_type not in flt.memory_types:
            continue
        scored.append((-float(vec @ query), row.id))
    return [i for _, i in sorted(scored)[:limit]]


def test_vector_index_blocks_answer_like_a_scan_of_every_row() -> None:
    """Per-(tenant, user) blocks: user-scoped, agent-only, session-only and typed
    searches, after removals and a record moving scope, match a plain scan."""
    rng = np.random.default_rng(3)
    index = VectorIndex(8)
    rows: dict[str, tuple[IndexRow, np.ndarray]] = {}

    def add(n: int) -> None:
        batch: list[IndexRow] = []
        vecs: list[np.ndarray] = []
        for _ in range(n):
            i = len(rows) + len(batch)
            row = IndexRow(
                id=f"r{i}-{rng.integers(1 << 30)}",
                tenant=f"t{rng.integers(2)}",
                user_id=None if rng.random() < 0.2 else f"u{rng.integers(4)}",
                agent_id=None if rng.random() < 0.5 else f"a{rng.integers(2)}",
                session_id=f"s{rng.integers(5)}",
                memory_type=str(rng.choice(["episodic", "semantic"])),
                created_at=1.0,
                event_time=None,
                valid_from=None,
                valid_to=None,
            )
            vec = rng.normal(size=8).astype(np.float32)
            batch.append(row)
            vecs.append(vec / np.linalg.norm(vec))
        index.upsert(batch, np.array(vecs))
        rows.update((r.id, (r, v)) for r, v in zip(batch, vecs, strict=True))

    add(300)
    gone = list(rows)[::7]
    index.remove(gone)
    for memory_id in gone:
        del rows[memory_id]
    moved_id, (moved, vec) = next(iter(rows.items()))
    moved = dataclasses.replace(moved, tenant="t0", user_id="u-new")
    index.upsert([moved], vec[None, :])
    rows[moved_id] = (moved, vec)
    add(200)  # blocks grow past their first capacity
    assert len(index) == len(rows)
    filters = [
        Filter(scope=Scope(tenant="t0", user_id="u1")),
        Filter(scope=Scope(tenant="t1", user_id="u3"), memory_types=("semantic",)),
        Filter(scope=Scope(tenant="t0", user_id="u-new")),
        Filter(scope=Scope(tenant="t1", agent_id="a1")),
        Filter(scope=Scope(tenant="t0", session_id="s2")),
        Filter(scope=Scope(tenant="t0", user_id="nobody")),
        Filter(scope=Scope(tenant="t9", user_id="u1")),
    ]
    for flt in filters:
        for limit in (1, 5, 1000):
            query = rng.normal(size=8).astype(np.float32)
            got = [i for i, _ in index.search(query, flt, limit=limit, now=2.0)]
            assert got == _naive_search(rows, query, flt, limit), flt
    assert index.vectors().shape == (len(rows), 8)


def test_vector_index_stays_the_size_of_what_lives_in_it() -> None:
    """A store that stays open re-indexes a record (remove, then upsert) on every change
    of its text or validity: rows of removed records are compacted away, searches still
    match a plain scan, and a user whose memories are all removed leaves no rows."""
    rng = np.random.default_rng(5)
    index = VectorIndex(8)
    rows: dict[str, tuple[IndexRow, np.ndarray]] = {}

    def put(memory_id: str, user: str) -> None:
        row = IndexRow(memory_id, "t", user, None, "s", "episodic", 1.0, None, None, None)
        vec = rng.normal(size=8).astype(np.float32)
        vec /= np.linalg.norm(vec)
        index.upsert([row], vec[None, :])
        rows[memory_id] = (row, vec)

    for i in range(40):
        put(f"ana-{i}", "ana")
        put(f"bob-{i}", "bob")
    for step in range(2000):  # edits: each re-indexes one of Ana's records
        memory_id = f"ana-{step % 40}"
        index.remove([memory_id])
        put(memory_id, "ana")
        if step % 250 == 0:
            query = rng.normal(size=8).astype(np.float32)
            flt = Filter(scope=Scope(tenant="t", user_id="ana"))
            got = [i for i, _ in index.search(query, flt, limit=10, now=2.0)]
            assert got == _naive_search(rows, query, flt, 10)
    assert len(index) == 80
    assert index.allocated_rows() <= 2 * 80 + 2
    index.remove([f"ana-{i}" for i in range(40)])  # Ana is forgotten
    for i in range(40):
        del rows[f"ana-{i}"]
    assert index.allocated_rows() == 40
    assert (
        index.search(
            np.ones(8, np.float32), Filter(scope=Scope(tenant="t", user_id="ana")), limit=5, now=2.0
        )
        == []
    )
    for flt in (Filter(scope=Scope(tenant="t", user_id="bob")), Filter(scope=Scope(tenant="t"))):
        query = rng.normal(size=8).astype(np.float32)
        got = [i for i, _ in index.search(query, flt, limit=1000, now=2.0)]
        assert got == _naive_search(rows, query, flt, 1000)
    assert index.vectors().shape == (40, 8)


def test_vector_index_searches_while_another_thread_compacts_it() -> None:
    """The store searches the index outside its lock, so a request's search may run
    while another request's refresh removes rows and compacts the block: a search must
    never fail, nor return an id with another row's score."""
    import sys
    import threading
    import time

    rng = np.random.default_rng(9)
    index = VectorIndex(8)
    vectors = rng.normal(size=(400, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [
        IndexRow(f"m{i}", "t", "u", None, None, "episodic", 1.0, None, None, None)
        for i in range(400)
    ]
    flt = Filter(scope=Scope(tenant="t", user_id="u"))
    errors: list[str] = []
    stop = time.monotonic() + 3.0

    def search() -> None:
        query = vectors[3]
        while time.monotonic() < stop:
            try:
                for memory_id, score in index.search(query, flt, limit=20, now=2.0):
                    i = int(memory_id[1:])
                    if abs(float(vectors[i] @ query) - score) > 1e-4 and score != 0.0:
                        errors.append(f"{memory_id} scored {score}")
            except Exception as exc:  # collected: the assertion shows it
                errors.append(repr(exc))

    def churn() -> None:
        k = 0
        while time.monotonic() < stop:
            batch = list(range(k % 3, 400, 3))[:90]
            index.upsert([rows[i] for i in batch], vectors[batch])
            index.remove([f"m{i}" for i in batch[:70]])  # mostly dead: compacted
            k += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=search) for _ in range(3)]
        threads.append(threading.Thread(target=churn))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


def test_vector_search_without_metadata_checks_no_hit_in_sql(tmp_path: Path) -> None:
    """The index tests scope, type, times and validity itself, just refreshed: checking
    each hit again in SQL cost a tenth of a search. Once the index is up to date, a
    search costs the same SQL (the freshness check) for 5 hits as for 100, and it still
    leaves out what the filter excludes (another user's, an expired record)."""
    store = _filled(tmp_path / "vectors.db", 600)
    ids = [f"id-{i:06d}" for i in range(600)]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(600, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.set_vectors("t1", ids, vectors, "m")
    store.update("t1", "id-000003", Patch(valid_to=datetime(2001, 1, 1, tzinfo=UTC)))
    flt = Filter(scope=Scope(tenant="t1", user_id="u3"))
    store.vector_search(flt, vectors[3], limit=1)  # brings the index up to date
    few = _cost(store, lambda: store.vector_search(flt, vectors[3], limit=5))
    many = _cost(store, lambda: store.vector_search(flt, vectors[3], limit=100))
    assert many <= few + 5, f"{few} steps for 5 hits, {many} for 100"
    hits = store.vector_search(flt, vectors[3], limit=100)
    assert len(hits) == 59  # u3's 60 records but the expired one
    assert all(int(h.id[3:]) % 10 == 3 and h.id != "id-000003" for h in hits)
    store.close()
