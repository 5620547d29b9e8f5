"""Anthropic tool loops through the wrapper: parallel tool results and extended thinking.

The real ``anthropic`` SDK client against the loopback fake, which refuses (400, as
the API does) a ``tool_use`` without its own ``tool_result`` in the next message, and,
with ``thinking`` enabled, a tool loop whose assistant turn lost its signed thinking.
The app keeps its own history and echoes every reply back, as the SDK docs show.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.errors import ProviderError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import AnthropicUsage, FakeAnthropic, message_start  # noqa: E402
from contextos.testing.fake_http import FakeResponse, SSEEvent  # noqa: E402

MODEL = "claude-sonnet-4"
TOOLS = [
    {
        "name": "weather",
        "description": "The forecast for a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]
THINKING = {"type": "thinking", "thinking": "I should call weather.", "signature": "sig123"}
CALL_A = {"type": "tool_use", "id": "toolu_A", "name": "weather", "input": {"city": "Paris"}}
CALL_B = {"type": "tool_use", "id": "toolu_B", "name": "weather", "input": {"city": "Rome"}}


def _reply(first: list[dict[str, Any]]) -> Any:
    """The fake's model: ``first`` for a question, a text answer to tool results."""

    def reply(body: dict[str, Any]) -> Any:
        last = body["messages"][-1]["content"]
        if isinstance(last, list) and any(b.get("type") == "tool_result" for b in last):
            return "Paris sunny, Rome rainy."
        return first

    return reply


@pytest.fixture
def client_for() -> Iterator[Any]:
    """A function starting a fake with a reply hook and returning the real SDK client."""
    servers: list[Any] = []

    def start(reply: Any) -> tuple[FakeAnthropic, Any]:
        fake = FakeAnthropic(reply=reply).__enter__()
        client = anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0)
        servers.append((fake, client))
        return fake, client

    yield start
    for fake, client in servers:
        client.close()
        fake.__exit__(None, None, None)


def _echo(reply: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": [b.model_dump(exclude_none=True) for b in reply.content],
    }


def test_parallel_tool_results_go_back_as_one_block_each(client_for: Any, memory: Memory) -> None:
    fake, client = client_for(_reply([{"type": "text", "text": "Checking both."}, CALL_A, CALL_B]))
    wrapped = wrap(client, memory=memory, session="s", user_id="ana")
    history: list[dict[str, Any]] = [{"role": "user", "content": "weather in paris and rome?"}]
    history.append(
        _echo(wrapped.messages.create(model=MODEL, max_tokens=64, tools=TOOLS, messages=history))
    )
    results = [
        {"type": "tool_result", "tool_use_id": "toolu_A", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "toolu_B", "content": "no data", "is_error": True},
        {"type": "text", "text": "Keep it short."},
    ]
    history.append({"role": "user", "content": results})
    answer = wrapped.messages.create(model=MODEL, max_tokens=64, tools=TOOLS, messages=history)
    history += [_echo(answer), {"role": "user", "content": "and tomorrow?"}]
    wrapped.messages.create(
        model=MODEL, max_tokens=64, tools=TOOLS, messages=history
    )  # from the log
    for request in fake.messages_requests()[1:]:
        sent = request.json()["messages"][2]["content"]
        assert [{k: v for k, v in b.items() if k != "cache_control"} for b in sent] == results


#: A request with tools and extended thinking on.
THINKING_CALL: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 2048,
    "tools": TOOLS,
    "thinking": {"type": "enabled", "budget_tokens": 1024},
}


def test_thinking_blocks_go_back_first_in_their_assistant_turn(
    client_for: Any, memory: Memory
) -> None:
    fake, client = client_for(_reply([THINKING, CALL_A]))
    wrapped = wrap(client, memory=memory, session="s", user_id="ana")
    kw: dict[str, Any] = dict(THINKING_CALL)
    history: list[dict[str, Any]] = [{"role": "user", "content": "weather in paris?"}]
    history.append(_echo(wrapped.messages.create(messages=history, **kw)))
    history.append(
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_A", "content": "sunny"}],
        }
    )
    wrapped.messages.create(messages=history, **kw)
    turn = fake.messages_requests()[-1].json()["messages"][1]["content"]
    assert [b["type"] for b in turn] == ["thinking", "tool_use"]
    assert {k: turn[0][k] for k in THINKING} == THINKING


def _event(data: dict[str, Any]) -> SSEEvent:
    return SSEEvent(json.dumps(data), data["type"])


def _streamed_thinking_then_call() -> FakeResponse:
    """A streamed reply: a thinking block (text and signature in deltas), a tool call."""
    started = {"type": "thinking", "thinking": "", "signature": ""}
    deltas = [
        {"type": "thinking_delta", "thinking": "I should call "},
        {"type": "thinking_delta", "thinking": "weather."},
        {"type": "signature_delta", "signature": "sig123"},
    ]
    call = {**CALL_A, "input": {}}
    events = [
        message_start("msg_t", MODEL, AnthropicUsage(5, 1)),
        {"type": "content_block_start", "index": 0, "content_block": started},
        *({"type": "content_block_delta", "index": 0, "delta": d} for d in deltas),
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": call},
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    return FakeResponse(events=[_event(e) for e in events])


def test_a_streamed_thinking_block_goes_back_with_its_signature(
    client_for: Any, memory: Memory
) -> None:
    """The app sends only the new turn: the assistant turn comes from the log, as streamed."""
    fake, client = client_for(_reply("unused"))
    fake.enqueue(_streamed_thinking_then_call())
    wrapped = wrap(client, memory=memory, session="s", user_id="ana")
    kw: dict[str, Any] = dict(THINKING_CALL)
    question = [{"role": "user", "content": "weather in paris?"}]
    with wrapped.messages.stream(messages=question, **kw) as stream:
        stream.get_final_message()
    result = {"type": "tool_result", "tool_use_id": "toolu_A", "content": "sunny"}
    wrapped.messages.create(messages=[{"role": "user", "content": [result]}], **kw)
    turn = fake.messages_requests()[-1].json()["messages"][1]["content"]
    assert [b["type"] for b in turn] == ["thinking", "tool_use"]
    assert (turn[0]["thinking"], turn[0]["signature"]) == ("I should call weather.", "sig123")


def _weather_or_echo(body: dict[str, Any]) -> Any:
    """The fake's model: a weather question calls the tool, anything else is echoed."""
    last = body["messages"][-1]["content"]
    if isinstance(last, list) and any(b.get("type") == "tool_result" for b in last):
        return "Paris is sunny."
    text = last if isinstance(last, str) else " ".join(b.get("text", "") for b in last)
    return [CALL_A] if "weather" in text else f"You said: {text}"


RESULT_A = {
    "role": "user",
    "content": [{"type": "tool_result", "tool_use_id": "toolu_A", "content": "sunny"}],
}


@pytest.mark.parametrize("whole", [False, True], ids=["new-turn", "whole-conversation"])
def test_a_retried_tool_result_is_logged_once(client_for: Any, memory: Memory, whole: bool) -> None:
    # The call answering a tool result failed (HTTP 500 after the SDK's retries) and the
    # app sent it again: the log held the result twice (sent twice, the API refuses the
    # second), or the whole conversation twice when the app sends all of it.
    fake, client = client_for(_weather_or_echo)
    wrapped = wrap(client, memory=memory, session="s", user_id="ana")
    question = {"role": "user", "content": "weather in paris?"}
    kw: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "tools": TOOLS}
    echo = _echo(wrapped.messages.create(messages=[question], **kw))
    messages = [question, echo, RESULT_A] if whole else [RESULT_A]
    fake.enqueue_error(500, "overloaded")
    with pytest.raises(ProviderError):
        wrapped.messages.create(messages=messages, **kw)
    answer = wrapped.messages.create(messages=messages, **kw)  # the app's retry
    assert answer.content[0].text == "Paris is sunny."
    assert wrapped.calls[-1].new_messages == ()  # nothing logged again
    wrapped.flush()
    log = [t.message.role for t in wrapped.context.session.turns()]
    assert log == ["user", "assistant", "tool", "assistant"]
    sent = fake.messages_requests()[-1].json()["messages"]
    assert [[b["type"] for b in m["content"]] for m in sent] == [
        ["text"],
        ["tool_use"],
        ["tool_result"],
    ]


def test_a_refused_request_does_not_break_the_session(client_for: Any, memory: Memory) -> None:
    # After a tool call the app sent a plain message instead of the result: the API
    # refused it (400), its turn stayed in the log, and every later call of the session
    # was refused with it -- the tool result too, and any question after it.
    fake, client = client_for(_weather_or_echo)
    wrapped = wrap(client, memory=memory, session="s", user_id="ana")
    kw: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "tools": TOOLS}

    def ask(content: Any) -> str:
        reply = wrapped.messages.create(messages=[{"role": "user", "content": content}], **kw)
        return str(reply.content[0].text) if reply.content[0].type == "text" else "(tool)"

    ask("weather in paris?")
    fake.enqueue_error(500, "overloaded")  # the plain message's call fails ...
    with pytest.raises(ProviderError):
        ask("never mind")
    ask(RESULT_A["content"])  # ... and the result comes after it: no 400
    sent = fake.messages_requests()[-1].json()["messages"]
    assert [[b["type"] for b in m["content"]] for m in sent] == [
        ["text"],
        ["tool_use"],
        ["tool_result"],  # right after its call, though logged after "never mind"
        ["text"],
    ]
    ask("weather in paris?")
    assert ask("never mind") == "You said: never mind"  # the unanswered call left out
    sent = fake.messages_requests()[-1].json()["messages"]
    assert [b["type"] for m in sent for b in m["content"]].count("tool_use") == 1
    before = len(fake.messages_requests())
    with pytest.raises(ValueError, match="answers no tool call still open"):
        ask(RESULT_A["content"])  # too late: the conversation went on; nothing is sent
    assert len(fake.messages_requests()) == before
    assert ask("thanks") == "You said: thanks"
