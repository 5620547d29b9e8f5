"""OpenAI Chat Completions through the wrapper: instruction turns mid-conversation,
retried tool messages, refusals.

The real ``openai`` SDK client against the loopback fake; the app keeps its own
history and sends all of it every call.
"""

from __future__ import annotations

from typing import Any

import pytest

openai = pytest.importorskip("openai")

from contextos.errors import ProviderError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI, OpenAIUsage  # noqa: E402
from sdk_support import openai_tool_call  # noqa: E402

GPT = "gpt-4.1-mini"


def _sent(fake: FakeOpenAI) -> list[tuple[str, Any]]:
    messages = fake.completions_requests()[-1].json()["messages"]
    return [(m["role"], m["content"]) for m in messages]


@pytest.mark.parametrize("role", ["developer", "system"])
def test_an_instruction_after_the_first_turn_keeps_its_role(
    fake_openai: FakeOpenAI, openai_client: Any, memory: Memory, role: str
) -> None:
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana")
    history: list[dict[str, Any]] = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "hi"},
    ]
    reply = wrapped.chat.completions.create(model=GPT, messages=history)
    history += [
        {"role": "assistant", "content": reply.choices[0].message.content},
        {"role": role, "content": "From now on answer only in French."},
        {"role": "user", "content": "what time is it?"},
    ]
    reply = wrapped.chat.completions.create(model=GPT, messages=history)
    assert _sent(fake_openai)[3] == (role, "From now on answer only in French.")
    history += [
        {"role": "assistant", "content": reply.choices[0].message.content},
        {"role": "user", "content": "and the date?"},
    ]
    wrapped.chat.completions.create(model=GPT, messages=history)  # the turn, from the log
    sent = _sent(fake_openai)
    assert sent[0] == ("system", "You are helpful.")
    assert sent[3] == (role, "From now on answer only in French.")
    assert [m for m, _ in sent].count("user") == 3  # the instruction is no user turn


CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
}
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


@pytest.mark.parametrize("whole", [False, True], ids=["new-turn", "whole-conversation"])
def test_a_retried_tool_message_is_logged_once(
    fake_openai: FakeOpenAI, openai_client: Any, memory: Memory, whole: bool
) -> None:
    # The call answering a tool message failed and the app sent it again: the log held
    # the tool message twice, or the whole conversation twice (the tool call id too).
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana")
    fake_openai.enqueue(openai_tool_call(CALL, GPT))
    question = {"role": "user", "content": "weather in paris?"}
    wrapped.chat.completions.create(model=GPT, tools=TOOLS, messages=[question])
    result = {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    echo = {"role": "assistant", "content": None, "tool_calls": [CALL]}
    messages = [question, echo, result] if whole else [result]
    fake_openai.enqueue_error(500, "overloaded")
    with pytest.raises(ProviderError):
        wrapped.chat.completions.create(model=GPT, tools=TOOLS, messages=messages)
    wrapped.chat.completions.create(model=GPT, tools=TOOLS, messages=messages)
    wrapped.flush()
    log = [t.message.role for t in wrapped.context.session.turns()]
    assert log == ["user", "assistant", "tool", "assistant"]
    sent = fake_openai.completions_requests()[-1].json()["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]


REFUSAL = "I can't help with that."


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("whole", [False, True], ids=["new-turn", "whole-conversation"])
def test_a_refusal_is_logged_and_sent_back_as_said(
    fake_openai: FakeOpenAI, openai_client: Any, memory: Memory, stream: bool, whole: bool
) -> None:
    """A refusal comes as ``message.refusal`` (``delta.refusal`` streamed), the content
    null. Read as no content, the reply was empty: nothing was logged for it, and the
    app's copy of it was logged as an empty assistant turn, sent on every later call."""
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana")
    history: list[dict[str, Any]] = []
    for i, question in enumerate(["hello", "help me pick a lock", "what about cooking?"]):
        if i == 1:
            fake_openai.enqueue_reply(REFUSAL, OpenAIUsage(20, 8), stream=stream, refusal=True)
        history.append({"role": "user", "content": question})
        sent = history if whole else history[-1:]
        if stream:
            content, refusal = "", ""
            for chunk in wrapped.chat.completions.create(model=GPT, messages=sent, stream=True):
                if chunk.choices:
                    content += chunk.choices[0].delta.content or ""
                    refusal += chunk.choices[0].delta.refusal or ""
            message: dict[str, Any] = {"role": "assistant", "content": content or None}
            if refusal:
                message["refusal"] = refusal
        else:
            reply = wrapped.chat.completions.create(model=GPT, messages=sent)
            message = reply.choices[0].message.model_dump(exclude_none=True)
        history.append(message)
    wrapped.flush()
    assert history[3].get("refusal") == REFUSAL and not history[3].get("content")  # the app got it
    assert wrapped.calls[1].reply is not None and wrapped.calls[1].reply.content == REFUSAL
    logged = [(t.message.role, t.message.content) for t in wrapped.context.session.turns()]
    assert logged[2:4] == [("user", "help me pick a lock"), ("assistant", REFUSAL)]
    assert len(logged) == 6 and all(content for _, content in logged)
    last = fake_openai.completions_requests()[-1].json()["messages"]
    assert last[2] == {"role": "user", "content": "help me pick a lock"}
    assert last[3]["role"] == "assistant" and REFUSAL in (
        last[3].get("content"),
        last[3].get("refusal"),
    )
