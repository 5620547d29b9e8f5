"""``client.calls`` in a long-running process: the newest records kept, totals exact.

A record holds the call's reply and the messages it logged; a server process makes
calls for ever, so the log keeps only the newest ``keep_calls`` (1000 by default)
while ``total()`` and ``edits()`` stay running sums over every call. The real
``anthropic`` SDK client against the loopback fake.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("anthropic")

from contextos.providers import wrap  # noqa: E402
from contextos.providers.base import CallRecord, edit_report  # noqa: E402
from contextos.providers.wrapper import KEEP_CALLS  # noqa: E402
from contextos.testing.fake_anthropic import AnthropicUsage, FakeAnthropic  # noqa: E402
from contextos.types import Usage  # noqa: E402

MODEL = "claude-sonnet-4"


def _ask(client: Any, question: str) -> None:
    client.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": question}]
    )


def test_the_log_keeps_the_newest_records_and_totals_every_call(
    fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    seen: list[CallRecord] = []
    wrapped = wrap(anthropic_client, keep_calls=2, on_call=seen.append)
    for i in range(5):
        fake_anthropic.enqueue_reply(f"answer {i}", AnthropicUsage(10 + i, 2, cache_read=100))
        _ask(wrapped, f"question {i}")
    calls = wrapped.calls
    assert (len(calls), calls.count, calls.keep) == (2, 5, 2)
    assert [c.reply.content for c in calls if c.reply] == ["answer 3", "answer 4"]
    assert calls[-1].reply == seen[-1].reply and calls[0:1] == [seen[3]]
    assert len(seen) == 5  # on_call sees every record, to keep them elsewhere
    assert calls.total() == Usage(60, 10, 0, 500, 0, 0)  # all five, not the two kept
    assert calls.edits() == edit_report(seen)
    assert calls.edits().calls == 5


def test_the_default_bound_and_an_unbounded_log(
    fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    assert wrap(anthropic_client).calls.keep == KEEP_CALLS == 1000
    unbounded = wrap(anthropic_client, keep_calls=None)
    for i in range(3):
        _ask(unbounded, f"q{i}")
    assert unbounded.calls.keep is None and len(unbounded.calls) == unbounded.calls.count == 3


def test_a_negative_bound_is_refused(anthropic_client: Any) -> None:
    with pytest.raises(ValueError, match="keep"):
        wrap(anthropic_client, keep_calls=-1)


def test_copies_of_the_client_share_one_bounded_log(
    fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    wrapped = wrap(anthropic_client, keep_calls=1)
    _ask(wrapped.with_options(timeout=5.0), "one")
    _ask(wrapped.copy(timeout=5.0), "two")
    assert (len(wrapped.calls), wrapped.calls.count) == (1, 2)
