"""A step of a tool loop goes out while a rolling summary takes room in the window.

An agent's session compacted with ``summarize``: the window holds the summary of the
older steps (served before the turns), then the task and the newest steps. A request
without a question is for its newest unit -- the assistant's tool call and its result,
which the API takes only together -- and when the summary left that unit a few tokens
short, the call was refused ("the newest tool turn does not fit the budget: needs 2,892
tokens, has 2,808") although the budget held the unit beside the instructions and
tools. The summary now yields to it; a unit that does not fit even alone is still
refused with its numbers. The real SDK clients against the local fakes, a real Memory
on SQLite, the package's deterministic embedder; and a Session's own window.
"""

from __future__ import annotations

from typing import Any

import pytest

from contextos.engine.session import Session
from contextos.errors import BudgetError
from contextos.llm.models import get_model
from contextos.llm.tokens import TOKENS_PER_REPLY
from contextos.memory import Memory
from contextos.providers import wrap
from contextos.store.sqlite import SQLiteStore
from contextos.types import Message, ToolCall

#: A budget whose history compacts into a rolling summary every few steps.
BUDGET = 3000
#: Steps of small pages before the last one: enough for five compactions (a summary of
#: about 160 tokens).
STEPS = 11
#: Words of the last page: its step (about 2,890 tokens with the task) fits beside the
#: tools (the budget less about 30) but not beside the summary too.
FITS = 680
#: Words of a last page whose step (about 2,976 tokens) does not fit even beside the
#: tools alone, the page itself within the budget (else refused before it is logged).
TOO_BIG = 700
TASK = "Research the pages and report."
SUMMARY = "Summary of the earlier conversation"


def _page(n: int, words: int) -> str:
    return " ".join(f"p{n}w{i} sentence." if i % 10 == 9 else f"p{n}w{i}" for i in range(words))


# -- Anthropic Messages ----------------------------------------------------------------

anthropic = pytest.importorskip("anthropic")

from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402

CLAUDE = "claude-sonnet-4"
FETCH = [
    {
        "name": "fetch",
        "description": "Fetch a page.",
        "input_schema": {"type": "object", "properties": {"url": {"type": "string"}}},
    }
]


def _claude_agent(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The fake model: one more page to fetch after every result."""
    n = len(body["messages"])
    call = {"type": "tool_use", "id": f"toolu_{n}", "name": "fetch", "input": {"url": f"u{n}"}}
    return [{"type": "text", "text": f"Step {n}: fetching."}, call]


def _claude_system(body: dict[str, Any]) -> str:
    return " ".join(b["text"] for b in body.get("system") or [])


def _claude_loop(fake: FakeAnthropic, client: Any, memory: Memory) -> tuple[Any, list[Any]]:
    """A wrapped agent ``STEPS`` steps into its task, its history compacted into a
    rolling summary; returns it and the app's history, ending on the last call."""
    fake.reply = _claude_agent
    wrapped = wrap(client, memory=memory, session="s", user_id="ana", budget=BUDGET)
    history: list[dict[str, Any]] = [{"role": "user", "content": TASK}]
    for k in range(STEPS + 1):
        if k:
            history = _claude_results(history, 120, k)
        reply = wrapped.messages.create(model=CLAUDE, max_tokens=256, messages=history, tools=FETCH)
        content = [b.model_dump(exclude_none=True) for b in reply.content]
        history.append({"role": "assistant", "content": content})
    wrapped.flush()
    assert wrapped.context.session.state().summary is not None
    assert SUMMARY in _claude_system(fake.messages_requests()[-1].json())  # it takes room
    return wrapped, history


def _claude_results(history: list[Any], words: int, n: int = 99) -> list[Any]:
    """``history`` (ending on the model's call) with the result of that call: page ``n``."""
    call = history[-1]["content"][-1]["id"]
    result = {"type": "tool_result", "tool_use_id": call, "content": _page(n, words)}
    return [*history, {"role": "user", "content": [result]}]


def test_a_tool_step_goes_out_when_the_summary_leaves_it_short_anthropic(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
) -> None:
    wrapped, history = _claude_loop(fake_anthropic, anthropic_client, memory)
    messages = _claude_results(history, FITS)
    # was: BudgetError "the newest tool turn does not fit the budget (needs 2,892
    # tokens, has 2,808)"; the summary left out (reported), the step sent.
    wrapped.messages.create(model=CLAUDE, max_tokens=256, messages=messages, tools=FETCH)
    body = fake_anthropic.messages_requests()[-1].json()
    sent = body["messages"]
    assert sent[0]["content"][0]["text"] == TASK  # the task that opened the loop
    call = next(b for b in sent[-2]["content"] if b["type"] == "tool_use")
    [result] = sent[-1]["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == call["id"]
    assert "p99w679" in str(result["content"])
    assert SUMMARY not in _claude_system(body)
    wrapped.flush()
    assert wrapped.context.session.state().summary is not None  # the log keeps it


def test_a_tool_step_too_big_even_alone_is_still_refused_with_its_numbers(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
) -> None:
    wrapped, history = _claude_loop(fake_anthropic, anthropic_client, memory)
    sent = len(fake_anthropic.messages_requests())
    with pytest.raises(BudgetError, match="newest tool turn does not fit the budget") as info:
        wrapped.messages.create(
            model=CLAUDE, max_tokens=256, messages=_claude_results(history, TOO_BIG), tools=FETCH
        )
    assert info.value.requested > info.value.available
    # The room it had is the budget less the instructions and tools: the summary yielded.
    summary = wrapped.context.session.state().summary
    assert summary is not None
    assert info.value.available > BUDGET - TOKENS_PER_REPLY - summary.tokens
    assert len(fake_anthropic.messages_requests()) == sent  # nothing sent
    # A page the budget holds goes out.
    wrapped.messages.create(
        model=CLAUDE, max_tokens=256, messages=_claude_results(history, FITS), tools=FETCH
    )
    assert len(fake_anthropic.messages_requests()) == sent + 1


# -- OpenAI Chat Completions -----------------------------------------------------------

openai = pytest.importorskip("openai")

from contextos.testing.fake_http import FakeResponse  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI  # noqa: E402

GPT = "gpt-4.1-mini"
FUNCTIONS = [
    {
        "type": "function",
        "function": {
            "name": "fetch",
            "description": "Fetch a page.",
            "parameters": {"type": "object", "properties": {"url": {"type": "string"}}},
        },
    }
]


def _gpt_step(n: int) -> FakeResponse:
    """A recorded Chat Completions answer: a line of text (the summary's matter) and
    the call ``call_{n}``."""
    call = {"id": f"call_{n}", "type": "function", "function": {"name": "fetch", "arguments": "{}"}}
    message = {"role": "assistant", "content": f"Step {n}: fetching.", "tool_calls": [call]}
    return FakeResponse(
        json_body={
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": 0,
            "model": GPT,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": message}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    )


def _gpt_system(sent: list[dict[str, Any]]) -> str:
    return " ".join(str(m["content"]) for m in sent if m["role"] == "system")


def test_a_tool_step_goes_out_when_the_summary_leaves_it_short_openai(
    fake_openai: FakeOpenAI, openai_client: Any, memory: Memory
) -> None:
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana", budget=BUDGET)
    history: list[dict[str, Any]] = [{"role": "user", "content": TASK}]

    def step(n: int, words: int) -> Any:
        fake_openai.enqueue(_gpt_step(n + 1))
        if n:
            result = {"role": "tool", "tool_call_id": f"call_{n}", "content": _page(n, words)}
            history.append(result)
        reply = wrapped.chat.completions.create(model=GPT, messages=history, tools=FUNCTIONS)
        history.append(reply.choices[0].message.model_dump(exclude_none=True))
        return fake_openai.completions_requests()[-1].json()["messages"]

    for n in range(STEPS + 1):
        sent = step(n, 120)
    wrapped.flush()
    assert wrapped.context.session.state().summary is not None
    assert SUMMARY in _gpt_system(sent)  # it takes room
    sent = step(STEPS + 1, FITS)  # was: BudgetError, the newest tool turn
    assert [m["role"] for m in sent if m["role"] != "system"][0] == "user"
    assert sent[-2]["role"] == "assistant" and sent[-2]["tool_calls"][0]["id"] == "call_12"
    assert sent[-1]["role"] == "tool" and sent[-1]["tool_call_id"] == "call_12"
    assert "p12w679" in sent[-1]["content"]
    assert SUMMARY not in _gpt_system(sent)


# -- a Session's own window ------------------------------------------------------------

SONNET = get_model("claude-sonnet-4-5")


def test_a_session_window_without_a_question_places_its_newest_tool_step(tmp_path: Any) -> None:
    """``Session.window(model, None)``, the window of an agent's call after its tools
    ran: the newest step was left out silently while the summary took its room. The
    task is long (about 210 tokens): the step goes only with it, so the room kept for
    the step counts it too (the summary, about 115 tokens, fits beside the step alone)."""
    s = Session(SQLiteStore(str(tmp_path / "s.db")), "agent", user_id="ana")
    s.add(Message("user", TASK + " Constraints: " + " ".join(f"rule{i}" for i in range(100))))
    for n in range(8):
        call = ToolCall(f"call_{n}", "fetch", "{}")
        s.add(
            Message("assistant", f"Step {n}: fetching.", tool_calls=(call,)),
            Message("tool", _page(n, 120), tool_call_id=call.id),
        )
    assert s.compact(1400, "summarize").plan is not None
    assert s.state().summary is not None
    call = ToolCall("call_last", "fetch", "{}")
    s.add(
        Message("assistant", "Last step.", tool_calls=(call,)),
        Message("tool", _page(99, 640), tool_call_id=call.id),
    )
    window = s.window(SONNET, None, budget=BUDGET, tools=FETCH)
    last = [t.seq for t in s.turns()[-2:]]
    keys = [b.key for b in window.blocks if b.segment == "turns"]
    assert keys[-2:] == [f"turn:{seq}" for seq in last]
    assert keys[0] == "turn:0"  # with the task that opened its exchange
    [summary] = [o for o in window.overflow if o.segment == "summary"]
    assert "floors of later ones" in summary.reason
    # It could not have both: the step takes the room the summary would have.
    assert window.total_tokens + summary.tokens > BUDGET
    assert window.total_tokens <= BUDGET
    assert sum(b.tokens for b in window.blocks) + TOKENS_PER_REPLY == window.total_tokens


def test_a_pinned_turn_does_not_take_the_room_kept_for_the_newest_step(tmp_path: Any) -> None:
    """Pinned turns are placed before the newest step: room kept for the step alone went
    to a pinned turn, and the step was left out beside the summary it outranks (a
    review of this session's floor)."""
    s = Session(SQLiteStore(str(tmp_path / "s.db")), "agent", user_id="ana")
    s.add(Message("user", TASK))
    for n in range(8):
        call = ToolCall(f"call_{n}", "fetch", "{}")
        s.add(
            Message("assistant", f"Step {n}: fetching.", tool_calls=(call,)),
            Message("tool", _page(n, 120), tool_call_id=call.id),
        )
    pinned = s.turns()[3].seq
    s.pin(pinned)
    assert s.compact(1400, "summarize").plan is not None
    call = ToolCall("call_last", "fetch", "{}")
    s.add(
        Message("assistant", "Last step.", tool_calls=(call,)),
        Message("tool", _page(99, 560), tool_call_id=call.id),
    )
    window = s.window(SONNET, None, budget=BUDGET, tools=FETCH)
    keys = [b.key for b in window.blocks if b.segment == "turns"]
    assert keys[-2:] == [f"turn:{t.seq}" for t in s.turns()[-2:]]
    assert f"turn:{pinned}" in keys
    assert [o.segment for o in window.overflow if o.segment == "summary"] == ["summary"]
    assert window.total_tokens <= BUDGET
