"""Compaction decisions: hysteresis, tool pairs, pins, strategies, incremental summaries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextos.engine.compaction import (
    STUB_TOKENS,
    HistoryState,
    Thresholds,
    apply_compaction,
    history_tokens,
    plan_compaction,
    tool_units,
    visible_turns,
)
from contextos.engine.summarize import ExtractiveSummarizer, Summary, SummaryLine
from contextos.llm.tokens import CharEstimateTokenizer
from contextos.types import Message, ToolCall, Turn

AT = datetime(2024, 3, 1, tzinfo=UTC)


def turn(seq: int, role: str = "user", tokens: int = 10, content: str = "", **kw: object) -> Turn:
    return Turn("s", seq, Message(role, content or f"turn {seq}", **kw), tokens, AT)  # type: ignore[arg-type]


def tool_pair(seq: int, result_tokens: int = 200) -> list[Turn]:
    call = ToolCall(f"c{seq}", "search", json.dumps({"q": seq}))
    return [
        turn(seq, "assistant", 10, content="calling", tool_calls=(call,)),
        turn(seq + 1, "tool", result_tokens, content="big result", tool_call_id=f"c{seq}"),
    ]


class CountingSummarizer:
    """A Summarizer double that records which turns it was asked to read."""

    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def summarize(
        self, turns: Sequence[Turn], *, previous: Summary | None, max_tokens: int
    ) -> Summary:
        self.seen.append([t.seq for t in turns])
        lines = (previous.lines if previous else ()) + tuple(
            SummaryLine(f"line {t.seq}", t.seq, f"s#{t.seq}", 1.0, 1) for t in turns
        )
        return Summary(lines[-max_tokens:], lines[0].seq if lines else 0, turns[-1].seq)


def test_hysteresis_trigger_and_target():
    turns = [turn(i) for i in range(10)]  # 100 tokens
    th = Thresholds(trigger=0.8, target=0.5, keep_recent=2)
    assert plan_compaction(turns[:8], HistoryState(), 100, "truncate", th) is None  # 80 = not over
    plan = plan_compaction(turns, HistoryState(), 100, "truncate", th)
    assert plan is not None and plan.rotate == (0, 1, 2, 3, 4)
    assert plan.after_tokens <= 50
    state = apply_compaction(plan, turns, HistoryState(), 100)
    assert state.start_seq == 5 and history_tokens(turns, state) == 50
    # the next compaction waits until the history grows back past the trigger
    more = turns + [turn(i) for i in range(10, 13)]
    assert plan_compaction(more, state, 100, "truncate", th) is None


def test_tool_call_never_separated_from_its_result():
    turns = [turn(0), *tool_pair(1), turn(3), turn(4), turn(5)]
    units = tool_units(turns)
    assert [tuple(t.seq for t in u) for u in units] == [(0,), (1, 2), (3,), (4,), (5,)]
    plan = plan_compaction(
        turns, HistoryState(), 250, "truncate", Thresholds(0.8, 0.5, keep_recent=1)
    )
    assert plan is not None
    assert (1 in plan.rotate) == (2 in plan.rotate)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.sampled_from(["u", "a", "pair"]), min_size=1, max_size=30),
    st.integers(50, 600),
    st.sampled_from(["truncate", "clear_tool_results", "offload"]),
    st.sets(st.integers(0, 60), max_size=5),
)
def test_properties_of_any_plan(kinds, budget, strategy, pins):
    turns: list[Turn] = []
    pairs: list[tuple[int, int]] = []  # (call, result) seqs, known by construction
    for k in kinds:
        if k == "pair":
            pairs.append((len(turns), len(turns) + 1))
            turns += tool_pair(len(turns), 80)
        else:
            turns.append(turn(len(turns), "user" if k == "u" else "assistant", 15))
    state = HistoryState(pinned=tuple(sorted(p for p in pins if p < len(turns))))
    th = Thresholds(keep_recent=2)
    plan = plan_compaction(turns, state, budget, strategy, th, force=True)
    if plan is None:
        return
    rotated = set(plan.rotate)
    assert not rotated & set(state.pinned)  # pinned turns stay
    assert not rotated & {t.seq for t in turns[-2:]}  # the recent turns stay
    for call, result in pairs:  # a tool call and its result move together
        assert (call in rotated) == (result in rotated)
    new = apply_compaction(plan, turns, state, budget, thresholds=th)
    assert set(state.pinned) <= {t.seq for t in visible_turns(turns, new)}
    assert history_tokens(turns, new) <= history_tokens(turns, state)


def test_clear_tool_results_keeps_the_call_and_stubs_the_result():
    turns = [turn(0), *tool_pair(1, 500), turn(3), turn(4)]
    plan = plan_compaction(
        turns, HistoryState(), 600, "clear_tool_results", Thresholds(0.8, 0.5, keep_recent=2)
    )
    assert plan is not None and plan.clear == (2,) and plan.rotate == ()
    state = apply_compaction(plan, turns, HistoryState(), 600)
    assert history_tokens(turns, state) == 10 + 10 + STUB_TOKENS + 10 + 10
    assert [t.seq for t in visible_turns(turns, state)] == [0, 1, 2, 3, 4]


def test_clear_falls_back_to_truncation_without_tool_results():
    turns = [turn(i) for i in range(10)]
    plan = plan_compaction(turns, HistoryState(), 100, "clear_tool_results")
    assert plan is not None and plan.clear == () and plan.rotate


def test_summarize_is_incremental_and_keeps_provenance():
    counting = CountingSummarizer()
    th = Thresholds(0.8, 0.5, keep_recent=2, summary_share=0.2)
    turns = [turn(i) for i in range(10)]
    state = HistoryState()
    plan = plan_compaction(turns, state, 100, "summarize", th)
    state = apply_compaction(plan, turns, state, 100, summarizer=counting, thresholds=th)
    first = counting.seen[-1]
    turns += [turn(i) for i in range(10, 16)]
    plan = plan_compaction(turns, state, 100, "summarize", th)
    assert plan is not None
    state = apply_compaction(plan, turns, state, 100, summarizer=counting, thresholds=th)
    second = counting.seen[-1]
    assert not set(first) & set(second)  # the second call reads only newly rotated turns
    assert min(second) == max(first) + 1
    assert state.summary is not None and state.summary.covers_to == max(second)
    assert set(state.summary.provenance()) <= {f"s#{i}" for i in range(16)}


def test_summarize_with_the_extractive_summarizer_fits_its_share():
    tok = CharEstimateTokenizer()
    turns = [
        turn(i, tokens=30, content=f"On 3 May 2023 Ana bought {i} tickets to Lisbon. Ok.")
        for i in range(20)
    ]
    th = Thresholds(summary_share=0.2)
    plan = plan_compaction(turns, HistoryState(), 400, "summarize", th)
    state = apply_compaction(
        plan, turns, HistoryState(), 400, summarizer=ExtractiveSummarizer(tok), thresholds=th
    )
    assert state.summary is not None
    assert 0 < state.summary.tokens <= 80
    assert history_tokens(turns, state) <= 0.5 * 400
    assert all(line.ref == f"s#{line.seq}" for line in state.summary.lines)


def test_state_round_trips_through_json():
    s = HistoryState(3, Summary((SummaryLine("x", 1, "D1:2", 2.0, 3),), 0, 2), (4,), (1,), 2, 2)
    assert HistoryState.from_json(json.loads(json.dumps(s.to_json()))) == s
    assert HistoryState.from_json({}) == HistoryState()


def test_bad_arguments():
    with pytest.raises(ValueError):
        Thresholds(trigger=0.5, target=0.8)
    with pytest.raises(ValueError):
        plan_compaction([turn(0)], HistoryState(), 10, "shred")  # type: ignore[arg-type]
    plan = plan_compaction([turn(i) for i in range(10)], HistoryState(), 50, "summarize")
    with pytest.raises(ValueError):
        apply_compaction(plan, [turn(i) for i in range(10)], HistoryState(), 50)


def test_pinning_a_tool_call_keeps_its_result_from_being_cleared():
    # A pin keeps its whole tool unit (pinned_seqs); clearing looked at the pinned
    # seqs alone, so pinning the call still stubbed its result.
    turns = [turn(0), *tool_pair(1, result_tokens=400), *[turn(i) for i in range(3, 8)]]
    state = HistoryState(pinned=(1,))
    plan = plan_compaction(
        turns, state, 200, "clear_tool_results", Thresholds(keep_recent=2), force=True
    )
    assert plan is None or 2 not in plan.clear
    unpinned = plan_compaction(
        turns, HistoryState(), 200, "clear_tool_results", Thresholds(keep_recent=2), force=True
    )
    assert unpinned is not None and 2 in unpinned.clear  # what the pin prevents


def test_stubs_of_rotated_turns_are_forgotten():
    # Every clear was kept for the life of the session: the state (read on every
    # window) grew with the whole log, 4,784 of 4,999 entries long rotated out.
    turns = [turn(0), *tool_pair(1), *tool_pair(3), *tool_pair(5), *[turn(i) for i in range(7, 12)]]
    state = HistoryState(cleared=(2, 4, 6), pinned=(5,))  # the unit 5-6 stays visible
    plan = plan_compaction(turns, state, 60, "summarize", Thresholds(keep_recent=2), force=True)
    assert plan is not None and {0, 1, 2, 3, 4} <= set(plan.rotate)
    after = apply_compaction(plan, turns, state, 60, summarizer=CountingSummarizer())
    assert after.cleared == (6,)  # 2 and 4 rotated out; 6 is pinned, still visible


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(["u", "pair"]), min_size=0, max_size=30),
    st.integers(0, 70),
    st.sets(st.integers(0, 70), max_size=5),
    st.sets(st.integers(0, 70), max_size=5),
    st.integers(0, 3),
)
def test_visible_turns_by_bisection_are_the_turns_by_definition(kinds, start, pins, kept, gap):
    # visible_turns steps over the rotated part by bisection (a scan of 40,000 turns was
    # most of a window's cost); it must pick what the definition says, gaps in the
    # numbering (an erasure) included.
    from contextos.engine.compaction import pinned_seqs

    turns: list[Turn] = []
    seq = 0
    for k in kinds:
        made = tool_pair(seq) if k == "pair" else [turn(seq)]
        turns += made
        seq += len(made) + (gap if seq % 7 == 0 else 0)
    state = HistoryState(start_seq=start, pinned=tuple(sorted(pins)), kept=tuple(sorted(kept)))
    stay = pinned_seqs(turns, state) | kept
    expected = [t for t in turns if t.seq >= start or t.seq in stay]
    assert [t.seq for t in visible_turns(turns, state)] == [t.seq for t in expected]
