"""OpenAI Chat Completions through the wrapper: instruction turns mid-conversation.

The real ``openai`` SDK client against the loopback fake; the app keeps its own
history and sends all of it every call.
"""

from __future__ import annotations

from typing import Any

import pytest

openai = pytest.importorskip("openai")

from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI  # noqa: E402

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
