"""A tool result logged over HTTP that no window can hold is said so in the answer.

``POST /v1/sessions/{id}/turns`` cannot log an assistant's tool call, so a tool result
logged through it alone answered 201 and was left out of every window without a word
(a review); the CLI warned for the same turn. A real server on loopback, a real SQLite
file; the call logged by the library in the same file, as a wrapped client would.
"""

from __future__ import annotations

from pathlib import Path

from contextos.engine.session import Session
from contextos.store import open_store
from contextos.types import Message, ToolCall
from ui_support import live_server


def test_a_result_without_its_call_is_kept_with_a_warning(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with live_server(db) as server:
        key = server.issue_key("acme")
        asked = server.turns(key, "s1", [{"role": "user", "content": "weather in Lisbon?"}])
        assert asked["warnings"] == []
        orphan = server.turns(
            key, "s1", [{"role": "tool", "content": "sunny, 24C", "tool_call_id": "t9"}]
        )
        assert [t["seq"] for t in orphan["results"]] == [1]  # kept: the log keeps it
        assert orphan["warnings"] == [
            "turn #1 will never be in a window: no assistant tool call with id 't9' is open "
            "in session 's1' (the call must be logged first, by Session.add or a wrapped SDK "
            "call)"
        ]
        store = open_store(db)
        try:
            call = ToolCall(id="t10", name="weather", arguments='{"city": "Lisbon"}')
            Session(store, "s1", tenant="acme").add(Message("assistant", "", tool_calls=(call,)))
        finally:
            store.close()
        answered = server.turns(
            key, "s1", [{"role": "tool", "content": "sunny", "tool_call_id": "t10"}]
        )
        assert answered["warnings"] == []
        window = server.call("POST", "/v1/sessions/s1/window", key, {"question": "and now?"})
        assert "sunny" in window["text"] and "sunny, 24C" not in window["text"]


def test_never_sent_reading_back_to_the_call_agrees_with_the_whole_log(tmp_path: Path) -> None:
    """``never_sent`` reads the log back to the last assistant turn (a tool result
    appended over HTTP read and walked the whole log: 1.3 s at 40,000 turns); what it
    says must be what the whole log says, calls far back and plain turns between
    included."""
    import random

    from contextos.engine.compaction import visible_turns
    from contextos.engine.session import never_sent, sendable_units

    store = open_store(tmp_path / "n.db")
    try:
        for seed in range(12):
            rng = random.Random(seed)
            session = Session(store, f"s{seed}", tenant="t")
            calls: list[str] = []
            for i in range(rng.choice([50, 300, 600])):
                kind = rng.random()
                if kind < 0.2:
                    calls = [f"c{seed}-{i}-{k}" for k in range(rng.randint(1, 3))]
                    made = tuple(ToolCall(id=c, name="f", arguments="{}") for c in calls)
                    session.add(Message("assistant", "", tool_calls=made))
                elif kind < 0.5 and calls:
                    session.add(Message("tool", "r", tool_call_id=rng.choice([*calls, "stray"])))
                elif kind < 0.6:
                    session.add(Message("assistant", "plain"))
                else:
                    session.add(Message("user", "u"))
            probe = rng.choice([*calls, "stray"])
            [turn] = session.add(Message("tool", "last", tool_call_id=probe))
            whole = {
                t.seq
                for unit in sendable_units(visible_turns(session.turns(), session.state()))
                for t in unit
            }
            assert (never_sent(session, [turn]) == []) == (turn.seq in whole), seed
    finally:
        store.close()
