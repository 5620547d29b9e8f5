"""The question that opened a tool loop keeps its images on the loop's later steps
(a review of non-text content): the app resends "what is wrong in this screenshot?" with
the screenshot on every step of its agent loop, but a logged user turn is sent as its
text, so every step after the first went out as "[image] what is wrong..." and the model
answered without the screenshot. Once a new question closes the loop, that turn is text
again. The real SDK clients against the loopback fakes, a real SQLite memory file."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI  # noqa: E402
from sdk_support import openai_tool_call  # noqa: E402
from test_media_tokens import SCREEN_TOKENS, Recording, png, sent_tokens  # noqa: E402

SCREENSHOT = base64.b64encode(png(1092, 1092)).decode()  # about 1,590 tokens
QUESTION = "What is wrong in this screenshot?"
CLAUDE = "claude-sonnet-4-6"
GPT = "gpt-4.1-mini"


def _anthropic_agent(steps: int) -> Any:
    """A scripted model: a tool call on each of the first ``steps`` turns, then "done"."""
    made = {"n": 0}

    def reply(body: dict[str, Any]) -> Any:
        made["n"] += 1
        if made["n"] <= steps:
            return [{"type": "tool_use", "id": f"tu_{made['n']}", "name": "logs", "input": {}}]
        return "done"

    return reply


def _images(message: dict[str, Any]) -> int:
    content = message.get("content")
    if not isinstance(content, list):
        return 0
    return sum(1 for part in content if part.get("type") in ("image", "image_url"))


def _anthropic_loop(
    tmp_path: Path,
    budget: int | None = None,
    earlier: int = 0,
    steps: int = 2,
    result: str = "",
    system: str = "You debug build servers.",
) -> tuple[list[dict[str, Any]], Recording]:
    """``earlier`` exchanges, then a question with a screenshot, two tool steps and a new
    question: the body of each request the fake received, and the windows built."""
    tools = [{"name": "logs", "description": "read the logs", "input_schema": {"type": "object"}}]
    question = {
        "role": "user",
        "content": [
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": SCREENSHOT},
            },
            {"type": "text", "text": QUESTION},
        ],
    }
    chatter = "We talked about the build server, its disks and the nightly jobs. " * 10
    with (
        FakeAnthropic(reply=_anthropic_agent(steps)) as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        ctx = Recording(
            memory=memory, session="debug", user_id="ana", budget=budget, background_commit=False
        )
        client = wrap(sdk, context=ctx)
        messages: list[dict[str, Any]] = []
        for n in range(earlier):
            messages.append({"role": "user", "content": f"Earlier note {n}: {chatter}"})
            messages.append({"role": "assistant", "content": f"Noted {n}. {chatter}"})
        messages.append(question)
        for _ in range(steps + 1):
            reply = client.messages.create(
                model=CLAUDE, max_tokens=100, system=system, tools=tools, messages=messages
            )
            messages.append(
                {"role": "assistant", "content": [b.model_dump() for b in reply.content]}
            )
            calls = [b.id for b in reply.content if b.type == "tool_use"]
            if not calls:
                break
            said = {
                "type": "tool_result",
                "tool_use_id": calls[0],
                "content": result or "disk full",
            }
            messages.append({"role": "user", "content": [said]})
        messages.append({"role": "user", "content": "Thanks. How do I free space?"})
        client.messages.create(
            model=CLAUDE, max_tokens=100, system=system, tools=tools, messages=messages
        )
        client.flush()
        return [r.json() for r in fake.messages_requests()], ctx


def test_anthropic_loop_steps_send_the_questions_screenshot(tmp_path: Path) -> None:
    bodies, _ = _anthropic_loop(tmp_path)
    sent = [b["messages"] for b in bodies]
    assert len(sent) == 4
    for step in sent[:3]:  # the question, then each step of its loop
        assert sum(_images(m) for m in step) == 1, step
    openers = [m for m in sent[1] if m["role"] == "user" and _images(m)]
    assert openers[0]["content"][-1]["text"] == QUESTION  # its blocks as given, in order
    # a new question closes the loop: the old one is its text again
    assert sum(_images(m) for m in sent[3]) == 0
    assert any(QUESTION in str(m["content"]) for m in sent[3])


def test_anthropic_loop_counts_the_screenshot_in_the_budget(tmp_path: Path) -> None:
    """What a step sends is what its window counted, within the budget: uncounted, the
    screenshot went out beside as many earlier turns as its text alone left room for,
    about 1,600 tokens over. Compaction counts it too, so it makes the room, and the
    window does not cut the oldest turns instead (compaction is on by default)."""
    budget = 4_000
    bodies, ctx = _anthropic_loop(tmp_path, budget=budget, earlier=12)
    assert len(bodies) == 4 == len(ctx.windows)
    # compaction made the room, the screenshot counted: no window had to leave a turn out
    assert not [o for w in ctx.windows for o in w.overflow if o.segment == "turns"]
    for n, (body, window) in enumerate(zip(bodies, ctx.windows, strict=True)):
        assert sent_tokens(body, image=SCREEN_TOKENS) <= window.total_tokens <= budget, n
        if n < 3:
            assert sum(_images(m) for m in body["messages"]) == 1, n


def _openai_call(call_id: str) -> Any:
    call = {"id": call_id, "type": "function", "function": {"name": "logs", "arguments": "{}"}}
    return openai_tool_call(call, GPT)


def test_openai_loop_steps_send_the_questions_screenshot(tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {"name": "logs", "parameters": {"type": "object"}}}]
    url = f"data:image/png;base64,{SCREENSHOT}"
    question = {
        "role": "user",
        "content": [
            {"type": "text", "text": QUESTION},
            {"type": "image_url", "image_url": {"url": url}},
        ],
    }
    with (
        FakeOpenAI() as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        client = wrap(sdk, memory, "debug", user_id="ana")
        messages: list[dict[str, Any]] = [question]
        for n in (1, 2):
            fake.enqueue(_openai_call(f"call_{n}"))
            reply = client.chat.completions.create(model=GPT, tools=tools, messages=messages)
            messages.append(reply.choices[0].message.model_dump(exclude_none=True))
            messages.append({"role": "tool", "tool_call_id": f"call_{n}", "content": "disk full"})
        client.chat.completions.create(model=GPT, tools=tools, messages=messages)
        messages.append({"role": "assistant", "content": "echo"})
        messages.append({"role": "user", "content": "Thanks. How do I free space?"})
        client.chat.completions.create(model=GPT, tools=tools, messages=messages)
        client.flush()
        sent = [r.json()["messages"] for r in fake.completions_requests()]
    assert len(sent) == 4
    for step in sent[:3]:
        assert sum(_images(m) for m in step) == 1, step
    assert sum(_images(m) for m in sent[3]) == 0


def test_compaction_counts_the_screenshot_of_a_long_loop(tmp_path: Path) -> None:
    """Long instructions leave the history less room than its share: compaction must
    count the screenshot its loop sends on every step, or it leaves too much of the loop,
    and the window cuts its turns instead (every other step here, before)."""
    rules = "Rule: always check the disks, then the logs, then the jobs. " * 150
    bodies, ctx = _anthropic_loop(
        tmp_path,
        budget=5_000,
        steps=8,
        result="log line: disk /dev/sda1 is full. " * 60,
        system=rules,
    )
    assert len(bodies) == 10 == len(ctx.windows)
    assert not [o for w in ctx.windows for o in w.overflow if o.segment == "turns"]
    for n, (body, window) in enumerate(zip(bodies, ctx.windows, strict=True)):
        assert sent_tokens(body, image=SCREEN_TOKENS) <= window.total_tokens <= 5_000, n
        assert sum(_images(m) for m in body["messages"]) == (n < 9), n


def test_the_loops_question_counts_as_its_own_blocks_for_the_cache_lookback() -> None:
    """The API looks back 20 content blocks from a breakpoint for an earlier entry: the
    question a loop sends as its own blocks is that many, not one text block."""
    from contextos.engine.window import Block, content_blocks
    from contextos.types import Message

    blocks = [{"type": "image", "source": {}}, {"type": "text", "text": QUESTION}] * 3
    given = Message("user", QUESTION, metadata={"wire": ("anthropic", {"content": blocks})})
    assert content_blocks(Block("turns", "messages", "turn:0", "user", QUESTION, 10, given)) == 6
    logged = Message("user", QUESTION)
    assert content_blocks(Block("turns", "messages", "turn:0", "user", QUESTION, 10, logged)) == 1
