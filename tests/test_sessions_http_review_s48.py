"""The session routes over real HTTP, after a review of them in use (s48).

* ``POST /v1/memories/forget`` answered ``"forgotten": 0`` after erasing a session log
  of 500 turns (no memory): it says how many session logs and turns it erased too
  (``sessions_forgotten``, ``turns_forgotten``, the CLI's ``--json`` names), on the 202
  of an erasure that left old bytes as well.
* A session id holding a newline ("team%0Achat") was written and listed, but every
  ``/v1/sessions/{id}/...`` route was a bare 404: Starlette's ``path`` converter is
  ``.*`` without DOTALL.
* A tool result appended to a log with no assistant turn in the last 256 read and
  decoded the whole log to say it could never be sent (0.4 s at 30,000 turns).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from contextos.engine.compaction import visible_turns
from contextos.engine.session import Session, never_sent, sendable_units
from contextos.store.sqlite import SQLiteStore
from contextos.types import Message, Scope, ToolCall, Turn
from ui_support import (
    LiveServer,
    auth,
    module_server,  # noqa: F401 - the module's fixture, known as `server`
)


@pytest.fixture(scope="module")
def key(server: LiveServer) -> str:
    return server.issue_key("acme")


def notes(n: int, prefix: str = "turn") -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{prefix} {i}"} for i in range(n)]


# -- forget says what it erased ------------------------------------------------------------


def test_forget_counts_the_session_logs_and_turns_it_erased(server: LiveServer, key: str) -> None:
    server.turns(key, "fc-1", notes(500), user_id="zoe")
    forgot = server.call("POST", "/v1/memories/forget", key, {"session_id": "fc-1"})
    assert forgot == {
        "session_id": "fc-1",
        "forgotten": 0,
        "sessions_forgotten": 1,
        "turns_forgotten": 500,
    }
    assert server.call("GET", "/v1/sessions/fc-1/turns", key)["results"] == []

    server.turns(key, "fc-2", notes(300), user_id="zoe")
    server.add(key, user_id="zoe", messages="zoe keeps bees")
    forgot = server.call("POST", "/v1/memories/forget", key, {"user_id": "zoe"})
    assert forgot == {
        "user_id": "zoe",
        "forgotten": 1,
        "sessions_forgotten": 1,
        "turns_forgotten": 300,
    }
    again = server.call("POST", "/v1/memories/forget", key, {"user_id": "zoe"})
    assert again == {
        "user_id": "zoe",
        "forgotten": 0,
        "sessions_forgotten": 0,
        "turns_forgotten": 0,
    }


# -- an id holding a newline reaches its session -------------------------------------------


@pytest.mark.parametrize("sid", ["team\nchat", "\nlead", "trail\n", "a\r\nb", "x\n/turns"])
def test_a_session_id_holding_a_newline_reaches_every_session_route(
    server: LiveServer, key: str, sid: str
) -> None:
    from urllib.parse import quote

    base = f"/v1/sessions/{quote(sid, safe='')}"
    added = server.call(
        "POST",
        base + "/turns",
        key,
        {"messages": [{"content": "hello from line one"}, {"role": "assistant", "content": "hi"}]},
    )
    assert [t["session_id"] for t in added["results"]] == [sid, sid]
    turns = server.call("GET", base + "/turns", key)["results"]
    assert [t["content"] for t in turns] == ["hello from line one", "hi"]
    window = server.call("POST", base + "/window", key, {"question": "who said hello?"})
    assert "hello from line one" in window["text"]
    compacted = server.call(
        "POST", base + "/compact", key, {"budget": 100, "strategy": "truncate", "force": True}
    )
    assert compacted["raced"] is False  # 200, not the 404 of a session without turns
    assert sid in server.call("GET", "/v1/sessions?order=newest", key)["results"]
    # the inspector's session routes too
    shown = server.call("POST", f"/ui/api{base[3:]}/window", key, {"question": "hello?"})
    assert "hello from line one" in shown["text"]
    assert server.call("GET", f"/ui/api{base[3:]}/cache", key) is not None


def test_the_library_and_the_routes_name_one_log(server: LiveServer, key: str) -> None:
    """A log written by ``POST /v1/memories``'s sibling, the library, is read by the route."""
    store = server.app.state.tenants.store
    Session(store, "lib\nlog", tenant="acme").add(Message("user", "logged by the library"))
    turns = server.call("GET", "/v1/sessions/lib%0Alog/turns", key)["results"]
    assert [t["content"] for t in turns] == ["logged by the library"]
    # Other routes are not taken by the wider id: the next segment still picks the route.
    assert server.http.get("/v1/sessions/lib%0Alog/window", headers=auth(key)).status_code == 405


# -- a tool result reads back to the last assistant turn, no further -----------------------


class CountingStore(SQLiteStore):
    """A real SQLite store that counts the whole turns it decodes for a caller."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.turns_read = 0

    def turns(self, scope: Scope, **kwargs: Any) -> list[Turn]:
        found = super().turns(scope, **kwargs)
        self.turns_read += len(found)
        return found


def _sent(session: Session) -> set[int]:
    """The seqs a window of the whole log may send (what ``never_sent`` must agree with)."""
    units = sendable_units(visible_turns(session.turns(), session.state()))
    return {t.seq for unit in units for t in unit}


def test_a_tool_result_in_a_log_of_notes_decodes_only_the_look_back(tmp_path: Path) -> None:
    """No assistant turn: the HTTP API's own logs (it cannot log a call). The result is
    still said never to be sent, having decoded the last 256 turns, not 5,000."""
    store = CountingStore(tmp_path / "n.db")
    try:
        session = Session(store, "notes", tenant="t")
        session.add(*(Message("user", f"note {i} " + "z" * 80) for i in range(5000)))
        [turn] = session.add(Message("tool", "42", tool_call_id="call_1"))
        before = store.turns_read
        [warning] = never_sent(session, [turn])
        assert "call_1" in warning
        assert store.turns_read - before <= 258
    finally:
        store.close()


def test_a_call_far_back_is_found_and_read_from_only(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "f.db")
    try:
        session = Session(store, "far", tenant="t")
        session.add(*(Message("user", f"early {i}") for i in range(3000)))
        call = ToolCall(id="c1", name="f", arguments="{}")
        [asked] = session.add(Message("assistant", "", tool_calls=(call,)))
        session.add(*(Message("user", f"later {i}") for i in range(1500)))
        [answer] = session.add(Message("tool", "sunny", tool_call_id="c1"))
        [stray] = session.add(Message("tool", "cloudy", tool_call_id="c2"))
        before = store.turns_read
        assert never_sent(session, [answer]) == []
        # The look back (256 turns and the two results), then the log from the call on.
        assert store.turns_read - before == 258 + (stray.seq - asked.seq + 1)
        assert len(never_sent(session, [stray])) == 1
    finally:
        store.close()


def test_never_sent_walking_back_agrees_with_the_whole_log(tmp_path: Path) -> None:
    """Assistant turns rare (none in the look back, pages apart, or none at all), calls
    answered or not: what ``never_sent`` says is what the whole log says."""
    store = SQLiteStore(tmp_path / "w.db")
    try:
        for seed in range(10):
            rng = random.Random(seed)
            session = Session(store, f"s{seed}", tenant="t")
            rate = (0.0, 0.0005, 0.002)[seed % 3]
            calls: list[str] = []
            batch: list[Message] = []
            for i in range(rng.choice([300, 1200, 2500])):
                if rng.random() < rate:
                    calls = [f"c{seed}-{i}-{k}" for k in range(rng.randint(1, 3))]
                    made = tuple(ToolCall(id=c, name="f", arguments="{}") for c in calls)
                    batch.append(Message("assistant", "", tool_calls=made))
                elif rng.random() < 0.05:
                    batch.append(Message("tool", "r", tool_call_id=rng.choice([*calls, "x"])))
                else:
                    batch.append(Message("user", "u"))
            session.add(*batch)
            probes = [Message("tool", "last", tool_call_id=c) for c in [*calls, "stray"]]
            logged = session.add(*probes)
            whole = _sent(session)
            for turn in logged:
                assert (never_sent(session, [turn]) == []) == (turn.seq in whole), seed
    finally:
        store.close()
