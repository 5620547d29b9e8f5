"""A stream the app leaves early: when it is recorded, and when its connection is free.

The real ``anthropic`` / ``openai`` SDK clients against the loopback fakes, a real
SQLite memory file. The clients get a pool of one connection and a short pool
timeout, so a stream that still holds its connection makes the next request fail:
the symptom an app sees when abandoned streams hold the pool. The collector is off
(``no_gc``) where only refcounting or the wrapper may free a stream.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.engine.context import COMPLETE_KEY  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import AnthropicUsage, FakeAnthropic  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI, OpenAIUsage  # noqa: E402
from contextos.types import Message  # noqa: E402
from sdk_support import one_connection_client  # noqa: E402

MODEL = "claude-sonnet-4"
GPT = "gpt-4.1-mini"
LONG = "a long story " * 40
PROVIDERS = ["anthropic", "openai"]


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake(provider: str) -> Iterator[Any]:
    with FakeAnthropic() if provider == "anthropic" else FakeOpenAI() as server:
        yield server


@pytest.fixture
def one_connection(provider: str, fake: Any) -> Iterator[Any]:
    """The SDK client with a pool of one connection, waiting 0.5 s at most for it."""
    with one_connection_client(provider, fake.base_url, pool_timeout=0.5) as client:
        yield client


def _enqueue(provider: str, fake: Any, text: str = LONG) -> None:
    if provider == "anthropic":
        fake.enqueue_reply(text, AnthropicUsage(10, 40), stream=True)
    else:
        fake.enqueue_reply(text, OpenAIUsage(10, 40), stream=True)


def _stream(client: Any, provider: str, question: str) -> Any:
    """A streamed call (wrapped or not), of a long reply."""
    messages = [{"role": "user", "content": question}]
    if provider == "anthropic":
        return client.messages.create(model=MODEL, max_tokens=64, messages=messages, stream=True)
    return client.chat.completions.create(model=GPT, messages=messages, stream=True)


def _ask(client: Any, provider: str, question: str) -> Any:
    """A plain call (wrapped or not): it needs a free connection."""
    messages = [{"role": "user", "content": question}]
    if provider == "anthropic":
        return client.messages.create(model=MODEL, max_tokens=64, messages=messages)
    return client.chat.completions.create(model=GPT, messages=messages)


def _left_early(stream: Any) -> None:
    """Read a few events, then ``break`` (the user pressed "stop"), never closing it."""
    for n, _ in enumerate(stream):
        if n == 3:
            break


def _log(wrapped: Any) -> list[Message]:
    wrapped.flush()
    return [t.message for t in wrapped.context.session.turns()]


# -- the connection of a stream the app left ---------------------------------------------


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("provider", ["anthropic"], indirect=True)
def test_a_dropped_stream_frees_its_connection_at_once_like_the_bare_sdk(
    provider: str, fake: Any, one_connection: Any, memory: Memory
) -> None:
    """anthropic's ``Stream`` holds no reference cycle; the wrapper must not add one, or
    the stream, and its connection, would wait for the garbage collector."""
    wrapped = wrap(one_connection, memory=memory, session="s", user_id="ana")
    _enqueue(provider, fake)
    stream = _stream(wrapped, provider, "tell me a story")
    _left_early(stream)
    del stream  # dropped: refcounting frees it, as with the bare SDK
    # The SDK client itself (not the wrapper, which would report and close the stream
    # first): it gets the one connection only if the dropped stream gave it back.
    _ask(one_connection, provider, "hello")
    wrapped.flush()  # reports the dropped stream, as left
    (streamed,) = wrapped.calls
    assert streamed.stream and not streamed.complete


@pytest.mark.usefixtures("no_gc")
def test_a_stream_reported_as_left_frees_its_connection(
    provider: str, fake: Any, one_connection: Any, memory: Memory
) -> None:
    """The app keeps the stream (a variable still in scope) but calls again: it has moved
    on, the stream is reported as incomplete, and its connection is given back."""
    wrapped = wrap(one_connection, memory=memory, session="s", user_id="ana")
    _enqueue(provider, fake)
    kept = _stream(wrapped, provider, "tell me a story")
    _left_early(kept)
    reply = _ask(wrapped, provider, "hello")  # needs the connection the stream held
    assert reply is not None
    assert [(c.stream, c.complete) for c in wrapped.calls] == [(True, False), (False, True)]
    log = _log(wrapped)
    assert [m.role for m in log] == ["user", "assistant", "user", "assistant"]
    assert log[1].metadata[COMPLETE_KEY] is False and "a long story" in log[1].content
    kept.close()  # the app's late close changes nothing
    assert len(wrapped.calls) == 2


def test_a_stream_dropped_before_its_first_event_is_recorded_at_the_next_call(
    provider: str, fake: Any
) -> None:
    """A pass-through stream the app drops unread (it failed before the loop): the
    observing generator never started, so only the stream's own finalizer can tell.
    The next call records it, as incomplete, and keeps no entry for it."""
    sdk = anthropic.Anthropic if provider == "anthropic" else openai.OpenAI
    with sdk(base_url=fake.base_url, api_key="t", max_retries=0) as client:
        wrapped = wrap(client)
        _enqueue(provider, fake)
        stream = _stream(wrapped, provider, "tell me a story")
        del stream
        gc.collect()  # openai's stream holds itself: only the collector frees it
        _ask(wrapped, provider, "hello")
        assert [(c.stream, c.complete) for c in wrapped.calls] == [(True, False), (False, True)]


# -- the SDK's stream(...) helper left early ------------------------------------------------


def test_a_stream_helper_left_early_is_recorded_when_its_block_ends(
    provider: str, fake: Any, one_connection: Any, memory: Memory
) -> None:
    """openai's ``ChatCompletionStream`` closes its response itself, not its raw stream:
    the wrapper still records the call as the ``with`` block ends, not at the next call."""
    wrapped = wrap(one_connection, memory=memory, session="s", user_id="ana")
    _enqueue(provider, fake)
    messages = [{"role": "user", "content": "tell me a story"}]
    if provider == "anthropic":
        helper = wrapped.messages.stream(model=MODEL, max_tokens=64, messages=messages)
    else:
        helper = wrapped.chat.completions.stream(model=GPT, messages=messages)
    with helper as stream:
        _left_early(stream)
    (call,) = wrapped.calls
    assert call.stream and not call.complete
    assert [(m.role, m.metadata.get(COMPLETE_KEY)) for m in _log(wrapped)] == [
        ("user", None),
        ("assistant", False),
    ]


# -- a stream left by a thread or task that has ended ----------------------------------------


@pytest.mark.usefixtures("no_gc")
def test_flush_reports_a_stream_left_by_a_finished_worker_thread(
    provider: str, fake: Any, one_connection: Any, memory: Memory
) -> None:
    """A request handler on a worker thread reads part of a stream, stops, keeps it (in
    the app's own state) and returns; the thread ends. Nobody can read it on: ``flush()``
    at shutdown reports it, and its connection is given back."""
    wrapped = wrap(one_connection, memory=memory, session="s", user_id="ana")
    _enqueue(provider, fake)
    kept: list[Any] = []

    def handler() -> None:
        stream = _stream(wrapped, provider, "tell me a story")
        _left_early(stream)
        kept.append(stream)

    worker = threading.Thread(target=handler)
    worker.start()
    worker.join()
    wrapped.flush()
    (call,) = wrapped.calls
    assert call.stream and not call.complete
    log = _log(wrapped)
    assert [(m.role, m.metadata.get(COMPLETE_KEY)) for m in log] == [
        ("user", None),
        ("assistant", False),
    ]
    _ask(one_connection, provider, "hello")  # the connection is free again


@pytest.mark.usefixtures("no_gc")
def test_a_call_on_another_thread_reports_a_stream_left_by_a_finished_thread_first(
    provider: str, fake: Any, one_connection: Any, memory: Memory
) -> None:
    wrapped = wrap(one_connection, memory=memory, session="s", user_id="ana")
    _enqueue(provider, fake)
    kept: list[Any] = []
    worker = threading.Thread(
        target=lambda: kept.append(_left(_stream(wrapped, provider, "tell me a story")))
    )
    worker.start()
    worker.join()
    _ask(wrapped, provider, "hello")  # on this thread: the worker's stream is logged first
    log = _log(wrapped)
    assert [(m.role, m.metadata.get(COMPLETE_KEY)) for m in log] == [
        ("user", None),
        ("assistant", False),
        ("user", None),
        ("assistant", None),
    ]


def _left(stream: Any) -> Any:
    _left_early(stream)
    return stream


@pytest.mark.usefixtures("no_gc")
def test_a_stream_left_by_a_finished_task_is_reported_at_another_tasks_call(
    provider: str, fake: Any, one_connection: Any, memory: Memory
) -> None:
    """The asyncio counterpart: a task that has finished reads no more."""
    wrapped = wrap(one_connection, memory=memory, session="s", user_id="ana")
    _enqueue(provider, fake)
    kept: list[Any] = []

    async def read_some() -> None:
        kept.append(_left(_stream(wrapped, provider, "tell me a story")))

    async def main() -> None:
        await asyncio.create_task(read_some())
        _ask(wrapped, provider, "hello")  # this task's call, after the other ended

    asyncio.run(main())
    assert [(c.stream, c.complete) for c in wrapped.calls] == [(True, False), (False, True)]


# -- pass-through clients and the Responses API ------------------------------------------------


def _responses_stream(wrapped: Any, question: str) -> Any:
    """A streamed Responses API call (recorded, never managed), read a little and kept."""
    stream = wrapped.responses.create(model=GPT, input=question * 10, stream=True)
    events = iter(stream)
    next(events)
    next(events)
    return stream


@pytest.mark.usefixtures("no_gc")
def test_a_pass_through_stream_left_early_is_recorded_and_freed_at_flush(
    provider: str, fake: Any, one_connection: Any
) -> None:
    wrapped = wrap(one_connection)
    _enqueue(provider, fake)
    kept = _stream(wrapped, provider, "tell me a story")
    _left_early(kept)
    wrapped.flush()
    assert [(c.stream, c.complete) for c in wrapped.calls] == [(True, False)]
    _ask(one_connection, provider, "hello")  # the SDK client itself: the connection is free


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("provider", ["openai"], indirect=True)
def test_flush_records_a_responses_stream_left_early_or_dropped(
    provider: str, fake: Any, one_connection: Any, memory: Memory
) -> None:
    """``flush()`` reports a Responses stream its caller left (and frees its connection),
    and one the collector freed, without waiting for a later Responses call."""
    wrapped = wrap(one_connection, memory=memory, session="s", user_id="ana")
    kept = _responses_stream(wrapped, "tell me a story ")
    wrapped.flush()
    assert [(c.stream, c.complete) for c in wrapped.calls] == [(True, False)]
    assert kept.response.is_closed
    dropped = _responses_stream(wrapped, "and another one ")
    del dropped
    gc.collect()  # openai's stream holds itself: only the collector frees it (and queues it)
    wrapped.flush()
    assert [(c.stream, c.complete) for c in wrapped.calls] == [(True, False), (True, False)]
    _ask(one_connection, provider, "hello")  # the connection is free
