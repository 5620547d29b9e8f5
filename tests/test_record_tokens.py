"""Token counts of memories, counted once when written and reused by search.

Search reports each hit's tokens (``Hit.tokens``, the ``token_budget`` cut): the
count of the memory's rendering, what the window sends. A ``Memory`` counts every
record it writes and the store keeps the count with what counted it; a search trusts
it only when it counted it the same way, and counts other rows when it reads them.
Every test runs on SQLite and PostgreSQL (``source scripts/postgres.sh start``).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contextos import Filter, Scope
from contextos.llm.tokens import CharEstimateTokenizer, default_tokenizer
from contextos.memory import Memory
from contextos.memory.render import RENDERING, render
from contextos.store.base import Patch, Store
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import MemoryRecord, TokenCount, content_hash
from store_support import sqlite_file_at

CL100K = f"cl100k_base/{RENDERING}"


@pytest.fixture
def memory(store: Store) -> Iterator[Memory]:
    m = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    yield m
    m.close()


def _exact(record: MemoryRecord) -> int:
    return default_tokenizer().count(render(record))


def _stored(memory: Memory, memory_id: str) -> MemoryRecord:
    record = memory.store.get(memory.tenant, memory_id)
    assert record is not None
    return record


def _record(text: str, *, count: TokenCount | None = None) -> MemoryRecord:
    now = datetime.now(UTC)
    return MemoryRecord(
        id=str(uuid.uuid4()),
        text=text,
        scope=Scope(user_id="ana"),
        metadata={"speaker": "Ana"},
        created_at=now,
        updated_at=now,
        event_time=datetime(2023, 5, 8, tzinfo=UTC),
        hash=content_hash(text),
        token_count=count,
    )


def test_add_stores_the_count_of_the_rendering(memory: Memory) -> None:
    (rec,) = memory.add(
        "I adopted a dog named Rex",
        user_id="ana",
        metadata={"speaker": "Ana", "caption": "a puppy on a sofa"},
        event_time=datetime(2023, 5, 8, tzinfo=UTC),
    )
    stored = _stored(memory, rec.id)
    # the date, the speaker and the caption are counted: what the window sends
    rendered = "[2023-05-08] Ana: I adopted a dog named Rex (image: a puppy on a sofa)"
    assert render(stored) == rendered
    assert stored.token_count == TokenCount(_exact(stored), CL100K)
    assert rec.token_count == stored.token_count  # add returns what it stored
    (hit,) = memory.search("dog Rex", user_id="ana")
    assert hit.tokens == stored.token_count.tokens


def test_search_reads_the_stored_count_instead_of_counting(memory: Memory) -> None:
    # A count under this Memory's stamp is taken as it is: 999 is not the rendering's.
    memory.store.put([_record("we walked Rex on the beach", count=TokenCount(999, CL100K))])
    (hit,) = memory.search("Rex beach", user_id="ana")
    assert hit.tokens == 999
    assert memory.search("Rex beach", user_id="ana", token_budget=998) == []


def test_inferred_and_side_facts_are_stored_with_their_own_counts(memory: Memory) -> None:
    written = memory.add(
        "I moved to Lisbon last year and I started learning Portuguese",
        user_id="ana",
        infer=True,
    )
    memory.add(
        [
            {"role": "user", "content": "I went to a pottery class yesterday", "name": "Ana"},
            {"role": "assistant", "content": "That sounds fun, what did you make?"},
        ],
        user_id="ana",
        session_id="s1",
        facts=True,
    )
    everything = memory.store.list(Filter(scope=Scope(user_id="ana")), limit=100)
    assert written and len(everything) > len(written) + 2  # the turns' facts are there
    for record in everything:
        assert record.token_count == TokenCount(_exact(record), CL100K), record.text


def test_an_update_of_what_is_rendered_is_counted_again(memory: Memory) -> None:
    (rec,) = memory.add("Rex", user_id="ana")
    before = _stored(memory, rec.id).token_count
    longer = "Rex is a three year old border collie who loves the beach at dawn"
    updated = memory.update(rec.id, longer)
    stored = _stored(memory, rec.id)
    assert stored.token_count == TokenCount(_exact(stored), CL100K) == updated.token_count
    assert before is not None and stored.token_count.tokens > before.tokens
    (hit,) = memory.search("border collie", user_id="ana")
    assert hit.tokens == _exact(stored)
    # a speaker in metadata changes the rendering ("Ana: Rex is ...") and the count
    memory.update(rec.id, metadata={"speaker": "Ana Maria Gonçalves"})
    spoken = _stored(memory, rec.id)
    assert spoken.token_count == TokenCount(_exact(spoken), CL100K)
    assert spoken.token_count.tokens > stored.token_count.tokens


def test_a_store_update_without_a_counter_clears_a_stale_count(memory: Memory) -> None:
    (rec,) = memory.add("Rex", user_id="ana")
    longer = "Rex is a three year old border collie who loves the beach at dawn"
    memory.store.update(memory.tenant, rec.id, Patch(text=longer))
    stored = _stored(memory, rec.id)
    assert stored.token_count is None
    (hit,) = memory.search("border collie", user_id="ana")
    assert hit.tokens == _exact(stored)
    # closing a memory's validity leaves its rendering, and its count, as they were
    (other,) = memory.add("Rex sleeps on the sofa", user_id="ana")
    memory.store.update(memory.tenant, other.id, Patch(valid_to=datetime.now(UTC)))
    assert _stored(memory, other.id).token_count == other.token_count is not None


def test_a_memory_with_another_tokenizer_counts_for_itself(memory: Memory) -> None:
    (rec,) = memory.add("we walked Rex on the beach at dawn", user_id="ana")
    chars = Memory(
        store=memory.store,
        embedder=HashEmbedder(),
        background_embedding=False,
        tokenizer=CharEstimateTokenizer(),
    )
    stored = _stored(memory, rec.id)
    (hit,) = chars.search("Rex beach", user_id="ana")
    assert stored.token_count is not None and stored.token_count.counted_with == CL100K
    assert hit.tokens == (len(render(stored)) + 3) // 4 != stored.token_count.tokens
    # nor a count of another rendering version, even by the same tokenizer
    gulls = _record("Rex barks at gulls", count=TokenCount(999, "cl100k_base/r0"))
    memory.store.put([gulls])
    old = next(h for h in memory.search("gulls", user_id="ana") if h.record.id == gulls.id)
    assert old.tokens == _exact(gulls) != 999


def test_a_row_without_a_count_is_counted_when_read(memory: Memory) -> None:
    record = _record("Rex chased a crab across the sand")
    memory.store.put([record])
    assert _stored(memory, record.id).token_count is None
    (hit,) = memory.search("crab sand", user_id="ana")
    assert hit.tokens == _exact(record) > 0


def test_rows_of_a_database_from_before_counts_are_counted_when_read(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    con = sqlite_file_at(path, 6)
    con.execute(
        "INSERT INTO memories (id, tenant, user_id, memory_type, text, metadata, created_at, "
        "updated_at, event_time, hash) VALUES ('m1', 'default', 'ana', 'episodic', "
        """'Rex chased a crab', '{"speaker":"Ana"}', 0, 0, 1683504000, 'h')"""
    )
    con.commit()
    con.close()
    with Memory(store=SQLiteStore(path), embedder=HashEmbedder(), background_embedding=False) as m:
        old = _stored(m, "m1")
        assert old.token_count is None and render(old) == "[2023-05-08] Ana: Rex chased a crab"
        (hit,) = m.search("crab", user_id="ana")
        assert hit.tokens == _exact(old)
        m.update("m1", "Rex chased two crabs")  # its next write stores its count
        assert _stored(m, "m1").token_count == TokenCount(_exact(_stored(m, "m1")), CL100K)


def test_the_count_is_a_cache_not_part_of_the_record() -> None:
    plain = _record("Rex")
    counted = replace(plain, token_count=TokenCount(3, CL100K))
    assert counted == plain
    assert "token_count" not in counted.to_dict()


@pytest.mark.parametrize("start", ["fresh", "version 6"])
def test_sqlite_writes_survive_a_schema_change_by_another_connection(
    tmp_path: Path, start: str
) -> None:
    """V7 adds the count columns with ALTER TABLE; as first written, SQLite then failed
    every write with "no such table: memories" once another connection changed the
    schema (the server creates its key table in the file after the store opened it)."""
    path = tmp_path / "s.db"
    if start == "version 6":
        con = sqlite_file_at(path, 6)
        con.commit()
        con.close()
    store = SQLiteStore(path)
    try:
        other = sqlite3.connect(path)
        other.execute("CREATE TABLE api_keys_like (a TEXT)")
        other.commit()
        other.close()
        record = _record("Rex chased a crab", count=TokenCount(7, CL100K))
        store.put([record])
        updated = store.update(record.tenant, record.id, Patch(text="Rex chased two crabs"))
        assert updated.text == "Rex chased two crabs" and updated.token_count is None
        store.delete(record.tenant, record.id)
        assert store.get(record.tenant, record.id) is None
    finally:
        store.close()
