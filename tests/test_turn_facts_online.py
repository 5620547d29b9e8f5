"""What a plain ``Memory.add`` of conversation turns makes of them online: the facts
embedded with each turn (``memory.expansion``) and those stored beside it
(``add(facts=True)``), their dates and who they are about.

Real SQLite files in tmp_path (and PostgreSQL where it runs, through the ``store``
fixture), the shipped HashEmbedder and the offline extractor.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from contextos.memory import Memory
from contextos.memory.expansion import MAX_TURN_FACTS, expansion_facts, turn_facts
from contextos.memory.render import FACT_OF, UTC_OFFSET, render
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder
from contextos.types import MemoryRecord


def memory(path: Path, **kwargs: object) -> Memory:
    return Memory(path, embedder=HashEmbedder(), background_embedding=False, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def backends(store: Store) -> Iterator[Memory]:
    """A memory on every Store backend (the store fixture closes the store)."""
    yield Memory(store=store, embedder=HashEmbedder(), background_embedding=False)


#: A long message holding a fact a sentence, and metadata of the message's own that is
#: ordinary for one memory (20 KB: a LoCoMo turn with its image url inline is 16.5 KB)
#: but over the limit of an add's copies once copied into each of those facts.
LONG_TURN = " ".join(f"I visited city{i} with my sister." for i in range(60))
OWN_METADATA = {"source": "import", "notes": "x" * 20_000}


def long_turn() -> dict[str, object]:
    return {"role": "user", "name": "Ann", "content": LONG_TURN, "metadata": OWN_METADATA}


# -- Finding 1: facts only embedded are not stored copies of the metadata ------------


def test_a_long_turn_with_ordinary_metadata_is_embedded_not_quarantined(tmp_path: Path) -> None:
    with memory(tmp_path / "m.db") as m:
        [turn] = m.add(long_turn(), user_id="ann", session_id="s1")
        assert m.flush()
        status = m.embedding_status()
        assert not status.quarantined and status.pending == 0
        # It has a vector: a relevance floor keeps it (a quarantined memory is left out).
        hits = m.search("city5 sister", user_id="ann", min_score=0.0)
        assert [h.record.id for h in hits] == [turn.id]
        assert len(turn_facts(turn)) == MAX_TURN_FACTS  # only the first ones are built


def test_stored_facts_over_the_copies_limit_are_refused_in_the_turns_words(
    tmp_path: Path,
) -> None:
    with memory(tmp_path / "m.db") as m:
        with pytest.raises(ValueError, match="facts stored beside it") as caught:
            m.add(long_turn(), user_id="ann", session_id="s1", facts=True)
        assert "add fewer messages" not in str(caught.value)  # the add had one
        assert "facts=False" in str(caught.value)
        assert m.get_all(user_id="ann") == []


# -- Finding 3: a system prompt or a tool's output is not the user's words ------------

CHAT = [
    {"role": "system", "content": "I am the operator of this bot and I live in Dublin."},
    {"role": "user", "name": "Ann", "content": "I fly to Paris tomorrow."},
    {"role": "tool", "content": "I checked: it rained in Paris yesterday."},
    {"role": "assistant", "name": "Max", "content": "I booked you a hotel yesterday."},
]


def test_system_and_tool_turns_have_no_facts(tmp_path: Path) -> None:
    with memory(tmp_path / "m.db") as m:
        system, user, tool, agent = m.add(
            CHAT, user_id="ann", session_id="s1", event_time="2024-03-04T10:00:00"
        )
        assert expansion_facts(system) == [] and expansion_facts(tool) == []
        assert expansion_facts(user) == ["Ann flies to Paris on 5 March 2024."]
        assert expansion_facts(agent) == ["Max booked you a hotel on 3 March 2024."]
        m.add(CHAT, user_id="bob", session_id="s2", event_time="2024-03-04T10:00:00", facts=True)
        stored = m.get_all(user_id="bob")
        turns = {r.id: r.metadata["role"] for r in stored if FACT_OF not in r.metadata}
        facts = [r for r in stored if FACT_OF in r.metadata]
        assert sorted(turns[f.metadata[FACT_OF]] for f in facts) == ["assistant", "user"]
        assert not any("Dublin" in f.text for f in facts)


# -- A message's empty event_time is refused as the call's is -----------------------


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": "hi there", "event_time": ""},
        {"role": "user", "content": "hi there", "metadata": {"event_time": ""}},
    ],
)
def test_a_messages_empty_event_time_is_refused(tmp_path: Path, message: object) -> None:
    with memory(tmp_path / "m.db") as m:
        with pytest.raises(ValueError, match="event_time '' is not an ISO-8601 date"):
            m.add("hi there", user_id="ann", event_time="")
        with pytest.raises(ValueError, match="event_time '' is not an ISO-8601 date"):
            m.add(message, user_id="ann")  # type: ignore[arg-type]
        m.add({"role": "user", "content": "no time", "event_time": None}, user_id="ann")
        assert [r.event_time for r in m.get_all(user_id="ann")] == [None]


# -- Finding 2: a turn's dates are the speaker's, in the zone its time was given in ------

#: 20:00 in Los Angeles on Monday 8 May 2023: already 03:00 on Tuesday 9 May in UTC.
LA_EVENING = "2023-05-08T20:00:00-07:00"
POTTERY = {"role": "user", "name": "Ann", "content": "I went to a pottery class yesterday."}


def by_seq(records: list[MemoryRecord]) -> list[MemoryRecord]:
    return sorted(records, key=lambda r: (r.metadata["seq"], FACT_OF in r.metadata))


def test_a_turn_and_its_facts_are_dated_by_the_speakers_calendar(backends: Memory) -> None:
    m = backends
    [turn] = m.add(POTTERY, user_id="ann", session_id="s1", event_time=LA_EVENING)
    assert turn.metadata[UTC_OFFSET] == -420
    assert "08 May 2023 Monday" in turn.context
    assert render(turn).startswith("[2023-05-08] ")
    assert expansion_facts(turn) == ["Ann went to a pottery class on 7 May 2023."]

    m.add(POTTERY, user_id="ann", session_id="s2", event_time=LA_EVENING, facts=True)
    turn, fact = by_seq(m.get_all(user_id="ann", session_id="s2"))  # as stored, read back
    assert render(turn) == "[2023-05-08] Ann: I went to a pottery class yesterday."
    assert render(fact) == "[2023-05-07] Ann went to a pottery class on 7 May 2023."

    [inferred] = m.add(POTTERY, user_id="ann", session_id="s3", event_time=LA_EVENING, infer=True)
    assert render(m.get(inferred.id)) == "[2023-05-07] Ann went to a pottery class on 7 May 2023."


def test_east_of_utc_and_a_message_s_own_zone(tmp_path: Path) -> None:
    """Tokyo, 10:00 on 8 May: still 7 May in UTC; the message's own time and zone."""
    with memory(tmp_path / "m.db") as m:
        message = {**POTTERY, "event_time": "2023-05-08T10:00:00+09:00"}
        [fact] = m.add(message, user_id="ken", session_id="s1", infer=True)
        assert fact.metadata[UTC_OFFSET] == 540
        assert render(m.get(fact.id)) == "[2023-05-07] Ann went to a pottery class on 7 May 2023."
        [turn] = m.add(message, user_id="ken", session_id="s2")
        assert render(m.get(turn.id)).startswith("[2023-05-08] ")


def test_next_year_said_on_new_years_eve_in_california(tmp_path: Path) -> None:
    with memory(tmp_path / "m.db") as m:
        said = {"role": "user", "name": "Bob", "content": "I will visit Rome next year."}
        [turn] = m.add(said, user_id="bob", session_id="s1", event_time="2023-12-31T23:30:00-08:00")
        assert expansion_facts(turn) == ["Bob will visit Rome in 2024."]


def test_a_time_in_utc_keeps_no_zone_and_a_callers_other_zone_is_refused(tmp_path: Path) -> None:
    """A zone the caller's metadata names against the zone of the time given is refused.
    Without a time, the caller's zone is that of now (session 51: a memory read back from
    a process outside UTC keeps its zone, and was refused when added back in UTC)."""
    with memory(tmp_path / "m.db") as m:
        for when in ("2023-05-08T20:00:00", "2023-05-08T20:00:00+00:00", None):
            [turn] = m.add("plain", user_id="ann", event_time=when, dedupe=False)
            assert turn.metadata == {"role": "user"}
        with pytest.raises(ValueError, match="'utc_offset' is reserved"):
            m.add("x", user_id="ann", event_time=LA_EVENING, metadata={UTC_OFFSET: 60})
        facts = m.add(
            "Yesterday I adopted a cat named Tom.",
            user_id="ann",
            metadata={UTC_OFFSET: 60},
            infer=True,
        )
        assert facts and {f.metadata[UTC_OFFSET] for f in facts} == {60}
        # The same value, as metadata read from a stored memory carries it, is let through.
        [again] = m.add("y", user_id="ann", event_time=LA_EVENING, metadata={UTC_OFFSET: -420})
        assert again.metadata[UTC_OFFSET] == -420


def test_a_metadata_only_update_keeps_the_zone(tmp_path: Path) -> None:
    """Metadata is replaced whole, but the zone is the library's, as ``seq`` and ``role``:
    dropped, the turn said on 8 May in Los Angeles was shown as 9 May again."""
    with memory(tmp_path / "m.db") as m:
        [turn] = m.add(POTTERY, user_id="ann", session_id="s1", event_time=LA_EVENING)
        updated = m.update(turn.id, metadata={"tag": "x"})
        assert updated.metadata[UTC_OFFSET] == -420
        assert updated.metadata["tag"] == "x"
        assert render(m.get(turn.id)).startswith("[2023-05-08] ")
