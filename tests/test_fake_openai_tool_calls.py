"""FakeOpenAI's ``reply`` hook scripts tool calls, as FakeAnthropic's does: the real
``openai`` client reads them from a completion, a stream and a Responses answer, and a
wrapped client's memory-tools loop runs them (before, an OpenAI tool call could only be
enqueued as a hand-built response, and a model that decides by the request needed a
subclass: a review)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import contextos
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_openai import FakeOpenAI

openai = pytest.importorskip("openai")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def weather_then_answer(body: dict[str, Any]) -> Any:
    """A model that asks for the weather until it is given it, then answers."""
    if body["messages"][-1].get("role") in ("tool", "function_call_output"):
        return "Sunny in Porto."
    return {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Porto"}}]}


def test_a_completion_carries_the_scripted_tool_calls() -> None:
    with (
        FakeOpenAI(reply=weather_then_answer) as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0) as client,
    ):
        messages: list[Any] = [{"role": "user", "content": "Weather in Porto?"}]
        first = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER])
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        (call,) = choice.message.tool_calls or []
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Porto"}
        messages += [
            choice.message,
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ]
        second = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER])
        assert second.choices[0].message.content == "Sunny in Porto."
        assert second.choices[0].finish_reason == "stop"


def test_a_stream_carries_the_tool_calls_in_pieces() -> None:
    reply = {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Vila Nova de Gaia"}}]}
    with (
        FakeOpenAI(reply=lambda body: reply) as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0) as client,
    ):
        with client.chat.completions.stream(
            model="m", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER]
        ) as stream:
            pieces = [
                e.arguments_delta for e in stream if e.type == "tool_calls.function.arguments.delta"
            ]
            done = stream.get_final_completion()
        assert len(pieces) > 1  # the arguments came in pieces
        (call,) = done.choices[0].message.tool_calls or []
        assert json.loads(call.function.arguments) == {"city": "Vila Nova de Gaia"}
        assert done.choices[0].finish_reason == "tool_calls"


def test_a_responses_answer_carries_function_calls() -> None:
    with (
        FakeOpenAI(reply=weather_then_answer) as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0) as client,
    ):
        answer = client.responses.create(model="m", input="Weather in Porto?")
        (call,) = [item for item in answer.output if item.type == "function_call"]
        assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Porto"}


def test_a_reply_hook_that_returns_a_malformed_call_is_a_500_that_says_so() -> None:
    with (
        FakeOpenAI(reply=lambda body: {"tool_calls": [{"arguments": {}}]}) as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0) as client,
        pytest.raises(openai.InternalServerError, match="without a name"),
    ):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


def test_a_wrapped_memory_tools_loop_runs_a_call_the_hook_decided(tmp_path: Path) -> None:
    def model(body: dict[str, Any]) -> Any:
        if any(m.get("role") == "tool" for m in body["messages"]):  # (memories follow it)
            return "Noted."
        fact = {"label": "human", "content": "Lives in Porto."}
        return {"tool_calls": [{"name": "core_memory_append", "arguments": fact}]}

    with (
        FakeOpenAI(reply=model) as fake,
        contextos.Memory(tmp_path / "m.db", embedder=HashEmbedder()) as memory,
        openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0) as raw,
    ):
        client = contextos.wrap(raw, memory=memory, session="s", user_id="ana", memory_tools=True)
        answer = client.chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": "I moved to Porto."}]
        )
        assert answer.choices[0].message.content == "Noted."
        assert len(fake.completions_requests()) == 2
        follow_up = fake.completions_requests()[1].json()["messages"]
        (result,) = [m for m in follow_up if m["role"] == "tool"]
        assert "Lives in Porto." in json.dumps(result["content"])
