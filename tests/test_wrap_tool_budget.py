"""A tool result bigger than the budget leaves room for is refused with a clear
``BudgetError`` before anything is sent, like a question over the budget -- never
sent as an empty conversation (the real SDK against the fake, a real SQLite file).
"""

from __future__ import annotations

from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.errors import BudgetError  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402

MODEL = "claude-sonnet-4"
TOOLS = [
    {
        "name": "fetch",
        "description": "Fetch a page.",
        "input_schema": {"type": "object", "properties": {"url": {"type": "string"}}},
    }
]


def _agent() -> Any:
    """The fake model: asks for the page first, then answers."""
    calls = iter([[{"type": "tool_use", "id": "toolu_1", "name": "fetch", "input": {"url": "x"}}]])
    return lambda body: next(calls, "done")


def _page(words: int) -> str:
    return " ".join(f"word{i}" for i in range(words))


def _run(
    fake: FakeAnthropic, client: Any, memory: Any, page: str, **kw: Any
) -> tuple[Any, list[dict[str, Any]]]:
    fake.reply = _agent()
    wrapped = wrap(client, memory=memory, session="s", user_id="ana", budget=6000)
    history: list[dict[str, Any]] = [{"role": "user", "content": "summarize the page x"}]
    reply = wrapped.messages.create(
        model=MODEL, max_tokens=256, messages=history, tools=TOOLS, **kw
    )
    history.append(
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]}
    )
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": page}
    history.append({"role": "user", "content": [result]})
    return wrapped, history


def test_a_tool_result_over_the_whole_budget_is_refused_before_sending_and_logging(
    fake_anthropic, anthropic_client, memory
):
    wrapped, history = _run(fake_anthropic, anthropic_client, memory, _page(6000))
    with pytest.raises(BudgetError, match="newest tool turn does not fit") as info:
        wrapped.messages.create(model=MODEL, max_tokens=256, messages=history, tools=TOOLS)
    assert info.value.requested > info.value.available
    assert len(fake_anthropic.messages_requests()) == 1  # nothing sent
    wrapped.flush()
    assert [t.message.role for t in wrapped.context.session.turns()] == ["user", "assistant"]
    # the app cuts the page down and sends again: it goes out, logged once
    history[-1]["content"][0]["content"] = _page(300)
    answer = wrapped.messages.create(model=MODEL, max_tokens=256, messages=history, tools=TOOLS)
    assert answer.content[0].text == "done"
    wrapped.flush()
    assert [t.message.role for t in wrapped.context.session.turns()] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]


def test_a_tool_result_crowded_out_by_the_system_prompt_is_refused_not_sent_empty(
    fake_anthropic, anthropic_client, memory
):
    system = "Answer precisely and cite your sources. " * 450  # ~3,600 tokens, always placed
    wrapped, history = _run(fake_anthropic, anthropic_client, memory, _page(1500), system=system)
    with pytest.raises(BudgetError, match="newest tool turn does not fit") as info:
        wrapped.messages.create(
            model=MODEL, max_tokens=256, messages=history, tools=TOOLS, system=system
        )
    assert info.value.requested > info.value.available
    assert len(fake_anthropic.messages_requests()) == 1  # nothing sent
