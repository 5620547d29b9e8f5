"""A question that fits is sent under the default ``summarize`` compaction.

The history's room is what the budget leaves after the question, the instructions and
(with ``memory_placement="topic"``) the topic block's ceiling. When that was under the
5 tokens a summary needs, the call was refused, the summary's share blamed ("give a
budget of at least 5") at a budget of 8,000, or with no budget at all, while
``truncate`` sent the same request (a review). Now the call is sent: the window leaves
out the history it cannot place this time (the log keeps it for the next call) and the
topic block takes what is left.

Real ``anthropic.Anthropic`` clients against the loopback :class:`FakeAnthropic`, a real
Memory on SQLite with the hash embedder; each body counted with the same tokenizer.
"""

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
from test_wrap_server_compaction_budget import _sent_tokens  # noqa: E402

MODEL = "claude-sonnet-4-6"
BUDGET = 8000
PASTE = "Please summarise the attached meeting notes about the Lisbon office. "
HELLO = {"role": "user", "content": "Hello again."}


def _history() -> list[dict[str, str]]:
    said: list[dict[str, str]] = []
    for i in range(10):
        said.append({"role": "user", "content": f"Tell me fact {i} about the Lisbon office."})
        said.append({"role": "assistant", "content": f"Fact {i}: it has {i} blue bicycles."})
    return said


def _question(memory: Memory, tokens: int) -> str:
    """A paste of ``tokens`` tokens (text alone)."""
    text = memory.tokenizer.truncate(PASTE * (tokens // 10 + 10), tokens)  # type: ignore[attr-defined]
    assert memory.tokenizer.count(text) == tokens
    return text


@pytest.mark.parametrize("placement", ["topic", "per_call"])
def test_a_question_leaving_the_history_no_room_is_sent_and_the_history_kept(
    tmp_path: Path, placement: str
) -> None:
    with (
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        FakeAnthropic() as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        memory.add("Ana works in the Lisbon office", user_id="ana")
        wrapped = wrap(
            client,
            memory,
            "s",
            user_id="ana",
            budget=BUDGET,
            memory_placement=placement,
            background_commit=False,
        )
        said = _history()
        wrapped.messages.create(model=MODEL, max_tokens=64, messages=[*said, HELLO])
        # Fits beside the reply's primer with 2 tokens to spare: no room for history.
        big = _question(memory, BUDGET - 3 - 3 - 1 - 2)
        wrapped.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": big}]
        )
        body = fake.messages_requests()[-1].json()
        assert body["messages"][-1]["content"][-1]["text"] == big
        assert _sent_tokens(body, memory.tokenizer.count) <= BUDGET
        # The history was not folded away for this one question: nothing rotated out.
        state = Session(memory, "s", user_id="ana").state()
        assert (state.start_seq, state.summary, state.compactions) == (0, None, 0)


def test_no_budget_and_max_tokens_near_the_window_sends_a_question_that_fits(
    tmp_path: Path,
) -> None:
    """claude-haiku-4-5 (200,000 tokens): ``max_tokens`` leaves the question 1 token."""
    with (
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        FakeAnthropic() as fake,
        anthropic.Anthropic(
            base_url=fake.base_url, api_key="t", max_retries=0, timeout=60
        ) as client,
    ):
        wrapped = wrap(client, memory, "s", user_id="ana", background_commit=False)
        question = _question(memory, 4800)
        need = 3 + 3 + 1 + 4800  # the reply's primer, the message's framing and role, text
        messages = [{"role": "user", "content": question}]
        ask = {"model": "claude-haiku-4-5", "messages": messages}
        wrapped.messages.create(max_tokens=200_000 - need, **ask)  # no token to spare
        body = fake.messages_requests()[-1].json()
        assert _sent_tokens(body, memory.tokenizer.count) == need
        with pytest.raises(BudgetError, match="the question .* does not fit"):
            wrapped.messages.create(max_tokens=200_000 - need + 1, **ask)
