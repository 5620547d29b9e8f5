"""Compaction never leaves a window that opens mid-exchange, whatever the budget.

A wrapped client whose system prompt takes about two thirds of the budget: at a
9,000-token budget the summarize compaction rotated a question out and kept its reply,
so every request until the next compaction opened on the assistant's reply (a reply to
no question; the Messages API expects a user turn first). It stopped at the first tool
unit that reached its target, and a chat turn is a unit of its own, so the token
arithmetic alone decided whether the cut fell between a question and its reply (at
8,936 it did not). Real SDK clients against the local fakes (which do prompt-cache
accounting), a real Memory on SQLite, a sweep of budgets around the one that failed;
plus the rule on the pure planner, on any history, and the window's own cut.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextos.engine.compaction import (
    HistoryState,
    Thresholds,
    apply_compaction,
    history_tokens,
    plan_compaction,
    visible_turns,
)
from contextos.engine.summarize import ExtractiveSummarizer
from contextos.engine.window import Item, Segment, assemble
from contextos.llm.tokens import TOKENS_PER_REPLY
from contextos.memory import Memory
from contextos.providers import wrap
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import FakeAnthropic, _blocks
from contextos.types import Message, ToolCall, Turn

#: Around the 9,000 that failed, in steps the token arithmetic moves the cut by.
BUDGETS = range(8600, 9401, 100)
#: About 6,000 tokens: two thirds of the budget.
SYSTEM = "You are a helpful assistant for Dana. " * 760
CALLS = 40


def _question(i: int) -> str:
    return f"Question {i} about the garden: what about thing {i % 4}? " + "detail " * 20


def _reply(body: dict[str, Any]) -> str:
    n = len(body["messages"])
    return f"Reply number {n}: " + " ".join(f"word{(n * 7 + k) % 97}" for k in range(40))


def _opening_problem(messages: list[dict[str, Any]]) -> str | None:
    """What is wrong with how an Anthropic request's messages open, or None: the first
    must be the user's, and no tool result may go without its call right before it."""
    if not messages:
        return None
    if messages[0]["role"] != "user":
        return f"opens on {messages[0]['role']}: {str(messages[0]['content'])[:60]}"
    for i, message in enumerate(messages):
        content = message["content"] if isinstance(message["content"], list) else []
        answers = {b["tool_use_id"] for b in content if b.get("type") == "tool_result"}
        if not answers:
            continue
        before = messages[i - 1]["content"] if i else []
        calls = {b["id"] for b in before if isinstance(b, dict) and b.get("type") == "tool_use"}
        if i == 0 or not answers <= calls:
            return f"message {i}: tool results {sorted(answers)} without their calls"
    return None


def count_slides(bodies: list[dict[str, Any]]) -> int:
    """Requests whose history shares nothing with the previous one after the system
    prompt: their history starts elsewhere (tests/test_wrap_history_room.py too)."""
    slides = 0
    previous: list[Any] | None = None
    for body in bodies:
        blocks = _blocks(body)
        if previous is not None:
            same = 0
            while same < min(len(previous), len(blocks)) and previous[same][0] == blocks[same][0]:
                same += 1
            slides += same <= len(body.get("system", []))
        previous = blocks
    return slides


def _chat(
    tmp_path: Path, budget: int, calls: int, reply: Any = _reply
) -> tuple[list[dict[str, Any]], HistoryState]:
    """``calls`` questions through a wrapped Anthropic client at ``budget``: the
    requests the fake received and the session's compaction state."""
    anthropic = pytest.importorskip("anthropic")
    with (
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        FakeAnthropic(min_cache_tokens=512, reply=reply) as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory, session="s1", user_id="dana", budget=budget)
        for i in range(calls):
            wrapped.messages.create(
                model="claude-opus-5",
                max_tokens=64,
                system=SYSTEM,
                messages=[{"role": "user", "content": _question(i)}],
            )
        wrapped.flush()
        state = wrapped.context.session.state()
        bodies = [r.json() for r in fake.messages_requests()]
    assert len(bodies) == calls
    return bodies, state


@pytest.mark.parametrize("budget", BUDGETS)
def test_a_chat_window_opens_on_a_question_at_every_budget(tmp_path: Path, budget: int) -> None:
    bodies, state = _chat(tmp_path, budget, CALLS)
    assert state.compactions >= 2  # the sweep is about compaction's cut
    problems = [(n, p) for n, b in enumerate(bodies) if (p := _opening_problem(b["messages"]))]
    assert problems == []
    assert all(
        b["messages"][0]["content"][0]["text"].startswith("Question") for b in bodies
    )  # never a reply with no question
    assert count_slides(bodies) <= CALLS // 6  # compaction still goes in chunks


def _long_reply(body: dict[str, Any]) -> str:
    """A long reply: 1,260 to 1,380 words, longer or shorter by the request."""
    n = len(body["messages"])
    words = 1260 + (n * 37) % 121
    return f"Reply number {n}: " + " ".join(f"word{(n * 7 + k) % 97}" for k in range(words))


def test_a_long_reply_never_goes_without_its_question(tmp_path: Path) -> None:
    """When the newest question and its reply together were larger than the room for
    the turns but the reply alone fitted, the window's cut (newest first, by tokens
    alone) kept the reply and dropped the question (at 9,000 with replies of
    1,260-1,380 words). A reply now goes in only with the user turn that opened its
    exchange; the current question is always sent."""
    bodies, _ = _chat(tmp_path, 9000, 12, _long_reply)
    for n, body in enumerate(bodies):
        messages = body["messages"]
        assert messages[0]["role"] == "user", (n, str(messages[0]["content"])[:60])
        assert messages[0]["content"][0]["text"].startswith("Question"), n
        assert messages[-1]["content"][-1]["text"] == _question(n)  # the current question
        roles = [m["role"] for m in messages]
        assert all(a != b for a, b in zip(roles, roles[1:], strict=False)), (n, roles)
    # some request had room for a reply alone, not with its question (what failed)
    assert any(len(b["messages"]) == 1 for b in bodies[1:])


def _window_turn(key: str, role: Any, tokens: int, **kw: Any) -> Item:
    return Item(key, key, tokens, role=role, **kw)


def _kept(items: list[Item], room: int) -> list[str]:
    seg = Segment("turns", "messages", tuple(items), keep="newest")
    return [b.key for b in assemble([seg], room + TOKENS_PER_REPLY).blocks]


def test_the_window_keeps_a_reply_only_with_its_question() -> None:
    t = _window_turn
    chat = [t("q0", "user", 10), t("a0", "assistant", 10)]
    chat += [t("q1", "user", 30), t("a1", "assistant", 50)]
    assert _kept(chat, 100) == ["q0", "a0", "q1", "a1"]
    assert _kept(chat, 79) == []  # a1 fits alone, not with q1: neither goes, nor older
    assert _kept(chat, 80) == ["q1", "a1"]
    assert _kept(chat, 99) == ["q1", "a1"]  # a0 without q0 is not sent either
    # A long exchange (a task and its tool steps): the task stays before the newest
    # steps that fit, as compaction leaves it.
    task = [t("task", "user", 10)]
    for k in range(4):
        task += [
            t(f"call{k}", "assistant", 10, group=f"u{k}"),
            t(f"result{k}", "tool", 20, group=f"u{k}"),
        ]
    assert _kept(task, 70) == ["task", "call2", "result2", "call3", "result3"]
    assert _kept(task, 39) == []  # the newest step fits alone, not with its task
    # A pinned reply brings its question along.
    pinned = [t("q0", "user", 10), t("a0", "assistant", 10, pinned=True)]
    pinned += [t("q1", "user", 10), t("a1", "assistant", 60)]
    assert _kept(pinned, 40) == ["q0", "a0"]


def _agent_reply(body: dict[str, Any]) -> Any:
    """The fake's model: a question starts three tool calls, a partial result asks for
    the next one, the final result gets the answer."""
    n = len(body["messages"])
    last = body["messages"][-1]["content"]
    results = [b for b in last if b.get("type") == "tool_result"] if isinstance(last, list) else []
    if results and "final" in json.dumps(results):
        return f"Answer {n}: " + " ".join(f"fact{(n * 5 + k) % 89}" for k in range(30))
    return [
        {"type": "text", "text": f"Looking it up ({n})."},
        {"type": "tool_use", "id": f"toolu_{n}", "name": "lookup", "input": {"n": n}},
    ]


TOOLS = [
    {
        "name": "lookup",
        "description": "Looks something up.",
        "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
    }
]


@pytest.mark.parametrize("budget", BUDGETS)
def test_an_agent_window_opens_on_a_user_turn_at_every_budget(tmp_path: Path, budget: int) -> None:
    # Tool loops: an exchange is a question, its tool calls and results, and the answer.
    # The cut falls between exchanges, or inside one with its question kept before the
    # steps left: never on a tool call, nor on a tool result without its call.
    anthropic = pytest.importorskip("anthropic")
    with (
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        FakeAnthropic(min_cache_tokens=512, reply=_agent_reply) as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory, session="s1", user_id="dana", budget=budget)
        kw: dict[str, Any] = {"model": "claude-opus-5", "max_tokens": 64, "system": SYSTEM}
        for i in range(12):
            content: Any = _question(i)
            for step in range(4 if i % 3 else 9):  # every third one a long tool loop
                reply = wrapped.messages.create(
                    messages=[{"role": "user", "content": content}], tools=TOOLS, **kw
                )
                calls = [b for b in reply.content if b.type == "tool_use"]
                if not calls:
                    break
                done = "final" if step >= (2 if i % 3 else 7) else "partial"
                text = f"{done} result {i}.{step}: " + "value " * 60
                content = [{"type": "tool_result", "tool_use_id": calls[0].id, "content": text}]
        wrapped.flush()
        state = wrapped.context.session.state()
        bodies = [r.json() for r in fake.messages_requests()]
    assert state.compactions >= 2
    problems = [(n, p) for n, b in enumerate(bodies) if (p := _opening_problem(b["messages"]))]
    assert problems == []


@pytest.mark.parametrize("budget", BUDGETS)
def test_an_openai_window_opens_on_a_question_at_every_budget(tmp_path: Path, budget: int) -> None:
    openai = pytest.importorskip("openai")
    from contextos.testing.fake_openai import FakeOpenAI

    def reply(body: dict[str, Any]) -> str:
        return _reply(body)

    with (
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        FakeOpenAI(reply=reply) as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory, session="s1", user_id="dana", budget=budget)
        for i in range(CALLS):
            wrapped.chat.completions.create(
                model="gpt-4.1-mini",
                max_tokens=64,
                messages=[
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": _question(i)},
                ],
            )
        wrapped.flush()
        state = wrapped.context.session.state()
        bodies = [r.json() for r in fake.completions_requests()]
    assert state.compactions >= 2
    for n, body in enumerate(bodies):
        turns = [m for m in body["messages"] if m["role"] != "system"]
        assert turns[0]["role"] == "user", (n, turns[0])
        content = turns[0]["content"]
        text = content if isinstance(content, str) else content[0].get("text", "")
        assert text.startswith("Question"), (n, turns[0])


# -- the planner, on any history -------------------------------------------------------

AT = datetime(2024, 3, 1, tzinfo=UTC)


def turn(seq: int, role: str = "user", tokens: int = 10, content: str = "", **kw: Any) -> Turn:
    return Turn("s", seq, Message(role, content or f"turn {seq}", **kw), tokens, AT)  # type: ignore[arg-type]


def tool_pair(seq: int, result_tokens: int = 200) -> list[Turn]:
    call = ToolCall(f"c{seq}", "search", json.dumps({"q": seq}))
    return [
        turn(seq, "assistant", 10, content="calling", tool_calls=(call,)),
        turn(seq + 1, "tool", result_tokens, content="big result", tool_call_id=f"c{seq}"),
    ]


def _history(kinds: list[str]) -> list[Any]:
    """Turns from ``kinds``: ``u`` a user turn, ``a`` a reply, ``pair`` a tool call and
    its result; the history opens on the user's turn."""
    turns: list[Any] = [turn(0, "user", 15)]
    for k in kinds:
        if k == "pair":
            turns += tool_pair(len(turns), 80)
        else:
            turns.append(turn(len(turns), "user" if k == "u" else "assistant", 15))
    return turns


def _assert_opens_on_a_user_turn(turns: list[Any], state: HistoryState) -> None:
    visible = visible_turns(turns, state)
    if not visible:
        return
    assert visible[0].message.role == "user", [t.seq for t in visible]
    for i, t in enumerate(visible):  # a tool result right after its call (or a sibling)
        if t.message.role == "tool":
            assert i and visible[i - 1].message.role in ("assistant", "tool"), t.seq


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(["u", "a", "a", "pair"]), min_size=1, max_size=40),
    st.lists(st.sampled_from(["u", "a", "pair"]), max_size=12),
    st.integers(40, 700),
    st.sampled_from(["truncate", "clear_tool_results", "summarize", "offload"]),
    st.sets(st.integers(0, 60), max_size=3),
    st.integers(0, 3),
)
def test_no_compaction_leaves_a_history_opening_mid_exchange(
    kinds: list[str],
    more: list[str],
    budget: int,
    strategy: Any,
    pins: set[int],
    keep_recent: int,
) -> None:
    turns = _history(kinds)
    state = HistoryState(pinned=tuple(sorted(p for p in pins if p < len(turns))))
    th = Thresholds(keep_recent=keep_recent)
    summarizer = ExtractiveSummarizer()
    for history in (turns, _history(kinds + more)):  # again, on a state it compacted
        plan = plan_compaction(history, state, budget, strategy, th, force=True)
        if plan is None:
            continue
        before = history_tokens(history, state)
        shown = visible_turns(history, state)
        assert not {t.seq for t in shown[max(0, len(shown) - keep_recent) :]} & set(plan.rotate)
        state = apply_compaction(plan, history, state, budget, summarizer=summarizer, thresholds=th)
        _assert_opens_on_a_user_turn(history, state)
        assert history_tokens(history, state) <= before
        assert set(state.pinned) <= {t.seq for t in visible_turns(history, state)}


def test_a_chat_exchange_is_rotated_whole() -> None:
    # Ten 10-token turns, question and reply in turn, against a 100-token budget: the
    # target (50) is reached after five turns, a question; its reply goes with it.
    turns = [turn(i, "user" if i % 2 == 0 else "assistant") for i in range(10)]
    plan = plan_compaction(turns, HistoryState(), 100, "truncate", Thresholds(keep_recent=2))
    assert plan is not None and plan.rotate == (0, 1, 2, 3, 4, 5)
    state = apply_compaction(plan, turns, HistoryState(), 100)
    assert [t.seq for t in visible_turns(turns, state)] == [6, 7, 8, 9]


def test_an_agent_task_stays_before_the_steps_left() -> None:
    # One task and its many tool steps: the cut falls inside the exchange, the task
    # stays (kept) before the steps left, and goes with the exchange's last step.
    turns = [turn(0, "user", 20, content="Task: audit the repo.")]
    for _ in range(8):
        turns += tool_pair(len(turns), 80)
    plan = plan_compaction(turns, HistoryState(), 800, "truncate", Thresholds(keep_recent=2))
    assert plan is not None and 0 not in plan.rotate and 1 in plan.rotate
    state = apply_compaction(plan, turns, HistoryState(), 800)
    visible = visible_turns(turns, state)
    assert visible[0].seq == 0 and visible[1].message.tool_calls and state.kept == (0,)
    turns.append(turn(len(turns), "assistant", 20, content="Done."))
    turns.append(turn(len(turns), "user", 20, content="Thanks; next?"))
    turns.append(turn(len(turns), "assistant", 20, content="Nothing."))
    plan = plan_compaction(turns, state, 100, "truncate", Thresholds(keep_recent=2), force=True)
    assert plan is not None and 0 in plan.rotate  # the whole exchange went: its task too
    state = apply_compaction(plan, turns, state, 100)
    assert state.kept == () and visible_turns(turns, state)[0].message.role == "user"
