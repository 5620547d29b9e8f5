"""The window never sends a reply without the question it answers.

When the newest question and its reply together were larger than the room for the
turns but the reply alone fitted, the window's cut (newest first, by tokens alone) kept
the reply and dropped the question: at a 9,000-token budget with a system prompt of
about two thirds of it and replies of 1,260-1,380 words, requests opened on the
assistant's reply (a reply to no question; the Messages API expects a user turn
first). Now a reply goes in only with the user turn that opened its exchange; the
question last in the window (the current one) is always sent. Real ``anthropic`` SDK
client against the local fake, a real Memory on SQLite; plus the rule on the window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contextos.engine.window import Item, Segment, assemble
from contextos.llm.tokens import TOKENS_PER_REPLY
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder

anthropic = pytest.importorskip("anthropic")

from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402

#: About 6,000 tokens: two thirds of the budget (tests/test_wrap_history_room.py's).
SYSTEM = "You are a helpful assistant for Dana. " * 760
BUDGET = 9000
CALLS = 12


def _question(i: int) -> str:
    return f"Question {i} about the garden: what about thing {i % 4}? " + "detail " * 20


def _reply(body: dict[str, Any]) -> str:
    """A long reply: 1,260 to 1,380 words, longer or shorter by the request."""
    n = len(body["messages"])
    words = 1260 + (n * 37) % 121
    return f"Reply number {n}: " + " ".join(f"word{(n * 7 + k) % 97}" for k in range(words))


def test_a_long_reply_never_goes_without_its_question(tmp_path: Path) -> None:
    with (
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        FakeAnthropic(min_cache_tokens=512, reply=_reply) as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory, session="s1", user_id="dana", budget=BUDGET)
        for i in range(CALLS):
            wrapped.messages.create(
                model="claude-opus-5",
                max_tokens=64,
                system=SYSTEM,
                messages=[{"role": "user", "content": _question(i)}],
            )
        wrapped.flush()
        bodies = [r.json() for r in fake.messages_requests()]
    assert len(bodies) == CALLS
    for n, body in enumerate(bodies):
        messages = body["messages"]
        assert messages[0]["role"] == "user", (n, str(messages[0]["content"])[:60])
        assert messages[0]["content"][0]["text"].startswith("Question"), n
        assert messages[-1]["content"][-1]["text"] == _question(n)  # the current question
        roles = [m["role"] for m in messages]
        assert all(a != b for a, b in zip(roles, roles[1:], strict=False)), (n, roles)
    # some request had room for a reply alone, not with its question (what failed)
    assert any(len(b["messages"]) == 1 for b in bodies[1:])


def _turn(key: str, role: Any, tokens: int, **kw: Any) -> Item:
    return Item(key, key, tokens, role=role, **kw)


def _kept(items: list[Item], room: int) -> list[str]:
    seg = Segment("turns", "messages", tuple(items), keep="newest")
    return [b.key for b in assemble([seg], room + TOKENS_PER_REPLY).blocks]


def test_the_window_keeps_a_reply_only_with_its_question() -> None:
    chat = [_turn("q0", "user", 10), _turn("a0", "assistant", 10)]
    chat += [_turn("q1", "user", 30), _turn("a1", "assistant", 50)]
    assert _kept(chat, 100) == ["q0", "a0", "q1", "a1"]
    assert _kept(chat, 79) == []  # a1 fits alone, not with q1: neither goes, nor older
    assert _kept(chat, 80) == ["q1", "a1"]
    assert _kept(chat, 99) == ["q1", "a1"]  # a0 without q0 is not sent either
    # A long exchange (a task and its tool steps): the task stays before the newest
    # steps that fit, as compaction leaves it.
    task = [_turn("task", "user", 10)]
    for k in range(4):
        task += [
            _turn(f"call{k}", "assistant", 10, group=f"u{k}"),
            _turn(f"result{k}", "tool", 20, group=f"u{k}"),
        ]
    assert _kept(task, 70) == ["task", "call2", "result2", "call3", "result3"]
    assert _kept(task, 39) == []  # the newest step fits alone, not with its task
    # A pinned reply brings its question along.
    pinned = [_turn("q0", "user", 10), _turn("a0", "assistant", 10, pinned=True)]
    pinned += [_turn("q1", "user", 10), _turn("a1", "assistant", 60)]
    assert _kept(pinned, 40) == ["q0", "a0"]
