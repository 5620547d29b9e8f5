"""Time at its edges, in the shapes a review of session 33 found them: a memory naming
"31 December 9999" (the usual "never expires"), one dated in year 1 that says "last
year", a compact date sent over HTTP, "yesterday" said in the evening in Los Angeles,
a day that ends where the asked month begins, and a logged turn with a time no instant
holds. None may fail a search, a write or a compaction of anyone."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.memory.retrieval import temporal_match
from contextos.testing.embedders import HashEmbedder
from contextos.text.temporal import question_time_cues, resolve
from contextos.types import MemoryRecord, Message, Scope
from server_support import app_client, issue_key

NEVER_EXPIRES = [
    "Licence expiry: 31 December 9999",
    "Contract valid from 2020-01-01 to 9999-12-31",
    "Policy end date December 31, 9999",
    "Warranty runs through December 9999",
]


def _memory(path: Path) -> Memory:
    return Memory(path, embedder=HashEmbedder(), background_embedding=False)


@pytest.mark.parametrize("text", NEVER_EXPIRES)
def test_a_memory_naming_year_9999_fails_no_time_cued_search(tmp_path: Path, text: str) -> None:
    """Was: OverflowError ("date value out of range") from every time-cued search of
    the owner once such a memory was a candidate: a 500 over HTTP, a CLI traceback."""
    with _memory(tmp_path / "m.db") as m:
        m.add(text, user_id="ana")
        m.add("I went swimming on 3 May 2024", user_id="ana")
        for question in ("when did I go swimming?", "what did I do in May 2024?"):
            hits = m.search(question, user_id="ana")
            assert "I went swimming on 3 May 2024" in [h.record.text for h in hits]
        assert m.add(text, user_id="bob", infer=True)  # inferring it stores it too


@pytest.mark.parametrize(
    ("text", "when"),
    [
        ("Yesterday I went to the museum", "0001-01-01T05:00:00Z"),
        ("Last week I went to the museum", "0001-01-03T00:00:00Z"),
        ("Next month I will go to the museum", "9999-12-15T00:00:00Z"),
        ("Next year I will go to the museum", "9999-06-01T00:00:00Z"),
    ],
)
def test_relative_dates_past_the_years_an_instant_holds_are_left_unresolved(
    tmp_path: Path, text: str, when: str
) -> None:
    """Was: "year 0 is out of range" from searches (a 400 over HTTP for a valid request)
    and a traceback from ``add(infer=True)`` for a memory dated at years 1 or 9999,
    which ``add`` accepts. The relative words are kept as said."""
    with _memory(tmp_path / "m.db") as m:
        m.add(text, user_id="ana", event_time=when)
        assert m.add(text, user_id="bob", infer=True, event_time=when)
        for question in ("when did I go to the museum?", "what did I do at the museum in May?"):
            assert m.search(question, user_id="ana")
    assert resolve(text, datetime.fromisoformat(when)) == []


def test_http_reads_a_compact_date_as_the_library_does(tmp_path: Path) -> None:
    """Was: pydantic read an all-digit string as Unix seconds, so "20240508" (8 May
    2024 to the library and the CLI) was stored as 1970-08-23 over HTTP and MCP, and
    "2024" as 1970-01-01. Now one reading: the library's, or a 422."""
    with app_client(tmp_path / "h.db") as client:
        headers = {"Authorization": f"Bearer {issue_key(client, 'acme')}"}
        made = client.post(
            "/v1/memories",
            json={"messages": "compact date", "user_id": "ana", "event_time": "20240508"},
            headers=headers,
        )
        assert made.status_code == 201, made.text
        assert made.json()["results"][0]["event_time"] == "2024-05-08T00:00:00Z"
        for bad in ("2024", "1715169600"):
            refused = client.post(
                "/v1/memories",
                json={"messages": "x", "user_id": "ana", "event_time": bad},
                headers=headers,
            )
            assert refused.status_code == 422, refused.text
            assert "ISO-8601" in refused.text
        found = client.post(
            "/v1/memories/search",
            json={"query": "compact date", "user_id": "ana", "event_after": "20240501"},
            headers=headers,
        )
        assert found.status_code == 200 and len(found.json()["results"]) == 1, found.text


def test_inferred_relative_dates_are_read_in_the_speakers_zone(tmp_path: Path) -> None:
    """Was: "yesterday" said at 20:00 on 8 May in Los Angeles (already 9 May in UTC,
    03:00) was read against the UTC day: "On 8 May 2024" stored, where ``contextos
    extract`` showed 7 May. The instant is still stored in UTC."""
    with _memory(tmp_path / "m.db") as m:
        for when in ("2024-05-08T20:00:00-07:00", datetime.fromisoformat("2024-05-08T20:00-07:00")):
            [fact] = m.add("Yesterday I adopted a cat", user_id="ana", infer=True, event_time=when)
            assert fact.text.startswith("On 7 May 2024"), fact.text
            assert fact.event_time is not None and fact.event_time.tzinfo is UTC
            m.forget("ana")


def _said(text: str) -> MemoryRecord:
    now = datetime(2024, 7, 1, tzinfo=UTC)
    return MemoryRecord(
        id=text, text=text, scope=Scope(user_id="ana"), created_at=now, updated_at=now
    )


def test_a_day_that_ends_where_the_asked_month_begins_is_not_inside_it() -> None:
    """Was: "30 April" (30 April to 1 May) counted as inside "in May" and "after
    April" and got the time boost (the intervals are half-open)."""
    in_may = question_time_cues("What did I paint in May 2024?")
    after_april = question_time_cues("What did I paint after April 2024?")
    assert in_may is not None and after_april is not None
    assert not temporal_match(_said("On 30 April 2024 I painted the fence"), in_may)
    assert not temporal_match(_said("On 30 April 2024 I painted the fence"), after_april)
    assert temporal_match(_said("On 1 May 2024 I painted the shed"), in_may)
    assert not temporal_match(_said("On 1 June 2024 I painted the door"), in_may)
    at_start = MemoryRecord(
        id="p",
        text="painted the gate",
        scope=Scope(user_id="ana"),
        event_time=datetime(2024, 5, 1, tzinfo=UTC),  # an instant at the cue's start
    )
    assert temporal_match(at_start, in_may)


def test_a_logged_turn_with_a_time_no_instant_holds_does_not_stop_offload(
    tmp_path: Path,
) -> None:
    """Was: a turn logged with ``metadata["event_time"]`` "0001-01-01T00:00:00+01:00"
    (year 0 in UTC) made every offload of the session fail in ``Memory.add``: nothing
    was archived again. It is archived at the time it was logged."""
    with _memory(tmp_path / "m.db") as m:
        s = Session(m.store, "chat", tenant=m.tenant, user_id="ana")
        s.add(Message("user", "an odd clock", metadata={"event_time": "0001-01-01T00:00:00+01:00"}))
        for i in range(30):
            s.add(Message("user", f"turn {i} about the lisbon trams and the hills"))
        done = s.compact(200, "offload", memory=m, force=True)
        assert done.plan is not None and done.plan.rotate
        archived = m.get_all(session_id="chat", limit=100)
        assert "an odd clock" in [r.text for r in archived]
