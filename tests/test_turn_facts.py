"""Facts stored beside the turns of a session (``Memory(turn_facts=True)``), one hit per turn.

Real SQLite files and PostgreSQL, and the shipped HashEmbedder; what the offline extractor writes
for a turn is its own module's business (tests/test_extract.py), here only that a
``add`` stores it beside the turn, linked, and that search, delete and
update treat a turn and its facts as one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contextos.memory import TURN_FACTS_RETRIEVAL, Memory
from contextos.memory.retrieval import by_source, source_of
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder
from contextos.types import Hit, MemoryRecord, Scope

WHEN = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


@pytest.fixture
def memory(store: Store) -> Iterator[Memory]:
    """A memory with facts beside its turns, on every Store backend."""
    # No background worker to stop; the store fixture closes the store.
    yield Memory(store=store, embedder=HashEmbedder(), background_embedding=False, turn_facts=True)


def add_turn(memory: Memory, text: str, dia: str, **kw: object) -> MemoryRecord:
    message = {"role": "user", "content": text, "name": "Ann", "dia_id": dia}
    return memory.add(message, user_id="u", session_id="s", event_time=WHEN, **kw)[0]  # type: ignore[arg-type]


def facts(memory: Memory) -> list[MemoryRecord]:
    return [r for r in memory.get_all(user_id="u") if "fact_of" in r.metadata]


def test_a_session_turn_is_stored_with_its_facts_beside_it(memory: Memory) -> None:
    turn = add_turn(memory, "Hi Bob! I adopted a puppy named Rex yesterday.", "D1:1")
    stored = facts(memory)
    assert stored, "no fact stored beside the turn"
    assert all(f.metadata["fact_of"] == turn.id for f in stored)
    assert all(
        f.provenance == ("D1:1",) and f.metadata["seq"] == turn.metadata["seq"] for f in stored
    )
    assert all(f.metadata["speaker"] == "Ann" and f.context == turn.context for f in stored)
    assert any("Rex on 7 May 2023" in f.text for f in stored)  # "yesterday", resolved
    assert [r.id for r in memory.get_all(user_id="u") if "fact_of" not in r.metadata] == [turn.id]


def test_no_facts_when_asked_not_to_outside_a_session_or_for_a_verbatim_copy(
    memory: Memory, tmp_path: Path
) -> None:
    add_turn(memory, "I adopted a puppy named Rex yesterday.", "D1:1", facts=False)
    memory.add("I adopted a puppy named Rex yesterday.", user_id="u")  # not a session turn
    add_turn(memory, "Pottery class", "D1:2")  # the only fact would be the turn itself
    assert facts(memory) == []
    with Memory(tmp_path / "off.db", embedder=HashEmbedder()) as off:  # the default: turns only
        off.add({"content": "I adopted Rex yesterday.", "name": "Ann"}, user_id="u", session_id="s")
        assert len(off.get_all(user_id="u")) == 1
        off.add(
            {"content": "I adopted Rex yesterday.", "name": "Ann"},
            user_id="u",
            session_id="s",
            facts=True,
        )
        assert len(off.get_all(user_id="u")) > 2
    assert memory.retriever.config == TURN_FACTS_RETRIEVAL


def test_search_returns_each_turn_once(memory: Memory) -> None:
    turn = add_turn(memory, "I adopted a puppy named Rex yesterday. Rex is a beagle.", "D1:1")
    add_turn(memory, "Congrats on the new dog!", "D1:2")
    memory.flush()
    hits = memory.search("Rex the beagle puppy", user_id="u", limit=10)
    sources = [source_of(h.record) for h in hits]
    assert sources[0] == turn.id and len(sources) == len(set(sources)) == 2


def test_by_source_keeps_the_best_member_of_each_turn() -> None:
    def hit(rid: str, score: float, source: str | None = None) -> Hit:
        meta = {"fact_of": source} if source else {}
        rec = MemoryRecord(id=rid, text=rid, scope=Scope(user_id="u"), metadata=meta)
        return Hit(rec, score)

    hits = [hit("f1", 3, "t1"), hit("t2", 2), hit("t1", 1.5), hit("f2", 1, "t2")]
    assert [h.record.id for h in by_source(hits)] == ["f1", "t2"]


def test_deleting_or_rewriting_a_turn_takes_its_facts_along(memory: Memory) -> None:
    turn = add_turn(memory, "I adopted a puppy named Rex yesterday.", "D1:1")
    assert facts(memory)
    memory.update(turn.id, "I moved to Oslo last month.")
    rewritten = facts(memory)
    assert rewritten and all("Oslo" in f.text and "Rex" not in f.text for f in rewritten)
    memory.delete(turn.id, purge=True)
    assert memory.get_all(user_id="u") == []


def test_the_next_turn_is_numbered_after_the_last_turn_not_its_facts(memory: Memory) -> None:
    first, second = memory.add(
        [
            {"content": "I adopted a puppy named Rex yesterday.", "name": "Ann"},
            {"content": "Congrats!", "name": "Bob"},
        ],
        user_id="u",
        session_id="s",
        event_time=WHEN,
    )
    assert {f.metadata["fact_of"] for f in facts(memory)} == {first.id}  # none for "Congrats!"
    third = add_turn(memory, "Thanks!", "D1:3")
    assert third.metadata["seq"] == 2 and "Congrats" in third.context


def test_memories_labelled_with_a_source_are_each_their_own_hit(memory: Memory) -> None:
    # Applications label memories {"source": "chat"}; that label once read as "a fact
    # of turn 'chat'", and search folded every such memory into one hit.
    texts = ["Ana flies to Porto on 3 June", "Ana's flight to Porto leaves at 9", "Porto trip"]
    for text in texts:
        memory.add(text, user_id="u", metadata={"source": "chat"})
    memory.flush()
    hits = memory.search("Ana flight to Porto", user_id="u", limit=10)
    assert sorted(h.record.text for h in hits) == sorted(texts)


def test_a_labelled_turn_still_gets_its_facts(memory: Memory) -> None:
    turn = add_turn(
        memory, "I adopted a puppy named Rex yesterday.", "D1:1", metadata={"source": "chat"}
    )
    assert facts(memory) and all(f.metadata["fact_of"] == turn.id for f in facts(memory))


def test_the_fact_of_key_is_reserved(memory: Memory) -> None:
    with pytest.raises(ValueError, match="reserved"):
        memory.add("hello", user_id="u", metadata={"fact_of": "x"})
    with pytest.raises(ValueError, match="reserved"):
        memory.add({"role": "user", "content": "hello", "fact_of": "x"}, user_id="u")


def test_a_fact_keeps_its_link_through_a_metadata_update(memory: Memory) -> None:
    turn = add_turn(memory, "I adopted a puppy named Rex yesterday.", "D1:1")
    fact = facts(memory)[0]
    memory.update(fact.id, metadata={"reviewed": True})  # metadata is replaced whole
    assert memory.get(fact.id).metadata["fact_of"] == turn.id
    with pytest.raises(ValueError, match="reserved"):
        memory.update(fact.id, metadata={"fact_of": "another"})
    with pytest.raises(ValueError, match="reserved"):
        memory.update(turn.id, metadata={"fact_of": fact.id})
