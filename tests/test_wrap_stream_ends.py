"""How a wrapped stream ends: who reports it, and whether its reply counts as whole.

The real ``anthropic`` / ``openai`` SDK clients against the loopback fakes, a real
SQLite memory file. A stream left to the garbage collector is closed wherever the
collector happens to run -- inside the wrapper's own commit included -- so that
close may only queue it; whether a reply came whole is read from the protocol's end
marker, not from how the caller's loop ended.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.embed import Vectors  # noqa: E402
from contextos.engine.context import COMPLETE_KEY  # noqa: E402
from contextos.errors import ProviderHTTPError, RateLimited  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import AnthropicUsage, FakeAnthropic, message_start  # noqa: E402
from contextos.testing.fake_http import FakeResponse, SSEEvent  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI, OpenAIUsage  # noqa: E402
from sdk_support import fake_and_sdk  # noqa: E402

MODEL = "claude-sonnet-4"
GPT = "gpt-4.1-mini"


class _CollectingEmbedder(HashEmbedder):
    """Runs the garbage collector while it embeds a remembered exchange (a batch of
    several texts), as the collector may at any allocation: here, inside the commit
    of the wrapped call's reply, with the wrapper's commit lock held."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        if len(texts) > 1:
            gc.collect()
        return super().embed(texts)


def _within(seconds: float, func: Callable[[], Any]) -> None:
    """Run ``func`` on a daemon thread; fail (instead of hanging the suite) if it deadlocks."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            func()
        except BaseException as exc:  # handed to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds}s: deadlocked"
    if errors:
        raise errors[0]


def _ask(wrapped: Any, question: str, **kw: Any) -> Any:
    return wrapped.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": question}], **kw
    )


def _log(wrapped: Any) -> list[Any]:
    wrapped.flush()
    return [t.message for t in wrapped.context.session.turns()]


# -- a stream the garbage collector closes -----------------------------------------------


def _opened(wrapped: Any, provider: str, fake: Any, question: str) -> Any:
    """A streamed call to ``provider`` answered at length (several events to read)."""
    if provider == "anthropic":
        fake.enqueue_reply("a long story " * 20, AnthropicUsage(10, 40), stream=True)
        return _ask(wrapped, question, stream=True)
    fake.enqueue_reply("a long story " * 20, OpenAIUsage(10, 40), stream=True)
    messages = [{"role": "user", "content": question}]
    return wrapped.chat.completions.create(model=GPT, messages=messages, stream=True)


@contextmanager
def _collecting_client(
    tmp_path: Path, provider: str, background_commit: bool
) -> Iterator[tuple[Any, Any]]:
    """The fake server and a client of ``provider`` wrapped for Ana's session, on a
    Memory whose embedder runs the garbage collector inside each commit."""
    fake_server, sdk = fake_and_sdk(provider)
    with (
        fake_server() as fake,
        Memory(
            tmp_path / "m.db", embedder=_CollectingEmbedder(), background_embedding=False
        ) as memory,
        sdk(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        yield (
            fake,
            wrap(
                client,
                memory=memory,
                session="s",
                user_id="ana",
                background_commit=background_commit,
            ),
        )


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("background_commit", [False, True])
@pytest.mark.parametrize(
    ("provider", "order"),
    [
        # openai's Stream holds itself through its own generator: only the collector
        # frees it, here inside the next call's commit, so it is reported after that call
        ("openai", [(False, True), (True, False)]),
        # anthropic's holds no cycle, and the wrapper adds none: dropped, it is freed at
        # once (its connection released), and reported before the next call
        ("anthropic", [(True, False), (False, True)]),
    ],
)
def test_a_stream_collected_inside_a_commit_is_queued_not_deadlocked(
    tmp_path: Path, background_commit: bool, provider: str, order: list[tuple[bool, bool]]
) -> None:
    """A worker thread opens a stream, reads one event and ends without closing it. An
    openai stream (a cycle) is freed by the collector inside the next call's commit
    (inline, or on the commit thread while ``flush`` waits for it): both calls return,
    and the stream is logged after. An anthropic stream is freed when dropped."""
    with _collecting_client(tmp_path, provider, background_commit) as (fake, wrapped):
        left, done = threading.Event(), threading.Event()

        def abandon() -> None:
            events = iter(_opened(wrapped, provider, fake, "tell me a story"))
            for _ in range(4):  # into the text, then drop it without closing it
                next(events)
            del events
            left.set()
            done.wait()  # alive, so no later thread is mistaken for this one

        opener = threading.Thread(target=abandon, daemon=True)
        opener.start()
        assert left.wait(20)
        if provider == "anthropic":
            _within(20, lambda: _ask(wrapped, "what is the weather?"))
        else:
            question = [{"role": "user", "content": "what is the weather?"}]
            _within(20, lambda: wrapped.chat.completions.create(model=GPT, messages=question))
        _within(20, wrapped.flush)
        done.set()
        assert [(c.stream, c.complete) for c in wrapped.calls] == order
        log = _log(wrapped)
        streamed = 1 if order[0][0] else 3  # the reply logged first or last
        assert sorted(m.role for m in log) == ["assistant", "assistant", "user", "user"]
        assert "a long" in log[streamed].content and log[streamed].metadata[COMPLETE_KEY] is False


class _Relay:
    """An app object that owns its reply generator (``self.events``): a reference cycle
    (self -> generator -> frame -> self), so once the app drops it only the collector
    frees it, and the generator's ``with`` block (or ``finally``) closes the stream
    from inside the collector, wherever that runs."""

    def __init__(self, wrapped: Any, provider: str, fake: Any, shape: str) -> None:
        self.wrapped, self.provider, self.fake, self.shape = wrapped, provider, fake, shape
        self.events = self._events()

    def _events(self) -> Any:
        question = [{"role": "user", "content": "tell me a story"}]
        if self.shape == "helper":  # the SDK's stream(...) helper in a with block
            self.fake.enqueue_reply(
                "a long story " * 20,
                AnthropicUsage(10, 40) if self.provider == "anthropic" else OpenAIUsage(10, 40),
                stream=True,
            )
            if self.provider == "anthropic":
                helper = self.wrapped.messages.stream(model=MODEL, max_tokens=64, messages=question)
            else:
                helper = self.wrapped.chat.completions.stream(model=GPT, messages=question)
            with helper as stream:
                yield from stream
            return
        stream = _opened(self.wrapped, self.provider, self.fake, "tell me a story")
        if self.shape == "with":
            with stream:
                yield from stream
        else:  # "finally"
            try:
                yield from stream
            finally:
                stream.close()


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("background_commit", [False, True])
@pytest.mark.parametrize("shape", ["with", "finally", "helper"])
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_stream_closed_by_the_app_inside_the_collector_is_queued_not_deadlocked(
    tmp_path: Path, background_commit: bool, shape: str, provider: str
) -> None:
    """The app relays a stream from a generator that sits in a reference cycle; its
    client disconnects, the app drops it, and the collector finalises it inside the
    next call's commit (inline, or on the commit thread while ``flush`` joins it): the
    generator's ``with`` / ``finally`` / helper block closes the stream there. That
    close may only queue the report: the next call and ``flush`` return, the stream is
    recorded (as left) after them, and the client goes on working."""
    with _collecting_client(tmp_path, provider, background_commit) as (fake, wrapped):
        relay = _Relay(wrapped, provider, fake, shape)
        for _ in range(6):  # into the text, then the app's client disconnects
            next(relay.events)
        del relay  # dropped by the app: only the collector can free it

        def ask(question: str) -> None:
            messages = [{"role": "user", "content": question}]
            if provider == "anthropic":
                wrapped.messages.create(model=MODEL, max_tokens=64, messages=messages)
            else:
                wrapped.chat.completions.create(model=GPT, messages=messages)

        def next_call_then_flush() -> None:
            ask("what is the weather?")  # its commit collects the relay
            wrapped.flush()

        _within(20, next_call_then_flush)
        assert [(c.stream, c.complete) for c in wrapped.calls] == [(False, True), (True, False)]
        _within(20, lambda: ask("and tomorrow?"))  # the client is not stuck
        log = _log(wrapped)
        assert [m.role for m in log] == ["user", "user", "assistant", "assistant"] + [
            "user",
            "assistant",
        ]
        assert "a long" in log[3].content and log[3].metadata[COMPLETE_KEY] is False


# -- whole or cut: the protocol's end marker decides ----------------------------------------


def _event(data: dict[str, Any]) -> SSEEvent:
    return SSEEvent(json.dumps(data), data["type"])


def _chunk(delta: dict[str, Any], finish: str | None = None) -> SSEEvent:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": GPT}
    return SSEEvent(json.dumps({**body, "choices": [choice]}))


def test_an_anthropic_body_cut_without_an_error_is_not_a_whole_reply(memory: Memory) -> None:
    with (
        FakeAnthropic() as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory=memory, session="s", user_id="ana")
        text = {"type": "text", "text": ""}
        fake.enqueue(
            FakeResponse(
                events=[
                    _event(message_start("msg_cut", MODEL, AnthropicUsage(5, 1))),
                    _event({"type": "content_block_start", "index": 0, "content_block": text}),
                    _event(
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "text_delta", "text": "Your flight is cancel"},
                        }
                    ),
                ]
            )
        )
        list(_ask(wrapped, "is my flight ok?", stream=True))  # ends quietly: no error
        log = _log(wrapped)
        assert not wrapped.calls[0].complete
        assert log[1].metadata[COMPLETE_KEY] is False
        # A fragment is not remembered; the question, said whole, is.
        assert [r.text for r in memory.get_all(user_id="ana")] == ["is my flight ok?"]


def test_an_openai_body_cut_without_an_error_is_not_a_whole_reply(memory: Memory) -> None:
    with (
        FakeOpenAI() as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory=memory, session="s", user_id="ana")
        fake.enqueue(FakeResponse(events=[_chunk({"role": "assistant", "content": "Your fli"})]))
        list(
            wrapped.chat.completions.create(
                model=GPT, stream=True, messages=[{"role": "user", "content": "flight ok?"}]
            )
        )
        log = _log(wrapped)
        assert not wrapped.calls[0].complete and log[1].metadata[COMPLETE_KEY] is False
        assert [r.text for r in memory.get_all(user_id="ana")] == ["flight ok?"]


def test_a_caller_stopping_at_message_stop_has_a_whole_reply(memory: Memory) -> None:
    with (
        FakeAnthropic() as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory=memory, session="s", user_id="ana")
        for event in _ask(wrapped, "I live in Lisbon", stream=True):
            if event.type == "message_stop":
                break  # the app stops at the end marker and never closes the stream
        _ask(wrapped, "next")
        log = _log(wrapped)
        assert wrapped.calls[0].complete and COMPLETE_KEY not in log[1].metadata
        assert "I live in Lisbon" in [r.text for r in memory.get_all(user_id="ana")]


def test_a_caller_stopping_at_finish_reason_has_a_whole_reply_and_its_usage(
    memory: Memory,
) -> None:
    with (
        FakeOpenAI() as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory=memory, session="s", user_id="ana")
        seen = []
        messages = [{"role": "user", "content": "I live in Lisbon"}]
        for chunk in wrapped.chat.completions.create(model=GPT, stream=True, messages=messages):
            seen.append(chunk)
            if chunk.choices[0].finish_reason:
                break  # "stop": the answer is whole
        assert all(c.choices for c in seen)  # the usage chunk the app did not ask for: hidden
        wrapped.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "next"}])
        log = _log(wrapped)
        call = wrapped.calls[0]
        assert call.complete and call.usage.input_tokens > 0 and call.usage.output_tokens > 0
        assert COMPLETE_KEY not in log[1].metadata
        assert "I live in Lisbon" in [r.text for r in memory.get_all(user_id="ana")]


# -- an error event inside a stream ----------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error", "status"),
    [
        ("overloaded_error", ProviderHTTPError, 529),
        ("api_error", ProviderHTTPError, 500),
        ("rate_limit_error", RateLimited, None),
    ],
)
def test_an_error_event_in_a_stream_maps_by_its_type(
    kind: str, error: type[Exception], status: int | None
) -> None:
    """The response was a 200; the event's ``error.type`` says what went wrong."""
    with (
        FakeAnthropic() as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        failure = {"type": "error", "error": {"type": kind, "message": "busy"}}
        start = message_start("m1", MODEL, AnthropicUsage(5, 1))
        fake.enqueue(FakeResponse(events=[_event(start), _event(failure)]))
        with pytest.raises(error) as raised:
            list(_ask(wrap(client), "hi", stream=True))
        assert getattr(raised.value, "status", None) == status


# -- a stream read by another thread or task than the one that opened it -----------------


def test_a_stream_handed_to_another_thread_is_not_abandoned_by_its_opener(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
) -> None:
    """A web framework opens the stream on one thread and iterates it on a threadpool's;
    the opener serves the next request meanwhile."""
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    fake_anthropic.enqueue_reply("a streamed answer " * 10, AnthropicUsage(10, 30), stream=True)
    stream = _ask(wrapped, "stream it", stream=True)
    started, go = threading.Event(), threading.Event()
    events: list[Any] = []

    def consume() -> None:
        for event in stream:
            events.append(event)
            if len(events) == 3:
                started.set()
                go.wait(20)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    assert started.wait(20)
    _ask(wrapped, "another question")  # the opener's next call
    go.set()
    consumer.join(20)
    assert events[-1].type == "message_stop"
    (streamed,) = [c for c in wrapped.calls if c.stream]
    assert streamed.complete and streamed.reply.content == "a streamed answer " * 10


def test_a_stream_read_by_one_task_is_not_abandoned_by_another_tasks_call(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
) -> None:
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    fake_anthropic.enqueue_reply("a streamed answer " * 10, AnthropicUsage(10, 30), stream=True)
    reading = asyncio.Event()

    async def read() -> None:
        for _ in _ask(wrapped, "stream it", stream=True):
            reading.set()
            await asyncio.sleep(0.005)  # e.g. await websocket.send(...)

    async def call() -> None:
        await reading.wait()
        _ask(wrapped, "a title for this chat?")

    async def both() -> None:
        await asyncio.gather(read(), call())

    asyncio.run(both())
    (streamed,) = [c for c in wrapped.calls if c.stream]
    assert streamed.complete and streamed.reply.content == "a streamed answer " * 10


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_stream_served_from_a_threadpool_survives_another_requests_call_on_its_thread(
    provider: str, memory: Memory
) -> None:
    """Starlette runs sync endpoints and a ``StreamingResponse``'s iterator on anyio's
    worker threads. One request streams; between two of its ``next()`` calls, another
    request's plain ``create()`` runs on the very worker thread that opened and read the
    stream (one worker here, so it always does). That call is another caller, and must
    not close the stream being served."""
    concurrency = pytest.importorskip("starlette.concurrency")
    anyio_to_thread = pytest.importorskip("anyio.to_thread")
    sdk = anthropic.Anthropic if provider == "anthropic" else openai.OpenAI
    with (
        FakeAnthropic() if provider == "anthropic" else FakeOpenAI() as fake,
        sdk(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory=memory, session="s", user_id="ana")
        threads: dict[str, set[int]] = {"stream": set(), "plain": set()}
        reading, resume = asyncio.Event(), asyncio.Event()
        events: list[Any] = []

        def open_stream() -> Any:
            threads["stream"].add(threading.get_ident())
            return _opened(wrapped, provider, fake, "tell me a story")

        def plain() -> None:
            threads["plain"].add(threading.get_ident())
            if provider == "anthropic":
                fake.enqueue_reply("a title", AnthropicUsage(5, 2))
                _ask(wrapped, "a title for this chat?")
            else:
                fake.enqueue_reply("a title", OpenAIUsage(5, 2))
                messages = [{"role": "user", "content": "a title for this chat?"}]
                wrapped.chat.completions.create(model=GPT, messages=messages)

        def tagged(stream: Any) -> Any:
            for event in stream:
                threads["stream"].add(threading.get_ident())
                yield event

        async def streaming_request() -> None:
            stream = await concurrency.run_in_threadpool(open_stream)
            async for event in concurrency.iterate_in_threadpool(tagged(stream)):
                events.append(event)
                if len(events) == 3:
                    reading.set()
                    await resume.wait()

        async def plain_request() -> None:
            await reading.wait()
            await concurrency.run_in_threadpool(plain)
            resume.set()

        async def server() -> None:
            anyio_to_thread.current_default_thread_limiter().total_tokens = 1
            await asyncio.gather(streaming_request(), plain_request())

        plain()  # a call at start-up, on the thread the event loop then runs on
        threads["plain"].clear()
        asyncio.run(server())
        assert threads["plain"] == threads["stream"]  # one worker thread served both
        streamed = next(c for c in wrapped.calls if c.stream)
        assert streamed.complete and streamed.reply.content == "a long story " * 20
        assert len(wrapped.calls) == 3


def test_a_stream_read_by_pool_threads_survives_its_last_readers_exit(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
) -> None:
    """A pool's idle worker exits (anyio's after ~10 s) while the stream it last read is
    still being served: another worker reads on. A call meanwhile must not take the
    stream for left because that worker is gone: anyone but its opener read it."""
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    fake_anthropic.enqueue_reply("a streamed answer " * 10, AnthropicUsage(10, 30), stream=True)
    stream = _ask(wrapped, "stream it", stream=True)
    events = iter(stream)
    first = threading.Thread(target=lambda: [next(events) for _ in range(3)])
    first.start()
    first.join()  # the worker that read last has ended
    _ask(wrapped, "another question")
    rest: list[Any] = []
    second = threading.Thread(target=lambda: rest.extend(events))
    second.start()
    second.join(20)
    assert rest[-1].type == "message_stop"
    (streamed,) = [c for c in wrapped.calls if c.stream]
    assert streamed.complete and streamed.reply.content == "a streamed answer " * 10
