"""``as_of`` is valid time: what held at that time, by the dates the memories carry.

A memory holds from when it was said (its ``event_time``, never after it was written)
until a later statement replaces or ends it, dated the same way. So a conversation
imported today answers ``as_of`` its own dates, inferred facts as its turns do, and a
memory about a later date (a reminder, a plan) holds from now, not from that date.
``created_before`` is the other axis: what had been written by then.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from contextos import Memory
from contextos.embed import make_embedder
from contextos.types import Filter, Scope

MAY_2023 = datetime(2023, 5, 7, tzinfo=UTC)
FEB_2024 = datetime(2024, 2, 1, tzinfo=UTC)


def _texts(memory: Memory, **flt: object) -> list[str]:
    scope = Scope(tenant=memory.tenant, user_id="ann")
    return sorted(r.text for r in memory.get_all(filters=Filter(scope=scope, **flt)))  # type: ignore[arg-type]


def _ann(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "name": "Ann", "content": text}]


def test_inferred_facts_of_an_imported_conversation_hold_at_its_own_dates(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "m.db", embedder=make_embedder("hash"))
    memory.add(_ann("I live in Paris."), user_id="ann", infer=True, event_time=MAY_2023)
    memory.add(_ann("I live in Berlin now."), user_id="ann", infer=True, event_time=FEB_2024)

    assert _texts(memory, as_of=datetime(2023, 12, 1, tzinfo=UTC)) == ["Ann lives in Paris."]
    assert _texts(memory, as_of=datetime(2024, 6, 1, tzinfo=UTC)) == ["Ann lives in Berlin now."]
    assert _texts(memory) == ["Ann lives in Berlin now."]  # what holds today
    hits = memory.search(
        "where does Ann live", user_id="ann", as_of=datetime(2023, 12, 1, tzinfo=UTC)
    )
    assert [h.record.text for h in hits] == ["Ann lives in Paris."]
    # Nothing was written before today: the other axis sees nothing then.
    assert _texts(memory, created_before=datetime(2025, 1, 1, tzinfo=UTC)) == []
    memory.close()


def test_a_memory_about_a_later_date_holds_from_now(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "m.db", embedder=make_embedder("hash"))
    next_week = datetime.now(UTC) + timedelta(days=7)
    memory.add("Dentist appointment at 9", user_id="ann", event_time=next_week)
    assert _texts(memory) == ["Dentist appointment at 9"]
    assert _texts(memory, as_of=datetime.now(UTC)) == ["Dentist appointment at 9"]
    assert [h.record.text for h in memory.search("dentist", user_id="ann")] == [
        "Dentist appointment at 9"
    ]
    (record,) = memory.get_all(user_id="ann")
    assert record.event_time == next_week  # the date it is about is kept as it was given
    memory.close()
