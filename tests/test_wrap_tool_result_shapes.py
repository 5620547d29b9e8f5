"""Tool results in the richer shapes of Anthropic's API, through ``wrap()`` with a session
(a review of non-text content): ``search_result`` blocks (the documented shape of a RAG
tool's results) are counted and logged as their text, and ``cache_control`` markers an
agent puts inside a tool result's content are not logged and sent back on every later
call. The real SDK client against the loopback fake (which counts nested markers against
the API's four), a real SQLite memory file."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.engine.session import Session  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import AnthropicUsage, FakeAnthropic  # noqa: E402
from test_media_tokens import png  # noqa: E402

TOOLS = [
    {
        "name": "kb_search",
        "description": "search the knowledge base",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
]
MODEL = "claude-sonnet-4-6"
SCREENSHOT = base64.b64encode(png(64, 48)).decode()


def _agent(steps: int) -> Any:
    """A scripted model: a tool call on each of the first ``steps`` turns, then "done"."""
    made = {"n": 0}

    def reply(body: dict[str, Any]) -> Any:
        made["n"] += 1
        if made["n"] <= steps:
            call = {"type": "tool_use", "id": f"tu_{made['n']}", "name": "kb_search"}
            return [{**call, "input": {"q": "refunds"}}]
        return "done"

    return reply


def _step(client: Any, messages: list[dict[str, Any]], **extra: Any) -> str | None:
    """One call of the agent loop: the reply appended to ``messages`` as the app keeps
    it; the id of the tool call it made (None: it answered)."""
    reply = client.messages.create(
        model=MODEL, max_tokens=100, tools=TOOLS, messages=messages, **extra
    )
    messages.append({"role": "assistant", "content": [b.model_dump() for b in reply.content]})
    calls = [b.id for b in reply.content if b.type == "tool_use"]
    return calls[0] if calls else None


def _results(call: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    """A user turn with the results of ``call``."""
    return {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call, "content": content}],
    }


def _markers(value: Any) -> int:
    if isinstance(value, dict):
        return ("cache_control" in value) + sum(_markers(v) for v in value.values())
    if isinstance(value, list):
        return sum(_markers(v) for v in value)
    return 0


def test_search_results_count_in_the_budget_and_are_logged_as_text(tmp_path: Path) -> None:
    """Each result here is ~5,600 tokens: read as nothing, four of them went out under a
    12,000-token budget (29k tokens), the log held empty tool turns, and compaction never
    began."""
    passage = "Refunds are issued within 30 days of purchase when the item is unused. " * 400
    budget = 12_000
    with (
        FakeAnthropic(reply=_agent(4)) as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        client = wrap(sdk, memory, "rag", user_id="ana", budget=budget)
        messages: list[dict[str, Any]] = [{"role": "user", "content": "What is the refund policy?"}]
        for _ in range(5):
            call = _step(client, messages)
            if call is None:
                break
            result = {
                "type": "search_result",
                "source": "https://kb.example/refunds",
                "title": "Refund policy",
                "content": [{"type": "text", "text": passage}],
            }
            messages.append(_results(call, [result]))
        client.flush()
        sizes = [len(json.dumps(r.json())) / 4 for r in fake.messages_requests()]
        assert len(sizes) == 5
        assert max(sizes) <= budget, sizes  # at 4 characters a token, as the reviewer measured
        tools_logged = [
            t for t in Session(memory, "rag", user_id="ana").turns() if t.message.role == "tool"
        ]
        assert len(tools_logged) == 4
        for turn in tools_logged:
            assert turn.message.content.startswith("Refund policy https://kb.example/refunds\n")
            assert turn.tokens > 5000


def test_markers_inside_tool_results_are_not_sent_back_from_the_log(tmp_path: Path) -> None:
    """The agent marks only its newest result's content for caching and takes the mark off
    the older ones: logged with their marks, every old result came back marked, one more
    each step, and the fifth request held five (the API refuses more than four)."""
    with (
        FakeAnthropic(reply=_agent(5)) as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        client = wrap(sdk, memory, "marks", user_id="ana")
        messages: list[dict[str, Any]] = [{"role": "user", "content": "Look it up. " * 300}]
        for step in range(5):
            call = _step(client, messages, system="You are an agent. " * 300)
            body = fake.messages_requests()[-1].json()
            assert _markers(body) <= 4, (step, _markers(body))
            # Inside tool results none: the window places the breakpoints (as it does for
            # a mark on a tool_result block itself), not the app's marks from the log.
            results = [
                b
                for m in body["messages"]
                if isinstance(m["content"], list)
                for b in m["content"]
                if b.get("type") == "tool_result"
            ]
            assert _markers([r["content"] for r in results]) == 0, step
            for message in messages:  # the app moves its mark to the newest result
                for block in message["content"] if isinstance(message["content"], list) else ():
                    for part in (
                        block.get("content", []) if block.get("type") == "tool_result" else ()
                    ):
                        part.pop("cache_control", None)
            assert call is not None
            shot = {"type": "base64", "media_type": "image/png", "data": SCREENSHOT}
            content = [
                {"type": "text", "text": f"screenshot {step}"},
                {"type": "image", "source": shot, "cache_control": {"type": "ephemeral"}},
            ]
            messages.append(_results(call, content))
        client.flush()
        assert len(fake.messages_requests()) == 5


def test_the_fake_counts_markers_nested_in_tool_results_as_the_api_does() -> None:
    # The fake let five markers through when some were inside a tool result's content,
    # so no test could see a request the API refuses.
    inner = [
        {"type": "text", "text": f"r{i}", "cache_control": {"type": "ephemeral"}} for i in range(5)
    ]
    messages = [
        {"role": "user", "content": "Look it up."},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "tu_1", "name": "kb_search", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": inner}],
        },
    ]
    with (
        FakeAnthropic() as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        with pytest.raises(anthropic.BadRequestError, match="A maximum of 4 blocks"):
            sdk.messages.create(model=MODEL, max_tokens=10, tools=TOOLS, messages=messages)
        fake.enqueue_reply("ok", AnthropicUsage(5, 1))
        sdk.messages.create(
            model=MODEL,
            max_tokens=10,
            tools=TOOLS,
            messages=[
                *messages[:2],
                {**messages[2], "content": [{**messages[2]["content"][0], "content": inner[:4]}]},
            ],
        )


def test_an_offload_stores_no_memory_of_turns_that_were_only_images(tmp_path: Path) -> None:
    """Image-only questions and screenshot results are logged as "[image]"; the offload
    compaction archived them as memories, and a search for "image" found a page of them
    (a review). A wrapped call itself remembers none of them."""
    made = {"n": 0}

    def reply(body: dict[str, Any]) -> Any:
        made["n"] += 1
        if made["n"] % 2:
            return [{"type": "tool_use", "id": f"tu_{made['n']}", "name": "kb_search", "input": {}}]
        return f"Looks fine ({made['n']})."

    big = base64.b64encode(png(1092, 1092)).decode()  # about 1,590 tokens an image
    shot = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": big},
    }
    with (
        FakeAnthropic(reply=reply) as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        client = wrap(sdk, memory, "shots", user_id="ana", budget=6000, compaction="offload")
        messages: list[dict[str, Any]] = []
        for _ in range(8):
            messages.append({"role": "user", "content": [shot]})
            for _ in range(2):  # the tool call, then the answer after its result
                call = _step(client, messages)
                if call is None:
                    break
                messages.append(_results(call, [shot]))
        client.flush()
        texts = [r.text for r in memory.get_all(user_id="ana", limit=500)]
        assert any(t.startswith("Looks fine") for t in texts)
        archived = [r for r in memory.get_all(user_id="ana", limit=500) if "turn_seq" in r.metadata]
        assert archived, "no turn was offloaded: the budget is not small enough"
        assert "[image]" not in texts, texts
