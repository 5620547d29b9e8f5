"""Streams at the edges of the wire format, through ``wrap()`` (review s47, streaming).

The real ``anthropic`` / ``openai`` SDK clients against the loopback fakes, scripted
event by event (``FakeResponse(events=...)``), and a real SQLite memory file:

1. an OpenAI tool call whose ``function.arguments`` is a JSON object (llama.cpp's
   llama-server, TGI): logged as JSON, streamed or not, where the stream crashed;
2. an SSE data line that is not JSON (a proxy cut it): ``ProviderError``, as the docs
   promise for errors inside a stream, where the bare ``JSONDecodeError`` got through;
3. a stream dropped before its first event: its connection goes back to the pool;
4. an event the accumulator could not read (Anthropic ``partial_json`` or ``index``
   null): the stream goes on and the call is recorded, with its usage.

(The wrapper's last resort for a reply that cannot be built at all, which records
the call as a failed stream's, has no wire input known to reach it once the
accumulators read every event above, so no test here reaches it: a test would have
to patch the accumulator, and tests here drive only the real SDKs and fakes.)
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.engine.context import COMPLETE_KEY  # noqa: E402
from contextos.errors import ProviderError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.providers.base import CallRecord  # noqa: E402
from contextos.testing.fake_anthropic import (  # noqa: E402
    AnthropicUsage,
    message_start,
)
from contextos.testing.fake_http import FakeResponse, SSEEvent  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI, OpenAIUsage  # noqa: E402
from contextos.types import Message, ToolCall  # noqa: E402
from sdk_support import fake_and_client, one_connection_client  # noqa: E402

MODEL = "claude-sonnet-4"
GPT = "gpt-4.1-mini"
PROVIDERS = ["anthropic", "openai"]
CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": GPT}


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake_client(provider: str) -> Iterator[tuple[Any, Any]]:
    with fake_and_client(provider) as pair:
        yield pair


@pytest.fixture
def fake(fake_client: tuple[Any, Any]) -> Any:
    return fake_client[0]


@pytest.fixture
def client(fake_client: tuple[Any, Any]) -> Any:
    return fake_client[1]


def _stream(client: Any, provider: str, question: str) -> Any:
    messages = [{"role": "user", "content": question}]
    if provider == "anthropic":
        return client.messages.create(model=MODEL, max_tokens=64, messages=messages, stream=True)
    return client.chat.completions.create(model=GPT, messages=messages, stream=True)


def _anthropic_events(*events: tuple[str, dict[str, Any]]) -> FakeResponse:
    return FakeResponse(events=[SSEEvent(event=n, data=json.dumps(p)) for n, p in events])


def _openai_chunks(*chunks: dict[str, Any], usage: OpenAIUsage | None = None) -> FakeResponse:
    wire = [{**CHUNK, **c} for c in chunks]
    if usage is not None:
        wire.append({**CHUNK, "choices": [], "usage": usage.wire()})
    events = [SSEEvent(data=json.dumps(c)) for c in wire]
    return FakeResponse(events=[*events, SSEEvent(data="[DONE]")])


def _log(wrapped: Any) -> list[Message]:
    wrapped.flush()
    return [t.message for t in wrapped.context.session.turns()]


def _remembered(memory: Memory) -> list[str]:
    return sorted(r.text for r in memory.get_all(user_id="ana"))


# -- 1. OpenAI tool-call arguments sent as a JSON object --------------------------------------

#: As the server sends them: an object, its keys not sorted.
OBJECT_ARGUMENTS = {"units": "metric", "city": "Lisbon"}
AS_JSON = '{"city":"Lisbon","units":"metric"}'


def _object_arguments_reply(stream: bool) -> FakeResponse:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": OBJECT_ARGUMENTS},
    }
    if stream:
        return _openai_chunks(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "tool_calls": [{**call, "index": 0}]},
                        "finish_reason": None,
                    }
                ]
            },
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            usage=OpenAIUsage(12, 5),
        )
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return FakeResponse(
        json_body={
            **CHUNK,
            "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": message}],
            "usage": OpenAIUsage(12, 5).wire(),
        }
    )


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "not-streamed"])
def test_tool_call_arguments_sent_as_an_object_are_logged_as_json(
    stream: bool, memory: Memory
) -> None:
    """The bare SDK hands the object on; wrapped, the stream's loop got a ``TypeError``
    and the call was logged with no tool call, and the reply not streamed was logged
    (and sent back) as a Python repr. The app's echo of the call, with the object as
    the SDK gave it, matches the logged call: the next request sends it once, as JSON."""
    with (
        FakeOpenAI() as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory=memory, session="s", user_id="ana")
        fake.enqueue(_object_arguments_reply(stream))
        question = [{"role": "user", "content": "Weather in Lisbon?"}]
        reply = wrapped.chat.completions.create(model=GPT, messages=question, stream=stream)
        if stream:
            chunks = list(reply)  # no TypeError
            (call,) = chunks[0].choices[0].delta.tool_calls
            assert call.function.arguments == OBJECT_ARGUMENTS  # the app's, as the bare SDK's
        (record,) = wrapped.calls
        assert record.complete and record.usage.output_tokens == 5
        assert record.reply is not None
        assert record.reply.tool_calls == (ToolCall("call_1", "get_weather", AS_JSON),)
        logged = _log(wrapped)
        assert [(m.role, m.tool_calls) for m in logged] == [
            ("user", ()),
            ("assistant", (ToolCall("call_1", "get_weather", AS_JSON),)),
        ]

        echoed = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": OBJECT_ARGUMENTS},
                }
            ],
        }
        result = {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"}
        wrapped.chat.completions.create(model=GPT, messages=[*question, echoed, result])
        assert [m.role for m in _log(wrapped)] == ["user", "assistant", "tool", "assistant"]
        sent = fake.completions_requests()[-1].json()["messages"]
        calls = [c for m in sent for c in m.get("tool_calls") or []]
        assert [c["function"]["arguments"] for c in calls] == [AS_JSON]


# -- 2. a malformed SSE data line ----------------------------------------------------------


def _malformed(provider: str) -> FakeResponse:
    """A reply's first text ("Hel"), then a data line cut mid-JSON."""
    if provider == "anthropic":
        block = {"type": "text", "text": ""}
        text = {"type": "text_delta", "text": "Hel"}
        whole = _anthropic_events(
            ("message_start", message_start("msg_1", MODEL, AnthropicUsage(30, 1))),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            ),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": text}),
        )
        cut = SSEEvent(event="content_block_delta", data='{"type": "content_block_delta", "ind')
        return FakeResponse(events=[*whole.events, cut])
    good = {**CHUNK, "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
    return FakeResponse(
        events=[SSEEvent(data=json.dumps(good)), SSEEvent(data='{"id": "c1", "choices": [{"ind')]
    )


def test_a_malformed_data_line_raises_provider_error(
    provider: str, fake: Any, client: Any, memory: Memory
) -> None:
    """The docs promise ``ProviderError`` for errors inside a stream; the SDK lets the
    ``JSONDecodeError`` of a data line a proxy cut through, and so did the wrapper: the
    app's ``except ProviderError`` retry path missed it. The session is as after any
    stream cut: the fragment logged incomplete, the question remembered."""
    wrapped = wrap(client, memory=memory, session="s", user_id="ana")
    fake.enqueue(_malformed(provider))
    seen: list[Any] = []
    with pytest.raises(ProviderError, match="malformed stream event") as raised:
        for event in _stream(wrapped, provider, "I am allergic to peanuts"):
            seen.append(event)
    assert isinstance(raised.value.__cause__, json.JSONDecodeError)
    assert seen  # the events before the bad line reached the loop
    (record,) = wrapped.calls
    assert not record.complete
    assert [(m.role, m.content, m.metadata.get(COMPLETE_KEY)) for m in _log(wrapped)] == [
        ("user", "I am allergic to peanuts", None),
        ("assistant", "Hel", False),
    ]
    assert _remembered(memory) == ["I am allergic to peanuts"]


# -- 3. a stream dropped before its first event ---------------------------------------------


@pytest.fixture
def one_connection(provider: str, fake: Any) -> Iterator[Any]:
    """The SDK client with a pool of one connection, waiting 1 s at most for it."""
    with one_connection_client(provider, fake.base_url, pool_timeout=1.0) as client:
        yield client


@pytest.mark.usefixtures("no_gc")
def test_a_stream_dropped_before_its_first_event_gives_its_connection_back(
    provider: str, fake: Any, one_connection: Any, memory: Memory
) -> None:
    """The web client left before the ``StreamingResponse`` read anything: the app drops
    the stream unread. Its SDK generator never ran, so its ``finally`` never closed the
    response: the connection stayed checked out for good (with the bare SDK too), where
    the docs say the stream is freed. Anthropic's stream is freed by refcounting (the
    finalizer closes the response at once), openai's, which holds itself, by the
    collector (closed on the reporter's thread)."""
    wrapped = wrap(one_connection, memory=memory, session="s", user_id="ana")
    if provider == "anthropic":
        fake.enqueue_reply("a long story " * 40, AnthropicUsage(10, 40), stream=True)
    else:
        fake.enqueue_reply("a long story " * 40, OpenAIUsage(10, 40), stream=True)
    stream = _stream(wrapped, provider, "tell me a story")
    del stream
    if provider == "openai":
        gc.collect()
    # The SDK client itself, not the wrapper: it gets the one connection only if the
    # dropped stream gave it back (else: the pool's timeout, 1 s).
    messages = [{"role": "user", "content": "hello"}]
    if provider == "anthropic":
        one_connection.messages.create(model=MODEL, max_tokens=64, messages=messages)
    else:
        one_connection.chat.completions.create(model=GPT, messages=messages)
    wrapped.flush()
    assert [(c.stream, c.complete) for c in wrapped.calls] == [(True, False)]
    assert _remembered(memory) == ["tell me a story"]


# -- 4. an event the accumulator cannot read; a reply that cannot be built ----------------

USAGE = AnthropicUsage(100, 20, cache_read=50)


def _tool_use_events(*deltas: Any) -> FakeResponse:
    """A ``tool_use`` block whose input arrives as these ``partial_json`` pieces."""
    return _anthropic_events(
        ("message_start", message_start("msg_1", MODEL, USAGE)),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}},
            },
        ),
        *(
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                },
            )
            for piece in deltas
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 20},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    )


@pytest.mark.parametrize("provider", ["anthropic"], indirect=True)
def test_a_null_partial_json_is_read_as_no_input(
    provider: str, fake: Any, client: Any, memory: Memory
) -> None:
    """``"partial_json": null``, which the bare SDK streams without complaint, made the
    record's ``"".join`` raise at the stream's end: the app's loop got a ``TypeError``,
    and the call never reached ``calls`` nor ``on_call`` (its usage lost) nor its
    commit (the question never remembered)."""
    seen: list[CallRecord] = []
    wrapped = wrap(client, memory=memory, session="s", user_id="ana", on_call=seen.append)
    fake.enqueue(_tool_use_events(None, '{"tz": "UTC"}'))
    events = list(_stream(wrapped, provider, "I am allergic to peanuts"))
    assert len(events) == 7
    (record,) = wrapped.calls
    assert seen == [record]
    assert record.complete
    assert (record.usage.input_tokens, record.usage.cache_read_input_tokens) == (100, 50)
    assert record.usage.output_tokens == 20
    logged = _log(wrapped)
    assert [(m.role, m.tool_calls) for m in logged] == [
        ("user", ()),
        ("assistant", (ToolCall("toolu_1", "now", '{"tz": "UTC"}'),)),
    ]
    assert _remembered(memory) == ["I am allergic to peanuts"]


@pytest.mark.parametrize("provider", ["anthropic"], indirect=True)
def test_a_tool_input_nested_past_the_parser_is_left_out(
    provider: str, fake: Any, client: Any, memory: Memory
) -> None:
    """An input nested deeper than ``json.loads`` can go raises ``RecursionError``, not
    ``ValueError``: the call is left out as one whose input does not parse is, and the
    reply is recorded whole (it was recorded as a reply that could not be read)."""
    wrapped = wrap(client, memory=memory, session="s", user_id="ana")
    fake.enqueue(_tool_use_events("[" * 100_000 + "]" * 100_000))
    list(_stream(wrapped, provider, "What time is it?"))
    (record,) = wrapped.calls
    assert record.complete and record.usage.output_tokens == 20
    assert record.reply is not None and record.reply.tool_calls == ()


@pytest.mark.parametrize("provider", ["anthropic"], indirect=True)
def test_a_null_block_index_does_not_stop_the_stream(
    provider: str, fake: Any, client: Any, memory: Memory
) -> None:
    """``content_block_start`` with ``"index": null``: the bare SDK streams it; the
    wrapper's ``int(None)`` raised ``TypeError`` into the app's loop at that event."""
    wrapped = wrap(client, memory=memory, session="s", user_id="ana")
    fake.enqueue(
        _anthropic_events(
            ("message_start", message_start("msg_1", MODEL, USAGE)),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": None,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": None,
                    "delta": {"type": "text_delta", "text": "Noted."},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": None}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": 20},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        )
    )
    events = list(_stream(wrapped, provider, "I am allergic to peanuts"))
    assert len(events) == 6
    (record,) = wrapped.calls
    assert record.complete and record.usage.output_tokens == 20
    assert [(m.role, m.content) for m in _log(wrapped)] == [
        ("user", "I am allergic to peanuts"),
        ("assistant", "Noted."),
    ]
