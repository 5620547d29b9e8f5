"""What a wrapped call reports having appended to the session log.

``CallRecord.new_messages`` (``Prepared.logged``) are the messages the call appended
before sending; ``reply`` is the one logged after it. Call by call, the two together
must be the session log, for both SDKs, streamed or not, whether the caller resends
the whole conversation, sends new turns, or retries a failed question.
"""

from __future__ import annotations

from typing import Any

import pytest

from contextos import Message, ProviderError
from contextos.engine.owed import OWED_KEY, unmarked
from contextos.memory import Memory
from contextos.providers import CallRecord, wrap

MODELS = {"anthropic": "claude-sonnet-4", "openai": "gpt-4.1-mini"}


def _send(wrapped: Any, provider: str, messages: list[dict[str, str]], *, stream: bool) -> str:
    """One call through the SDK's own create (a stream read to its end); the reply text."""
    if provider == "anthropic":
        out = wrapped.messages.create(
            model=MODELS[provider], max_tokens=64, messages=messages, stream=stream
        )
        if not stream:
            return str(out.content[0].text)
        return "".join(e.delta.text for e in out if e.type == "content_block_delta")
    out = wrapped.chat.completions.create(model=MODELS[provider], messages=messages, stream=stream)
    if not stream:
        return str(out.choices[0].message.content)
    return "".join(c.choices[0].delta.content or "" for c in out if c.choices)


def _said(messages: Any) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in messages]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_new_messages_then_the_reply_are_the_session_log(
    request: pytest.FixtureRequest, memory: Memory, provider: str
) -> None:
    fake = request.getfixturevalue(f"fake_{provider}")
    client = request.getfixturevalue(f"{provider}_client")
    seen: list[CallRecord] = []
    wrapped = wrap(client, memory=memory, session="s1", user_id="ana", on_call=seen.append)

    first = _send(
        wrapped, provider, [{"role": "user", "content": "I moved to Lisbon"}], stream=False
    )
    # The whole conversation resent, streamed: only the new question is logged.
    whole = [
        {"role": "user", "content": "I moved to Lisbon"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "Which city was it?"},
    ]
    _send(wrapped, provider, whole, stream=True)
    # Only new turns, several of them: all are logged, the question last.
    aside = [
        {"role": "user", "content": "An aside: I like tea"},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "And coffee?"},
    ]
    _send(wrapped, provider, aside, stream=True)
    # A failed call logs its question; its retry appends nothing before sending.
    fake.enqueue_error(500, "overloaded")
    with pytest.raises(ProviderError):
        _send(wrapped, provider, [{"role": "user", "content": "Still there?"}], stream=False)
    _send(wrapped, provider, [{"role": "user", "content": "Still there?"}], stream=False)
    wrapped.flush()

    assert seen == list(wrapped.calls)
    assert [_said(c.new_messages) for c in seen] == [
        [("user", "I moved to Lisbon")],
        [("user", "Which city was it?")],
        [("user", "An aside: I like tea"), ("assistant", "Noted."), ("user", "And coffee?")],
        [],
    ]
    assert all(c.reply is not None for c in seen)
    log = [t.message for t in wrapped.context.session.turns()]
    by_calls = [m for c in seen for m in (*c.new_messages, c.reply)]
    failed = [("user", "Still there?")]  # logged by the call that failed (no record)
    assert _said(log) == _said(by_calls[:-1]) + failed + _said(by_calls[-1:])
    # As the log holds them (no wire form), not as the caller sent them, and without the
    # hold its commit owed to memory (the log's own bookkeeping: engine/owed.py).
    assert OWED_KEY in log[0].metadata
    assert seen[0].new_messages == (unmarked(log[0]),)
    assert seen[0].new_messages[0] == Message("user", "I moved to Lisbon")


def test_the_stream_helper_reports_its_question(
    fake_anthropic: Any, anthropic_client: Any, memory: Memory
) -> None:
    seen: list[CallRecord] = []
    wrapped = wrap(
        anthropic_client, memory=memory, session="s1", user_id="ana", on_call=seen.append
    )
    with wrapped.messages.stream(
        model=MODELS["anthropic"],
        max_tokens=64,
        messages=[{"role": "user", "content": "what do I play?"}],
    ) as s:
        text = "".join(s.text_stream)
    wrapped.flush()
    (call,) = seen
    assert _said(call.new_messages) == [("user", "what do I play?")]
    assert _said(t.message for t in wrapped.context.session.turns()) == [
        ("user", "what do I play?"),
        ("assistant", text),
    ]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_nothing_is_new_without_a_session_log(
    request: pytest.FixtureRequest, memory: Memory, provider: str
) -> None:
    client = request.getfixturevalue(f"{provider}_client")
    for wrapped in (wrap(client), wrap(client, memory=memory, user_id="ana")):
        _send(wrapped, provider, [{"role": "user", "content": "hi"}], stream=False)
        (call,) = list(wrapped.calls)
        assert call.new_messages == ()
