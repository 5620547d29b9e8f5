"""A user's message whose streamed answer was stopped is remembered, once.

A chat app's "stop generating" button, a closed tab or a dropped connection cuts the
stream of the answer. The cut reply is no answer and is not remembered; but the user's
own message, said whole, was dropped with it: "I am vegetarian. A long lasagna recipe,
please", stopped, then another question, and the fact was never found again (a
review). Now the question is remembered at the cut, and a retry of it (answered whole
this time) does not remember it a second time. The real SDK clients against the
loopback fakes, a real SQLite memory file.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import (  # noqa: E402
    AnthropicUsage,
    FakeAnthropic,
    message_start,
)
from contextos.testing.fake_http import FakeResponse, SSEEvent  # noqa: E402
from contextos.testing.fake_openai import OpenAIUsage  # noqa: E402
from sdk_support import fake_and_sdk  # noqa: E402

STATED = "I am vegetarian. Give me a long lasagna recipe."


@pytest.fixture(params=["anthropic", "openai"])
def chat(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any, Memory]]:
    """The fake server, a wrapped client of it for Ana's session, and the memory."""
    provider = request.param
    server, sdk = fake_and_sdk(provider)
    with (
        server() as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        sdk(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        yield fake, wrap(client, memory=memory, session="s", user_id="ana"), memory


def ask(fake: Any, wrapped: Any, question: str, *, stop_after: int | None = None) -> None:
    """Ask ``question`` with a streamed answer; read it whole, or close the stream after
    ``stop_after`` events (the app's stop button)."""
    if isinstance(fake, FakeAnthropic):
        fake.enqueue_reply("a long answer " * 40, AnthropicUsage(10, 80), stream=True)
        stream = wrapped.messages.create(
            model="claude-sonnet-4",
            max_tokens=256,
            messages=[{"role": "user", "content": question}],
            stream=True,
        )
    else:
        fake.enqueue_reply("a long answer " * 40, OpenAIUsage(10, 80), stream=True)
        stream = wrapped.chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": question}], stream=True
        )
    for n, _event in enumerate(stream):
        if stop_after is not None and n + 1 >= stop_after:
            stream.close()
            break
    wrapped.flush()


def user_memories(memory: Memory) -> list[str]:
    return [r.text for r in memory.get_all(user_id="ana") if r.metadata.get("role") == "user"]


@pytest.mark.parametrize("stop_after", [1, 3])  # 1: before any text came
def test_a_question_whose_answer_was_stopped_is_remembered(
    chat: tuple[Any, Any, Memory], stop_after: int
) -> None:
    fake, wrapped, memory = chat
    ask(fake, wrapped, STATED, stop_after=stop_after)
    assert wrapped.calls[-1].complete is False
    assert user_memories(memory) == [STATED]
    assert not any("a long answer" in r.text for r in memory.get_all(user_id="ana"))
    ask(fake, wrapped, "Thanks. Something quicker?")
    assert sorted(user_memories(memory)) == sorted([STATED, "Thanks. Something quicker?"])
    assert memory.search("vegetarian", user_id="ana")[0].record.text == STATED


def test_a_retry_after_a_stopped_answer_remembers_the_question_once(
    chat: tuple[Any, Any, Memory],
) -> None:
    fake, wrapped, memory = chat
    ask(fake, wrapped, STATED, stop_after=3)
    ask(fake, wrapped, STATED, stop_after=2)  # stopped again
    ask(fake, wrapped, STATED)  # answered whole
    assert [c.complete for c in wrapped.calls] == [False, False, True]
    assert user_memories(memory) == [STATED]
    replies = [r for r in memory.get_all(user_id="ana") if r.metadata.get("role") == "assistant"]
    assert len(replies) == 1 and replies[0].text.startswith("a long answer")


def test_a_cut_reply_reported_after_its_retrys_answer_is_not_logged(tmp_path: Path) -> None:
    # A request cancelled while its stream's read was blocked (an asyncio task timed
    # out, its thread still in next()); the user retried at once and got the whole
    # answer; then the blocked read ended and its fragment was logged after that answer,
    # so the log read: question, answer, fragment (a review).
    with (
        FakeAnthropic() as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory=memory, session="s", user_id="ana")
        text = {"type": "text", "text": ""}
        first = [
            message_start("msg_cut", "claude-sonnet-4", AnthropicUsage(5, 1)),
            {"type": "content_block_start", "index": 0, "content_block": text},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Your pl"},
            },
        ]
        events = [SSEEvent(json.dumps(e), e["type"]) for e in first]
        fake.enqueue(FakeResponse(events=events, cut="stall", stall_seconds=1.5))
        question = [{"role": "user", "content": "what is my plan?"}]
        reading = threading.Event()

        def abandoned() -> None:
            stream = wrapped.messages.create(
                model="claude-sonnet-4", max_tokens=64, messages=question, stream=True
            )
            with contextlib.suppress(Exception):  # the connection drops after the stall
                for _ in stream:
                    reading.set()

        first_try = threading.Thread(target=abandoned)
        first_try.start()
        assert reading.wait(10)
        fake.enqueue_reply("Your plan is to rest.", AnthropicUsage(5, 6), stream=True)
        retry = wrapped.messages.create(
            model="claude-sonnet-4", max_tokens=64, messages=question, stream=True
        )
        for _ in retry:
            pass
        wrapped.flush()
        first_try.join(30)
        wrapped.flush()
        turns = [(t.message.role, t.message.content) for t in wrapped.context.session.turns()]
        assert turns == [("user", "what is my plan?"), ("assistant", "Your plan is to rest.")]
        assert sorted(r.text for r in memory.get_all(user_id="ana")) == [
            "Your plan is to rest.",
            "what is my plan?",
        ]
