"""Closing a wrapped stream wakes a reader blocked in it on another thread (review s50).

The documented asyncio recipe reads a stream one ``next()`` per ``asyncio.to_thread``
and closes it in the handler's ``finally``. A cancelled handler closed it on the loop
thread while a worker thread was still inside ``next()``, blocked in the socket's read:
closing the socket under that read did not end it, so the worker stayed stuck until the
model's next bytes, or the SDK's read timeout (600 s by default), and ``asyncio.run()``
waited on it. Now the close shuts the socket down first: the reader wakes at once and
gets ``ProviderError``, and the fragment is logged as incomplete. A close while nobody
reads leaves the connection to the pool, as before.

The real ``anthropic`` / ``openai`` SDK clients against the loopback fakes, which send a
reply's first events and then nothing (a model that stalls) for longer than the test;
the SDK's read timeout is a minute, so only the fix can end the read. A real SQLite
memory file with the hash embedder.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.errors import ProviderError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import AnthropicUsage, FakeAnthropic  # noqa: E402
from contextos.testing.fake_http import FakeResponse, SSEEvent  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI  # noqa: E402
from sdk_support import assert_logged_as_cut, first_events, read_in_thread  # noqa: E402

# Asserts that a blocked read ends within WAKE_S: runs alone (tests/conftest.py).
pytestmark = pytest.mark.serial

MODEL = "claude-sonnet-4"
GPT = "gpt-4.1-mini"
PARTIAL = "Your flight is cancel"
QUESTION = [{"role": "user", "content": "is my flight ok?"}]
#: The SDK's read timeout and the fake's stall: far past WAKE_S.
READ_TIMEOUT_S = 60.0
STALL_S = 30.0
#: How soon the blocked reader must end once the stream is closed.
WAKE_S = 2.0
#: How long the reader is given, after its first event, to block in the next read.
SETTLE_S = 0.3


def _anthropic_events() -> list[SSEEvent]:
    return first_events("anthropic", PARTIAL, model=MODEL, message_id="msg_stalled")


def _openai_events() -> list[SSEEvent]:
    return first_events("openai", PARTIAL, model=GPT, message_id="msg_stalled")


@pytest.fixture(params=["anthropic", "openai"])
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def chat(provider: str, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """The fake server and a client of it wrapped with a session and memory; the fake's
    next reply sends its first events, then stalls."""
    fake: Any
    sdk: Any
    if provider == "anthropic":
        fake, sdk, events = FakeAnthropic(), anthropic.Anthropic, _anthropic_events()
    else:
        fake, sdk, events = FakeOpenAI(), openai.OpenAI, _openai_events()
    with (
        fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        sdk(base_url=fake.base_url, api_key="t", max_retries=0, timeout=READ_TIMEOUT_S) as client,
    ):
        fake.enqueue(FakeResponse(events=events, cut="stall", stall_seconds=STALL_S))
        yield fake, wrap(client, memory=memory, session="s", user_id="ana")
        for thread in threading.enumerate():  # a wrapped client's background commit
            if thread.name == "contextos-commit":
                thread.join()


def _open(provider: str, wrapped: Any, how: str) -> tuple[Any, Callable[[], None]]:
    """(what the reader iterates, how the app closes it): ``create(stream=True)`` and its
    ``close()``; the SDK's ``stream(...)`` helper and its ``close()``; or the helper and
    the end of its ``with`` block."""
    if how == "create":
        if provider == "anthropic":
            stream = wrapped.messages.create(
                model=MODEL, max_tokens=64, messages=QUESTION, stream=True
            )
        else:
            stream = wrapped.chat.completions.create(model=GPT, messages=QUESTION, stream=True)
        return stream, stream.close
    if provider == "anthropic":
        manager = wrapped.messages.stream(model=MODEL, max_tokens=64, messages=QUESTION)
    else:
        manager = wrapped.chat.completions.stream(model=GPT, messages=QUESTION)
    helper = manager.__enter__()
    if how == "helper":
        return helper, helper.close
    return helper, lambda: manager.__exit__(None, None, None)


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _assert_logged_as_cut(wrapped: Any) -> None:
    assert_logged_as_cut(wrapped, "is my flight ok?", PARTIAL)


@pytest.mark.parametrize("how", ["create", "helper", "helper_exit"])
def test_a_close_on_another_thread_wakes_the_reader_blocked_in_the_stream(
    chat: tuple[Any, Any], provider: str, how: str
) -> None:
    _, wrapped = chat
    stream, close = _open(provider, wrapped, how)
    thread, read, ended = read_in_thread(stream)
    _wait_for(lambda: bool(read))
    time.sleep(SETTLE_S)  # the reader has every event sent: it waits in the socket's read
    assert thread.is_alive()
    started = time.monotonic()
    close()
    thread.join(WAKE_S)
    assert not thread.is_alive(), f"the reader was still blocked {WAKE_S}s after close()"
    assert time.monotonic() - started < WAKE_S
    assert len(ended) == 1 and isinstance(ended[0], ProviderError)
    _assert_logged_as_cut(wrapped)


def test_the_asyncio_recipe_cancelled_mid_stream_frees_its_worker_thread(
    chat: tuple[Any, Any], provider: str
) -> None:
    """docs/providers.md: one ``next()`` per ``asyncio.to_thread``, ``close()`` in the
    handler's ``finally``; the task is cancelled (the client went away) while a worker
    thread waits in ``next()``. That worker returns at once, so ``asyncio.run()`` (which
    waits for the default executor's threads) returns too."""
    _, wrapped = chat
    read: list[Any] = []
    read_returned = threading.Event()

    def read_one(it: Iterator[Any]) -> Any:
        try:
            return next(it, None)
        finally:
            read_returned.set()

    async def handler() -> None:
        if provider == "anthropic":
            call = wrapped.messages.create
            kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 64}
        else:
            call = wrapped.chat.completions.create
            kwargs = {"model": GPT}
        stream = await asyncio.to_thread(call, messages=QUESTION, stream=True, **kwargs)
        try:
            it = iter(stream)
            while True:
                read_returned.clear()
                event = await asyncio.to_thread(read_one, it)
                if event is None:
                    break
                read.append(event)
        finally:
            stream.close()

    async def main() -> float:
        task = asyncio.create_task(handler())
        while not read:
            await asyncio.sleep(0.01)
        await asyncio.sleep(SETTLE_S)  # the worker waits in the socket's read
        assert not read_returned.is_set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic()

    closed = asyncio.run(main())
    assert read_returned.is_set() or read_returned.wait(WAKE_S)
    assert time.monotonic() - closed < WAKE_S, "asyncio.run() waited on the blocked worker"
    _assert_logged_as_cut(wrapped)


def test_a_close_while_nobody_reads_leaves_the_connection_to_the_pool(tmp_path: Path) -> None:
    """A stream read whole and then closed, here or on another thread, shuts nothing
    down: the next call goes out on the same kept-alive connection. Anthropic's only:
    openai's SDK stops at ``[DONE]`` and closes the response before the body's end, so
    its connection is not kept, wrapped or bare."""
    with (
        FakeAnthropic() as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        anthropic.Anthropic(
            base_url=fake.base_url, api_key="t", max_retries=0, timeout=READ_TIMEOUT_S
        ) as client,
    ):
        wrapped = wrap(client, memory=memory, session="s", user_id="ana")
        sockets = []
        for n, close_on_another_thread in enumerate([True, False, True]):
            fake.enqueue_reply(f"answer {n}", AnthropicUsage(5, 2), stream=True)
            stream = wrapped.messages.create(
                model=MODEL,
                max_tokens=64,
                messages=[{"role": "user", "content": f"question {n}"}],
                stream=True,
            )
            for _ in stream:
                pass
            if close_on_another_thread:
                closer = threading.Thread(target=stream.close)
                closer.start()
                closer.join(10)
            else:
                stream.close()
            sockets.append(stream.response.extensions["network_stream"].get_extra_info("socket"))
        assert all(s is sockets[0] for s in sockets), "a connection was not reused"
        assert sockets[0].fileno() != -1
        assert [c.complete for c in wrapped.calls] == [True, True, True]
        for thread in threading.enumerate():
            if thread.name == "contextos-commit":
                thread.join()
