"""A wrapped call's commit never makes its caller wait, and a failed one is logged.

An asyncio app runs its wrapped calls on worker threads, but closes a stream in its
handler's ``finally`` on the event loop when the browser goes away. That close hands
the cut reply to the client's commit, which joined the client's previous commit on the
caller's thread first: while another tab's commit waited on the SQLite write lock, the
whole event loop stalled (2.4 s, a review). Now the new commit's own thread waits for
the one before it, so the order holds and the caller returns at once; another client of
the session still waits for both before its window is built.

A background commit that fails was only kept for the client's next call or ``flush()``;
a client wrapped per request, or whose call ran past ``Memory.close()``, has none, and
the reply and the memory were lost without a word. It is logged now, once, by ids.

Each reply's commit is held at the store seam (a real SQLite file) at a gate the test
opens; the real ``anthropic`` and ``openai`` SDK clients talk to the loopback fakes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.engine.context import COMPLETE_KEY  # noqa: E402
from contextos.engine.session import Session  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.store.sqlite import SQLiteStore  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI  # noqa: E402

CLAUDE, GPT = "claude-sonnet-4-6", "gpt-4.1-mini"
#: The longest a gate holds a commit that nothing opens (a hung test ends).
HOLD_S = 30.0
#: How long ``close()`` may take while the commit before its own is held.
CLOSE_S = 5.0
#: How long a gate that the next request opens holds when no request comes first.
NEXT_REQUEST_S = 1.0
KINDS = ["anthropic", "openai"]


class GatedStore:
    """The store as the clients' Memory sees it: the n-th append of a reply (a commit)
    waits at gate n until the test ``opens`` it (or for its hold); ``fail`` replies raise
    instead of being written."""

    def __init__(self, store: SQLiteStore, *, gates: int = 2, fail: int = 0) -> None:
        self.store = store
        self.arrived = [threading.Event() for _ in range(gates)]
        self.opened = [threading.Event() for _ in range(gates)]
        self.hold_s = [HOLD_S] * gates
        self.fail = fail
        self._replies = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def append_turns(self, scope: Any, messages: Any, tokens: Any, **kwargs: Any) -> Any:
        if messages and messages[-1].role == "assistant":
            with self._lock:
                n, self._replies = self._replies, self._replies + 1
            if n < len(self.arrived):
                self.arrived[n].set()
                self.opened[n].wait(self.hold_s[n])
            if n < self.fail:
                raise OSError("disk full")
        return self.store.append_turns(scope, messages, tokens, **kwargs)

    def open_all(self) -> None:
        for gate in self.opened:
            gate.set()

    def opening(self, n: int, reply: Callable[[dict[str, Any]], Any]) -> Callable[..., Any]:
        """A fake's reply hook that first opens gate ``n`` once its commit is held."""

        def hook(body: dict[str, Any]) -> Any:
            if self.arrived[n].is_set():
                self.opened[n].set()
            return reply(body)

        return hook


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[GatedStore]:
    store = SQLiteStore(tmp_path / "chat.db")
    gated = GatedStore(store)
    try:
        yield gated
    finally:
        gated.open_all()
        store.close()


@pytest.fixture
def memory(gated: GatedStore) -> Iterator[Memory]:
    with Memory(store=gated, embedder=HashEmbedder(), background_embedding=False) as m:  # type: ignore[arg-type]
        yield m
        gated.open_all()


def _fake(kind: str, reply: Callable[[dict[str, Any]], Any]) -> Any:
    return FakeAnthropic(reply=reply) if kind == "anthropic" else FakeOpenAI(reply=reply)


def _sdk(kind: str, fake: Any) -> Any:
    client_class = anthropic.Anthropic if kind == "anthropic" else openai.OpenAI
    return client_class(base_url=fake.base_url, api_key="t", max_retries=0)


def _ask(client: Any, kind: str, question: str, *, stream: bool = False) -> Any:
    """A call of ``kind`` that sends only the new turn (a stream with ``stream``)."""
    messages = [{"role": "user", "content": question}]
    if kind == "anthropic":
        return client.messages.create(model=CLAUDE, max_tokens=64, messages=messages, stream=stream)
    return client.chat.completions.create(model=GPT, messages=messages, stream=stream)


def _first_text(kind: str, events: Iterator[Any]) -> str:
    """Read ``events`` up to the first piece of reply text; that text."""
    for event in events:
        if kind == "anthropic":
            delta = getattr(event, "delta", None)
            text = str(getattr(delta, "text", "") or "")
        else:
            text = str(event.choices[0].delta.content or "") if event.choices else ""
        if text:
            return text
    raise AssertionError("the stream ended without text")


def _log(memory: Memory) -> list[tuple[str, str, Any]]:
    turns = Session(memory.store, "chat", user_id="ana").turns()
    return [
        (t.message.role, t.message.content, t.message.metadata.get(COMPLETE_KEY)) for t in turns
    ]


def _stream_cut_behind_a_held_commit(
    kind: str, gated: GatedStore, client: Any, reader: ThreadPoolExecutor
) -> str:
    """Tab 1 (``reader``: one caller throughout) reads part of a stream; tab 2 (this
    thread) asks and is answered, its reply's commit held at gate 0; then tab 1 closes
    its stream, which must return while that commit is held. The text tab 1 read."""
    stream = reader.submit(_ask, client, kind, "tell me a long story", stream=True).result(10)
    events = iter(stream)
    read = reader.submit(_first_text, kind, events).result(10)
    _ask(client, kind, "a question from the other tab")
    assert gated.arrived[0].wait(10), "the other tab's reply was never committed"
    reader.submit(stream.close).result(timeout=CLOSE_S)  # TimeoutError: close waited
    assert not gated.opened[0].is_set()
    return read


@pytest.mark.parametrize("kind", KINDS)
def test_closing_a_stream_returns_while_the_previous_commit_is_held(
    kind: str, gated: GatedStore, memory: Memory
) -> None:
    reader = ThreadPoolExecutor(1, thread_name_prefix="tab-1")
    try:
        with (
            _fake(kind, lambda b: "You said: a long story, in many words") as fake,
            closing(_sdk(kind, fake)) as sdk,
        ):
            client = wrap(sdk, memory=memory, session="chat", user_id="ana")
            read = _stream_cut_behind_a_held_commit(kind, gated, client, reader)
            gated.open_all()
            client.flush()
    finally:
        gated.open_all()
        reader.shutdown()
    assert _log(memory) == [
        ("user", "tell me a long story", None),
        ("user", "a question from the other tab", None),
        ("assistant", "You said: a long story, in many words", None),
        ("assistant", read, False),  # committed after the commit before it, cut
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_another_client_waits_for_a_commit_queued_behind_another(
    kind: str, gated: GatedStore, memory: Memory
) -> None:
    """The client's commits are in flight from the first start to the last end: a client
    wrapped per request, sending only its new turn, waits for the cut reply's commit that
    ran after the other tab's (or it logs its question before that reply). The cut
    reply's commit is held at gate 1 until that request reaches the fake, or for
    :data:`NEXT_REQUEST_S`: a request that waits for the commit comes after it."""
    gated.hold_s[1] = NEXT_REQUEST_S
    reader = ThreadPoolExecutor(1, thread_name_prefix="tab-1")
    reply = gated.opening(1, lambda b: "You said: a long story, in many words")
    try:
        with _fake(kind, reply) as fake, closing(_sdk(kind, fake)) as sdk:
            client = wrap(sdk, memory=memory, session="chat", user_id="ana")
            read = _stream_cut_behind_a_held_commit(kind, gated, client, reader)
            gated.opened[0].set()
            assert gated.arrived[1].wait(10), "the cut reply was never committed"
            other = wrap(sdk, memory=memory, session="chat", user_id="ana")  # the next request's
            _ask(other, kind, "and the next request")
            client.flush()
            other.flush()
    finally:
        gated.open_all()
        reader.shutdown()
    assert _log(memory) == [
        ("user", "tell me a long story", None),
        ("user", "a question from the other tab", None),
        ("assistant", "You said: a long story, in many words", None),
        ("assistant", read, False),
        ("user", "and the next request", None),
        ("assistant", "You said: a long story, in many words", None),
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_a_failed_background_commit_is_logged_once_without_the_users_text(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client wrapped per request is never called again: the failure of its reply's
    commit is logged when it fails (ids and the error, not what the user said), and
    still raised at that client's ``flush()``, once."""
    store = SQLiteStore(tmp_path / "chat.db")
    gated = GatedStore(store, gates=0, fail=1)
    caplog.set_level(logging.WARNING, logger="contextos")
    try:
        with (
            Memory(store=gated, embedder=HashEmbedder(), background_embedding=False) as memory,  # type: ignore[arg-type]
            _fake(kind, lambda b: "Noted: no peanuts.") as fake,
            closing(_sdk(kind, fake)) as sdk,
        ):
            client = wrap(sdk, memory=memory, session="chat", user_id="ana")
            _ask(client, kind, "I am allergic to peanuts")
            memory.close()  # the app's shutdown: waits for the commit, raising nothing
            warned = [r for r in caplog.records if r.name.startswith("contextos")]
            assert [r.levelno for r in warned] == [logging.WARNING]
            message = warned[0].getMessage()
            assert "'chat'" in message and "disk full" in message and "flush()" in message
            assert "peanut" not in message.lower()
            with pytest.raises(OSError, match="disk full"):
                client.flush()
            client.flush()  # raised once
        assert len([r for r in caplog.records if r.name.startswith("contextos")]) == 1
    finally:
        store.close()


class _TitlingMemory:
    """A ``MemoryLike`` over a real Memory whose first ``add`` waits for ``go``, then asks
    the model, through the same wrapped client, for a title of what it stores."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self.client: Any = None
        self.adding = threading.Event()
        self.go = threading.Event()
        self.titles: list[str] = []

    def search(self, query: str, **kw: Any) -> Any:
        return self.memory.search(query, **kw)

    def add(self, messages: Any, **scope: Any) -> Any:
        if not self.adding.is_set():
            self.adding.set()
            assert self.go.wait(HOLD_S)
            text = " / ".join(m.content for m in messages)
            out = _ask(self.client, "anthropic", f"A title for: {text}")
            self.titles.append(out.content[0].text)
        return self.memory.add(list(messages), **scope)

    def delete_many(self, memory_ids: Any, *, purge: bool = False) -> list[str]:
        return self.memory.delete_many(memory_ids, purge=purge)

    def get_all(self, **kw: Any) -> Any:
        return self.memory.get_all(**kw)


def test_a_commit_that_calls_its_client_while_a_later_commit_waits_finishes(
    gated: GatedStore, memory: Memory
) -> None:
    """A commit makes a call through its own client (a ``MemoryLike`` whose ``add`` asks
    the model) while the client's next commit waits for it on its own thread: that call
    waits for neither (the later one waits for it), and its commit runs in its place."""
    gated.open_all()
    titling = _TitlingMemory(memory)
    reader = ThreadPoolExecutor(1, thread_name_prefix="tab-1")
    flusher = ThreadPoolExecutor(1, thread_name_prefix="flush")
    try:
        with (
            _fake("anthropic", lambda b: "You said: a long story, in many words") as fake,
            closing(_sdk("anthropic", fake)) as sdk,
        ):
            client = wrap(
                sdk,
                memory=titling,
                session=Session(memory.store, "chat", user_id="ana"),
            )
            titling.client = client
            stream = reader.submit(
                _ask, client, "anthropic", "tell me a long story", stream=True
            ).result(10)
            events = iter(stream)
            read = reader.submit(_first_text, "anthropic", events).result(10)
            _ask(client, "anthropic", "a question from the other tab")
            assert titling.adding.wait(10), "the reply's commit never remembered it"
            reader.submit(stream.close).result(timeout=CLOSE_S)  # queued behind it
            titling.go.set()
            flusher.submit(client.flush).result(timeout=30)  # TimeoutError: a deadlock
    finally:
        titling.go.set()
        reader.shutdown()
        flusher.shutdown(wait=False)
    reply = "You said: a long story, in many words"
    assert _log(memory) == [
        ("user", "tell me a long story", None),
        ("user", "a question from the other tab", None),
        ("assistant", reply, None),
        ("user", f"A title for: a question from the other tab / {reply}", None),
        ("assistant", titling.titles[0], None),
        ("assistant", read, False),
    ]
