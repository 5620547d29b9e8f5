"""``wrap(..., memory_tools=True)``: the model updates its ``human`` block through the tool
loop (fake Anthropic and OpenAI servers) and later answers from it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from agent_scripts import (
    anthropic_text,
    anthropic_tool_use,
    close_sdk_clients,  # noqa: F401 - autouse: closes the SDK clients
    openai_text,
    openai_tool_calls,
    opened,
    tool_results,
)
from contextos import Memory, wrap
from contextos.agent.core_memory import CoreMemory
from contextos.agent.tools import ENTRY_CHARS
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


def test_anthropic_model_updates_human_then_answers_from_it(memory: Memory) -> None:
    with FakeAnthropic(reply=answer_from_core) as fake:
        sdk = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="test"))
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
        sdk = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="test"))
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
        sdk = opened(openai.OpenAI(base_url=fake.base_url, api_key="test"))
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
        sdk = opened(openai.OpenAI(base_url=fake.base_url, api_key="test"))
        later = wrap(sdk, memory=memory, session="o2", user_id="ana", memory_tools=True)
        reply = later.chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": "Where do I live?"}]
        )
        assert reply.choices[0].message.content == "You live in Porto."
        later.flush()


def test_memory_tools_needs_memory_and_refuses_streams(memory: Memory) -> None:
    sdk = opened(anthropic.Anthropic(base_url="http://127.0.0.1:9", api_key="test"))
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


def scripted_agent(edit_turns: set[int]) -> Any:
    """A model for the fake server: on turns in ``edit_turns`` it first appends a fact to
    its ``human`` block, then answers; the fake prices every request's cache use."""

    def reply(body: dict[str, Any]) -> str | list[dict[str, Any]]:
        # the newest tool result or question, looking back past retrieved memories
        i = -1
        for message in reversed(body["messages"]):
            content = message["content"]
            blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
            if any(b.get("type") == "tool_result" for b in blocks):
                return "Saved that; here is my answer."
            text = " ".join(b.get("text", "") for b in blocks if b.get("type") == "text")
            found = re.match(r"Turn (\d+):", text)
            if message["role"] == "user" and found:
                i = int(found.group(1))
                break
        if i in edit_turns:
            return [
                {
                    "type": "tool_use",
                    "id": f"toolu_{i}",
                    "name": "core_memory_append",
                    "input": {"label": "human", "content": f"Fact from turn {i}."},
                }
            ]
        return f"Answer {i}: first list the constraints, then compare two options, then pick one."

    return reply


def read_share(tmp_path: Path, name: str, live: bool) -> tuple[float, int]:
    from contextos.agent import AgentTools, CorePrefix, ToolLoop
    from contextos.agent.bench import SYSTEM

    edits = {3, 9, 15, 21, 27}
    with (
        Memory(tmp_path / f"{name}.db", embedder=HashEmbedder(), background_embedding=False) as m,
        FakeAnthropic(reply=scripted_agent(edits), min_cache_tokens=1024) as fake,
    ):
        sdk = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="test"))
        core = CoreMemory(m, user_id="ana")
        option: Any = True
        if live:
            option = ToolLoop(AgentTools(core), "anthropic", prefix=CorePrefix(core, live=True))
        client = wrap(sdk, memory=m, session=name, user_id="ana", memory_tools=option)
        for i in range(30):
            client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=256,
                system=SYSTEM,
                messages=[{"role": "user", "content": f"Turn {i}: help me plan item {i}, please."}],
            )
        client.flush()
        assert len(core.get("human").value.splitlines()) == 5
        total = client.calls.total()
        inputs = (
            total.input_tokens + total.cache_read_input_tokens + total.cache_creation_input_tokens
        )
        return total.cache_read_input_tokens / inputs, len(client.calls)


def test_thirty_turns_with_five_core_edits_through_wrap_keep_the_cache(tmp_path: Path) -> None:
    """End to end (wrap + the fake server's prompt cache), not only the simulator."""
    snapshot, calls = read_share(tmp_path, "snap", live=False)
    live, _ = read_share(tmp_path, "live", live=True)
    print(f"cache-read share through wrap: snapshot={snapshot:.3f} live={live:.3f} ({calls} calls)")
    assert calls == 35
    assert snapshot >= 0.7
    assert live < snapshot


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_memory_tools_refuse_the_stream_and_parse_helpers_before_sending(
    memory: Memory, provider: str
) -> None:
    """The loop runs inside ``create()`` only: through ``stream(...)`` or ``parse(...)`` a
    request went out without the memory tools and core memory, and a turn answering a
    parallel tool call without our results, which forked the session log."""
    messages = [{"role": "user", "content": "hello"}]
    with FakeAnthropic() if provider == "anthropic" else FakeOpenAI() as fake:
        if provider == "anthropic":
            sdk = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0))
            client = wrap(sdk, memory=memory, session="s", user_id="ana", memory_tools=True)
            kw: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 8}
            helpers = [client.messages.stream, client.beta.messages.stream]
        else:
            sdk = opened(openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0))
            client = wrap(sdk, memory=memory, session="s", user_id="ana", memory_tools=True)
            kw = {"model": "gpt-4.1-mini"}
            helpers = [client.chat.completions.stream, client.chat.completions.parse]
        for helper in helpers:
            with pytest.raises(TypeError, match="memory_tools runs a tool loop"):
                helper(messages=messages, **kw)
        assert fake.requests == []
        assert client.context.session.turns() == []


def test_archival_search_shows_a_long_passage_around_its_match(memory: Memory) -> None:
    """A passage may be 100,000 characters; five came back whole as one 450,004-character
    tool result, sent again on every later call (a review, s57). It is bounded as a
    conversation_search entry is (``ENTRY_CHARS``), around the query's word."""
    passage = "clause text " * 4_000 + "The ACME penalty is 12 percent. " + "more text " * 4_000
    with FakeAnthropic() as fake:
        sdk = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="test"))
        client = wrap(sdk, memory=memory, session="s1", user_id="ana", memory_tools=True)
        fake.enqueue(
            anthropic_tool_use(("archival_memory_insert", {"content": passage})),
            anthropic_text("Stored."),
            anthropic_tool_use(("archival_memory_search", {"query": "ACME penalty"})),
            anthropic_text("12 percent."),
        )
        messages: list[dict[str, Any]] = []
        for ask in ("Keep this contract.", "What is the ACME penalty?"):
            messages.append({"role": "user", "content": ask})
            reply = client.messages.create(
                model="claude-sonnet-4-6", max_tokens=64, messages=messages
            )
            messages.append({"role": "assistant", "content": reply.content[0].text})
        found = tool_results(fake.messages_requests()[3].json())[-1]
    assert found.startswith("1. [47,") and "The ACME penalty is 12 percent." in found
    assert "characters after]" in found and len(found) < ENTRY_CHARS + 100
