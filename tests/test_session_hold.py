"""``Session(hold="window")`` builds the windows and compactions a full log does.

It holds whole only the turns from the history's start on (pinned and kept turns
before it with the rest of their tool unit); a pin far back, an unpin, tool units and
an erasure must give the same windows as a Session that holds every turn.
"""

from __future__ import annotations

import pytest

from contextos.engine.session import Session
from contextos.llm.models import get_model
from contextos.memory import Memory
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message, ToolCall

SONNET = get_model("claude-sonnet-4-5")


def _step(session: Session, i: int) -> None:
    """A question, a tool call, its two results (parallel calls), an answer."""
    calls = (ToolCall(f"a{i}", "lookup", f'{{"q": {i}}}'), ToolCall(f"b{i}", "lookup", "{}"))
    session.add(
        Message("user", f"Question {i}: where did Ana fly in May {2000 + i}?"),
        Message("assistant", "", tool_calls=calls),
        Message("tool", f"result {i}a: Lisbon " * 8, tool_call_id=f"a{i}"),
        Message("tool", f"result {i}b: Porto " * 8, tool_call_id=f"b{i}"),
        Message("assistant", f"Answer {i}: she flew to Lisbon."),
    )


def _blocks(session: Session) -> list[tuple[str, str]]:
    return [(b.key, b.text) for b in session.window(SONNET, "and then?", budget=3000).blocks]


@pytest.mark.parametrize("strategy", ["summarize", "clear_tool_results", "truncate"])
def test_a_window_holding_session_builds_what_a_log_holding_one_does(tmp_path, strategy):
    db = tmp_path / "s.db"
    held = Session(SQLiteStore(db), "s", user_id="ana", hold="window")
    full = Session(SQLiteStore(db), "s", user_id="ana", hold="log")
    for i in range(60):
        _step(held, i)
        if i == 3:
            held.pin(8)  # the second result of step 1: its call (seq 6) comes with it
        if i % 6 == 5:
            assert held.compact(600, strategy).plan is not None
        assert _blocks(held) == _blocks(full)
        if i == 40:
            held.pin(8, pinned=False)  # stays (kept) until a compaction rotates it
            assert "turn:6" in dict(_blocks(held)) and _blocks(held) == _blocks(full)
        if i == 45:
            held.pin(2)  # a tool result far before the history's start, pinned late:
            assert "turn:1" in dict(_blocks(held)) and _blocks(held) == _blocks(full)
            assert held.held_turns > 200  # the turns from its call on are read again
        if i == 50:
            held.pin(2, pinned=False)
    assert held.state() == full.state() and held.state().start_seq > 250
    assert held.held_turns < 60 < full.held_turns == 300
    assert [t.seq for t in held.turns()] == list(range(300))  # older ones from the store
    assert held.held_turns < 60
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        m.forget("ana")
    assert held.turns() == [] and held.log_restarts == 1 and _blocks(held) == _blocks(full)
