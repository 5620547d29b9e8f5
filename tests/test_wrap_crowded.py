"""A wrapped chat that stays on one subject keeps sending the user's own facts.

Each wrapped call remembers its question and reply as memories of the session; a
window leaves those out (the log holds them). It used to leave them out after the
search, from a page of 2 x ``memory_limit``: after about eight calls on one topic the
page was all exchanges, and the README's "I'm allergic to peanuts" stopped reaching the
model (a review, session 34). The real SDK client, the loopback fake, a real SQLite
memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from contextos.memory import Memory
from contextos.providers import wrap
from contextos.testing.fake_anthropic import FakeAnthropic

FACT = "I live in Dublin, in a flat near the river."


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """Replies on the subject, each remembered beside its question."""
    with FakeAnthropic(reply=lambda body: "Let me think about where you live.") as server:
        yield server


@pytest.mark.parametrize("compaction", ["summarize", "offload"])
def test_the_users_fact_is_sent_however_long_the_chat_stays_on_it(
    memory: Memory, fake_anthropic: FakeAnthropic, anthropic_client: Any, compaction: str
) -> None:
    memory.add(FACT, user_id="ana")
    client = wrap(
        anthropic_client,
        memory=memory,
        session="ana:chat",
        user_id="ana",
        compaction=compaction,
    )
    for i in range(24):
        client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=100,
            messages=[{"role": "user", "content": f"Where do I live? (asking again, #{i})"}],
        )
        client.flush()
        sent = json.dumps(fake_anthropic.messages_requests()[-1].json())
        assert FACT in sent, f"call {i}: the fact was not sent"
    # The exchanges were remembered all the same: another session finds them.
    assert len(memory.get_all(session_id="ana:chat", limit=1000)) == 48
