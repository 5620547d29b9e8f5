"""A long tool loop with extended thinking keeps the question that opened it.

Thinking blocks go back (and are counted) while their tool loop is open, but the turn
counts compaction read held no thinking: in a 12-step loop with about 1,600 tokens of
thinking a step, at a 12,000-token budget, compaction saw a small history and never
ran, and the window cut the oldest turns instead: from the eighth request on, the first
message sent was an assistant turn and the question was gone. Now compaction costs the
open loop's thinking as the window does, and when the loop's thinking still does not
fit (compaction off), the thinking of its older assistant turns goes first: the API
needs back only the thinking of the turn whose tool calls the results answer. The real
``anthropic`` SDK against the loopback fake (which refuses a loop whose last assistant
turn lost its thinking), a real Memory on SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contextos.engine.window import Item
from contextos.llm.media_tokens import THINKING_KEY, thinking_tokens
from contextos.llm.tokens import default_tokenizer
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message

anthropic = pytest.importorskip("anthropic")

from contextos.engine.session import context_window  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from test_media_tokens import Recording, sent_tokens  # noqa: E402

TOK = default_tokenizer()
MODEL = "claude-sonnet-4-6"
STEPS = 12
BUDGET = 12_000
QUESTION = "Question: look it all up, one fact at a time."
THOUGHT = "Let me think this through step by step, weighing each option. " * 120  # ~1,600
TOOLS = [
    {
        "name": "lookup",
        "description": "Look a fact up.",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
]
THINKING_ON = {"type": "enabled", "budget_tokens": 4000}


def _thinking(n: int) -> dict[str, Any]:
    return {"type": "thinking", "thinking": f"Step {n}. {THOUGHT}", "signature": f"sig{n}"}


def _is_result(message: dict[str, Any]) -> bool:
    content = message["content"]
    return isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)


def _model(body: dict[str, Any]) -> Any:
    """The fake model: thinks, then looks a fact up, :data:`STEPS` times; then answers."""
    n = sum(1 for m in body["messages"] if m["role"] == "assistant")
    steps = 0
    for message in reversed(body["messages"]):
        if message["role"] == "user" and not _is_result(message):
            break
        steps += message["role"] == "assistant"
    if steps >= STEPS:
        return [_thinking(n), {"type": "text", "text": "Done: every fact is in."}]
    call = {"type": "tool_use", "id": f"toolu_{n}", "name": "lookup", "input": {"q": f"q{n}"}}
    return [_thinking(n), call]


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    """Runs the agent loop through a wrapped client: (request bodies, the context)."""
    with (
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        FakeAnthropic(reply=_model) as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):

        def loop(compaction: Any) -> tuple[list[dict[str, Any]], Recording]:
            ctx = Recording(
                memory=memory,
                session=f"agent-{compaction}",
                user_id="ana",
                budget=BUDGET,
                background_commit=False,
                compaction=compaction,
            )
            wrapped = wrap(sdk, context=ctx)
            history: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
            for _ in range(STEPS + 1):
                reply = wrapped.messages.create(
                    messages=history,
                    model=MODEL,
                    max_tokens=8000,
                    tools=TOOLS,
                    thinking=THINKING_ON,
                )
                content = [b.model_dump(exclude_none=True) for b in reply.content]
                history.append({"role": "assistant", "content": content})
                calls = [b for b in content if b["type"] == "tool_use"]
                if not calls:
                    break
                result = {"type": "tool_result", "tool_use_id": calls[0]["id"], "content": "fact"}
                history.append({"role": "user", "content": [result]})
            bodies = [r.json() for r in fake.messages_requests()]
            return bodies, ctx

        yield loop


def _check(bodies: list[dict[str, Any]], ctx: Recording) -> None:
    """Every request opens on the question, ends its loop's last assistant turn with its
    thinking first, and sends no more than its window counted, within the budget."""
    assert len(bodies) == STEPS + 1 == len(ctx.windows)
    for n, (body, window) in enumerate(zip(bodies, ctx.windows, strict=True)):
        first = body["messages"][0]
        assert first["role"] == "user", (n, str(first["content"])[:80])
        assert first["content"][0]["text"] == QUESTION, n
        said = [m for m in body["messages"] if m["role"] == "assistant"]
        assert not said or said[-1]["content"][0]["type"] == "thinking", n
        assert sent_tokens(body, image=0) <= window.total_tokens <= window.budget, n


def _thought(message: dict[str, Any]) -> bool:
    return message["role"] == "assistant" and message["content"][0]["type"] == "thinking"


def test_compaction_sees_the_loops_thinking_and_runs_before_the_window_cuts(run: Any) -> None:
    bodies, ctx = run("summarize")
    _check(bodies, ctx)
    assert ctx.session is not None and ctx.session.state().compactions >= 2
    # compaction made the room: no window had to leave a turn or a thought out
    assert not [o for w in ctx.windows for o in w.overflow if o.segment == "turns"]
    assert all(_thought(m) for b in bodies for m in b["messages"] if m["role"] == "assistant")


def test_without_compaction_the_older_steps_lose_their_thinking_first(run: Any) -> None:
    bodies, ctx = run(None)
    _check(bodies, ctx)
    for n, body in enumerate(bodies):  # every step sent, none cut
        assert len(body["messages"]) == 2 * n + 1, n
    said = [m for m in bodies[-1]["messages"] if m["role"] == "assistant"]
    bare = [m for m in said if not _thought(m)]
    assert bare and said[-1] is not bare[-1]
    assert said[: len(bare)] == bare  # the oldest lost theirs, the newest kept theirs


def test_the_window_drops_older_loop_thinking_oldest_first_and_keeps_the_newest() -> None:
    blocks = [{"type": "thinking", "thinking": f"Step. {THOUGHT}", "signature": "s"}]
    cost = thinking_tokens(Message("assistant", "", metadata={THINKING_KEY: blocks}), TOK.count)
    items = [Item("turn:0", QUESTION, 20, role="user", message=Message("user", QUESTION))]
    for k in range(4):
        said = Message("assistant", f"step {k}", metadata={THINKING_KEY: blocks})
        items.append(Item(f"turn:{2 * k + 1}", said.content, 10, role="assistant", message=said))
        result = Message("tool", "fact", tool_call_id=f"c{k}")
        items.append(Item(f"turn:{2 * k + 2}", "fact", 10, role="tool", message=result))
    window = context_window(3 * cost, tokenizer=TOK, question=None, turns=items)
    keys = [b.key for b in window.blocks]
    assert keys == [i.key for i in items]  # every turn kept
    kept = [b.key for b in window.blocks if b.message and b.message.metadata.get(THINKING_KEY)]
    assert kept == ["turn:5", "turn:7"]  # the two newest kept theirs
    assert window.total_tokens <= window.budget
