"""Stores that two earlier migrations left wrong, opened by this code (a review of
upgrading a store in place, session 50).

1. The first V15 (SQLite) / V13 (PostgreSQL) created one type index, ``memories_type``;
   the script was then rewritten under its number, so a store it made kept that index
   and never got today's two (each window's rules read walked the tenant's rules). V16 /
   V14 runs today's script again and drops the old index.
2. V9 (SQLite) / V7 (PostgreSQL) took an app's ``metadata["source"]`` holding another
   memory's id for a fact's link to its turn (``fact_of``): the app's memory was deleted
   with the other one and folded into its hit. V17 / V15 moves the key back wherever the
   record is no fact of that turn (a fact shares its turn's session, scope and
   ``created_at``), and leaves the real facts linked.

Each store is built as the old release left it: the migrations to the old version (or
today's, set back to it), then its rows as that release wrote them, on a real SQLite
file and a real PostgreSQL; then it is opened by the current store and ``Memory``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from contextos.errors import NotFound
from contextos.memory import Memory
from contextos.memory.infer import facts_beside
from contextos.memory.render import FACT_OF
from contextos.store.base import Store
from contextos.store.postgres.schema import MIGRATIONS as POSTGRES_MIGRATIONS
from contextos.store.postgres.schema import V7_FACT_OF, V14_V13_AGAIN
from contextos.store.sqlite import SQLiteStore
from contextos.store.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from contextos.store.sqlite.schema import V9_FACT_OF, V16_V15_AGAIN
from contextos.testing.embedders import HashEmbedder
from contextos.types import MemoryRecord
from migration_support import KINDS, Backend, backend_of, sqlite_sql
from pg_support import connect, fresh_schema, pg_url
from store_support import sqlite_file_at

#: The version the release that shipped V9 / V7 and the first type index left (the one
#: before V16 / V14).
FIRST_V15_SQLITE = SQLITE_MIGRATIONS.index(V16_V15_AGAIN)
FIRST_V13_POSTGRES = POSTGRES_MIGRATIONS.index(V14_V13_AGAIN)

#: What the first V15 / V13 created (it is no longer in the code), written out.
FIRST_V15 = "CREATE INDEX memories_type ON memories (tenant, memory_type, created_at)"
FIRST_V13 = (
    "CREATE INDEX memories_type ON memories (tenant, memory_type, created_at DESC, seq DESC)"
)
TODAY_S_TYPE_INDEXES = {"memories_type_user", "memories_type_agent"}


class RepairBackend(Backend):
    """A store's database (:class:`migration_support.Backend`), with what these tests
    read and write directly."""

    def type_indexes(self) -> set[str]:
        if self.kind == "sqlite":
            rows = self.sql(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'memories_type%'"
            )
        else:
            rows = self.sql(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                "AND indexname LIKE 'memories_type%'"
            )
        return {r[0] for r in rows}

    def as_the_release_with_v9_left_it(self) -> None:
        """V9 / V7 run on the rows (as the release that shipped it did when it opened
        them), and the version that release recorded."""
        if self.kind == "sqlite":
            self.sql(V9_FACT_OF)
            self.set_version(FIRST_V15_SQLITE)
        else:
            self.sql(V7_FACT_OF)
            self.set_version(FIRST_V13_POSTGRES)

    def link(self, record: MemoryRecord, to: str, *, same_time_as: str | None = None) -> None:
        """Give ``record`` a ``fact_of`` naming ``to`` (and that record's ``created_at``),
        as no release wrote: rows the repair must judge by their scope alone."""
        if self.kind == "sqlite":
            self.sql(
                f"UPDATE memories SET metadata = json_set(metadata, '$.fact_of', '{to}') "
                f"WHERE id = '{record.id}'"
            )
        else:
            self.sql(
                f"UPDATE memories SET metadata = metadata || jsonb_build_object('fact_of', "
                f"'{to}'::text) WHERE id = '{record.id}'"
            )
        if same_time_as is not None:
            self.sql(
                "UPDATE memories SET created_at = (SELECT created_at FROM memories "
                f"WHERE id = '{same_time_as}') WHERE id = '{record.id}'"
            )

    def pending(self) -> set[str]:
        """The records queued for a vector."""
        if self.kind == "sqlite":
            rows = self.sql(
                "SELECT m.id FROM pending_vectors p JOIN memories m ON m.rowid = p.mem_rowid"
            )
        else:
            rows = self.sql("SELECT memory_id FROM pending_vectors")
        return {r[0] for r in rows}


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RepairBackend]:
    with backend_of(request.param, tmp_path, "repair", RepairBackend) as made:
        yield made


def _memory(store: Store) -> Memory:
    return Memory(store=store, embedder=HashEmbedder(), background_embedding=False)


# -- 1. the first V15 / V13's type index -------------------------------------------------


def test_a_store_made_by_the_first_type_index_migration_ends_like_every_other(
    backend: RepairBackend,
) -> None:
    """The review's repro (91cd7ee's store): its one index is gone, today's two are
    there, and rules are read as they are written."""
    memory = _memory(backend.open())
    memory.add("Always answer in French.", user_id="ana", memory_type="procedural")
    memory.close()
    # Today's V15 / V13 undone, the first one's done: as the first script left it.
    backend.sql("DROP INDEX memories_type_user")
    backend.sql("DROP INDEX memories_type_agent")
    backend.sql(FIRST_V15 if backend.kind == "sqlite" else FIRST_V13)
    backend.set_version(FIRST_V15_SQLITE if backend.kind == "sqlite" else FIRST_V13_POSTGRES)
    assert backend.type_indexes() == {"memories_type"}

    with _memory(backend.open()) as memory:
        assert backend.type_indexes() == TODAY_S_TYPE_INDEXES
        memory.add("Never book flights before 9am.", user_id="ana", memory_type="procedural")
        rules = memory.get_all(user_id="ana")
        assert sorted(r.text for r in rules if r.memory_type == "procedural") == [
            "Always answer in French.",
            "Never book flights before 9am.",
        ]


def test_a_sqlite_file_from_the_first_v15_has_a_new_file_s_schema(tmp_path: Path) -> None:
    """Built from the migrations alone (V1..V14, then the first V15), opened, compared
    with a file made today: the same objects, so nothing else differs either."""
    con = sqlite_file_at(tmp_path / "first-v15.db", FIRST_V15_SQLITE - 1)
    con.execute(FIRST_V15)
    con.execute(f"PRAGMA user_version = {FIRST_V15_SQLITE}")
    con.commit()
    con.close()
    SQLiteStore(tmp_path / "first-v15.db").close()
    SQLiteStore(tmp_path / "new.db").close()
    listing = "SELECT type, name, sql FROM sqlite_master ORDER BY 2"
    assert sqlite_sql(tmp_path / "first-v15.db")(listing) == sqlite_sql(tmp_path / "new.db")(
        listing
    )


@pytest.mark.postgres
def test_postgres_drops_the_first_v13_s_index_in_the_store_s_own_schema() -> None:
    """The store's sessions search ``<schema>, public``: a bare ``DROP INDEX IF EXISTS
    memories_type`` in a schema without one dropped an index of that name in
    ``public`` (another store's, there)."""
    pytest.importorskip("psycopg")
    from contextos.store.postgres import PostgresStore

    url = pg_url()
    with fresh_schema("repair") as (_, schema):
        table = f"public.{schema}_other_store"
        with connect(url) as con:
            con.execute(f"CREATE TABLE {table} (tenant text, memory_type text)")
            con.execute(f"CREATE INDEX memories_type ON {table} (tenant, memory_type)")
        try:
            PostgresStore(url, schema=schema).close()
            with connect(url) as con:
                left = con.execute(
                    "SELECT schemaname FROM pg_indexes WHERE indexname = 'memories_type'"
                ).fetchall()
            assert left == [("public",)]
        finally:
            with connect(url) as con:
                con.execute(f"DROP TABLE IF EXISTS {table}")


# -- 2. an app's source naming another memory ---------------------------------------------


@dataclass
class Written:
    """What the old release wrote, as each record was written."""

    a: MemoryRecord  # an app's memory, outside a session
    b: MemoryRecord  # the app's note derived from it: {"source": a.id}
    a2: MemoryRecord  # a session's message
    b2: MemoryRecord  # a later message of the session: {"source": a2.id}
    rex: MemoryRecord  # a session's turn, with its facts (linked by "source" then)
    pottery: MemoryRecord
    facts: list[MemoryRecord]
    kayak: MemoryRecord  # a turn whose facts this code wrote (linked by fact_of)
    kayak_facts: list[MemoryRecord]


def _write(store: Store) -> Written:
    memory = _memory(store)
    a = memory.add(
        "Meeting notes 2026-11-02: we chose Postgres for the billing service", user_id="ana"
    )[0]
    b = memory.add(
        "Decision log: billing runs on Postgres", user_id="ana", metadata={"source": a.id}
    )[0]
    a2 = memory.add("We picked the teal logo for the launch", user_id="ana", session_id="s9")[0]
    b2 = memory.add(
        "Follow-up: the teal logo goes on the launch page",
        user_id="ana",
        session_id="s9",
        metadata={"source": a2.id},
    )[0]
    assert b2.created_at != a2.created_at and "role" in b2.metadata
    rex, pottery = memory.add(
        [
            {"content": "Hi Bob! I adopted a puppy named Rex yesterday.", "name": "Ann"},
            {"content": "I went to a pottery class in Paris with my sister Jane.", "name": "Ann"},
        ],
        user_id="ann",
        session_id="s1",
    )
    # Facts as the releases from ad5eacb to ca025ed wrote them: linked by "source".
    facts = [
        replace(
            f,
            metadata={
                **{k: v for k, v in f.metadata.items() if k != FACT_OF},
                "source": f.metadata[FACT_OF],
            },
        )
        for f in facts_beside([rex, pottery])
    ]
    assert {f.metadata["source"] for f in facts} == {rex.id, pottery.id}
    store.put(facts)
    (kayak,) = memory.add(
        {"content": "I bought a red kayak for the lake trip.", "name": "Ann"},
        user_id="ann",
        session_id="s2",
        facts=True,
    )
    kayak_facts = [
        r for r in store.pointing_to(kayak.scope, FACT_OF, [kayak.id]) if r.id != kayak.id
    ]
    assert kayak_facts
    assert memory.flush() and store.embedding_status().pending == 0
    memory.close()
    return Written(a, b, a2, b2, rex, pottery, facts, kayak, kayak_facts)


def _gone(memory: Memory, record_id: str) -> bool:
    try:
        memory.get(record_id)
    except NotFound:
        return True
    return False


@pytest.mark.parametrize("old", ["before_v9", "v9_applied"])
def test_an_app_s_source_naming_another_memory_is_the_app_s_again(
    backend: RepairBackend, old: str
) -> None:
    """The review's repro, from a store written before V9 / V7 (the migrations run in
    one open) and from one the release with V9 / V7 already opened (the app's note a
    fact of the other memory): the note keeps its ``{"source": a.id}``, is a hit of its
    own and outlives ``delete(a)``; real facts, linked by either release, stay linked
    and go with their turn; one vector is queued again, the session message's, whose
    embedded text changes (a turn again, embedded with its facts)."""
    w = _write(backend.open())
    if old == "before_v9":
        backend.set_back_before_v9()
    else:
        backend.as_the_release_with_v9_left_it()
        rows = {r[0]: r[1] for r in backend.sql("SELECT id, metadata FROM memories")}
        meta_of = {k: v if isinstance(v, dict) else json.loads(v) for k, v in rows.items()}
        assert meta_of[w.b.id].get(FACT_OF) == w.a.id  # the review's finding
        assert meta_of[w.b2.id].get(FACT_OF) == w.a2.id
    vectors, reindexed = backend.vectors(), backend.reindexed()

    store = backend.open()
    for mine in (w.a, w.b, w.a2, w.b2, w.rex, w.pottery, w.kayak):
        now = store.get(mine.tenant, mine.id)
        assert now is not None and now.metadata == mine.metadata, mine.text
    for fact in w.facts:
        now = store.get(fact.tenant, fact.id)
        assert now is not None and now.metadata[FACT_OF] == fact.metadata["source"]
        assert "source" not in now.metadata
    for fact in w.kayak_facts:
        now = store.get(fact.tenant, fact.id)
        assert now is not None and now.metadata == fact.metadata
    # Only metadata changed: no vector rewritten or dropped, nothing for other
    # processes' indexes to re-read; b2 alone is queued again (b is no turn either way).
    assert backend.vectors() == vectors and backend.reindexed() == reindexed
    assert backend.pending() == {w.b2.id}

    with _memory(store) as memory:
        hits = {h.record.id for h in memory.search("billing runs on Postgres", user_id="ana")}
        assert {w.a.id, w.b.id} <= hits
        hits = {h.record.id for h in memory.search("teal logo launch", user_id="ana")}
        assert {w.a2.id, w.b2.id} <= hits
        memory.delete(w.a.id)
        memory.delete(w.a2.id)
        assert not _gone(memory, w.b.id) and not _gone(memory, w.b2.id)
        assert memory.get(w.b.id).metadata == w.b.metadata

        memory.delete(w.rex.id)
        memory.delete(w.kayak.id)
        for fact in [*w.facts, *w.kayak_facts]:
            linked_to = fact.metadata.get("source", fact.metadata.get(FACT_OF))
            assert _gone(memory, fact.id) == (linked_to != w.pottery.id), fact.text
        assert memory.flush() and store.embedding_status().pending == 0


def test_which_links_the_repair_moves_back(backend: RepairBackend) -> None:
    """Links no release's fact has, given by hand after V9 / V7 ran: to a record of
    another user in the session, at the turn's very time (moved back: a fact shares its
    turn's scope); on a record outside a session (moved back); on one that holds a
    ``source`` too (left: moving the link back would overwrite it); to no record (left:
    there is no turn to test it against)."""
    memory = _memory(backend.open())
    (turn,) = memory.add("We picked the teal logo", user_id="ana", session_id="s9")
    (other_user,) = memory.add("Bo likes the teal logo", user_id="bo", session_id="s9")
    (no_session,) = memory.add("Logo budget is 300 euros", user_id="ana")
    (labelled,) = memory.add(
        "The logo file is in the drive", user_id="ana", metadata={"source": "chat"}
    )
    (orphan,) = memory.add("The logo is square", user_id="ana", session_id="s9")
    assert memory.flush()
    memory.close()
    backend.as_the_release_with_v9_left_it()
    backend.link(other_user, turn.id, same_time_as=turn.id)
    backend.link(no_session, turn.id, same_time_as=turn.id)
    backend.link(labelled, turn.id)
    backend.link(orphan, "a-memory-deleted-long-ago")

    store = backend.open()
    ids = [other_user.id, no_session.id, labelled.id, orphan.id]
    meta = {r.id: r.metadata for r in store.get_many(turn.tenant, ids)}
    assert meta[other_user.id] == {**other_user.metadata, "source": turn.id}
    assert meta[no_session.id] == {**no_session.metadata, "source": turn.id}
    assert meta[labelled.id] == {**labelled.metadata, FACT_OF: turn.id}
    assert meta[orphan.id] == {**orphan.metadata, FACT_OF: "a-memory-deleted-long-ago"}
    # other_user is a session message (a turn again, embedded with its facts).
    assert backend.pending() == {other_user.id}
    store.close()


def test_metadata_that_is_not_json_does_not_keep_a_sqlite_file_from_opening(
    tmp_path: Path,
) -> None:
    """A row another writer left with broken metadata stays as it was; the others are
    repaired."""
    path = tmp_path / "v16.db"
    con = sqlite_file_at(path, SQLITE_MIGRATIONS.index(V16_V15_AGAIN) + 1)
    for rid, meta in (("t1", "{}"), ("bad", '{"fact_of": "t1"'), ("f1", '{"fact_of":"t1"}')):
        con.execute(
            "INSERT INTO memories (id, tenant, user_id, memory_type, text, metadata, created_at, "
            "updated_at, hash) VALUES (?, 'default', 'ann', 'episodic', ?, ?, 0, 0, 'h')",
            (rid, f"note {rid}", meta),
        )
    con.commit()
    con.close()
    store = SQLiteStore(path)
    got = store.get("default", "f1")
    assert got is not None and got.metadata == {"source": "t1"}
    store.close()
    assert sqlite_sql(path)("SELECT metadata FROM memories WHERE id = 'bad'") == [
        ('{"fact_of": "t1"',)
    ]
