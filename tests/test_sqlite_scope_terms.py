"""The SQLite full-text index carries each row's scope (schema V5), so a keyword search
ranks only the caller's rows. These tests pin what must not change with it: who sees
what, the index staying in step with inserts, updates and deletes, and a file written
before V5 upgrading in place."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from contextos.store.base import Patch
from contextos.store.sqlite import SQLiteStore, scope_terms
from contextos.types import Filter, MemoryRecord, Scope, content_hash
from store_support import sqlite_file_at


def _rec(memory_id: str, text: str, **scope: str) -> MemoryRecord:
    return MemoryRecord(
        id=memory_id,
        text=text,
        scope=Scope(tenant=scope.pop("tenant", "t1"), **scope),
        hash=content_hash(text),
        created_at=datetime.now(UTC),
    )


def _ids(store: SQLiteStore, query: str, **scope: str) -> list[str]:
    flt = Filter(scope=Scope(tenant=scope.pop("tenant", "t1"), **scope))
    return sorted(r.id for r in store.keyword_search(flt, query, limit=50))


def _fts_ok(store: SQLiteStore) -> None:
    # FTS5 compares its index with the content table's rows (scope_terms included).
    store._db.execute("INSERT INTO memories_fts (memories_fts) VALUES ('integrity-check')")  # noqa: SLF001


def test_keyword_search_sees_exactly_the_scope_it_names(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.put(
        [
            _rec("a1", "green tea in the garden", user_id="ann", session_id="s1"),
            _rec("a2", "black tea at work", user_id="ann", session_id="s2", agent_id="bot"),
            _rec("b1", "green tea with ann", user_id="bob", session_id="s1"),
            _rec("x1", "green tea elsewhere", user_id="ann", session_id="s1", tenant="t2"),
            _rec("n1", "tea without a user", session_id="s1"),
            # ids that differ only in case or in a character the tokenizer splits on
            _rec("c1", "tea for Ann", user_id="Ann"),
            _rec("c2", "tea for a.nn", user_id="a.nn"),
        ]
    )
    assert _ids(store, "tea", user_id="ann") == ["a1", "a2"]
    assert _ids(store, "tea", user_id="Ann") == ["c1"]
    assert _ids(store, "tea", user_id="a.nn") == ["c2"]
    assert _ids(store, "tea", session_id="s1") == ["a1", "b1", "n1"]
    assert _ids(store, "tea", user_id="ann", session_id="s1") == ["a1"]
    assert _ids(store, "tea", agent_id="bot") == ["a2"]
    assert _ids(store, "tea", user_id="ann", tenant="t2") == ["x1"]
    assert _ids(store, "tea", user_id="nobody") == []
    assert _ids(store, "green") == ["a1", "b1"]  # a tenant-wide search is unrestricted
    # the scope terms are not words: a query for one finds nothing
    assert _ids(store, scope_terms(Scope(tenant="t1", user_id="ann"))[0]) == []
    _fts_ok(store)
    store.close()


def test_updates_and_deletes_keep_the_index_in_step(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.put([_rec("a1", "green tea", user_id="ann"), _rec("a2", "coffee", user_id="ann")])
    store.update("t1", "a1", Patch(text="oolong"))
    store.update("t1", "a2", Patch(context="tea on Sunday"))
    assert _ids(store, "tea", user_id="ann") == ["a2"]
    assert _ids(store, "oolong", user_id="ann") == ["a1"]
    store.delete("t1", "a2")
    assert _ids(store, "tea", user_id="ann") == []
    _fts_ok(store)
    store.close()


def test_a_version_4_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    con = sqlite_file_at(path, 4)
    for i, user in enumerate(["ann", "bob", "ann"]):
        con.execute(
            "INSERT INTO memories (id, tenant, user_id, memory_type, text, created_at, "
            "updated_at, hash) VALUES (?, 't1', ?, 'episodic', ?, 0, 0, 'h')",
            (f"m{i}", user, f"old tea note {i}"),
        )
    con.commit()
    con.close()
    store = SQLiteStore(path)
    assert _ids(store, "tea", user_id="ann") == ["m0", "m2"]
    assert _ids(store, "tea", user_id="bob") == ["m1"]
    store.delete("t1", "m0")
    assert _ids(store, "tea", user_id="ann") == ["m2"]
    _fts_ok(store)
    store.close()


def test_a_filter_that_drops_the_best_matches_reaches_deeper(tmp_path: Path) -> None:
    """The best few are ranked before the whole filter is checked: when the filter drops
    them (here a type filter and closed validity), the search fetches deeper, and the
    result is what ranking every match of the scope and then filtering gives."""
    store = SQLiteStore(tmp_path / "s.db")
    semantic = [
        MemoryRecord(
            id=f"sem{i:02d}",
            text="tea tea tea " * 3,
            scope=Scope(tenant="t1", user_id="ann"),
            memory_type="semantic",
            hash=content_hash(f"sem{i}"),
            created_at=datetime.now(UTC),
        )
        for i in range(45)
    ]
    closed = [_rec(f"old{i:02d}", "tea tea tea", user_id="ann") for i in range(20)]
    plain = [_rec(f"ep{i:02d}", "tea and " + "cake " * (i % 7), user_id="ann") for i in range(25)]
    store.put(semantic + closed + plain)
    for rec in closed:
        store.update("t1", rec.id, Patch(valid_to=datetime(2000, 1, 1, tzinfo=UTC)))
    flt = Filter(scope=Scope(tenant="t1", user_id="ann"), memory_types=("episodic",))
    got = [r.id for r in store.keyword_search(flt, "tea", limit=10)]
    reference = [
        r[0]
        for r in store._db.execute(  # noqa: SLF001 - every match ranked, then filtered
            "SELECT m.id FROM memories_fts JOIN memories m ON m.rowid = memories_fts.rowid "
            "WHERE memories_fts MATCH 'tea' AND m.memory_type = 'episodic' AND m.user_id = 'ann' "
            "AND m.valid_to IS NULL ORDER BY bm25(memories_fts, 1.0, 0.5, 0.0) LIMIT 10"
        )
    ]
    assert got == reference and len(got) == 10 and all(i.startswith("ep") for i in got)
    store.close()
