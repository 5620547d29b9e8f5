"""``wrap(..., memory_tools=True)``: the model updates its ``human`` block through the tool
loop (fake Anthropic and OpenAI servers) and later answers from it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from agent_scripts import (
    anthropic_text,
    anthropic_tool_use,
    openai_text,
    openai_tool_calls,
    tool_results,
)
from contextos import Memory, wrap
from contextos.agent.core_memory import CoreMemory
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.testing.fake_openai import FakeOpenAI

FACT = "Name: Ana. Lives in Porto since May."


def answer_from_core(body: dict[str, Any]) -> str:
    """A scripted model that answers only from the core memory block in its prompt."""
    text = json.dumps(body)
    found = re.search(r'<human chars=\\"\d+/\d+\\">\\n([^<]*)\\n</human>', text)
    if found and "Porto" in found.group(1):
        return "You live in Porto."
    return "I don't know where you live."


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    m = Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False)
    yield m
    m.close()


def test_anthropic_model_updates_human_then_answers_from_it(memory: Memory) -> None:
    with FakeAnthropic(reply=answer_from_core) as fake:
        sdk = anthropic.Anthropic(base_url=fake.base_url, api_key="test")
        client = wrap(
            sdk,
            memory=memory,
            session="s1",
            user_id="ana",
            memory_tools=True,
            background_commit=False,
        )
        fake.enqueue(
            anthropic_tool_use(
                ("core_memory_append", {"label": "human", "content": FACT}), input_tokens=321
            ),
            anthropic_text("Nice to meet you, Ana!", input_tokens=40, cache_read=300),
        )
        reply = client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=256,
            system="You are a helpful assistant.",
            messages=[{"role": "user", "content": "Hi, I'm Ana; I moved to Porto in May."}],
        )
        assert reply.content[0].text == "Nice to meet you, Ana!"
        assert CoreMemory(memory, user_id="ana").get("human").value == FACT
        # each request of the loop is recorded with its own usage
        assert [c.usage.input_tokens for c in client.calls] == [321, 40]
        assert client.calls[1].usage.cache_read_input_tokens == 300
        bodies = [r.json() for r in fake.messages_requests()]
        assert {t["name"] for t in bodies[0]["tools"]} >= {
            "core_memory_append",
            "conversation_search",
        }
        assert tool_results(bodies[1]) == [f"Core memory block 'human' is now:\n{FACT}"]
        # the session log holds the whole loop: question, tool call, result, answer
        roles = [t.message.role for t in client.context.session.turns()]
        assert roles == ["user", "assistant", "tool", "assistant"]

    # a later session: the pinned block carries the fact, and the model answers from it
    with FakeAnthropic(reply=answer_from_core) as fake:
        sdk = anthropic.Anthropic(base_url=fake.base_url, api_key="test")
        later = wrap(sdk, memory=memory, session="s2", user_id="ana", memory_tools=True)
        reply = later.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=256,
            messages=[{"role": "user", "content": "Where do I live?"}],
        )
        assert reply.content[0].text == "You live in Porto."
        later.flush()


def test_openai_model_updates_human_then_answers_from_it(memory: Memory) -> None:
    with FakeOpenAI(reply=answer_from_core) as fake:
        sdk = openai.OpenAI(base_url=fake.base_url, api_key="test")
        client = wrap(sdk, memory=memory, session="o1", user_id="ana", memory_tools=True)
        fake.enqueue(
            openai_tool_calls(
                ("core_memory_append", {"label": "human", "content": "Lives in Lisbon."}),
                prompt_tokens=210,
            ),
            openai_tool_calls(
                (
                    "core_memory_replace",
                    {"label": "human", "old_content": "Lisbon", "new_content": "Porto"},
                ),
                ("core_memory_append", {"label": "nope", "content": "x"}),
                prompt_tokens=260,
            ),
            openai_text("Got it.", prompt_tokens=300),
        )
        reply = client.chat.completions.create(
            model="gpt-4.1-mini",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "I live in Porto now, not Lisbon."},
            ],
        )
        client.flush()
        assert reply.choices[0].message.content == "Got it."
        assert CoreMemory(memory, user_id="ana").get("human").value == "Lives in Porto."
        assert [c.usage.input_tokens for c in client.calls] == [210, 260, 300]
        bodies = [r.json() for r in fake.completions_requests()]
        results = tool_results(bodies[2])
        assert results[-2] == "Core memory block 'human' is now:\nLives in Porto."
        assert results[-1].startswith("Error: No core memory block 'nope'")

        fake.clear()
        reply = client.chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": "Where do I live?"}]
        )
        client.flush()
    # in the same session the snapshot waits for a compaction point, but the edit is in
    # the history the model reads (the tool results above), so a new session is asked:
    with FakeOpenAI(reply=answer_from_core) as fake:
        sdk = openai.OpenAI(base_url=fake.base_url, api_key="test")
        later = wrap(sdk, memory=memory, session="o2", user_id="ana", memory_tools=True)
        reply = later.chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": "Where do I live?"}]
        )
        assert reply.choices[0].message.content == "You live in Porto."
        later.flush()


def test_memory_tools_needs_memory_and_refuses_streams(memory: Memory) -> None:
    sdk = anthropic.Anthropic(base_url="http://127.0.0.1:9", api_key="test")
    with pytest.raises(TypeError, match="needs memory"):
        wrap(sdk, memory_tools=True)
    client = wrap(sdk, memory=memory, user_id="ana", memory_tools=True)
    with pytest.raises(TypeError, match="stream"):
        client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=8,
            stream=True,
            messages=[{"role": "user", "content": "x"}],
        )
