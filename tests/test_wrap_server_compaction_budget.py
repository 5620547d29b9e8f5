"""Anthropic server-side compaction through ``wrap()``: what is sent is what is counted.

Every ``compaction`` block the server returned went back in its assistant turn on every
later call, and neither its summary nor the block was counted in the window: at a
budget of 3,000 a request carried about 4,800 tokens after two compactions, and more
with each one (a review). The API drops every block before the last compaction block,
so only that one goes back, and the turn carrying it is counted with it.

A real ``anthropic.Anthropic`` client against the loopback :class:`FakeAnthropic`
(which compacts, and refuses a block not sent back verbatim), a real Memory on SQLite.
Each request body is counted here, block by block, with the same tokenizer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.llm.tokens import TOKENS_PER_MESSAGE, TOKENS_PER_REPLY  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402

MODEL = "claude-sonnet-4-6"
#: Quoted into each summary by the fake: a summary of about 2,000 tokens.
INSTRUCTIONS = "Keep every decision, every file name and every number verbatim. " * 150
EDIT = {
    "edits": [
        {
            "type": "compact_20260112",
            "trigger": {"type": "input_tokens", "value": 200},
            "instructions": INSTRUCTIONS,
        }
    ]
}


def _compactions(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        b
        for m in body["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "compaction"
    ]


def _sent_tokens(body: dict[str, Any], count: Any) -> int:
    """The request's tokens as a window counts them, block by block: the reply's primer,
    each system block and message with its framing (a message's role too), text by the
    tokenizer, a compaction block's summary by it and its ``encrypted_content`` at 4
    characters a token."""
    total = TOKENS_PER_REPLY
    for block in body.get("system") or []:
        total += TOKENS_PER_MESSAGE + count(block["text"])
    for message in body["messages"]:
        total += TOKENS_PER_MESSAGE + count(message["role"])
        content = message["content"]
        if isinstance(content, str):
            total += count(content)
            continue
        texts = [b["text"] for b in content if b["type"] == "text"]
        total += count(("" if message["role"] == "assistant" else "\n").join(texts))
        for b in content:
            if b["type"] == "compaction":
                total += count(b["content"]) + math.ceil(len(b["encrypted_content"]) / 4)
    return total


#: (budget, words of each question): room for one summary and its exchange; for three.
@pytest.mark.parametrize(("budget", "words"), [(3000, 20), (8000, 60)])
def test_only_the_last_compaction_block_goes_back_and_the_request_keeps_its_budget(
    tmp_path: Path, budget: int, words: int
) -> None:
    with (
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        FakeAnthropic() as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(
            client, memory, "long-task", user_id="ana", budget=budget, background_commit=False
        )
        count = memory.tokenizer.count
        carried = 0
        for step in range(10):
            issued = list(fake.compactions)  # the blocks the server returned so far
            wrapped.beta.messages.create(
                model=MODEL,
                max_tokens=256,
                betas=["compact-2026-01-12"],
                context_management=EDIT,
                messages=[
                    {"role": "user", "content": f"Continue the migration, step {step}. " * words}
                ],
            )
            body = fake.messages_requests()[-1].json()
            sent = _compactions(body)
            assert len(sent) <= 1, f"step {step}: {len(sent)} compaction blocks sent"
            if sent:  # the newest one: the API reads from it on
                assert sent[0]["encrypted_content"] == issued[-1]
                carried += 1
            assert _sent_tokens(body, count) <= budget, f"step {step}"
        assert len(fake.compactions) >= 4  # the server compacted again and again
        assert carried >= 4  # and its summary went back, counted, within the budget
