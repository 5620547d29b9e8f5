"""An older statement written after the newer one does not replace it.

A chat log imported late, or two sources merged, can bring "I live in Paris" (said in
2020) after "I live in Berlin" (said in 2024). The older fact replaced the newer one,
which was closed the moment it began: Paris was current, Berlin never valid, and
``as_of`` 2024 or 2025 answered Paris (a review). The older fact now holds until the
newer one began, and the newer one stays.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from contextos import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, MemoryRecord, Scope


def _at(year: int, month: int = 1) -> datetime:
    return datetime(year, month, 1, tzinfo=UTC)


def _all(m: Memory) -> dict[str, MemoryRecord]:
    flt = Filter(scope=Scope(m.tenant, "bob"), include_invalid=True)
    return {r.text: r for r in m.store.list(flt, limit=50)}


def _held(m: Memory, when: datetime) -> list[str]:
    return [h.record.text for h in m.search("where does bob live", user_id="bob", as_of=when)]


@pytest.mark.parametrize("one_add", [False, True])
def test_an_older_move_told_later_holds_until_the_newer_one_began(
    tmp_path: Path, one_add: bool
) -> None:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        if one_add:  # a log imported in one call, its lines out of order
            m.add(
                [
                    {"content": "I live in Berlin.", "event_time": _at(2024), "dia_id": "D1:1"},
                    {"content": "I live in Paris.", "event_time": _at(2020), "dia_id": "D1:2"},
                ],
                user_id="bob",
                infer=True,
            )
        else:
            m.add("I live in Berlin.", user_id="bob", infer=True, event_time=_at(2024))
            m.add("I live in Paris.", user_id="bob", infer=True, event_time=_at(2020))
        facts = _all(m)
        berlin, paris = facts["User lives in Berlin."], facts["User lives in Paris."]
        assert berlin.valid_to is None and berlin.valid_from == _at(2024)
        assert (paris.valid_from, paris.valid_to) == (_at(2020), _at(2024))
        assert paris.metadata.get("superseded_by") == berlin.id
        assert _held(m, _at(2021, 6)) == ["User lives in Paris."]
        assert _held(m, _at(2024, 6)) == ["User lives in Berlin."]
        assert [r.text for r in m.get_all(user_id="bob") if r.valid_to is None] == [
            "User lives in Berlin."
        ]


def test_a_newer_move_still_replaces_the_older_one(tmp_path: Path) -> None:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        m.add("I live in Paris.", user_id="bob", infer=True, event_time=_at(2020))
        m.add("I live in Berlin.", user_id="bob", infer=True, event_time=_at(2024))
        facts = _all(m)
        assert facts["User lives in Paris."].valid_to == _at(2024)
        assert facts["User lives in Berlin."].valid_to is None


@pytest.mark.parametrize("berlin_dated", [False, True])
def test_a_move_said_now_replaces_the_fact_however_far_back_it_dates_the_move(
    tmp_path: Path, berlin_dated: bool
) -> None:
    """A statement said now (its add given no time) is the newest said: "I moved to
    Paris last week", after "I live in Berlin" written today, was taken for an older
    statement (the move dated before Berlin's write) and stored already closed, so the
    model was told Berlin (a review). Only a statement said at an earlier time (the
    test above: a log imported late) can be the older one."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        when = {"event_time": _at(2024)} if berlin_dated else {}
        m.add("I live in Berlin.", user_id="bob", infer=True, **when)  # type: ignore[arg-type]
        [paris] = m.add("I moved to Paris last week.", user_id="bob", infer=True)
        facts = _all(m)
        assert paris.valid_to is None and "Paris" in paris.text
        assert facts["User lives in Berlin."].metadata.get("superseded_by") == paris.id
        assert facts["User lives in Berlin."].valid_to is not None
        assert [r.text for r in m.get_all(user_id="bob") if r.valid_to is None] == [paris.text]
        assert _held(m, datetime.now(UTC))[0] == paris.text
