"""A SQLite store that stays open for days (a server's, an app's ``Memory``): what it
keeps on disk and in memory must follow what lives, not everything that ever happened,
while other processes write to the same file."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from contextos.store.sqlite import (
    INDEX_LOG_KEPT,
    PRUNE_INDEX_LOG_EVERY,
    WAL_SIZE_LIMIT,
    SQLiteStore,
)
from contextos.types import Filter, MemoryRecord, Scope, content_hash
from store_support import in_other_process


def _rec(memory_id: str, text: str, user: str = "ann") -> MemoryRecord:
    return MemoryRecord(
        id=memory_id,
        text=text,
        scope=Scope(tenant="t1", user_id=user),
        hash=content_hash(text),
        created_at=datetime.now(UTC),
    )


def _unit(seed: int) -> np.ndarray:
    vec = np.random.default_rng(seed).normal(size=8).astype(np.float32)
    return vec / np.linalg.norm(vec)


def test_the_write_ahead_log_is_cut_back_once_a_reader_lets_go(tmp_path: Path) -> None:
    """A reader holding a snapshot (a backup, a slow listing in another process) keeps
    every later commit in the -wal; once it ends, the log must shrink again while the
    store stays open, not stay at its largest until the last connection closes."""
    path = tmp_path / "s.db"
    wal = tmp_path / "s.db-wal"
    store = SQLiteStore(path)
    store.put([_rec("a0", "the first memory")])
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM memories").fetchone()  # holds its snapshot
    n = 0
    while wal.stat().st_size <= 2 * WAL_SIZE_LIMIT:
        store.put([_rec(f"m{n}-{i}", f"memory {n} number {i} " + "words " * 40) for i in range(20)])
        n += 1
    reader.execute("ROLLBACK")
    reader.close()
    for k in range(40):  # writes go on: a checkpoint completes and the log starts over
        later = [_rec(f"late-{k}-{i}", f"a later memory {k} {i} " + "x " * 40) for i in range(20)]
        store.put(later)
    assert wal.stat().st_size <= WAL_SIZE_LIMIT
    store.close()


def test_a_long_lived_store_catches_up_after_the_change_log_was_pruned(tmp_path: Path) -> None:
    """Every change is logged for the in-memory indexes of each process to catch up
    from; the log is pruned, and a store whose indexes fell behind the pruned part
    (it did not search while another process wrote a lot) must read them again rather
    than miss a deletion."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path)  # stays open, like a server's
    store.put([_rec("a1", "green tea with mint"), _rec("a2", "black tea")])
    store.set_vectors("t1", ["a1", "a2"], np.stack([_unit(1), _unit(2)]), "m")
    ann = Filter(scope=Scope(tenant="t1", user_id="ann"))
    assert {h.id for h in store.keyword_search(ann, "tea", limit=10)} == {"a1", "a2"}
    assert {h.id for h in store.vector_search(ann, _unit(1), limit=10)} == {"a1", "a2"}
    writes = 3 * PRUNE_INDEX_LOG_EVERY + 20  # in batches of 100, past the kept rows
    assert writes * 100 > 2 * INDEX_LOG_KEPT
    in_other_process(
        path,
        f"""
        store.delete("t1", "a1")
        for w in range({writes}):
            store.put([rec(f"b{{w}}-{{i}}", f"coffee note {{w}} {{i}}", "bob") for i in range(100)])
        store.put([rec("a3", "oolong tea", "ann")])
        """,
    )
    with sqlite3.connect(path) as db:
        (logged,) = db.execute("SELECT count(*) FROM index_log").fetchone()
    assert logged <= INDEX_LOG_KEPT + PRUNE_INDEX_LOG_EVERY * 100 + 100
    assert {h.id for h in store.keyword_search(ann, "tea", limit=10)} == {"a2", "a3"}
    assert {h.id for h in store.vector_search(ann, _unit(1), limit=10)} == {"a2"}
    store.close()


def test_forget_drops_the_users_vectors_from_memory_at_once(tmp_path: Path) -> None:
    """An erased user's vectors leave the in-memory index when ``forget`` returns, not
    at the next vector search (a server that only adds for a while kept them)."""
    store = SQLiteStore(tmp_path / "s.db")
    ids = [f"b{i}" for i in range(50)]
    store.put([_rec(i, f"bob's note {i}", user="bob") for i in ids] + [_rec("a1", "ann's")])
    store.set_vectors("t1", [*ids, "a1"], np.stack([_unit(i) for i in range(51)]), "m")
    store.vector_search(Filter(scope=Scope(tenant="t1", user_id="bob")), _unit(0), limit=5)
    index = store._index  # noqa: SLF001 - what stays in memory is the point here
    assert index is not None and len(index) == 51
    store.forget(Scope(tenant="t1", user_id="bob"))
    index = store._index  # noqa: SLF001
    assert index is not None and len(index) == 1 and index.allocated_rows() == 1
    store.close()


def test_many_users_with_one_memory_each_hold_little_memory(tmp_path: Path) -> None:
    """A server's index holds a block for every user it has read; most users of a
    service have a few memories, so a block must not reserve room for many (64 rows
    of 384 floats each made 20,000 one-memory users cost 1.4 GB)."""
    dims, users = 384, 300
    store = SQLiteStore(tmp_path / "s.db")
    ids = [f"m{i}" for i in range(users)]
    store.put([_rec(m, f"note {i}", user=f"u{i}") for i, m in enumerate(ids)])
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(users, dims)).astype(np.float32)
    store.set_vectors("t1", ids, vecs / np.linalg.norm(vecs, axis=1, keepdims=True), "m")
    assert store.vector_search(Filter(scope=Scope(tenant="t1", user_id="u7")), vecs[7], limit=1)
    index = store._index  # noqa: SLF001 - what stays in memory is the point here
    assert index is not None and len(index) == users
    per_user = index.bytes_held() / users
    assert per_user <= 2 * (dims * 4 + 64), per_user  # about one row each, not 64
    store.close()
