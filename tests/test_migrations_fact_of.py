"""Stores written before facts beside a turn pointed to it with ``metadata["fact_of"]``.

Releases before it wrote ``metadata["source"] = <turn id>``, the key applications use
for labels of their own. The migration (SQLite V9, PostgreSQL V7) moves the key for
exactly the facts: a ``source`` naming another record of the same tenant and scope.
Here a store is written the old way (turns by ``Memory.add``, their facts and the
decoys by the store's ``put``, vectors by the embedding worker), set back to the
previous schema version (the migration changes rows, not tables: the SQLite test
checks the file then has a version-8 file's schema), and opened with this code, on a
real SQLite file and a real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contextos.memory import Memory
from contextos.memory.expansion import is_conversation_turn
from contextos.memory.infer import facts_beside
from contextos.memory.render import FACT_OF
from contextos.memory.retrieval import source_of
from contextos.store.base import Store
from contextos.store.sqlite import SQLiteStore
from contextos.store.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from contextos.store.sqlite.schema import V9_FACT_OF
from contextos.testing.embedders import HashEmbedder
from contextos.types import MemoryRecord, Scope, content_hash
from migration_support import KINDS, Backend, backend_of, sqlite_sql
from store_support import sqlite_file_at

#: Migrations before V9 (the one under test): a SQLite file at this version is V8's.
V9_SQLITE = SQLITE_MIGRATIONS.index(V9_FACT_OF)
WHEN = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
REX = "Hi Bob! I adopted a puppy named Rex yesterday."
POTTERY = "I went to a pottery class in Paris last week with my sister Jane."


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with backend_of(request.param, tmp_path, "factof", Backend) as made:
        yield made


@dataclass
class OldStore:
    """What the old release wrote: two turns, their facts, and records that must keep
    their ``source``."""

    rex: MemoryRecord
    pottery: MemoryRecord
    facts: list[MemoryRecord]
    label: MemoryRecord  # an app's own label, {"source": "chat"}
    other_tenant: MemoryRecord  # names the Rex turn, from another tenant
    other_session: MemoryRecord  # names the Rex turn, from another session of the user


def _old_style(fact: MemoryRecord) -> MemoryRecord:
    meta = {k: v for k, v in fact.metadata.items() if k != FACT_OF}
    return replace(fact, metadata={**meta, "source": fact.metadata[FACT_OF]})


def _decoy(turn: MemoryRecord, text: str, scope: Scope) -> MemoryRecord:
    return MemoryRecord(
        id=f"decoy-{scope.tenant}-{scope.session_id}",
        text=text,
        scope=scope,
        metadata={"source": turn.id, "role": "user"},
        hash=content_hash(text),
    )


def _write_old_store(store: Store) -> OldStore:
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    rex, pottery = memory.add(
        [{"content": REX, "name": "Ann"}, {"content": POTTERY, "name": "Ann"}],
        user_id="ann",
        session_id="s1",
        event_time=WHEN,
    )
    facts = [_old_style(f) for f in facts_beside([rex, pottery])]
    assert {f.metadata["source"] for f in facts} == {rex.id, pottery.id}
    (label,) = memory.add(
        {"content": "Ann takes her tea without sugar.", "name": "Ann"},
        user_id="ann",
        session_id="s1",
        metadata={"source": "chat"},
    )
    other_tenant = _decoy(rex, "Zed sells bicycles.", Scope("other", "ann", None, "s1"))
    other_session = _decoy(rex, "Ann waters the ferns.", Scope("default", "ann", None, "s2"))
    store.put([*facts, other_tenant, other_session])
    assert memory.flush() and store.embedding_status().pending == 0
    memory.close()
    return OldStore(rex, pottery, facts, label, other_tenant, other_session)


def _stored(store: Store, record: MemoryRecord) -> MemoryRecord:
    got = store.get(record.tenant, record.id)
    assert got is not None
    return got


def test_facts_of_an_old_store_point_to_their_turn_after_the_upgrade(backend: Backend) -> None:
    old = _write_old_store(backend.open())
    vectors, reindexed = backend.vectors(), backend.reindexed()
    assert len(vectors) == 5 + len(old.facts)
    backend.set_back_before_v9()

    store = backend.open()
    # Only metadata changed: no vector queued again, rewritten or dropped, and no
    # record for other processes' vector indexes to re-read.
    assert store.embedding_status().pending == 0
    assert backend.vectors() == vectors and backend.reindexed() == reindexed

    for fact in old.facts:
        now = _stored(store, fact)
        assert "source" not in now.metadata and now.metadata[FACT_OF] == fact.metadata["source"]
        assert {k: v for k, v in now.metadata.items() if k != FACT_OF} == {
            k: v for k, v in fact.metadata.items() if k != "source"
        }
        assert now.text == fact.text and not is_conversation_turn(now)
    assert _stored(store, old.label).metadata["source"] == "chat"
    for decoy in (old.other_tenant, old.other_session):
        assert _stored(store, decoy).metadata == decoy.metadata

    memory = Memory(
        store=store, embedder=HashEmbedder(), background_embedding=False, turn_facts=True
    )
    hits = memory.search("Rex the puppy Ann adopted", user_id="ann", limit=10)
    sources = [source_of(h.record) for h in hits]
    assert old.rex.id in sources and len(sources) == len(set(sources))
    assert set(sources) <= {old.rex.id, old.pottery.id, old.label.id, old.other_session.id}

    memory.update(old.pottery.id, "I went to a ceramics class in Rome last week.")
    memory.delete(old.rex.id, purge=True)
    left = memory.get_all(user_id="ann")
    assert not [r.text for r in left if "Rex" in r.text or "Paris" in r.text]
    assert {r.metadata.get(FACT_OF) for r in left} == {None, old.pottery.id}
    assert _stored(store, old.other_session).text == old.other_session.text
    assert _stored(store, old.other_tenant).text == old.other_tenant.text
    memory.close()


def test_the_sqlite_file_set_back_has_the_previous_version_s_schema(tmp_path: Path) -> None:
    """V9 changes no schema object, so a file set back before it has V8's schema."""
    for name, version in (("v8.db", V9_SQLITE), ("v9.db", V9_SQLITE + 1)):
        con = sqlite_file_at(tmp_path / name, version)
        con.commit()
        con.close()
    schemas = []
    for name in ("v8.db", "v9.db"):
        rows = sqlite_sql(tmp_path / name)("SELECT type, name, sql FROM sqlite_master ORDER BY 2")
        schemas.append(rows)
    assert schemas[0] == schemas[1]


def test_metadata_that_is_not_json_does_not_keep_a_sqlite_store_from_opening(
    tmp_path: Path,
) -> None:
    """A row another writer left with broken metadata stays as it was. (The rows are in a
    session: a link on a record outside one is put back by V17, see
    tests/test_upgrade_repairs.py.)"""
    path = tmp_path / "v8.db"
    con = sqlite_file_at(path, V9_SQLITE)
    for rid, meta in (("t1", "{}"), ("bad", '{"source": "t1"'), ("f1", '{"source":"t1"}')):
        con.execute(
            "INSERT INTO memories (id, tenant, user_id, session_id, memory_type, text, metadata, "
            "created_at, updated_at, hash) "
            "VALUES (?, 'default', 'ann', 's1', 'episodic', ?, ?, 0, 0, 'h')",
            (rid, f"note {rid}", meta),
        )
    con.commit()
    con.close()
    store = SQLiteStore(path)
    assert _stored(store, MemoryRecord(id="f1", text="x")).metadata == {FACT_OF: "t1"}
    store.close()
    assert sqlite_sql(path)("SELECT metadata FROM memories WHERE id = 'bad'") == [
        ('{"source": "t1"',)
    ]
