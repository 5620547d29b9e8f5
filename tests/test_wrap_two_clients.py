"""Two wrapped clients of one session, an app that sends its whole history: each reply
is logged once, whichever client logs it first.

A web app wraps a client per request (a wrapped client is bound to one session) and
sends the chat's whole history. The next request may start, on another client (or
another worker process), before the last one's background commit has logged its
reply: the new request finds the reply in the app's history and logs it as the app's
turn. Both logged it: the model saw its own answer twice and the next requests forked
the log (a review: 6 to 20 runs in 20). Here each order is forced through the store,
the seam both clients write through (a real SQLite file), and the real ``anthropic``
SDK client talks to the loopback fake.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.engine.session import Session  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.store.base import Store  # noqa: E402
from contextos.store.sqlite import SQLiteStore  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.types import Message  # noqa: E402

MODEL = "claude-sonnet-4-6"


class Seam:
    """The store as a client's Memory sees it: its first append of an assistant turn
    (the commit of a reply) waits for ``release``; ``before_first`` runs before its
    first append of anything (``None``: nothing)."""

    def __init__(self, store: SQLiteStore, *, hold_reply: bool = False) -> None:
        self.store = store
        self.release = threading.Event()
        if not hold_reply:
            self.release.set()
        self.before_first: Callable[[], None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def append_turns(self, scope: Any, messages: Any, tokens: Any, **kwargs: Any) -> Any:
        before, self.before_first = self.before_first, None
        if before is not None:
            before()
        if messages and messages[-1].role == "assistant" and not self.release.is_set():
            assert self.release.wait(20), "never released"
        return self.store.append_turns(scope, messages, tokens, **kwargs)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(reply=lambda body: "reply " + str(len(body["messages"]))) as server:
        yield server


def client(fake: FakeAnthropic, seam: Seam) -> Any:
    memory = Memory(store=seam, embedder=HashEmbedder(), background_embedding=False)  # type: ignore[arg-type]
    raw = anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0)
    return wrap(raw, memory=memory, session="chat", user_id="ana")


def ask(wrapped: Any, history: list[dict[str, str]]) -> str:
    reply = wrapped.messages.create(model=MODEL, max_tokens=64, messages=history)
    return str(reply.content[0].text)


def log(path: Path) -> list[tuple[str, str]]:
    store = SQLiteStore(path)
    try:
        return [(t.message.role, t.message.content) for t in Session(store, "chat").turns()]
    finally:
        store.close()


@pytest.mark.parametrize("order", ["next request logs it first", "commit lands in between"])
def test_a_reply_is_logged_once_when_the_next_request_comes_on_another_client(
    tmp_path: Path, fake: FakeAnthropic, order: str
) -> None:
    path = tmp_path / "chat.db"
    first_seam = Seam(SQLiteStore(path), hold_reply=True)
    second_seam = Seam(SQLiteStore(path))
    first, second = client(fake, first_seam), client(fake, second_seam)
    try:
        history = [{"role": "user", "content": "first question"}]
        answer = ask(first, history)  # its commit waits at the store
        if order == "commit lands in between":
            # the second request has read the log (no reply yet) and is about to log
            # the app's history: the first commit lands just then
            def land() -> None:
                first_seam.release.set()
                first.flush()

            second_seam.before_first = land
        history += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "second question"},
        ]
        second_answer = ask(second, history)
        first_seam.release.set()
        first.flush()
        second.flush()
        assert log(path) == [
            ("user", "first question"),
            ("assistant", answer),
            ("user", "second question"),
            ("assistant", second_answer),
        ]
        sent = fake.messages_requests()[-1].json()["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    finally:
        first_seam.release.set()
        for wrapped, seam in ((first, first_seam), (second, second_seam)):
            wrapped.unwrapped.close()
            seam.store.close()


def test_an_append_conditioned_on_the_last_turn_read_is_refused_after_another(
    store: Store,
) -> None:
    """``Session.add(newest=...)``: the store's check, under its write lock (every
    backend)."""
    from contextos.errors import Conflict

    mine, other = Session(store, "chat"), Session(store, "chat")
    mine.add(Message("user", "hi"))
    assert mine.last_read == -1  # logged, not read yet
    mine.turns()
    read = mine.last_read
    assert read == 0
    other.add(Message("assistant", "hello"))
    with pytest.raises(Conflict):
        mine.add(Message("assistant", "hello"), newest=read)
    assert [t.message.content for t in Session(store, "chat").turns()] == ["hi", "hello"]
    mine.turns()
    assert mine.last_read == 1
    assert mine.add(Message("user", "ok"), newest=mine.last_read)[0].seq == 2


def test_two_calls_answered_alike_both_stay_in_the_log(tmp_path: Path) -> None:
    """Two clients ask their questions one after the other and both get "OK.": the
    second commit found "OK." right after its question and took it for a copy of its
    own reply, and dropped it (a review; so did calls of one client shared by threads).
    Only a turn logged from an app's history is such a copy, not another call's reply."""
    path = tmp_path / "chat.db"
    with FakeAnthropic(reply=lambda body: "OK.") as ok:
        seams = [Seam(SQLiteStore(path), hold_reply=True) for _ in range(2)]
        lights, door = (client(ok, seam) for seam in seams)
        try:
            ask(lights, [{"role": "user", "content": "Turn on the lights."}])
            ask(door, [{"role": "user", "content": "Lock the door."}])
            for wrapped, seam in ((lights, seams[0]), (door, seams[1])):
                seam.release.set()
                wrapped.flush()
            assert log(path) == [
                ("user", "Turn on the lights."),
                ("user", "Lock the door."),
                ("assistant", "OK."),
                ("assistant", "OK."),
            ]
        finally:
            for wrapped, seam in ((lights, seams[0]), (door, seams[1])):
                seam.release.set()
                wrapped.unwrapped.close()
                seam.store.close()
