"""The SQLite store's in-process keyword index (``store/sqlite/lexical_index.py``).

It must rank exactly as FTS5's ``bm25()`` does over a copy of the file that holds only
the searched scope (the reference query below is the one the store ran before the
index; BM25's statistics are the scope's, not the file's), and stay exact while the process
stays up and other processes write: inserts, text and context updates, deletes, a
rowid reused after the newest record's delete, a forgotten user, a new user of a
tenant searched whole.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextos.store.base import Patch
from contextos.store.sqlite import SQLiteStore, scope_terms
from contextos.store.sqlite.codec import filter_sql
from contextos.text.query import query_terms
from contextos.types import Filter, MemoryRecord, MemoryType, Scope, content_hash
from store_support import in_other_process

WORDS = (
    "tea coffee teas coffees garden gardening hike hiking hiked paris Ann ann café cafe 7 2023"
    " u s add seed"  # words the scope column could hold as terms
)
VOCAB = WORDS.split()


def _rec(
    memory_id: str,
    text: str,
    context: str = "",
    kind: MemoryType = "episodic",
    when: datetime | None = None,
    **scope: str,
) -> MemoryRecord:
    return MemoryRecord(
        id=memory_id,
        text=text,
        context=context,
        memory_type=kind,
        event_time=when,
        scope=Scope(tenant=scope.pop("tenant", "t1"), **scope),
        hash=content_hash(text),
        created_at=datetime.now(UTC),
    )


OLD, LATER = datetime(2020, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)

#: Filters the index must answer as SQL would: scope, types, event times, validity.
FILTERS = (
    Filter(scope=Scope(tenant="t1", user_id="ann")),
    Filter(scope=Scope("t1")),
    Filter(scope=Scope(tenant="t1", user_id="bob", session_id="s2")),
    Filter(scope=Scope(tenant="t1", user_id="ann"), memory_types=("semantic",)),
    Filter(scope=Scope(tenant="t1", user_id="ann"), event_after=datetime(2025, 1, 1, tzinfo=UTC)),
    Filter(scope=Scope(tenant="t1", user_id="ann"), include_invalid=True),
    Filter(scope=Scope("t1"), as_of=datetime(2021, 1, 1, tzinfo=UTC)),
)


def _fts5(path: Path, flt: Filter, query: str, context_weight: float) -> dict[str, float]:
    """What FTS5's bm25() gives every matching row of the filter's scope in a copy of
    the file that holds only that scope (its user's records, or its tenant's): BM25's
    statistics are the searched scope's, not the file's."""
    words = query_terms(query)
    if not words:
        return {}
    match = "{text context} : (" + " OR ".join(f'"{w}"' for w in words) + ")"
    match += "".join(f' AND scope_terms : "{t}"' for t in scope_terms(flt.scope))
    where, params = filter_sql(flt, time.time())
    source, db = sqlite3.connect(path), sqlite3.connect(":memory:")
    try:
        source.backup(db)
        db.execute(
            "DELETE FROM memories WHERE NOT (tenant = ? AND (? IS NULL OR user_id IS ?))",
            (flt.scope.tenant, flt.scope.user_id, flt.scope.user_id),
        )
        rows = db.execute(
            f"SELECT m.id, bm25(memories_fts, 1.0, {context_weight!r}, 0.0) FROM memories_fts "
            "JOIN memories m ON m.rowid = memories_fts.rowid "
            f"WHERE memories_fts MATCH ? AND {where}",
            (match, *params),
        ).fetchall()
    finally:
        db.close()
        source.close()
    return {memory_id: -score for memory_id, score in rows}


def _ours(store: SQLiteStore, flt: Filter, query: str, context_weight: float) -> dict[str, float]:
    hits = store.keyword_search(flt, query, limit=10_000, context_weight=context_weight)
    return {h.id: h.score for h in hits}


def _same(ours: dict[str, float], theirs: dict[str, float]) -> None:
    assert ours.keys() == theirs.keys()
    for memory_id, score in theirs.items():
        assert ours[memory_id] == pytest.approx(score, rel=1e-12, abs=1e-12), memory_id


texts = st.lists(st.sampled_from(VOCAB + ["the", "a", "Zoë", "naïve", "x_y"]), max_size=8).map(
    " ".join
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(texts, texts, st.sampled_from(["ann", "bob"]), st.sampled_from(["s1", "s2"])),
        min_size=1,
        max_size=25,
    ),
    kinds=st.lists(
        st.tuples(st.sampled_from(["episodic", "semantic"]), st.sampled_from([None, OLD, LATER])),
        min_size=25,
        max_size=25,
    ),
    edits=st.lists(st.tuples(st.integers(0, 24), texts, st.integers(0, 2)), max_size=6),
    query=texts,
    context_weight=st.sampled_from([0.5, 0.0, 1.0]),
)
def test_scores_equal_fts5_bm25_through_writes(
    tmp_path: Path,
    rows: list[tuple[str, str, str, str]],
    kinds: list[tuple[MemoryType, datetime | None]],
    edits: list[tuple[int, str, int]],
    query: str,
    context_weight: float,
) -> None:
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "p.db"  # a new file for each example
    store = SQLiteStore(path)

    def compare(filters: tuple[Filter, ...]) -> None:
        for flt in filters:
            _same(_ours(store, flt, query, context_weight), _fts5(path, flt, query, context_weight))

    try:
        store.put(
            [
                _rec(f"r{i}", t, c, *kinds[i], user_id=u, session_id=s)
                for i, (t, c, u, s) in enumerate(rows)
            ]
        )
        compare(FILTERS)
        # inserts only, of held and unheld users: the kept counts move with them
        store.put([_rec(f"n{i}", t, c, user_id=u) for i, (t, c, u, _) in enumerate(rows[:5])])
        store.put([_rec(f"o{i}", t, c, user_id="olga") for i, (t, c, _, _) in enumerate(rows[:3])])
        compare(FILTERS[:2])
        for i, text, what in edits:  # changes after the index holds the users
            if i >= len(rows) or not rows[i][2]:  # no such row, or deleted already
                continue
            if not text:
                store.delete("t1", f"r{i}")
                rows[i] = ("", "", "", "")
                continue
            store.update(
                "t1", f"r{i}", (Patch(text=text), Patch(context=text), Patch(valid_to=OLD))[what]
            )
        compare(FILTERS)
    finally:
        store.close()


def test_the_best_hits_come_in_bm25_order_and_ties_in_write_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.put(
        [
            _rec("long", "tea " + "filler " * 30, user_id="ann"),
            _rec("twice", "tea and more tea", user_id="ann"),
            _rec("same1", "tea garden", user_id="ann"),
            _rec("same2", "tea garden", user_id="ann"),
            _rec("ctx", "nothing here", "tea", user_id="ann"),
        ]
    )
    flt = Filter(scope=Scope(tenant="t1", user_id="ann"))
    hits = store.keyword_search(flt, "tea", limit=3)
    theirs = _fts5(tmp_path / "s.db", flt, "tea", 0.5)
    assert [h.id for h in hits] == sorted(theirs, key=lambda i: -theirs[i])[:3]
    assert [h.id for h in hits][1:] == ["same1", "same2"]  # equal scores: written first, first
    store.close()


def _found(store: SQLiteStore, query: str, user: str | None = "ann") -> list[str]:
    flt = Filter(scope=Scope(tenant="t1", user_id=user))
    return sorted(h.id for h in store.keyword_search(flt, query, limit=50))


def test_a_long_running_store_sees_every_change_another_process_makes(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)  # stays open, like a server's
    store.put([_rec("a1", "green tea", user_id="ann"), _rec("b1", "black tea", user_id="bob")])
    assert _found(store, "tea") == ["a1"]  # ann is now held in memory

    in_other_process(path, 'store.put([rec("a2", "oolong tea", "ann")])')
    assert _found(store, "oolong") == ["a2"]
    in_other_process(path, 'store.update("t1", "a1", Patch(text="jasmine"))')
    assert _found(store, "green") == []
    assert _found(store, "jasmine") == ["a1"]
    in_other_process(path, 'store.update("t1", "a1", Patch(context="said on a hike"))')
    assert _found(store, "hike") == ["a1"]
    in_other_process(path, 'store.delete("t1", "a2")')
    assert _found(store, "oolong") == []
    _fts_matches_ours(store, path, "tea jasmine hike")


def test_a_rowid_reused_after_a_delete_is_read_as_the_new_record(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.put([_rec("a1", "green tea", user_id="ann")])
    in_other_process(path, 'store.put([rec("b1", "black coffee", "bob")])')
    assert _found(store, "tea") == ["a1"]  # this process has now seen b1's rowid
    # bob's record is the newest; once it is deleted SQLite gives its rowid to the
    # next insert, here ann's, between two searches of this process.
    in_other_process(
        path,
        """
        store.delete("t1", "b1")
        store.put([rec("a2", "espresso coffee", "ann")])
        """,
    )
    with sqlite3.connect(path) as db:  # the premise: the rowid was reused
        assert db.execute("SELECT rowid FROM memories WHERE id = 'a2'").fetchone() == (2,)
    assert _found(store, "coffee") == ["a2"]
    _fts_matches_ours(store, path, "coffee tea")


def test_a_forgotten_user_leaves_no_word_and_a_new_user_is_found(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.put([_rec("a1", "my secret garden", user_id="ann"), _rec("b1", "garden", user_id="bob")])
    assert _found(store, "garden", user=None) == ["a1", "b1"]  # the tenant is held whole
    in_other_process(
        path,
        """
        store.forget(Scope(tenant="t1", user_id="ann"))
        store.put([rec("c1", "a garden for carl", "carl")])
        """,
    )
    assert _found(store, "secret") == []
    assert _found(store, "garden", user=None) == ["b1", "c1"]
    assert _found(store, "garden", user="carl") == ["c1"]
    index = store._lexical  # noqa: SLF001 - what stays in memory is the point here
    assert index is not None and not index.loaded("t1", "ann")


def test_memory_stays_bounded_while_one_record_keeps_changing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    writer = SQLiteStore(path)
    store.put([_rec(f"a{i}", f"tea number {i}", user_id="ann") for i in range(10)])
    assert len(_found(store, "tea")) == 10
    for n in range(300):
        writer.update("t1", "a0", Patch(text=f"tea again {n}"))
        assert len(_found(store, "tea")) == 10
    index = store._lexical  # noqa: SLF001
    assert index is not None and index.rows_held() <= 30
    writer.close()
    store.close()


def _fts_matches_ours(store: SQLiteStore, path: Path, query: str) -> None:
    for user in ("ann", None):
        flt = Filter(scope=Scope(tenant="t1", user_id=user))
        _same(_ours(store, flt, query, 0.5), _fts5(path, flt, query, 0.5))
    store.close()


def test_a_word_the_scope_column_also_holds_is_counted_in_the_text_only(tmp_path: Path) -> None:
    """A record without a session carries a bare ``s`` scope term; FTS5's count of rows
    holding the query word "s" (as in "it's") is of the text and context only."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.put([_rec(f"n{i}", f"note {i}", user_id="ann") for i in range(6)])  # no session
    store.put([_rec("q", "it's Ann's", user_id="ann", session_id="s1")])
    flt = Filter(scope=Scope(tenant="t1", user_id="ann"))
    _same(_ours(store, flt, "s", 0.5), _fts5(path, flt, "s", 0.5))
    store.close()


def test_a_purged_record_leaves_no_word_in_the_index(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    secret = "qz" + uuid.uuid4().hex[:10]
    store.put([_rec("a1", f"my pin is {secret}", user_id="ann"), _rec("a2", "tea", user_id="ann")])
    assert _found(store, secret) == ["a1"]
    store.delete("t1", "a1", purge=True)
    index = store._lexical  # noqa: SLF001 - what stays in memory is the point here
    assert index is not None and index.loaded("t1", "ann")  # ann still has a record
    held = [t for b in index._blocks.values() for t in b.postings]  # noqa: SLF001
    assert not [t for t in held if secret in t] and "tea" in held
    assert _found(store, secret) == []
    store.close()


def test_random_writes_of_another_connection_never_leave_the_index_stale(tmp_path: Path) -> None:
    """A store that stays open (a server's) and another on the same file (another
    process's connections) taking turns: after every round of random writes, every
    user's ranking and the tenant's equal FTS5's over the file as it is then."""
    rng = random.Random(7)
    path = tmp_path / "s.db"
    reader, writer = SQLiteStore(path), SQLiteStore(path)
    users = ["ann", "bob", "cy"]
    alive: dict[str, str] = {}  # id -> user
    n = 0

    def text() -> str:
        return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(1, 6)))

    try:
        for _ in range(30):
            for _ in range(8):
                op = rng.random()
                if op < 0.45 or not alive:
                    user = rng.choice(users)
                    writer.put([_rec(f"r{n}", text(), text(), user_id=user, session_id="s1")])
                    alive[f"r{n}"] = user
                    n += 1
                    continue
                victim = rng.choice(sorted(alive))
                if op < 0.6:
                    writer.update("t1", victim, Patch(text=text()))
                elif op < 0.7:
                    writer.update("t1", victim, Patch(context=text()))
                elif op < 0.75:
                    writer.update("t1", victim, Patch(valid_to=OLD))
                elif op < 0.9:
                    writer.delete("t1", victim, purge=rng.random() < 0.5)
                    del alive[victim]
                else:
                    gone = alive[victim]
                    writer.forget(Scope(tenant="t1", user_id=gone))
                    alive = {k: u for k, u in alive.items() if u != gone}
            query = text()
            for user in [*users, None]:
                flt = Filter(scope=Scope(tenant="t1", user_id=user))
                _same(_ours(reader, flt, query, 0.5), _fts5(path, flt, query, 0.5))
    finally:
        writer.close()
        reader.close()


def test_another_users_and_another_tenants_writes_leave_a_users_scores_as_they_are(
    tmp_path: Path,
) -> None:
    """BM25's statistics are the searched user's: what other users of the tenant, or
    other tenants, store or change moves neither the scores nor the order of a user's
    hits (over the whole file, a tenant watching its own scores could learn how common
    a word is among another's memories). Every user is held, as in a server that has
    searched them all."""
    path = tmp_path / "s.db"
    reader, writer = SQLiteStore(path), SQLiteStore(path)
    writer.put([_rec("a1", "tea garden", user_id="ann"), _rec("a2", "tea", user_id="ann")])
    writer.put([_rec("a3", "coffee", user_id="ann"), _rec("b1", "tea", user_id="bob")])
    writer.put([_rec("c1", "garden", user_id="cy", tenant="t2")])
    ann = Filter(scope=Scope(tenant="t1", user_id="ann"))
    others = [Filter(scope=Scope("t1")), Filter(scope=Scope(tenant="t2", user_id="cy"))]
    before = _ours(reader, ann, "tea garden", 0.5)
    _same(before, _fts5(path, ann, "tea garden", 0.5))
    for flt in others:
        _ours(reader, flt, "tea garden", 0.5)  # bob's and cy's rows held too
    writer.put([_rec(f"b{i}", "garden tea " * i, user_id="bob") for i in range(2, 9)])
    writer.put([_rec(f"c{i}", "tea", user_id="cy", tenant="t2") for i in range(2, 9)])
    writer.update("t1", "b1", Patch(text="garden garden"))
    writer.delete("t1", "b2")
    assert _ours(reader, ann, "tea garden", 0.5) == before
    for flt in (ann, *others):
        _same(_ours(reader, flt, "tea garden", 0.5), _fts5(path, flt, "tea garden", 0.5))
    writer.close()
    reader.close()


def test_a_context_weight_is_summed_per_occurrence_as_fts5_does(tmp_path: Path) -> None:
    """0.1 added ten times is 0.9999999999999999, not 1.0: the two hits' order follows."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.put(
        [
            _rec("ctx", "x", " ".join(["tea"] * 10), user_id="ann"),
            _rec("text", "tea " + " ".join(["y"] * 10), user_id="ann"),
            *(_rec(f"pad{i}", "other", user_id="ann") for i in range(3)),
        ]
    )
    flt = Filter(scope=Scope(tenant="t1", user_id="ann"))
    theirs = _fts5(path, flt, "tea", 0.1)
    ours = store.keyword_search(flt, "tea", limit=2, context_weight=0.1)
    assert [(h.id, h.score) for h in ours] == sorted(theirs.items(), key=lambda kv: -kv[1])
    store.close()


def test_a_word_equal_to_a_stemmed_scope_term_is_counted_in_the_text_only(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    term = scope_terms(Scope(tenant="t1", user_id="ann"))[0]  # u + hex, ends in "e"
    store.put([_rec(f"n{i}", "note", user_id="ann") for i in range(9)])
    store.put([_rec("q", f"say {term}", user_id="ann")])
    for user in ("ann", None):
        flt = Filter(scope=Scope(tenant="t1", user_id=user))
        _same(_ours(store, flt, term, 0.5), _fts5(path, flt, term, 0.5))
    store.close()


def test_a_failed_read_leaves_no_transaction_open(tmp_path: Path) -> None:
    """A row a hand-written fix left with a time as text fails the search; the reader
    must not stay in its snapshot (later commits unseen, the WAL held)."""
    path = tmp_path / "s.db"
    reader, writer = SQLiteStore(path), SQLiteStore(path)
    writer.put([_rec("a1", "tea", user_id="ann"), _rec("a2", "tea", user_id="ann")])
    with sqlite3.connect(path) as db:
        db.execute("UPDATE memories SET event_time = '2024-01-01' WHERE id = 'a2'")
    with pytest.raises((ValueError, TypeError)):
        reader.keyword_search(Filter(scope=Scope(tenant="t1", user_id="ann")), "tea", limit=5)
    writer.put([_rec("b1", "written after", user_id="bob")])
    assert reader.get("t1", "b1") is not None
    writer.delete("t1", "b1", purge=True)  # the WAL can be truncated: no reader holds it
    writer.close()
    reader.close()


def test_searching_ids_never_stored_holds_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.put([_rec("a1", "tea", user_id="ann")])
    for i in range(50):
        assert _found(store, "tea", user=f"nobody{i}") == []
    index = store._lexical  # noqa: SLF001 - what stays in memory is the point here
    assert index is not None and len(index._blocks) == 0  # noqa: SLF001
    assert _found(store, "tea") == ["a1"]
    store.close()


def test_sessions_coming_and_going_leave_no_scope_ids_in_memory(tmp_path: Path) -> None:
    """A store that stays open (a server's) while sessions come and go: each session's
    memories are written, searched by session, then deleted. The indexes keep codes for
    the agent, session and type ids of their rows; ids whose rows are all gone must not
    stay (one table for the whole index kept every session id it had ever seen)."""
    store = SQLiteStore(tmp_path / "s.db")
    rng = random.Random(3)
    kept = [_rec("keep", "tea that stays", user_id="ann", session_id="long-lived")]
    store.put(kept)
    store.set_vectors("t1", ["keep"], _unit(rng), "m")
    ended: list[str] = []
    for n in range(150):
        session = f"session-{n}"
        ids = [f"{session}-{i}" for i in range(4)]
        store.put([_rec(i, f"tea talk {i}", user_id="ann", session_id=session) for i in ids])
        store.set_vectors("t1", ids, np.concatenate([_unit(rng) for _ in ids]), "m")
        in_session = Filter(scope=Scope(tenant="t1", user_id="ann", session_id=session))
        for end in (False, True):  # searched before and after the session before it ends
            if end:
                store.delete_many("t1", ended)
            assert sorted(h.id for h in store.keyword_search(in_session, "tea", limit=10)) == ids
            hits = store.vector_search(in_session, _unit(rng)[0], limit=10)
            assert sorted(h.id for h in hits) == ids
        ended = ids
    store.delete_many("t1", ended)
    lexical, vectors = store._lexical, store._index  # noqa: SLF001 - what stays in memory
    assert lexical is not None and vectors is not None
    # None, "long-lived", "episodic", and at most the live rows' worth of dead sessions
    assert lexical.scope_values_held() <= 3 + 8
    assert vectors.scope_values_held() <= 3 + 8
    still = Filter(scope=Scope(tenant="t1", user_id="ann", session_id="long-lived"))
    assert [h.id for h in store.keyword_search(still, "tea", limit=10)] == ["keep"]
    assert [h.id for h in store.vector_search(still, _unit(rng)[0], limit=10)] == ["keep"]
    gone = Filter(scope=Scope(tenant="t1", user_id="ann", session_id="session-3"))
    assert store.keyword_search(gone, "tea", limit=10) == []
    store.close()


def _unit(rng: random.Random) -> np.ndarray:
    vec = np.array([rng.gauss(0, 1) for _ in range(8)], dtype=np.float32)
    return (vec / np.linalg.norm(vec))[None, :]
