"""``Session(hold="window")`` builds the windows and compactions a full log does.

It holds whole only the turns from the history's start on, and the pinned and kept
turns before it with the rest of their tool units (not the turns between); a pin far
back, an unpin, tool units and an erasure must give the same windows as a Session that
holds every turn.
"""

from __future__ import annotations

import random
import time

import pytest

from contextos.engine.compaction import HistoryState, visible_turns
from contextos.engine.conversation import COMPLETE_KEY, REDO_KEY, conversation
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
            assert held.held_turns < 60  # its unit (read from the store), not all after it
        if i == 50:
            held.pin(2, pinned=False)
    assert held.state() == full.state() and held.state().start_seq > 250
    assert held.held_turns < 60 < full.held_turns == 300
    assert [t.seq for t in held.turns()] == list(range(300))  # older ones from the store
    assert held.held_turns < 60
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        m.forget("ana")
    assert held.turns() == [] and held.log_restarts == 1 and _blocks(held) == _blocks(full)


def _loop_steps(session: Session, first: int, n: int) -> None:
    """``n`` steps of an agent's tool loop: a call and its result each."""
    for i in range(first, first + n):
        session.add(
            Message("assistant", "", tool_calls=(ToolCall(f"c{i}", "look", "{}"),)),
            Message("tool", f"page {i}: flights to Lisbon " * 6, tool_call_id=f"c{i}"),
        )


@pytest.mark.parametrize("redo_of", [None, 0, 3, 4])
def test_a_turn_between_a_kept_turn_and_the_history_that_replaces_it_still_cuts_it(
    tmp_path, redo_of
):
    """The task's user turn is kept while the loop's steps rotate out, and the steps
    between it and the history's start are left out of what a window reads: one of
    them that takes the place of a kept turn (an edited task) cuts it, as in the log."""
    db = tmp_path / "s.db"
    held = Session(SQLiteStore(db), "s", user_id="ana", hold="window")
    full = Session(SQLiteStore(db), "s", user_id="ana", hold="log")
    held.add(Message("user", "Task: book me a flight to Lisbon."))  # seq 0
    _loop_steps(held, 0, 5)  # seqs 1-10: calls at odd seqs, results at even ones
    edit = {REDO_KEY: redo_of} if redo_of is not None else {}
    held.add(Message("user", "Task: a train instead.", metadata=edit))  # seq 11
    _loop_steps(held, 5, 40)  # seqs 12-91: calls at even seqs, results at odd ones
    state = HistoryState(start_seq=61, kept=(0, 4, 13))  # 4 and 13: results
    whole = visible_turns(conversation(full.turns()), state)  # of every turn of the log
    assert visible_turns(held.conversation(state), state) == whole
    assert held.conversation(state) == full.conversation(state)
    seqs = {t.seq for t in visible_turns(held.conversation(state), state)}
    assert (0 in seqs) is (redo_of != 0) and (4 in seqs) is (redo_of is None)
    assert 13 in seqs and 11 not in seqs


def _messy_log(rng: random.Random, n: int, first: int) -> list[Message]:
    """``n`` random turns from seq ``first`` on: questions, answers (some cut off),
    tool calls (parallel, some reusing an id), their results (some answering nothing),
    and turns that take the place of an earlier one (an edit, a regenerate)."""
    out: list[Message] = []
    owed: list[str] = []
    for seq in range(first, first + n):
        r = rng.random()
        meta: dict[str, object] = {}
        if seq and rng.random() < 0.08:
            meta[REDO_KEY] = rng.randrange(0, seq)
        if owed and r < 0.5:
            call = owed.pop(0) if rng.random() > 0.1 else "orphan"
            out.append(Message("tool", f"result {seq}", tool_call_id=call, metadata=meta))
        elif r < 0.7:
            ids = [
                "c0" if rng.random() < 0.15 else f"c{seq}_{j}"
                for j in range(rng.choice([1, 1, 2, 3]))
            ]
            if rng.random() < 0.06:
                meta[COMPLETE_KEY] = False
            calls = tuple(ToolCall(i, "look", "{}") for i in ids)
            out.append(Message("assistant", "", tool_calls=calls, metadata=meta))
            owed = list(ids)
        elif r < 0.85:
            out.append(Message("user", f"question {seq}", metadata=meta))
            owed = []
        else:
            if rng.random() < 0.15:
                meta[COMPLETE_KEY] = False
            out.append(Message("assistant", f"answer {seq}", metadata=meta))
            owed = []
    return out


@pytest.mark.parametrize("seed", range(30))
def test_a_window_holding_session_reads_what_the_whole_log_shows_on_any_log(tmp_path, seed):
    """Whatever the log holds, the turns a window reads give the visible turns of the
    whole log's conversation, for the stored state (after pins, unpins and compactions
    that let turns go) and for any other state. (A pinned call whose result was sent
    again edited lost both from the window: the unit was looked for in the log, where
    the edit is not next to the call, not in the conversation.)"""
    rng = random.Random(seed)
    db = tmp_path / "s.db"
    held = Session(SQLiteStore(db), "s", user_id="ana", hold="window")
    full = Session(SQLiteStore(db), "s", user_id="ana", hold="log")
    n = 0
    for _ in range(rng.randrange(2, 7)):
        k = rng.randrange(3, 25)
        held.add(*_messy_log(rng, k, n))
        n += k
        for seq in rng.sample(range(n), k=rng.choice([0, 0, 1, 2])):
            held.pin(seq, pinned=rng.random() < 0.7)
        strategy = rng.choice(["summarize", "clear_tool_results", "truncate"])
        held.compact(rng.choice([100, 200, 400]), strategy, force=rng.random() < 0.5)
        whole = full.turns()
        other = HistoryState(
            start_seq=rng.randrange(0, n + 1),
            pinned=tuple(sorted(rng.sample(range(n), k=rng.choice([0, 1, 2, 3])))),
            kept=tuple(sorted(rng.sample(range(n), k=rng.choice([0, 1, 2])))),
        )
        for state in (held.state(), other):
            want = visible_turns(conversation(whole), state)
            assert visible_turns(conversation(held.window_turns(state)), state) == want
            assert visible_turns(conversation(full.window_turns(state)), state) == want
        assert [t.seq for t in held.turns()] == list(range(n))


def test_a_long_lived_session_that_only_reads_pays_for_new_turns_not_the_log(tmp_path):
    """A Session kept open that reads windows of a log another handle writes (``hold="log"``,
    the default) made the whole log's conversation on every call: 13.5 ms a call at
    40,000 turns, where a bisection had cost 0.06 ms. It now makes it once, then carries
    its prints on as the log grows."""
    db = tmp_path / "s.db"
    writer = Session(SQLiteStore(db), "s", user_id="ana")
    n = 20_000
    for first in range(0, n, 1000):
        writer.add(
            *(Message(("user", "assistant")[i % 2], f"turn {first + i}") for i in range(1000))
        )
    reader = Session(SQLiteStore(db), "s", user_id="ana")
    state = HistoryState(start_seq=n - 20)
    for _ in range(3):  # the first reads: the log whole, its conversation, its prints
        assert len(reader.window_turns(state)) == 20
    started = time.perf_counter()
    for i in range(100):
        writer.add(Message("user", f"later {i}"))
        assert len(reader.window_turns(state)) == 21 + i
    per_call = (time.perf_counter() - started) / 100
    print(f"window_turns with a new turn each time, at {n} turns: {per_call * 1000:.2f} ms")
    assert per_call < 0.003
