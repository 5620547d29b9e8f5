"""Inferring adds with the offline defaults, as a user makes them: what holds, and when.

The s38 review (area "types") found five ways the offline extractor and reconciler
stored the wrong thing: a changed instruction or preference left the old one in force
beside it; a fact of an imported turn held from a later date its text named, not from
when it was said; "until Friday" said on a Monday meant the Friday before; a statement
imported between two stored ones left two values of one attribute valid at once; and
an event told again on another day (or "again") was dropped as already known. Each test
here goes through ``Memory.add(..., infer=True)`` on an SQLite file.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contextos import Memory
from contextos.memory.extract_llm import LLMExtractor
from contextos.testing.embedders import HashEmbedder
from contextos.testing.llm import ScriptedLLM
from contextos.types import Filter, MemoryRecord, Scope


def _memory(tmp_path: Path) -> Memory:
    return Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False)


def _ana(text: str, **meta: object) -> dict[str, object]:
    return {"role": "user", "name": "Ana", "content": text, **meta}


def _open(m: Memory) -> list[str]:
    return sorted(r.text for r in m.get_all(user_id="ana"))


def _every(m: Memory) -> dict[str, MemoryRecord]:
    flt = Filter(scope=Scope(m.tenant, "ana"), include_invalid=True)
    return {r.text: r for r in m.store.list(flt, limit=100)}


def _as_of(m: Memory, when: datetime) -> list[str]:
    return sorted(r.text for r in m.get_all(user_id="ana", filters=Filter(as_of=when)))


def _day(month: int, day: int, year: int = 2024) -> datetime:
    return datetime(year, month, day, 10, 0, tzinfo=UTC)


# -- 1. a changed rule or preference replaces the old one ------------------------------
@pytest.mark.parametrize(
    ("first", "then", "old", "new"),
    [
        (
            "Always answer in French.",
            "Actually, please answer in English from now on.",
            "Ana: Always answer in French.",
            "Ana: please answer in English from now on.",
        ),
        (
            "Always answer in French.",
            "Always answer in English, never in French.",
            "Ana: Always answer in French.",
            "Ana: Always answer in English, never in French.",
        ),
        (
            "Call me Bob.",
            "Actually, call me Rob from now on.",
            "Call Ana Bob.",
            "Call Ana Rob from now on.",
        ),
        (
            "I prefer short answers.",
            "I prefer long, detailed answers now.",
            "Ana prefers short answers.",
            "Ana prefers long, detailed answers now.",
        ),
        (
            "I prefer tea to coffee.",
            "I prefer coffee over tea now.",
            "Ana prefers tea to coffee.",
            "Ana prefers coffee over tea now.",
        ),
    ],
)
def test_a_changed_instruction_or_preference_replaces_the_old_one(
    tmp_path: Path, first: str, then: str, old: str, new: str
) -> None:
    with _memory(tmp_path) as m:
        m.add(_ana(first), user_id="ana", infer=True)
        [written] = m.add(_ana(then), user_id="ana", infer=True)
        assert written.text == new and written.memory_type == "procedural"
        assert _open(m) == [new]  # one rule in force: the model is told one thing
        closed = _every(m)[old]
        assert closed.valid_to is not None and closed.metadata["superseded_by"] == written.id
        hits = m.search("how should you answer me and what do I prefer", user_id="ana")
        assert [h.record.text for h in hits] == [new]


def test_other_rules_stay_in_force_and_a_denied_rule_ends(tmp_path: Path) -> None:
    with _memory(tmp_path) as m:
        for text in (
            "Always answer in French.",
            "Keep answers short.",
            "Call me Bob.",
            "Please answer in English from now on.",
        ):
            m.add(_ana(text), user_id="ana", infer=True)
        assert _open(m) == [
            "Ana: Keep answers short.",
            "Ana: Please answer in English from now on.",
            "Call Ana Bob.",
        ]
        m.add(_ana("Please don't call me Bob anymore."), user_id="ana", infer=True)
        assert "Call Ana Bob." not in _open(m)
        assert _every(m)["Call Ana Bob."].valid_to is not None


# -- 2. an imported turn's fact holds from when it was said ---------------------------
def test_an_imported_plan_holds_from_when_it_was_said_not_from_the_date_it_names(
    tmp_path: Path,
) -> None:
    said = _day(3, 4)
    with _memory(tmp_path) as m:
        [trip] = m.add(
            _ana("I'm on vacation in Spain until 20 March 2024."),
            user_id="ana",
            infer=True,
            event_time=said,
        )
        [move] = m.add(
            [_ana("I will move to Berlin on 1 April 2024.", event_time=said)],
            user_id="ana",
            infer=True,
        )
        assert trip.valid_from == said and move.valid_from == said
        assert trip.event_time == _day(3, 20).replace(hour=0)  # the date named is kept
        assert _as_of(m, _day(3, 5)) == sorted([trip.text, move.text])
        assert _as_of(m, _day(3, 3)) == []  # not before it was said


def test_a_plan_said_live_holds_from_now(tmp_path: Path) -> None:
    with _memory(tmp_path) as m:
        before = datetime.now(UTC)
        [trip] = m.add(
            _ana("I'm on vacation in Spain until 20 March 2030."), user_id="ana", infer=True
        )
        assert trip.valid_from is not None and before <= trip.valid_from <= datetime.now(UTC)
        assert _as_of(m, datetime.now(UTC)) == [trip.text]


# -- 3. "until <weekday>" looks forward ------------------------------------------------
@pytest.mark.parametrize(
    ("said", "stored", "day"),
    [
        ("I am in Tokyo until Friday.", "Ana is in Tokyo until 8 March 2024.", 8),
        ("I'm busy till Monday.", "Ana is busy till 11 March 2024.", 11),
        ("I'm off work through Friday.", "Ana is off work through 8 March 2024.", 8),
        ("I was in Tokyo until Friday.", "Ana was in Tokyo until 1 March 2024.", 1),
    ],
)
def test_until_a_weekday_is_the_one_to_come_unless_said_in_the_past(
    tmp_path: Path, said: str, stored: str, day: int
) -> None:
    monday = _day(3, 4)
    with _memory(tmp_path) as m:
        [fact] = m.add(_ana(said), user_id="ana", infer=True, event_time=monday)
        assert fact.text == stored
        assert fact.event_time is not None and fact.event_time.date() == _day(3, day).date()


# -- 4. a statement imported between two stored ones -----------------------------------
def _at(year: int) -> datetime:
    return datetime(year, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("adds", ["each", "one", "paris, then one"])
def test_a_statement_imported_between_two_stored_ones_shortens_the_one_it_overlaps(
    tmp_path: Path, adds: str
) -> None:
    lines = [("I live in Paris.", 2020), ("I live in Berlin.", 2024), ("I live in Rome.", 2022)]
    with _memory(tmp_path) as m:
        if adds == "each":
            for text, year in lines:
                m.add(_ana(text), user_id="ana", infer=True, event_time=_at(year))
        else:  # a log imported in one call (after Paris was stored, or with it)
            first = 1 if adds == "paris, then one" else 0
            for text, year in lines[:first]:
                m.add(_ana(text), user_id="ana", infer=True, event_time=_at(year))
            m.add(
                [
                    _ana(text, event_time=_at(year), dia_id=f"D1:{i}")
                    for i, (text, year) in enumerate(lines[first:])
                ],
                user_id="ana",
                infer=True,
            )
        facts = _every(m)
        paris, rome, berlin = (facts[f"Ana lives in {c}."] for c in ("Paris", "Rome", "Berlin"))
        assert (paris.valid_from, paris.valid_to) == (_at(2020), _at(2022))
        assert (rome.valid_from, rome.valid_to) == (_at(2022), _at(2024))
        assert (berlin.valid_from, berlin.valid_to) == (_at(2024), None)
        assert paris.metadata["superseded_by"] == rome.id
        assert rome.metadata["superseded_by"] == berlin.id
        for year, city in ((2021, "Paris"), (2023, "Rome"), (2025, "Berlin")):
            assert _as_of(m, datetime(year, 6, 1, tzinfo=UTC)) == [f"Ana lives in {city}."]


def test_a_statement_imported_before_two_closed_ones_ends_when_the_next_began(
    tmp_path: Path,
) -> None:
    with _memory(tmp_path) as m:
        for text, year in (
            ("I live in Paris.", 2020),
            ("I live in Madrid.", 2022),
            ("I live in Berlin.", 2024),
            ("I live in Rome.", 2021),
        ):
            m.add(_ana(text), user_id="ana", infer=True, event_time=_at(year))
        for year, city in ((2020, "Paris"), (2021, "Rome"), (2022, "Madrid"), (2024, "Berlin")):
            assert _as_of(m, datetime(year, 6, 1, tzinfo=UTC)) == [f"Ana lives in {city}."]


# -- 5. an event told again on another day is another event ---------------------------
def test_an_event_told_on_another_day_or_again_is_a_new_event(tmp_path: Path) -> None:
    visit = "I visited my mom in Lyon."
    with _memory(tmp_path) as m:
        m.add(_ana(visit), user_id="ana", infer=True, event_time=_day(3, 2))
        assert m.add(_ana(visit), user_id="ana", infer=True, event_time=_day(3, 2)) == []
        [second] = m.add(_ana(visit), user_id="ana", infer=True, event_time=_day(3, 9))
        assert second.event_time == _day(3, 9)
        m.add(_ana("I met Tom at the cafe."), user_id="ana", infer=True, event_time=_day(3, 10))
        [again] = m.add(
            _ana("I met Tom at the cafe again."), user_id="ana", infer=True, event_time=_day(3, 10)
        )
        assert again.text == "Ana met Tom at the cafe again."
        # A longer telling on another day is another meeting, not more detail of the first.
        m.add(
            _ana("I met Tom at the cafe with Ann."),
            user_id="ana",
            infer=True,
            event_time=_day(3, 20),
        )
        assert _open(m) == [
            "Ana met Tom at the cafe again.",
            "Ana met Tom at the cafe with Ann.",
            "Ana met Tom at the cafe.",
            "Ana visited Ana's mom in Lyon.",
            "Ana visited Ana's mom in Lyon.",
        ]
        week = m.get_all(
            user_id="ana", filters=Filter(event_after=_day(3, 4), event_before=_day(3, 11))
        )
        assert sorted(r.text for r in week) == [
            "Ana met Tom at the cafe again.",
            "Ana met Tom at the cafe.",
            "Ana visited Ana's mom in Lyon.",
        ]


def test_events_of_different_days_imported_in_one_add_are_kept_apart(tmp_path: Path) -> None:
    with _memory(tmp_path) as m:
        m.add(
            [
                _ana("I visited my mom in Lyon.", event_time=_day(3, 2), dia_id="D1:1"),
                _ana("I visited my mom in Lyon.", event_time=_day(3, 9), dia_id="D2:1"),
            ],
            user_id="ana",
            infer=True,
        )
        visits = sorted(r.event_time for r in m.get_all(user_id="ana") if r.event_time)
        assert visits == [_day(3, 2), _day(3, 9)]


def test_a_fact_an_llm_dates_after_its_turn_holds_from_when_it_was_said(tmp_path: Path) -> None:
    said = _day(3, 4)
    reply = {
        "facts": [
            {
                "text": "Ana is on vacation in Spain until 20 March 2024.",
                "type": "semantic",
                "date": "2024-03-20",
                "source": "D1:1",
            }
        ]
    }
    extractor = LLMExtractor(ScriptedLLM([json.dumps(reply)]))
    with _memory(tmp_path) as m:
        message = _ana("I'm on vacation in Spain until the 20th.", dia_id="D1:1", event_time=said)
        [trip] = m.add([message], user_id="ana", infer=True, extractor=extractor)
        assert trip.valid_from == said  # not the 20th the model dated it
        assert _as_of(m, _day(3, 5)) == [trip.text]


def test_an_event_added_again_across_midnight_is_one_event(tmp_path: Path) -> None:
    """An app that adds its last messages again each turn told the visit at 23:58 and at
    00:01 (UTC): two dates, one event (a review found it stored twice)."""
    visit = [_ana("I visited my mom in Lyon."), {"role": "assistant", "content": "How was it?"}]
    with _memory(tmp_path) as m:
        m.add(visit, user_id="ana", infer=True, event_time=datetime(2024, 3, 2, 23, 58, tzinfo=UTC))
        late = datetime(2024, 3, 3, 0, 1, tzinfo=UTC)
        assert m.add(visit, user_id="ana", infer=True, event_time=late) == []
        assert _open(m) == ["Ana visited Ana's mom in Lyon."]
