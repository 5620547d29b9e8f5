"""Relative dates said without a time are read on the calendar of the process's zone.

Why: an add without a time resolved "yesterday" against UTC's calendar whatever the
process's ``TZ``, so a New York user who said it at 20:30 (00:30 UTC) got today's date,
and a question's "yesterday" asked at 21:00 there boosted that day's memories (a review
of clocks and zones, session 51). Each test sets this process's zone (``TZ``, as a user's
shell does) to one whose date today is not UTC's, whatever the hour the suite runs at.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from contextos import Memory
from contextos.engine.session import Session
from contextos.memory.expansion import expansion_facts
from contextos.memory.render import render
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message


@pytest.fixture
def offset(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Minutes east of UTC of the zone this process is set to: UTC+13 from 11:00 UTC on
    (its date is tomorrow's), UTC-12 before (yesterday's)."""
    minutes = 13 * 60 if datetime.now(UTC).hour >= 11 else -12 * 60
    # POSIX zones count west of UTC: "XXX-13" is 13 hours east.
    monkeypatch.setenv("TZ", f"XXX{'-' if minutes > 0 else '+'}{abs(minutes) // 60}")
    time.tzset()
    assert datetime.now().astimezone().date() != datetime.now(UTC).date()
    yield minutes
    monkeypatch.undo()
    time.tzset()


def _local_yesterday(offset: int) -> date:
    return datetime.now(timezone(timedelta(minutes=offset))).date() - timedelta(days=1)


def _said(day: date) -> str:
    """How the offline extractor writes a day: "7 May 2023"."""
    return f"{day.day} {day:%B %Y}"


def test_an_inferred_yesterday_is_the_users_yesterday(tmp_path: Path, offset: int) -> None:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        facts = m.add("Yesterday I adopted a cat named Tom.", user_id="ana", infer=True)
    [fact] = [f for f in facts if "Tom" in f.text]
    assert _said(_local_yesterday(offset)) in fact.text
    assert fact.metadata["utc_offset"] == offset


def test_a_turns_yesterday_is_the_users_yesterday_and_its_zone_is_kept(
    tmp_path: Path, offset: int
) -> None:
    said = {"role": "user", "name": "Ana", "content": "Yesterday I adopted a cat named Tom."}
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        [turn] = m.add([said], user_id="ana", session_id="s1")
        assert m.get(turn.id).metadata["utc_offset"] == offset
    assert any(_said(_local_yesterday(offset)) in f for f in expansion_facts(turn))


def test_a_questions_yesterday_is_the_users_yesterday(tmp_path: Path, offset: int) -> None:
    zone = timezone(timedelta(minutes=offset))
    local_start = datetime.combine(_local_yesterday(offset), datetime.min.time(), zone)
    utc_start = datetime.combine(
        datetime.now(UTC).date() - timedelta(days=1), datetime.min.time(), UTC
    )
    hours = [local_start + timedelta(hours=h) for h in range(-48, 48)]
    in_local = [t for t in hours if local_start <= t < local_start + timedelta(days=1)]
    in_utc = [t for t in hours if utc_start <= t < utc_start + timedelta(days=1)]
    # A time of the user's yesterday that is not UTC's, and one of UTC's that is not the user's.
    users = next(t for t in in_local if t not in in_utc)
    utcs = next(t for t in in_utc if t not in in_local)
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        m.add("My hobby session was a hike", user_id="ana", event_time=users)
        m.add("My hobby session was pottery", user_id="ana", event_time=utcs)
        hits = m.search("Which hobby session did I have yesterday?", user_id="ana")
    assert [h.record.text for h in hits] == [
        "My hobby session was a hike",
        "My hobby session was pottery",
    ]


def test_in_utc_an_add_without_a_time_keeps_no_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the process keeps UTC (as servers mostly do), nothing changes: no zone key."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
            [turn] = m.add("Yesterday I adopted a cat named Tom.", user_id="ana")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert "utc_offset" not in turn.metadata


def test_metadata_read_back_is_taken_again_without_a_time(tmp_path: Path, offset: int) -> None:
    """Every memory a process outside UTC stores without a time keeps its zone now, so a
    copy of one (``add(text, metadata=read.metadata)``, an export added back) is taken,
    in this process and in one of another offset (a server in UTC), plainly and
    inferring, and dated by that zone's calendar (a review: refused in UTC)."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        [first] = m.add("Lunch with Bea at the harbour", user_id="ana")
        read = m.get(first.id).metadata
        [copy] = m.add("Lunch again", user_id="ana", metadata=read)
        assert copy.metadata["utc_offset"] == offset
    with pytest.MonkeyPatch.context() as utc:  # a process in UTC: a server, a container
        utc.setenv("TZ", "UTC")
        time.tzset()
        with Memory(tmp_path / "m.db", embedder=HashEmbedder()) as m:
            [back] = m.add("Lunch with Bea at the harbour", user_id="bo", metadata=read)
            facts = m.add("Yesterday I adopted a cat.", user_id="bo", metadata=read, infer=True)
    time.tzset()  # the fixture's zone again
    assert back.metadata["utc_offset"] == offset
    assert {f.metadata["utc_offset"] for f in facts} == {offset}
    assert any(_said(_local_yesterday(offset)) in f.text for f in facts)


def test_the_same_text_added_from_two_zones_is_one_memory(tmp_path: Path, offset: int) -> None:
    """A repeat is the same text without a time whatever calendar its add was on: the
    zone each add keeps left the same text from a laptop and a UTC server two memories."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        [first] = m.add("Ana's locker code is 4471.", user_id="ana")
    with pytest.MonkeyPatch.context() as utc:
        utc.setenv("TZ", "UTC")
        time.tzset()
        with Memory(tmp_path / "m.db", embedder=HashEmbedder()) as m:
            [again] = m.add("Ana's locker code is 4471.", user_id="ana")
            stored = m.get_all(user_id="ana")
    time.tzset()
    assert again.id == first.id and len(stored) == 1


def test_an_offloaded_turn_is_dated_on_the_process_calendar(tmp_path: Path, offset: int) -> None:
    """A turn moved from a session into memory by an offload is dated as an add without a
    time is: in UTC, a turn said at 21:00 in New York was the next day's."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        chat = Session(m.store, "chat", tenant=m.tenant, user_id="ana")
        for i in range(30):
            chat.add(Message("user", f"turn {i}: I adopted a cat named Tom and walked the dog."))
        chat.compact(300, "offload", memory=m, force=True)
        archived = [r for r in m.get_all(user_id="ana", limit=100) if r.event_time is not None]
    assert archived
    assert {r.metadata.get("utc_offset") for r in archived} == {offset}
    today = datetime.now(timezone(timedelta(minutes=offset))).date()
    assert {render(r)[1:11] for r in archived} == {today.isoformat()}


def test_an_offloaded_turn_said_with_its_own_time_keeps_its_zone(
    tmp_path: Path, offset: int
) -> None:
    """A turn logged with the speaker's zoned time keeps that zone when an offload moves
    it into memory, whatever the calendar of the process that moves it."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        chat = Session(m.store, "chat", tenant=m.tenant, user_id="ana")
        said = {"event_time": "2023-05-08T22:00:00-07:00"}  # Los Angeles, 9 May in UTC
        for i in range(30):
            chat.add(Message("user", f"turn {i}: I adopted a cat named Tom.", metadata=said))
        chat.compact(300, "offload", memory=m, force=True)
        archived = [r for r in m.get_all(user_id="ana", limit=100) if r.event_time is not None]
    assert archived
    assert {r.metadata.get("utc_offset") for r in archived} == {-420}
    assert {render(r)[1:11] for r in archived} == {"2023-05-08"}


def test_an_inferring_add_of_a_message_with_its_own_zone_dates_it_there(
    tmp_path: Path, offset: int
) -> None:
    """A message given no time but a zone of its own is said now in that zone, by an
    inferring add as by a plain one (its "yesterday" was the process's)."""
    said = Message("user", "Yesterday I adopted a cat named Tom.", metadata={"utc_offset": 0})
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        facts = m.add([said], user_id="ana", infer=True)
    utc_yesterday = datetime.now(UTC).date() - timedelta(days=1)
    assert utc_yesterday != _local_yesterday(offset)
    assert any(_said(utc_yesterday) in f.text for f in facts)
