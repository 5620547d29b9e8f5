"""The zone of an ``event_time`` on every surface a time is given through, as the s40
zones review found it (``metadata["utc_offset"]``, ``render.local_time``).

- ``POST /v1/memories`` and MCP ``add_memory`` converted ``event_time`` to UTC before
  ``Memory.add`` saw it: the zone was lost, a turn said at 20:00 in Los Angeles on 8 May
  rendered as 9 May and its "yesterday" was stored as 8 May.
- A ``ZoneInfo`` time in winter read "4 July" at midnight in summer time while the
  memory kept (and rendered in) the winter offset: the fact showed 3 July.
- A memory read back (UTC time, its zone in ``utc_offset``) could not be added again as
  read: ``Memory.add``, the CLI's ``list --json`` then ``add``, HTTP GET then POST.
- The CLI's ``list`` showed UTC's day in its "when" column beside the local one.
- A zone whose offset has seconds (local mean time before 1883) was not kept.

A real ``contextos serve`` on loopback, ``contextos mcp`` over stdio and the CLI, real
SQLite files in tmp_path, the hash embedder and the offline extractor.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from mcp.client.session import ClientSession

from cli_support import keyed_server, run_cli
from contextos.memory import Memory
from contextos.memory.render import FACT_OF, UTC_OFFSET, render
from contextos.server.keys import KeyStore
from contextos.testing.embedders import HashEmbedder
from contextos.times import local, offset_minutes
from mcp_support import results, stdio_call

pytestmark = pytest.mark.timeout(300)

#: 20:00 on 8 May in Los Angeles: 03:00 on 9 May in UTC.
LA_EVENING = "2023-05-08T20:00:00-07:00"
PUPPY = {"role": "user", "name": "Ann", "content": "I adopted a puppy named Rex yesterday."}
LA = ZoneInfo("America/Los_Angeles")


def memory(path: Path) -> Memory:
    return Memory(path, embedder=HashEmbedder(), background_embedding=False)


def served(db: Path) -> Any:
    """``contextos serve`` on ``db`` (the hash embedder) with a key of tenant ``acme``: a
    client sending it, and the key (for ``contextos mcp`` on the same file)."""
    return keyed_server(str(db), "--embedder", "hash", timeout=120)


def added(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 201, resp.text
    return list(resp.json()["results"])


# -- Finding 1: HTTP and MCP keep the zone of the top-level event_time ---------------------


def test_http_add_keeps_the_zone_of_event_time_and_dates_facts_by_it(tmp_path: Path) -> None:
    with served(tmp_path / "m.db") as (c, _key):
        body = {"messages": "I visited the lighthouse yesterday", "user_id": "ana"}
        [turn] = added(c.post("/v1/memories", json={**body, "event_time": LA_EVENING}))
        assert turn["metadata"] == {"role": "user", UTC_OFFSET: -420}
        assert turn["event_time"] == "2023-05-09T03:00:00Z"  # the instant, in UTC
        # The same time in the body or in the message's own metadata: one answer.
        message = {"role": "user", "content": "per message", "metadata": {"event_time": LA_EVENING}}
        [own] = added(c.post("/v1/memories", json={"messages": [message], "user_id": "ana"}))
        assert own["metadata"][UTC_OFFSET] == -420
        # The docs' example: "yesterday" is 7 May on the speaker's calendar.
        [fact] = added(
            c.post(
                "/v1/memories",
                json={
                    "messages": [PUPPY],
                    "user_id": "ann",
                    "event_time": LA_EVENING,
                    "infer": True,
                },
            )
        )
        assert fact["text"] == "Ann adopted a puppy named Rex on 7 May 2023."
        assert fact["metadata"][UTC_OFFSET] == -420
        assert fact["event_time"] == "2023-05-07T07:00:00Z"
        # The window renders the local day; Kathmandu (+05:45) at 02:00 on 8 May too.
        kathmandu = {"messages": "lunch in Kathmandu", "user_id": "ana"}
        added(c.post("/v1/memories", json={**kathmandu, "event_time": "2023-05-08T02:00:00+05:45"}))
        window = c.post(
            "/v1/sessions/w1/window", json={"question": "lighthouse lunch", "user_id": "ana"}
        )
        assert window.status_code == 200, window.text
        text = window.json()["text"]
        assert "[2023-05-08] I visited the lighthouse yesterday" in text
        assert "[2023-05-08] lunch in Kathmandu" in text
        # The zone given twice, the same: let through, as Python lets it.
        twice = {**body, "event_time": LA_EVENING, "metadata": {UTC_OFFSET: -420}}
        assert (
            added(c.post("/v1/memories", json={**twice, "messages": "twice"}))[0]["metadata"][
                UTC_OFFSET
            ]
            == -420
        )


def test_http_reads_of_times_compare_instants_in_any_zone(tmp_path: Path) -> None:
    """Times stay zoned past the schema: every other verb reads the instant."""
    with served(tmp_path / "m.db") as (c, _key):
        body = {"messages": "the lighthouse keeper waved", "user_id": "ana"}
        [turn] = added(c.post("/v1/memories", json={**body, "event_time": LA_EVENING}))
        local_day = {
            "event_after": "2023-05-08T00:00:00-07:00",
            "event_before": "2023-05-09T00:00:00-07:00",
        }
        hits = c.post(
            "/v1/memories/search", json={"query": "lighthouse", "user_id": "ana", **local_day}
        )
        assert [h["memory"]["id"] for h in hits.json()["results"]] == [turn["id"]]
        utc_day = {"event_after": "2023-05-08T00:00:00Z", "event_before": "2023-05-09T00:00:00Z"}
        hits = c.post(
            "/v1/memories/search", json={"query": "lighthouse", "user_id": "ana", **utc_day}
        )
        assert hits.json()["results"] == []
        # updated_at as read, written in another zone: the same instant, so no conflict.
        read = datetime.fromisoformat(turn["updated_at"]).astimezone(ZoneInfo("Asia/Tokyo"))
        patched = c.patch(
            f"/v1/memories/{turn['id']}",
            json={"text": "the keeper waved", "expected_updated_at": read.isoformat()},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["metadata"][UTC_OFFSET] == -420


def test_mcp_add_memory_keeps_the_zone_of_event_time(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with KeyStore(str(db)) as keys:
        key = keys.create("acme").secret

    async def scenario(s: ClientSession) -> tuple[Any, Any]:
        turn = results(
            await s.call_tool(
                "add_memory", {"messages": "mcp LA", "user_id": "ana", "event_time": LA_EVENING}
            )
        )
        facts = results(
            await s.call_tool(
                "add_memory",
                {"messages": [PUPPY], "user_id": "ann", "event_time": LA_EVENING, "infer": True},
            )
        )
        return turn, facts

    import anyio

    [turn], [fact] = anyio.run(stdio_call, db, key, scenario)
    assert turn["metadata"] == {"role": "user", UTC_OFFSET: -420}
    assert fact["text"] == "Ann adopted a puppy named Rex on 7 May 2023."
    assert fact["metadata"][UTC_OFFSET] == -420


# -- Finding 2: a DST-aware zone is read in the offset it had when said --------------------


def test_a_winter_turn_about_summer_renders_the_date_its_facts_say(tmp_path: Path) -> None:
    said = datetime(2023, 12, 10, 12, 0, tzinfo=LA)  # PST, -08:00
    turn = {"role": "user", "name": "Ann", "content": "I adopted a puppy named Rex on 4 July."}
    with memory(tmp_path / "m.db") as m:
        [fact] = m.add(turn, user_id="ann", event_time=said, infer=True)
        assert render(fact) == "[2023-07-04] Ann adopted a puppy named Rex on 4 July 2023."
        assert fact.metadata[UTC_OFFSET] == -480
        [july] = m.add(
            {**turn, "content": "I ran a marathon last July."},
            user_id="bo",
            event_time=said,
            infer=True,
        )
        assert render(july) == "[2023-07-01] Ann ran a marathon in July 2023."
        # The facts stored beside a turn agree, as does the ISO text of the same time.
        m.add(turn, user_id="ann", session_id="s1", event_time=said, facts=True)
        beside = [r for r in m.get_all(session_id="s1") if FACT_OF in r.metadata]
        assert [render(r) for r in beside] == [render(fact)]
        [iso] = m.add(turn, user_id="cy", event_time=said.isoformat(), infer=True)
        assert render(iso) == render(fact)
        # The night the clocks go back: 01:30 the second time (PST), "yesterday" is 4 Nov.
        fall_back = datetime(2023, 11, 5, 1, 30, fold=1, tzinfo=LA)
        walk = {"role": "user", "name": "Ann", "content": "I walked the dog yesterday."}
        [walked] = m.add(walk, user_id="di", event_time=fall_back, infer=True)
        assert render(walked) == "[2023-11-04] Ann walked the dog on 4 November 2023."


# -- Finding 3: a memory read back is added again as read ----------------------------------


def test_a_zoned_memory_read_back_adds_again_as_read(tmp_path: Path) -> None:
    with memory(tmp_path / "a.db") as a, memory(tmp_path / "b.db") as b:
        [turn] = a.add("Lunch with Bea at the harbour", user_id="ana", event_time=LA_EVENING)
        [read] = a.get_all(user_id="ana")
        assert read.event_time == datetime(2023, 5, 9, 3, tzinfo=UTC)
        [copy] = b.add(read.text, user_id="ana", metadata=read.metadata, event_time=read.event_time)
        assert (copy.metadata, copy.event_time, copy.context) == (
            turn.metadata,
            turn.event_time,
            turn.context,
        )
        assert render(copy) == "[2023-05-08] Lunch with Bea at the harbour"
        # Naive, as a UTC text, as a record's to_dict() holds it: the same.
        for when in ("2023-05-09T03:00:00", "2023-05-09T03:00:00Z"):
            [again] = b.add("again", user_id="bo", metadata=read.metadata, event_time=when)
            assert render(again) == "[2023-05-08] again" and again.context == turn.context
        # Inferring: "yesterday" is read on the kept zone's calendar.
        [fact] = b.add(
            PUPPY,
            user_id="ann",
            metadata={UTC_OFFSET: -420},
            event_time=read.event_time,
            infer=True,
        )
        assert render(fact) == "[2023-05-07] Ann adopted a puppy named Rex on 7 May 2023."
        # A zoned time that says another zone is still refused, verbatim and inferring.
        other = {"metadata": {UTC_OFFSET: -420}, "event_time": "2023-05-09T05:00:00+02:00"}
        with pytest.raises(ValueError, match=r"'utc_offset' is reserved.*\(120\)"):
            b.add("x", user_id="ana", **other)
        with pytest.raises(ValueError, match=r"'utc_offset' is reserved.*\(120\)"):
            b.add(PUPPY, user_id="ann", infer=True, **other)
        with pytest.raises(ValueError, match="'utc_offset' is reserved"):
            b.add("x", user_id="ana", metadata={UTC_OFFSET: "x"}, event_time=read.event_time)


def test_http_get_then_post_adds_a_zoned_memory_again(tmp_path: Path) -> None:
    with served(tmp_path / "m.db") as (c, _key):
        body = {"messages": "Lunch with Bea", "user_id": "ana", "event_time": LA_EVENING}
        [turn] = added(c.post("/v1/memories", json=body))
        read = c.get(f"/v1/memories/{turn['id']}").json()
        again = {k: read[k] for k in ("metadata", "event_time", "user_id")}
        [copy] = added(c.post("/v1/memories", json={"messages": "Lunch with Bea again", **again}))
        assert copy["metadata"] == turn["metadata"] and copy["event_time"] == turn["event_time"]


def test_cli_list_shows_the_local_day_and_its_json_adds_again(tmp_path: Path) -> None:
    db, other = tmp_path / "a.db", tmp_path / "b.db"
    said = run_cli("add", "cli LA lighthouse", "-u", "ana", "--event-time", LA_EVENING, db=db)
    assert said.returncode == 0, said.stderr
    listed = run_cli("list", "-u", "ana", env={"COLUMNS": "200"}, db=db)
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if "lighthouse" in line]
    assert "2023-05-08" in row.replace("[2023-05-08]", "", 1)  # the when column
    assert "2023-05-09" not in row
    exported = run_cli("--json", "list", "-u", "ana", db=db)
    [record] = json.loads(exported.stdout)
    imported = run_cli(
        "add",
        record["text"],
        "-u",
        "ana",
        "--metadata",
        json.dumps(record["metadata"]),
        "--event-time",
        record["event_time"],
        db=other,
    )
    assert imported.returncode == 0, imported.stderr
    with memory(other) as m:
        [copy] = m.get_all(user_id="ana")
        assert render(copy) == "[2023-05-08] cli LA lighthouse"
        assert copy.metadata[UTC_OFFSET] == -420


# -- Finding 5: a zone of seconds is kept as the minute that keeps the date ----------------


def test_a_zone_with_seconds_keeps_its_local_day(tmp_path: Path) -> None:
    edison = datetime(1880, 6, 1, 20, 0, tzinfo=ZoneInfo("America/New_York"))  # -04:56:02
    with memory(tmp_path / "m.db") as m:
        [turn] = m.add("Ann: I met Thomas Edison.", user_id="ann", event_time=edison)
        assert turn.metadata[UTC_OFFSET] == -296
        assert render(turn) == "[1880-06-01] Ann: I met Thomas Edison."
        assert "01 June 1880" in turn.context
        # Seconds before midnight: the minute on the side that keeps the day.
        [late] = m.add("late", user_id="bo", event_time="2023-05-08T23:59:50-07:00:30")
        assert render(late) == "[2023-05-08] late" and "08 May 2023" in late.context
        assert late.metadata[UTC_OFFSET] == -421
    assert offset_minutes(local("2023-05-08T00:00:10+00:00:20")) == 1  # not UTC's 7 May
    assert offset_minutes(local("2023-05-08T12:00:00+00:00:20")) == 0
