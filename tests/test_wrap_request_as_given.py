"""Parts of a managed request that go out as the app gave them, as the bare SDK sends them.

- A tool with no ``parameters`` or no ``description`` went out as ``"parameters": {}``
  and ``"description": ""`` (a review): ``{}`` is a schema with no ``"type": "object"``
  root, which strict OpenAI-compatible servers refuse, where a function given without
  ``parameters`` is one of no arguments. Anthropic's renderer filled the description
  the same way. A tool that has them is the same canonical JSON as before, so its
  cached prefix and routing key hold.
- Leading system/developer messages all went out with the first one's role and no
  ``name`` (a review): a platform ``system`` message stacked on an app ``developer``
  one was sent as two ``system`` ones.

The real SDK clients against the loopback fakes, a real SQLite memory file.
"""

from __future__ import annotations

from typing import Any

import pytest

from contextos.memory import Memory
from contextos.providers import wrap
from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.testing.fake_openai import FakeOpenAI

GPT = "gpt-4.1-mini"
MODEL = "claude-sonnet-4"
WEATHER = {
    "name": "weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
#: The routing key and prefix hash of a request with WEATHER and "Be brief.", as the
#: release before this fix made them: a tool that has every field keeps its bytes.
KEY_BEFORE = "ctxos-265789188af452f7aaeb01f1"
PREFIX_BEFORE = "c85abc29b1dd5418d468f462f3d685a0cf54c57da5eeb1f6b86538a023b8e7c3"


def _function(**fields: Any) -> dict[str, Any]:
    return {"type": "function", "function": fields}


def test_an_openai_tool_goes_out_with_the_fields_the_app_gave(
    fake_openai: FakeOpenAI, openai_client: Any, memory: Memory
) -> None:
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana")
    tools = [
        _function(name="now"),
        _function(name="dice", description="Roll a die."),
        _function(name="echo", parameters={"type": "object", "properties": {}}),
    ]
    wrapped.chat.completions.create(
        model=GPT, messages=[{"role": "user", "content": "what time is it?"}], tools=tools
    )
    sent = fake_openai.completions_requests()[-1].json()["tools"]
    assert sorted(sent, key=lambda t: t["function"]["name"]) == sorted(
        tools, key=lambda t: t["function"]["name"]
    )


def test_a_tool_with_every_field_keeps_its_cached_bytes(
    fake_openai: FakeOpenAI, openai_client: Any, memory: Memory
) -> None:
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana", prompt_cache_key=True)
    wrapped.chat.completions.create(
        model=GPT,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        tools=[_function(**WEATHER)],
    )
    body = fake_openai.completions_requests()[-1].json()
    assert body["tools"] == [_function(**WEATHER)]
    assert body["prompt_cache_key"] == KEY_BEFORE
    assert wrapped.calls[-1].prefix_hash == PREFIX_BEFORE


def test_an_anthropic_tool_without_a_description_goes_out_without_one(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
) -> None:
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    schema = {"type": "object", "properties": {}}
    tools = [
        {"name": "now", "input_schema": schema},
        {"name": "dice", "description": "Roll a die.", "input_schema": schema},
    ]
    wrapped.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}], tools=tools
    )
    sent = fake_anthropic.messages_requests()[-1].json()["tools"]
    assert [{k: v for k, v in t.items() if k != "cache_control"} for t in sent] == tools


@pytest.mark.parametrize(
    "leading",
    [
        [
            {"role": "system", "content": "Platform rules.", "name": "platform"},
            {"role": "developer", "content": "App rules."},
        ],
        [
            {"role": "developer", "content": "App rules."},
            {"role": "system", "content": "Tenant rules.", "name": "tenant"},
            {"role": "developer", "content": "Be brief."},
        ],
    ],
)
def test_leading_instructions_keep_each_its_own_role_and_name(
    fake_openai: FakeOpenAI, openai_client: Any, memory: Memory, leading: list[dict[str, Any]]
) -> None:
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana")
    history: list[dict[str, Any]] = [*leading, {"role": "user", "content": "hi"}]
    for _ in range(2):  # the second call sends them before the logged history
        reply = wrapped.chat.completions.create(model=GPT, messages=history)
        sent = fake_openai.completions_requests()[-1].json()["messages"]
        assert sent[: len(leading)] == leading
        history += [
            {"role": "assistant", "content": reply.choices[0].message.content},
            {"role": "user", "content": "and then?"},
        ]
