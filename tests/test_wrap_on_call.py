"""``wrap(..., on_call=...)``: the application's callback runs after the call is recorded
and committed, and its failure takes nothing away from the caller.

The real ``anthropic`` / ``openai`` SDK clients against the loopback fakes, a real
SQLite memory file. The callback is the application's code (a metrics push that times
out); the only double is a ``context=`` source whose commit fails.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.engine.context import SessionContext  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import CallRecord, wrap  # noqa: E402

MODELS = {"anthropic": "claude-sonnet-4", "openai": "gpt-4.1-mini"}
WRAPPER_LOG = "contextos.providers.wrapper"


def _metrics_down(record: CallRecord) -> None:
    raise ConnectionError("metrics endpoint down")


def _create(wrapped: Any, provider: str, question: str) -> str:
    messages = [{"role": "user", "content": question}]
    if provider == "anthropic":
        out = wrapped.messages.create(model=MODELS[provider], max_tokens=64, messages=messages)
        return str(out.content[0].text)
    out = wrapped.chat.completions.create(model=MODELS[provider], messages=messages)
    return str(out.choices[0].message.content)


def _streamed(wrapped: Any, provider: str, question: str) -> str:
    """A streamed call read to its end (the callback runs as it ends); the reply text."""
    messages = [{"role": "user", "content": question}]
    if provider == "anthropic":
        events = wrapped.messages.create(
            model=MODELS[provider], max_tokens=64, messages=messages, stream=True
        )
        return "".join(e.delta.text for e in events if e.type == "content_block_delta")
    chunks = wrapped.chat.completions.create(model=MODELS[provider], messages=messages, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("background_commit", [True, False])
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_failing_on_call_takes_neither_the_reply_nor_its_log_away(
    request: pytest.FixtureRequest,
    memory: Memory,
    caplog: pytest.LogCaptureFixture,
    provider: str,
    background_commit: bool,
) -> None:
    client = request.getfixturevalue(f"{provider}_client")
    wrapped = wrap(
        client,
        memory=memory,
        session="s",
        user_id="ana",
        on_call=_metrics_down,
        background_commit=background_commit,
    )
    with caplog.at_level(logging.ERROR, logger=WRAPPER_LOG):
        answer = _create(wrapped, provider, "my locker code is 4711")
        streamed = _streamed(wrapped, provider, "my bike is blue")
        wrapped.flush()
    assert "my locker code is 4711" in answer and "my bike is blue" in streamed
    assert [(c.stream, c.complete) for c in wrapped.calls] == [(False, True), (True, True)]
    log = [(t.message.role, t.message.content) for t in wrapped.context.session.turns()]
    assert log == [
        ("user", "my locker code is 4711"),
        ("assistant", answer),
        ("user", "my bike is blue"),
        ("assistant", streamed),
    ]
    remembered = " ".join(r.text for r in memory.get_all(user_id="ana"))
    assert "4711" in remembered and "bike is blue" in remembered
    failures = [r for r in caplog.records if r.name == WRAPPER_LOG and r.exc_info]
    assert len(failures) == 2
    assert all(isinstance(r.exc_info[1], ConnectionError) for r in failures if r.exc_info)


def test_a_failing_on_call_on_a_pass_through_client_returns_the_reply(
    anthropic_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    wrapped = wrap(anthropic_client, on_call=_metrics_down)
    with caplog.at_level(logging.ERROR, logger=WRAPPER_LOG):
        assert "hello" in _create(wrapped, "anthropic", "hello")
        assert "again" in _streamed(wrapped, "anthropic", "again")
    assert len(wrapped.calls) == 2


class _CommitFails:
    """A ``context=`` source that builds the window like the session's own, and whose
    commit fails (a full disk under an inline commit)."""

    def __init__(self, inner: SessionContext) -> None:
        self.inner = inner

    def prepare(self, request: Any, *, reserve_tokens: int) -> Any:
        return self.inner.prepare(request, reserve_tokens=reserve_tokens)

    def commit(self, prepared: Any, call: CallRecord) -> None:
        raise OSError("disk full")


def test_a_failed_commit_still_reaches_calls_and_on_call(
    anthropic_client: Any, memory: Memory
) -> None:
    """The call was made and billed whatever the commit does: its record is in
    ``calls`` and the callback has it, and the commit's error reaches the caller."""
    seen: list[CallRecord] = []
    source = _CommitFails(SessionContext(memory=memory, session="s", user_id="ana"))
    wrapped = wrap(anthropic_client, context=source, on_call=seen.append)
    with pytest.raises(OSError, match="disk full"):
        _create(wrapped, "anthropic", "hello")
    assert len(wrapped.calls) == 1 and seen == list(wrapped.calls)
