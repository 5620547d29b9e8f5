"""The SQLite store's keyword index holds at most ``lexical_users`` users.

A block of term counts was kept for every (tenant, user) the process had searched,
until a forget emptied it: a server meeting a million mostly idle users (one memory,
one search each) held ~4 KB of index for each, for good. Now the least recently
searched user is dropped past the bound and read again at its next search. What must
not change: its hits and scores (BM25's statistics are its own rows'), the changes made
while it was out (by this store, another connection, another process), a tenant
searched whole, a failing scope's fast failure, and a steady user's searches (never
dropped while it searches, never read again).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contextos.errors import StoreFault
from contextos.store.base import Patch
from contextos.store.sqlite import SQLiteStore
from contextos.store.sqlite.lexical_index import MAX_BLOCKS, LexicalIndex
from contextos.types import Filter, MemoryRecord, Scope, content_hash
from store_support import in_other_process

QUERY = "green tea garden hike"


def _rec(memory_id: str, text: str, user: str, tenant: str = "t1") -> MemoryRecord:
    return MemoryRecord(
        id=memory_id,
        text=text,
        scope=Scope(tenant=tenant, user_id=user),
        hash=content_hash(text),
        created_at=datetime.now(UTC),
    )


def _flt(user: str | None, tenant: str = "t1") -> Filter:
    return Filter(scope=Scope(tenant=tenant, user_id=user))


def _hits(store: SQLiteStore, flt: Filter, query: str = QUERY) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in store.keyword_search(flt, query, limit=100)]


def _fresh(path: Path, flt: Filter, query: str = QUERY) -> list[tuple[str, float]]:
    """The hits a store opened now on the file gives (its index reads the scope whole)."""
    store = SQLiteStore(path)
    try:
        return _hits(store, flt, query)
    finally:
        store.close()


def _index(store: SQLiteStore) -> LexicalIndex:
    index = store._lexical  # noqa: SLF001 - what stays in memory is the point here
    assert index is not None
    return index


def _users(store: SQLiteStore, names: list[str], tenant: str = "t1") -> None:
    """Each user a few memories sharing words (so BM25's statistics are the user's)."""
    store.put(
        [
            rec
            for name in names
            for rec in (
                _rec(f"{tenant}-{name}-1", f"{name} drinks green tea in the garden", name, tenant),
                _rec(f"{tenant}-{name}-2", "tea tea and a long hike", name, tenant),
                _rec(f"{tenant}-{name}-3", f"{name} has nothing to say", name, tenant),
            )
        ]
    )


def test_the_default_bound_holds_a_busy_servers_users() -> None:
    assert MAX_BLOCKS >= 10_000
    with pytest.raises(ValueError, match="lexical_users"):
        SQLiteStore(":memory:", lexical_users=0)


def test_many_users_searches_keep_the_held_users_under_the_bound(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", lexical_users=5)
    names = [f"u{i}" for i in range(40)]
    _users(store, names)
    try:
        for name in names:
            assert [i for i, _ in _hits(store, _flt(name))] == [f"t1-{name}-1", f"t1-{name}-2"]
            assert _index(store).blocks_held() <= 5
        index = _index(store)
        assert index.dropped == 35
        # only the five searched last are held, and so are their rows' ids
        assert [index.loaded("t1", n) for n in names[-6:]] == [False] + [True] * 5
        assert index.rows_held() == 15
        assert len(index._home) == 15  # noqa: SLF001 - a dropped user's ids go too
    finally:
        store.close()


def test_a_dropped_users_next_search_gives_the_same_hits_and_sees_writes_made_meanwhile(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path, lexical_users=2)
    other = SQLiteStore(path)  # another connection to the file
    _users(store, ["ann", "bob", "cy", "dee"])
    try:
        before = _hits(store, _flt("ann"))
        assert before == _fresh(path, _flt("ann"))
        for name in ("bob", "cy"):  # ann is dropped
            _hits(store, _flt(name))
        assert not _index(store).loaded("t1", "ann")
        assert _hits(store, _flt("ann")) == before  # same ids, same scores
        assert _index(store).loaded("t1", "ann")

        # ann dropped again; then changed by this store, another connection and
        # another process while she is out
        for name in ("bob", "cy"):
            _hits(store, _flt(name))
        assert not _index(store).loaded("t1", "ann")
        store.put([_rec("ann-new", "a green hike", "ann")])
        other.update("t1", "t1-ann-1", Patch(text="ann drinks black coffee"))
        in_other_process(
            path,
            """
            store.delete("t1", "t1-ann-3")
            store.put([rec("ann-far", "tea garden tea garden", "ann")])
            store.update("t1", "t1-bob-2", Patch(text="bob never walks"))
            """,
        )
        after = _hits(store, _flt("ann"))
        assert after == _fresh(path, _flt("ann"))
        assert {i for i, _ in after} == {"ann-new", "t1-ann-2", "ann-far"}
        assert after != before  # the statistics moved with her rows
        # the users held all along saw the other process's change too
        assert _hits(store, _flt("bob")) == _fresh(path, _flt("bob"))
        assert "t1-bob-2" not in {i for i, _ in _hits(store, _flt("bob"))}
        assert _index(store).blocks_held() <= 2
    finally:
        other.close()
        store.close()


def test_a_steady_user_is_never_dropped_nor_read_again(tmp_path: Path) -> None:
    """Least recently searched, not first loaded: a user who keeps searching stays
    held, as the same block, however many others come and go."""
    store = SQLiteStore(tmp_path / "s.db", lexical_users=3)
    names = [f"u{i}" for i in range(30)]
    _users(store, ["steady", *names])
    try:
        first = _hits(store, _flt("steady"))
        block = _index(store)._blocks[("t1", "steady")]  # noqa: SLF001
        for name in names:
            _hits(store, _flt(name))
            assert _hits(store, _flt("steady")) == first
            assert _index(store)._blocks[("t1", "steady")] is block  # noqa: SLF001
        assert _index(store).dropped == len(names) - 2
    finally:
        store.close()


def test_a_tenant_searched_whole_is_read_again_once_one_of_its_users_was_dropped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path, lexical_users=4)
    _users(store, ["ann", "bob", "cy"])
    _users(store, ["xi", "yu", "zo"], tenant="t2")
    try:
        whole = _hits(store, _flt(None))
        assert whole == _fresh(path, _flt(None))
        assert _index(store).holds(_flt(None))
        _hits(store, _flt("xi", "t2"))
        _hits(store, _flt("yu", "t2"))  # two of t1's users are dropped
        assert not _index(store).holds(_flt(None))
        in_other_process(path, 'store.put([rec("dan-1", "green tea", "dan")])')
        store.put([_rec("ann-4", "garden garden", "ann")])
        assert _hits(store, _flt(None)) == _fresh(path, _flt(None))
        assert "dan-1" in {i for i, _ in _hits(store, _flt(None))}
    finally:
        store.close()


def test_a_search_over_more_users_than_the_bound_still_reads_them_all(tmp_path: Path) -> None:
    """A search without a user reads every user of its tenant: none of them is dropped
    under it; the bound holds again once another search reads."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path, lexical_users=2)
    _users(store, ["ann", "bob", "cy", "dee"])
    _users(store, ["xi"], tenant="t2")
    try:
        assert _hits(store, _flt(None)) == _fresh(path, _flt(None))
        assert _index(store).blocks_held() == 4
        assert _hits(store, _flt("xi", "t2")) == _fresh(path, _flt("xi", "t2"))
        assert _index(store).blocks_held() == 2
        assert _index(store).loaded("t2", "xi")
    finally:
        store.close()


def test_a_failing_scope_fails_fast_across_drops_and_heals_when_its_row_is_fixed(
    tmp_path: Path,
) -> None:
    """A row a hand-written fix left with a time as text fails its user's searches. The
    scope stays remembered as failing while other users come and go (nothing of it is
    read again), the others' hits stay right, and fixing the row heals it."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path, lexical_users=2)
    _users(store, ["ann", "bob", "cy", "mal"])
    with sqlite3.connect(path) as db:
        db.execute("UPDATE memories SET event_time = '2024-01-01' WHERE id = 't1-mal-2'")
    db.close()
    try:
        with pytest.raises((ValueError, TypeError)):
            _hits(store, _flt("mal"))
        for name in ("ann", "bob", "cy", "ann"):
            with pytest.raises(StoreFault, match="keyword search failed"):
                _hits(store, _flt("mal"))
            assert _hits(store, _flt(name)) == _fresh(path, _flt(name))
            assert _index(store).blocks_held() <= 2
        with sqlite3.connect(path) as db:
            db.execute("UPDATE memories SET event_time = NULL WHERE id = 't1-mal-2'")
        db.close()
        assert _hits(store, _flt("mal")) == _fresh(path, _flt("mal"))
        assert [i for i, _ in _hits(store, _flt("mal"))] == ["t1-mal-1", "t1-mal-2"]
    finally:
        store.close()
