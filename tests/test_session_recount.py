"""A log counted by another counter is counted again at most once per process, and
never through the API.

A turn's stored count is reused only by a reader that counts the same way (its stamp);
another reader counted it again, on every read, and kept nothing: a server opening a
fresh Session per window request (the HTTP and MCP routes) recounted a 4,000-turn log
written before counts were stamped on every request (353 ms a request where the stored
counts took 166 ms), and a Session with the exact counter (``AnthropicTokenCounter``
with a client) made one ``count_tokens`` request per logged turn, 402 for a 400-turn
log, and 400 more for every later Session. Now a recount is kept for the process, and
a remote counter keeps the stored counts as estimates unless asked for exact ones
(``exact_history``). Real SQLite files; the real ``anthropic`` SDK against the loopback
fake's ``count_tokens`` endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from contextos.engine.session import Session
from contextos.llm.models import get_model
from contextos.llm.tokens import TOKENS_PER_REPLY, CharEstimateTokenizer, default_tokenizer
from contextos.store.sqlite import SQLiteStore
from contextos.types import Message

TURNS = 400
MODEL = "claude-sonnet-4-6"


def _chat(n: int) -> list[Message]:
    roles: list[Any] = ["user", "assistant"]
    return [
        Message(roles[i % 2], f"Turn {i}: the plans for day {i} at the lake.") for i in range(n)
    ]


class Counting:
    """The default tokenizer (same name, so the same stamp), counting its message counts."""

    def __init__(self) -> None:
        self._inner = default_tokenizer()
        self.name = self._inner.name
        self.exact = True
        self.messages = 0

    def count(self, text: str) -> int:
        return self._inner.count(text)

    def count_messages(self, messages: Sequence[Message]) -> int:
        self.messages += len(messages)
        return self._inner.count_messages(messages)


def test_a_log_from_another_counter_is_counted_once_per_process(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    with closing(SQLiteStore(path)) as store:  # written by another counter, and before stamps
        writer = Session(
            store, "chat", tenant="t", user_id="ana", tokenizer=CharEstimateTokenizer()
        )
        writer.add(*_chat(TURNS // 2))
        store.append_turns(writer.scope, _chat(TURNS)[TURNS // 2 :], [1] * (TURNS // 2))
    with closing(SQLiteStore(path)) as store:  # the server's store, a fresh Session per request
        tok = Counting()
        windows = []
        for _ in range(3):
            before = tok.messages
            reader = Session(store, "chat", tenant="t", user_id="ana", tokenizer=tok)
            windows.append(reader.window(get_model(MODEL), "What about the lake?", budget=50_000))
            turns = reader.turns()
            assert [t.tokens for t in turns] == [
                default_tokenizer().count_messages([t.message]) - TOKENS_PER_REPLY for t in turns
            ]
            if len(windows) > 1:
                assert tok.messages == before  # nothing counted again
        assert tok.messages == TURNS  # each turn once, by the first request
        assert len({w.total_tokens for w in windows}) == 1
        assert reader.estimated_counts == frozenset()


def test_the_exact_counter_does_not_recount_the_log_through_the_api(tmp_path: Path) -> None:
    anthropic = pytest.importorskip("anthropic")
    from contextos.providers.anthropic import AnthropicTokenCounter
    from contextos.testing.fake_anthropic import FakeAnthropic

    path = tmp_path / "log.db"
    with closing(SQLiteStore(path)) as store:
        Session(store, "chat", tenant="t", user_id="ana").add(*_chat(TURNS))  # cl100k
    with (
        closing(SQLiteStore(path)) as store,
        FakeAnthropic(reply=lambda body: "ok") as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):

        def requests() -> int:
            return sum(1 for r in fake.requests if r.path.startswith("/v1/messages/count_tokens"))

        counter = AnthropicTokenCounter(sdk, model=MODEL)
        first = Session(store, "chat", tenant="t", user_id="ana", tokenizer=counter)
        first.window(get_model(MODEL), "Where did we meet?", budget=50_000)
        assert requests() <= 3  # the question (and the framing), not the log
        assert first.estimated_counts == frozenset(range(TURNS))
        stored = [t.tokens for t in Session(store, "chat", tenant="t", user_id="ana").turns()]
        assert [t.tokens for t in first.turns()] == stored  # the stored estimate stands in
        seen = requests()
        again = Session(store, "chat", tenant="t", user_id="ana", tokenizer=counter)
        again.window(get_model(MODEL), "Where did we meet?", budget=50_000)
        assert requests() == seen
        # Asked for exact counts of the history: one request a turn, once per process,
        # and two once per counter that price the opening user message an assistant turn
        # is counted behind (the API counts no request that opens on the assistant).
        exact = Session(
            store, "chat", tenant="t", user_id="ana", tokenizer=counter, exact_history=True
        )
        exact.turns()
        assert requests() - seen == TURNS + 2 and exact.estimated_counts == frozenset()
        seen = requests()
        Session(
            store, "chat", tenant="t", user_id="ana", tokenizer=counter, exact_history=True
        ).turns()
        assert requests() == seen
