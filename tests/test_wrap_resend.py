"""An app re-sends a request the session log already holds answered.

Its own front end retried after a gateway timeout, or the user pressed "regenerate":
the same full history goes out again. The real ``anthropic`` SDK client against the
loopback fake, a real SQLite memory file.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("anthropic")

from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402

MODEL = "claude-sonnet-4"


def _ask(wrapped: Any, history: list[dict[str, Any]]) -> str:
    reply = wrapped.messages.create(model=MODEL, max_tokens=64, messages=history)
    return str(reply.content[0].text)


def _log(wrapped: Any) -> list[tuple[str, str]]:
    wrapped.flush()
    return [(t.message.role, t.message.content) for t in wrapped.context.session.turns()]


def test_a_resent_answered_request_logs_nothing_and_sends_no_duplicate(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
) -> None:
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    history: list[dict[str, Any]] = [{"role": "user", "content": "hello"}]
    history += [
        {"role": "assistant", "content": _ask(wrapped, history)},
        {"role": "user", "content": "book a table for two"},
    ]
    answer = _ask(wrapped, history)
    before = _log(wrapped)
    assert _ask(wrapped, history) == answer  # the same request again
    assert _log(wrapped) == before
    sent = fake_anthropic.messages_requests()[-1].json()["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    history += [
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "at eight"},
    ]
    _ask(wrapped, history)  # the conversation goes on from the log as it was
    assert _log(wrapped) == [*before, ("user", "at eight"), ("assistant", "You said: at eight")]


def test_one_message_said_again_is_a_new_turn(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
) -> None:
    """An app that sends only the new turn may say the same thing twice."""
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    for _ in range(2):
        _ask(wrapped, [{"role": "user", "content": "yes"}])
    assert [r for r, _ in _log(wrapped)] == ["user", "assistant"] * 2
