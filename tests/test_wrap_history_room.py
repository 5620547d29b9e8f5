"""A wrapped client whose instructions take most of the budget: the history keeps its
cached prefix between compactions.

Compaction aims the history (summary and turns) at ``history_share`` of the budget;
the window serves the system prompt, the tools and the question first. With a system
prompt of about two thirds of the budget the turns got less room than compaction aimed
at, so compaction never fired and the window cut the oldest turn on every call: the
history slid forward and the cached prefix after the system prompt was missed on most
calls. A real ``anthropic.Anthropic`` client against the local fake server (which does
prompt-cache accounting), a real Memory on SQLite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from test_wrap_exchange_boundary import count_slides  # noqa: E402

MODEL = "claude-opus-5"
#: The input budget (wrap's ``budget`` is the input budget; it was 9,000 less the call's
#: ``max_tokens`` of 64 when the output was taken from it). At 9,000 the summarize
#: compaction used to leave the verbatim history opening on an assistant reply (it
#: stopped rotating between a question and its reply); fixed, compaction now cuts only
#: between exchanges (``_rotation_steps`` in engine/compaction.py), and
#: tests/test_wrap_exchange_boundary.py checks every budget from 8,600 to 9,400 (the
#: last assertion here checks this one).
BUDGET = 8936
#: About 6,000 tokens: two thirds of the budget.
SYSTEM = "You are a helpful assistant for Dana. " * 760
CALLS = 40


def _reply(body: dict[str, Any]) -> str:
    n = len(body["messages"])
    return f"Reply number {n}: " + " ".join(f"word{(n * 7 + k) % 97}" for k in range(40))


def test_big_instructions_leave_the_cached_history_in_place_between_compactions(
    tmp_path: Path,
) -> None:
    with (
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        FakeAnthropic(min_cache_tokens=512, reply=_reply) as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory, session="s1", user_id="dana", budget=BUDGET)
        for i in range(CALLS):
            question = f"Question {i} about the garden: what about thing {i % 4}? " + "detail " * 20
            wrapped.messages.create(
                model=MODEL,
                max_tokens=64,
                system=SYSTEM,
                messages=[{"role": "user", "content": question}],
            )
        wrapped.flush()
        bodies = [r.json() for r in fake.messages_requests()]
    # A request "slides" when it shares nothing with the previous one after the system
    # prompt: its history starts elsewhere. Compaction does that once per chunk of turns;
    # cutting the oldest turn on every call did it on most calls (23 of 40).
    slides = count_slides(bodies)
    assert len(bodies) == CALLS
    assert slides <= CALLS // 6, slides
    first = [b["messages"][0]["content"][0].get("text", "") for b in bodies]
    assert all(not text.startswith("Reply") for text in first)  # never opens mid-exchange
