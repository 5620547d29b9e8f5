"""Compaction decisions: hysteresis, tool pairs, pins, strategies, incremental summaries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextos.engine.compaction import (
    HistoryState,
    Thresholds,
    apply_compaction,
    history_tokens,
    plan_compaction,
    stub_tokens,
    tool_units,
    visible_turns,
)
from contextos.engine.session import Session
from contextos.engine.summarize import ExtractiveSummarizer, Summary, SummaryLine
from contextos.llm.models import get_model
from contextos.llm.tokens import CharEstimateTokenizer, default_tokenizer
from contextos.store.sqlite import SQLiteStore
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
    stub = stub_tokens(turns[2], default_tokenizer())
    assert 0 < stub < 500 and history_tokens(turns, state) == 10 + 10 + stub + 10 + 10
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
    plan = plan_compaction([turn(i) for i in range(20)], HistoryState(), 100, "summarize")
    with pytest.raises(ValueError, match="needs a summarizer"):
        apply_compaction(plan, [turn(i) for i in range(20)], HistoryState(), 100)


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
    assert plan is not None and {1, 2, 3, 4} <= set(plan.rotate)
    assert 0 not in plan.rotate  # it asked for the pinned call: it stays before it
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


# -- in the shape of the bugs a reviewer found: a real Session on a SQLite file ----------

SONNET = get_model("claude-sonnet-4-5")


def _agent(db: Path) -> Session:
    """An agent's session: its task, small steps, then one huge tool result (the newest)."""
    s = Session(SQLiteStore(db), "agent", user_id="ana")
    s.add(Message("user", "Task: audit the repo. Constraints: never touch prod; report in French."))
    for i in range(20):
        s.add(
            Message("assistant", f"Step {i}: checking module {i}."),
            Message("user", f"ok, module {i} is owned by team {i % 3}."),
        )
    call = ToolCall("c1", "read_file", '{"p": "big.log"}')
    s.add(
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "log line 123456 ok\n" * 4000, tool_call_id="c1"),
    )
    return s


@pytest.mark.parametrize("strategy", ["truncate", "clear_tool_results", "summarize"])
def test_a_recent_result_over_the_budget_rotates_nothing_out(tmp_path: Path, strategy: str):
    # The newest tool result (~28,000 tokens, recent so protected) was over the
    # compaction target, so every other turn was rotated out -- the task and its
    # constraints left every later window for good -- though the history stayed over
    # its budget and a 30,000-token window held all of it.
    s = _agent(tmp_path / "m.db")
    turns = s.turns()
    big, rest = turns[-1].tokens, sum(t.tokens for t in turns[:-1])
    history_budget = int(big * 0.7)  # the recent result alone is over it
    done = s.compact(history_budget, strategy)  # type: ignore[arg-type]
    assert done.plan is None and s.state().start_seq == 0
    window = s.window(SONNET, None, budget=big + rest + 1_000)
    assert "turn:0" in [b.key for b in window.blocks if b.segment == "turns"]
    if strategy != "clear_tool_results":
        return
    # Once the agent moves on, the big result is stale: it is stubbed, the task stays.
    s.add(Message("assistant", "Rapport: tout va bien."), Message("user", "my constraints?"))
    done = s.compact(history_budget, strategy)
    assert done.plan is not None and turns[-1].seq in done.plan.clear
    assert done.plan.rotate == () and s.state().start_seq == 0


def test_an_agent_reading_big_files_every_step_still_compacts(tmp_path: Path):
    # Setting the recent turns aside must not stop compaction for good: each step's big
    # result, once no longer recent, is rotated out, so the history stays bounded.
    s = _agent(tmp_path / "m.db")
    big = s.turns()[-1].tokens
    history_budget = int(big * 0.7)
    for step in range(2, 4):
        call = ToolCall(f"c{step}", "read_file", '{"p": "big.log"}')
        s.add(
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", "log line 123456 ok\n" * 4000, tool_call_id=f"c{step}"),
        )
        done = s.compact(history_budget, "truncate")
        assert done.plan is not None
        # The recent call and its result, after the user turn they answer (kept: a
        # history opens on a user turn, never on a tool call).
        turns = s.turns()
        asked = next(t for t in reversed(turns) if t.message.role == "user")
        assert s.history_tokens() == asked.tokens + turns[-1].tokens + turns[-2].tokens


def test_pins_over_the_budget_do_not_stop_compaction():
    # Pinned turns never age out: pins over the budget must not hold every other turn.
    turns = [*tool_pair(0, 300), *[turn(i) for i in range(2, 40)]]
    state = HistoryState(pinned=(0,))
    plan = plan_compaction(turns, state, 200, "truncate", Thresholds(keep_recent=2))
    assert plan is not None and set(plan.rotate) == set(range(2, 38))


def test_rotation_that_fits_the_budget_still_goes_to_the_target(tmp_path: Path):
    # The guard above is no excuse to stop early: when rotating can fit the budget,
    # compaction still goes down to its target (the hysteresis).
    s = Session(SQLiteStore(tmp_path / "m.db"), "chat")
    s.add(*[Message("user", f"turn {i}: " + "word " * 40) for i in range(20)])
    total = s.history_tokens()
    done = s.compact(int(total / 0.9), "truncate")
    assert done.plan is not None and done.plan.after_tokens <= 0.5 * total / 0.9


def _chat120(db: Path) -> Session:
    s = Session(SQLiteStore(db), "chat", user_id="ana")
    for i in range(120):
        s.add(
            Message("user", f"u{i}: In May 2023 I moved to Lisbon with my dog Rex number {i}."),
            Message("assistant", f"a{i}: Noted, Lisbon and Rex {i}."),
        )
    return s


class ScriptedSummarizer:
    """A summarizer that breaks its contract the way an LLM one can: one line per rotated
    turn whatever the ceiling, its text ``text``, each claiming ``claimed`` tokens (None:
    the true count); or ``result``, returned as it is."""

    def __init__(
        self,
        text: str = "{seq}: Ana moved to Lisbon in May 2023.",
        *,
        claimed: int | None = None,
        result: object = None,
    ) -> None:
        self.text, self.claimed, self.result = text, claimed, result
        self.ceilings: list[int] = []

    def summarize(
        self, turns: Sequence[Turn], *, previous: Summary | None, max_tokens: int
    ) -> Summary:
        self.ceilings.append(max_tokens)
        if self.result is not None:
            return self.result  # type: ignore[return-value]
        tok = default_tokenizer()
        lines = []
        for t in turns:
            text = self.text.format(seq=t.seq)
            count = tok.count(text) + 1 if self.claimed is None else self.claimed
            lines.append(SummaryLine(text, t.seq, f"s#{t.seq}", float(t.seq % 7), count))
        return Summary(tuple(lines), turns[0].seq, turns[-1].seq)


@pytest.mark.parametrize("claimed", [None, 1])
def test_a_summary_over_its_ceiling_is_cut_to_it_not_saved_whole(tmp_path: Path, claimed):
    # Saved as returned, a summary over max_tokens (an LLM ignoring the limit) was left
    # out of every window whole ("over the ceiling of segment 'summary'"), so every
    # rotated turn vanished; one under-reporting its tokens made compaction think it fit.
    s = _chat120(tmp_path / "m.db")
    summarizer = ScriptedSummarizer(claimed=claimed)
    done = s.compact(2_000, "summarize", summarizer=summarizer)
    assert done.plan is not None
    summary = Session(SQLiteStore(tmp_path / "m.db"), "chat", user_id="ana").state().summary
    assert summary is not None and summary.lines
    tok = default_tokenizer()
    assert all(line.tokens == tok.count(line.text) + 1 for line in summary.lines)
    assert summary.tokens <= summarizer.ceilings[-1]
    # the lines kept are the most salient ones (score 6 of 0..6), in turn order
    assert {line.score for line in summary.lines} == {6.0}
    assert [line.seq for line in summary.lines] == sorted(line.seq for line in summary.lines)
    window = s.window(SONNET, "Where do I live?", budget=int(2_000 / 0.6))
    assert any(b.segment == "summary" for b in window.blocks)
    assert not [o for o in window.overflow if "summary" in o.reason]


def test_summary_text_a_store_cannot_hold_is_mended(tmp_path: Path):
    # NUL text made compact raise ValueError from the store.
    s = _chat120(tmp_path / "m.db")
    summarizer = ScriptedSummarizer(text="{seq}: the user\x00 moved \ud800 to Lisbon")
    assert s.compact(2_000, "summarize", summarizer=summarizer).plan is not None
    summary = Session(SQLiteStore(tmp_path / "m.db"), "chat", user_id="ana").state().summary
    assert summary is not None and summary.lines
    assert all("\x00" not in ln.text and "\ufffd moved \ufffd" in ln.text for ln in summary.lines)


@pytest.mark.parametrize(
    ("result", "error"),
    [
        ("I could not summarize that.", TypeError),
        (Summary((SummaryLine("garbage " * 5000, 0, "s#0", 1.0, 5),), 0, 9), ValueError),
        (Summary(("a bare string",), 0, 9), TypeError),  # type: ignore[arg-type]
        (Summary((SummaryLine("x", 0, "s#0", float("nan"), 2),), 0, 9), TypeError),
    ],
)
def test_a_summary_that_cannot_be_kept_leaves_the_state_unchanged(
    tmp_path: Path, result: object, error: type[Exception]
):
    # A non-Summary return raised AttributeError from deep in the save; a summary none
    # of whose lines fits would leave the rotated turns in no summary at all.
    s = _chat120(tmp_path / "m.db")
    before = s.state()
    with pytest.raises(error, match="summar"):
        s.compact(2_000, "summarize", summarizer=ScriptedSummarizer(result=result))
    assert s.state() == before
    assert s.compact(2_000, "summarize").plan is not None  # a good summarizer goes on


def _parallel_results(s: Session, calls: int) -> None:
    """A user question, an assistant turn of ``calls`` parallel calls, and the one turn
    answering all of them as the Anthropic wrapper logs it (its blocks kept)."""
    from contextos.cache.render import tool_results_meta

    s.add(Message("user", "check all the servers"))
    made = tuple(ToolCall(f"toolu_{i:02d}", "ping", json.dumps({"host": i})) for i in range(calls))
    s.add(Message("assistant", "", tool_calls=made))
    blocks = [
        {"type": "tool_result", "tool_use_id": c.id, "content": f"host {i} ok " + "lat " * 100}
        for i, c in enumerate(made)
    ]
    text = "\n".join(b["content"] for b in blocks)
    meta = {"anthropic_tool_results": tool_results_meta(blocks, text)}
    s.add(Message("tool", text, tool_call_id=made[0].id, metadata=meta))
    s.add(Message("assistant", "All hosts are up."))


def test_a_cleared_result_of_parallel_calls_costs_its_stub_in_every_block(tmp_path: Path):
    """Cleared, a turn answering 20 parallel calls is sent as 20 ``tool_result`` blocks,
    each with the stub; the window counted the stub once (627 tokens it did not count,
    over its budget) and compaction priced it as one stub."""
    from contextos.cache.render import render_anthropic

    tokenizer = default_tokenizer()
    s = Session(SQLiteStore(tmp_path / "m.db"), "par", tokenizer=tokenizer)
    _parallel_results(s, 20)
    s.add(Message("user", "follow-up " + "x " * 300), Message("assistant", "answer " + "y " * 300))
    done = s.compact(3500, "clear_tool_results")
    assert done.plan is not None and done.plan.clear == (2,) and done.plan.rotate == ()
    window = s.window(SONNET, "anything else?", budget=8000)
    (item,) = [b for b in window.blocks if b.message is not None and b.message.role == "tool"]
    body = render_anthropic(window, SONNET)
    sent = [
        tokenizer.count(b["content"])
        for m in body["messages"]
        for b in m["content"]
        if b.get("type") == "tool_result"
    ]
    assert len(sent) == 20
    assert item.tokens >= sum(sent)  # every stub sent is counted
    others = sum(t.tokens for t in s.turns() if t.seq != 2)
    assert done.plan.after_tokens >= others + sum(sent)  # and priced so by compaction


@pytest.mark.parametrize(
    "session_id",
    [
        "chat-1",
        "tenant-user-3f9c1a7e-22b4-4a51-9d0e-8c1f0b2a6d33:conversation-2026-12-04-0001",
        "会話-ユーザー-二〇二六年十二月四日-第一",
    ],
)
def test_clearing_prices_each_stub_as_the_window_sends_it(tmp_path: Path, session_id: str):
    """The stub names its session, so its size is the id's. Priced at a fixed 40 tokens,
    an agent's 120 results of ~60 tokens were "cleared" into larger stubs under a
    uuid-style id: compaction reported 3,989 tokens, the window then sent 7,615, more than
    before, and compaction believed nothing was left to do (a review). What compaction
    reports is what the window sends, and no result is cleared into a larger stub."""
    s = Session(SQLiteStore(tmp_path / "m.db"), session_id, user_id="ana")
    s.add(Message("user", "Audit the repo: read every config file."))
    for i in range(120):
        cid = f"toolu_{i:04d}"
        call = ToolCall(cid, "read", json.dumps({"path": f"/etc/c{i}"}))
        s.add(Message("assistant", "", tool_calls=(call,)))
        s.add(Message("tool", "key=value " * 15, tool_call_id=cid, name="read"))

    def sent() -> int:
        window = s.window(SONNET, "next?", budget=100_000)
        return sum(b.tokens for b in window.blocks if b.segment in ("turns", "summary"))

    before = sent()
    done = s.compact(8000, "clear_tool_results")
    assert done.plan is not None
    after = sent()
    assert after == s.history_tokens() == done.plan.after_tokens
    assert after <= 0.5 * 8000 < before
    by_seq = {t.seq: t for t in s.turns()}
    for seq in done.plan.clear:
        assert stub_tokens(by_seq[seq], s.tokenizer) < by_seq[seq].tokens
    assert s.compact(8000, "clear_tool_results").plan is None
