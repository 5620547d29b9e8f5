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
