"""Thinking blocks go back only while their tool loop is open, and are counted then.

The log keeps each reply's signed thinking blocks (the API refuses a tool loop whose
assistant turn lost them). They were sent back with every turn, on every later call,
and counted nowhere: a long chat with extended thinking sent requests many times its
budget while the window said it was well under. Now a turn's thinking goes back only
inside its open tool loop (the assistant turns after the last user turn that is not
tool results) and the window counts it there. The real ``anthropic`` SDK against the
loopback fake (which refuses a tool loop without its thinking), a real SQLite file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from contextos.engine.window import Item
from contextos.llm.media_tokens import THINKING_KEY, open_loop_start, thinking_tokens
from contextos.llm.tokens import default_tokenizer
from contextos.memory import Memory
from contextos.types import Message

anthropic = pytest.importorskip("anthropic")

from contextos.engine.session import with_thinking_sent  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from test_media_tokens import Recording, sent_tokens  # noqa: E402

TOK = default_tokenizer()
MODEL = "claude-sonnet-4-6"
THOUGHT = "Let me think this through step by step, weighing each option. " * 120  # ~1,600
TOOLS = [
    {
        "name": "lookup",
        "description": "Look a fact up.",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
]
THINKING_ON = {"type": "enabled", "budget_tokens": 4000}


def test_the_open_loop_starts_after_the_last_user_turn() -> None:
    roles = ["user", "assistant", "tool", "assistant", "tool"]
    assert open_loop_start(roles, question=False) == 1
    assert open_loop_start(roles, question=True) == len(roles)
    assert open_loop_start(["assistant", "tool"], question=False) == 0
    assert open_loop_start(["user", "assistant", "user"], question=False) == 3


def test_thinking_is_counted_on_open_loop_turns_and_taken_off_the_others() -> None:
    blocks = [
        {"type": "thinking", "thinking": "first I look", "signature": "s"},
        {"type": "redacted_thinking", "data": "x" * 400},
    ]
    said = Message("assistant", "", metadata={THINKING_KEY: blocks})
    assert thinking_tokens(said, TOK.count) == TOK.count("first I look") + 100
    items = [
        Item("turn:0", "q", 5, role="user"),
        Item("turn:1", "", 10, role="assistant", message=said),
        Item("turn:2", "r", 5, role="tool"),
        Item("turn:3", "", 10, role="assistant", message=said),
    ]
    loop = with_thinking_sent(items, TOK, question=False)
    cost = thinking_tokens(said, TOK.count)
    assert [i.tokens for i in loop] == [5, 10 + cost, 5, 10 + cost]
    closed = with_thinking_sent(items, TOK, question=True)
    assert [i.tokens for i in closed] == [5, 10, 5, 10]
    assert all(THINKING_KEY not in (i.message.metadata if i.message else {}) for i in closed)


def _thinking(n: int) -> dict[str, Any]:
    return {"type": "thinking", "thinking": f"Step {n}. {THOUGHT}", "signature": f"sig{n}"}


def _model(body: dict[str, Any]) -> Any:
    """The fake model: a question is looked up twice (each step thinks first), then
    answered (thinking again); a question without tools is answered after thinking."""
    n = len(body["messages"])
    if not body.get("tools"):
        return [_thinking(n), {"type": "text", "text": "Here is my answer. " * 20}]
    last = body["messages"][-1]["content"]
    steps = 0
    for message in reversed(body["messages"]):
        content = message["content"]
        if message["role"] == "user" and not (
            isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)
        ):
            break
        steps += message["role"] == "assistant"
    is_result = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
    if is_result and steps >= 2:
        return [_thinking(n), {"type": "text", "text": "Found it: the answer is 42."}]
    call = {"type": "tool_use", "id": f"toolu_{n}", "name": "lookup", "input": {"q": f"q{n}"}}
    return [_thinking(n), call]


@pytest.fixture
def client() -> Iterator[tuple[FakeAnthropic, Any]]:
    with FakeAnthropic(reply=_model) as fake:
        sdk = anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0)
        yield fake, sdk
        sdk.close()


def _echo(reply: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": [b.model_dump(exclude_none=True) for b in reply.content],
    }


def _check_every_request(fake: FakeAnthropic, ctx: Recording) -> list[dict[str, Any]]:
    """Each request sent is within what its window counted, and the window within its
    budget; the requests, as JSON."""
    bodies = [r.json() for r in fake.messages_requests()]
    assert len(bodies) == len(ctx.windows)
    for n, (body, window) in enumerate(zip(bodies, ctx.windows, strict=True)):
        sent = sent_tokens(body, image=0)
        assert sent <= window.total_tokens <= window.budget, (n, sent, window.total_tokens)
    return bodies


def test_a_long_chat_with_thinking_sends_none_of_it_back(
    client: tuple[FakeAnthropic, Any], memory: Memory
) -> None:
    fake, sdk = client
    ctx = Recording(
        memory=memory, session="chat", user_id="ana", budget=12_000, background_commit=False
    )
    wrapped = wrap(sdk, context=ctx)
    history: list[dict[str, Any]] = []
    for i in range(30):
        history.append({"role": "user", "content": f"Question {i}: tell me about topic {i}."})
        reply = wrapped.messages.create(
            model=MODEL, max_tokens=8000, thinking=THINKING_ON, messages=history
        )
        history.append(_echo(reply))
    bodies = _check_every_request(fake, ctx)
    assert all('"thinking"' not in json.dumps(b["messages"]) for b in bodies)
    # the log still has them (a tool loop needs them back)
    assert ctx.session is not None
    assert any(THINKING_KEY in t.message.metadata for t in ctx.session.turns())


def test_a_tool_loop_sends_its_thinking_back_and_counts_it(
    client: tuple[FakeAnthropic, Any], memory: Memory
) -> None:
    fake, sdk = client
    ctx = Recording(
        memory=memory, session="agent", user_id="ana", budget=16_000, background_commit=False
    )
    wrapped = wrap(sdk, context=ctx)
    kw: dict[str, Any] = {"model": MODEL, "max_tokens": 8000, "tools": TOOLS}
    kw["thinking"] = THINKING_ON
    history: list[dict[str, Any]] = []
    for i in range(8):
        history.append({"role": "user", "content": f"Question {i}: look up fact {i}."})
        while True:  # the agent loop: answer each tool call until the model answers
            reply = wrapped.messages.create(messages=history, **kw)
            history.append(_echo(reply))
            calls = [b for b in reply.content if b.type == "tool_use"]
            if not calls:
                break
            result = {"type": "tool_result", "tool_use_id": calls[0].id, "content": f"fact {i}"}
            history.append({"role": "user", "content": [result]})
    bodies = _check_every_request(fake, ctx)  # the fake refused none (thinking was there)
    for body in bodies:
        messages = body["messages"]
        loop = open_loop_start(
            [
                "tool"
                if isinstance(m["content"], list)
                and any(b.get("type") == "tool_result" for b in m["content"])
                else m["role"]
                for m in messages
            ],
            question=False,
        )
        for n, m in enumerate(messages):
            thought = [b for b in m["content"] if b.get("type") == "thinking"]
            if m["role"] == "assistant" and n >= loop:
                assert thought and m["content"][0]["type"] == "thinking"
            else:
                assert not thought, n
    # the calls answering a tool result did send thinking back: and it was counted
    looped = [b for b in bodies if '"thinking"' in json.dumps(b["messages"])]
    assert len(looped) >= 8 * 2
