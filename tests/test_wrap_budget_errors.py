"""A question larger than the budget, through ``wrap()``: the error names the question and
its size, whatever the compaction (a review: under the default ``summarize`` it blamed the
summary's share, "give a budget of at least 5", for a 400-page PDF). Nothing is sent or
logged. The real SDK client against the loopback fake, a real SQLite memory file."""

from __future__ import annotations

from pathlib import Path

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.engine.session import Session  # noqa: E402
from contextos.errors import BudgetError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402


@pytest.mark.parametrize("compaction", ["summarize", "truncate", "offload", None])
def test_a_question_over_the_budget_is_named_with_its_size(
    tmp_path: Path, compaction: str | None
) -> None:
    with (
        FakeAnthropic() as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        client = wrap(sdk, memory, "s", user_id="ana", budget=3000, compaction=compaction)
        question = "Please read this carefully. " * 1000  # about 5,000 tokens
        with pytest.raises(BudgetError, match=r"the question .* does not fit") as caught:
            client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=100,
                messages=[{"role": "user", "content": question}],
            )
        assert caught.value.requested > 4000
        assert 0 < caught.value.available < 3000
        assert fake.messages_requests() == []
        assert Session(memory, "s", user_id="ana").turns() == []


def test_tools_over_the_budget_are_named_not_the_question(tmp_path: Path) -> None:
    tools = [
        {
            "name": f"tool_{i}",
            "description": "Looks things up in the company knowledge base. " * 40,
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
        for i in range(6)
    ]
    with (
        FakeAnthropic() as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        client = wrap(sdk, memory, "s", user_id="ana", budget=1500)
        with pytest.raises(BudgetError, match="the instructions and tools alone") as caught:
            client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=100,
                tools=tools,
                messages=[{"role": "user", "content": "hi"}],
            )
        assert caught.value.requested > 1500 and caught.value.available == 1500
        assert fake.messages_requests() == []
