"""The SDK's own response objects put back into ``messages``, as the SDKs' guides do.

OpenAI's tool-calling guide appends ``completion.choices[0].message`` (a pydantic
``ChatCompletionMessage``, not a dict) to ``messages``; the bare SDK sends it. The
real ``openai`` SDK client against the loopback fake, a real SQLite memory file: the
wrapped client takes it like the bare one, and logs the echoed turn once.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_http import FakeResponse  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI, OpenAIUsage  # noqa: E402

GPT = "gpt-4.1-mini"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "The forecast for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def _log(wrapped: Any) -> list[tuple[str, str]]:
    wrapped.flush()
    return [(t.message.role, t.message.content) for t in wrapped.context.session.turns()]


def _sent(fake: FakeOpenAI) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = fake.completions_requests()[-1].json()["messages"]
    return messages


def _tool_call_reply() -> FakeResponse:
    """A ``chat.completion`` whose message calls the ``weather`` tool (no text)."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": json.dumps({"city": "Lisbon"})},
    }
    message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
    choice = {"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": message}
    body = {"id": "chatcmpl-t", "object": "chat.completion", "created": 1, "model": GPT}
    return FakeResponse(json_body={**body, "choices": [choice], "usage": OpenAIUsage(20, 5).wire()})


def _next_call(wrapped: Any, how: str, messages: list[Any]) -> None:
    """The follow-up call, through ``create`` or the ``stream(...)`` helper."""
    if how == "create":
        wrapped.chat.completions.create(model=GPT, messages=messages)
    else:
        with wrapped.chat.completions.stream(model=GPT, messages=messages) as stream:
            stream.until_done()


@pytest.mark.parametrize("how", ["create", "stream"])
def test_a_chat_completion_message_object_in_messages_is_accepted_and_logged_once(
    fake_openai: FakeOpenAI, openai_client: Any, memory: Memory, how: str
) -> None:
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana")
    messages: list[Any] = [{"role": "user", "content": "hello"}]
    completion = wrapped.chat.completions.create(model=GPT, messages=messages)
    messages.append(completion.choices[0].message)  # the SDK object, as OpenAI's docs do
    messages.append({"role": "user", "content": "and then?"})
    _next_call(wrapped, how, messages)
    assert _log(wrapped) == [
        ("user", "hello"),
        ("assistant", "You said: hello"),
        ("user", "and then?"),
        ("assistant", "You said: and then?"),
    ]


def test_the_tool_calling_loop_of_openais_guide_runs_through_the_wrapper(
    fake_openai: FakeOpenAI, openai_client: Any, memory: Memory
) -> None:
    """The assistant's tool-call message goes back as the SDK object, the result after it;
    the request sent carries the call and its result, as the API requires."""
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana")
    fake_openai.enqueue(_tool_call_reply())
    messages: list[Any] = [{"role": "user", "content": "weather in Lisbon?"}]
    completion = wrapped.chat.completions.create(model=GPT, messages=messages, tools=TOOLS)
    messages.append(completion.choices[0].message)
    messages.append({"role": "tool", "tool_call_id": "call_1", "content": "sunny, 24C"})
    wrapped.chat.completions.create(model=GPT, messages=messages, tools=TOOLS)
    sent = _sent(fake_openai)
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert [c["id"] for c in sent[1]["tool_calls"]] == ["call_1"]
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 24C"}
    log = _log(wrapped)
    assert [role for role, _ in log] == ["user", "assistant", "tool", "assistant"]


def test_a_pass_through_client_sends_the_sdk_object_as_the_bare_sdk_does(
    fake_openai: FakeOpenAI, openai_client: Any
) -> None:
    wrapped = wrap(openai_client)  # pass-through: the request goes out as given
    messages: list[Any] = [{"role": "user", "content": "hello"}]
    completion = wrapped.chat.completions.create(model=GPT, messages=messages)
    messages += [completion.choices[0].message, {"role": "user", "content": "and then?"}]
    wrapped.chat.completions.create(model=GPT, messages=messages)
    through_wrapper = fake_openai.completions_requests()[-1].body
    openai_client.chat.completions.create(model=GPT, messages=messages)
    assert fake_openai.completions_requests()[-1].body == through_wrapper
