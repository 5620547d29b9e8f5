"""Compaction measures the history as a window sends it.

A tool result that answers no open call (every result logged over HTTP or by the CLI,
which cannot log the call) is never in a window, and logging it says so. Compaction
still counted it at its full size: a history whose window sent 333 tokens looked
over a 1,500-token budget, and every real turn was folded into a summary (a review).
"""

from __future__ import annotations

from pathlib import Path

from contextos import Memory
from contextos.engine.session import Session
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message


def _session(tmp_path: Path) -> tuple[Memory, Session]:
    memory = Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False)
    session = Session(memory, "chat", user_id="ana")
    for i in range(10):
        session.add(
            Message("user", f"fact {i}: Ana's locker code number {i} is {1000 + i}."),
            Message("assistant", f"Got it, code {i}."),
        )
    return memory, session


def test_a_result_no_window_sends_does_not_make_the_history_compact(tmp_path: Path) -> None:
    memory, session = _session(tmp_path)
    with memory:
        small = session.history_tokens()
        session.add(Message("tool", "row, " * 3000, tool_call_id="call_9"))  # answers no call
        session.add(Message("user", "thanks"), Message("assistant", "welcome"))
        assert session.history_tokens() < small + 100  # the result is not in any window
        done = session.compact(1500, "summarize")
        assert done.plan is None  # under the trigger: nothing to fold
        assert session.state().summary is None


def test_a_result_no_window_sends_goes_with_the_turns_rotated_around_it(tmp_path: Path) -> None:
    memory, session = _session(tmp_path)
    with memory:
        (orphan,) = session.add(Message("tool", "row, " * 3000, tool_call_id="call_9"))
        for i in range(10, 40):
            session.add(
                Message("user", f"fact {i}: Ana's locker code number {i} is {1000 + i}."),
                Message("assistant", f"Got it, code {i}."),
            )
        done = session.compact(300, "summarize")
        assert done.plan is not None and orphan.seq not in done.plan.rotate
        state = session.state()
        assert state.start_seq > orphan.seq and orphan.seq not in state.kept  # gone with them
        assert session.turn(orphan.seq).message.content.startswith("row, ")  # still logged
