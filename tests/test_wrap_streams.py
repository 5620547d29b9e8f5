"""The wrapper never makes an app's call fail, and its session log stays right, when
streams are cut, abandoned, or echoed back slightly differently.

Each test takes the steps an app takes: the real ``anthropic`` / ``openai`` SDK client
against the loopback fakes, a real SQLite memory file, the app's own history
handling (echoing replies back, retrying a failed question).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.engine.context import COMPLETE_KEY  # noqa: E402
from contextos.errors import ProviderError, ProviderHTTPError  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import (  # noqa: E402
    AnthropicUsage,
    FakeAnthropic,
    message_start,
)
from contextos.testing.fake_http import FakeResponse, SSEEvent  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI, OpenAIUsage  # noqa: E402
from contextos.types import Message, ToolCall  # noqa: E402

MODEL = "claude-sonnet-4"
GPT = "gpt-4.1-mini"
TOOLS = [
    {
        "name": "weather",
        "description": "The forecast for a city and day.",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "day": {"type": "string"}},
        },
    }
]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * 20).decode()


def _event(data: dict[str, Any]) -> SSEEvent:
    return SSEEvent(json.dumps(data), data["type"])


def _start() -> SSEEvent:
    return _event(message_start("msg_s", MODEL, AnthropicUsage(5, 1)))


OVERLOADED = _event({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})


def _tool_stream(pieces: list[str], *, whole: bool) -> FakeResponse:
    """A streamed ``tool_use`` reply whose input arrives in ``pieces``; cut by an error
    event before the block ends unless ``whole``."""
    events = [
        _start(),
        _event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "weather",
                    "input": {},
                },
            }
        ),
    ]
    events += [
        _event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": p},
            }
        )
        for p in pieces
    ]
    if not whole:
        return FakeResponse(events=[*events, OVERLOADED])
    delta = {"stop_reason": "tool_use", "stop_sequence": None}
    return FakeResponse(
        events=[
            *events,
            _event({"type": "content_block_stop", "index": 0}),
            _event({"type": "message_delta", "delta": delta, "usage": {"output_tokens": 9}}),
            _event({"type": "message_stop"}),
        ]
    )


def _client(fake: FakeAnthropic) -> Any:
    return anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0)


def _log(wrapped: Any) -> list[Message]:
    wrapped.flush()
    return [t.message for t in wrapped.context.session.turns()]


def _sent(fake: FakeAnthropic) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = fake.messages_requests()[-1].json()["messages"]
    return messages


def _blocks(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [
        b
        for m in messages
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == kind
    ]


# -- a stream cut inside a tool call -----------------------------------------------


@pytest.mark.parametrize("pieces", [['{"city": "Par'], ['{"city": "Paris"}']])
def test_a_stream_cut_inside_a_tool_call_leaves_later_calls_working(
    fake_anthropic, anthropic_client, memory, pieces
):
    """Cut inside the input, or after it but before the block's end: no call either way."""
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    ask = [{"role": "user", "content": "weather in paris?"}]
    fake_anthropic.enqueue(_tool_stream(pieces, whole=False))
    with pytest.raises(ProviderError):
        list(
            wrapped.messages.create(
                model=MODEL, max_tokens=64, messages=ask, tools=TOOLS, stream=True
            )
        )
    for _ in range(2):  # the app retries; every retry goes out and succeeds
        sent_before = len(fake_anthropic.messages_requests())
        reply = wrapped.messages.create(model=MODEL, max_tokens=64, messages=ask, tools=TOOLS)
        assert reply.content[0].text
        assert len(fake_anthropic.messages_requests()) == sent_before + 1
        assert _blocks(_sent(fake_anthropic), "tool_use") == []
    log = _log(wrapped)
    assert not any(m.tool_calls for m in log)  # the half call was never logged as a call
    # the first retry is a retry (the cut reply said nothing); the second, asked after an
    # answer, is a new question
    assert [m.role for m in log] == ["user", "assistant", "user", "assistant"]


def test_a_malformed_tool_call_in_an_older_log_is_not_sent(
    fake_anthropic, anthropic_client, memory
):
    """A log written before half calls were left out holds one; it must not stop the session."""
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    wrapped.context.session.add(
        Message("user", "weather in paris?"),
        Message("assistant", "Let me look.", tool_calls=(ToolCall("toolu_1", "weather", '{"ci'),)),
    )
    reply = wrapped.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "and now?"}], tools=TOOLS
    )
    assert reply.content[0].text
    sent = _sent(fake_anthropic)
    assert _blocks(sent, "tool_use") == []
    assert sent[1] == {"role": "assistant", "content": [{"type": "text", "text": "Let me look."}]}


def test_an_openai_stream_cut_inside_a_tool_call_logs_no_half_call(
    fake_openai, openai_client, memory
):
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana")

    def chunk(delta: dict[str, Any]) -> SSEEvent:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": GPT}
        return SSEEvent(json.dumps({**body, "choices": [choice]}))

    call = {"index": 0, "id": "call_1", "type": "function"}
    fake_openai.enqueue(
        FakeResponse(
            events=[
                chunk({"role": "assistant", "content": "Checking. "}),
                chunk({"tool_calls": [{**call, "function": {"name": "weather", "arguments": ""}}]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]}),
                SSEEvent(json.dumps({"error": {"message": "overloaded", "type": "server_error"}})),
            ]
        )
    )
    ask = [{"role": "user", "content": "weather in paris?"}]
    with pytest.raises(ProviderError):
        list(wrapped.chat.completions.create(model=GPT, messages=ask, stream=True))
    assert wrapped.chat.completions.create(model=GPT, messages=ask).choices[0].message.content
    log = _log(wrapped)
    assert [(m.role, m.content) for m in log][:2] == [
        ("user", "weather in paris?"),
        ("assistant", "Checking. "),
    ]
    assert log[1].metadata[COMPLETE_KEY] is False and not log[1].tool_calls
    sent = fake_openai.completions_requests()[-1].json()["messages"]
    assert [m["role"] for m in sent] == ["user"]  # the retry: no fragment, no second question


# -- a streamed tool call echoed back ------------------------------------------------


def test_a_streamed_tool_call_echoed_back_is_logged_once(fake_anthropic, anthropic_client, memory):
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    history: list[dict[str, Any]] = [{"role": "user", "content": "weather in paris monday?"}]
    fake_anthropic.enqueue(_tool_stream(['{"city":"Paris",', '"day":"mon"}'], whole=True))
    with wrapped.messages.stream(model=MODEL, max_tokens=64, messages=history, tools=TOOLS) as s:
        final = s.get_final_message()
    history.append({"role": "assistant", "content": [b.model_dump() for b in final.content]})
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}
    history.append({"role": "user", "content": [result]})
    reply = wrapped.messages.create(model=MODEL, max_tokens=64, messages=history, tools=TOOLS)
    history += [
        {"role": "assistant", "content": reply.content[0].text},
        {"role": "user", "content": "thanks"},
    ]
    wrapped.messages.create(model=MODEL, max_tokens=64, messages=history, tools=TOOLS)
    log = _log(wrapped)
    assert [m.role for m in log] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert log[1].tool_calls == (ToolCall("toolu_1", "weather", '{"city": "Paris", "day": "mon"}'),)
    sent = _sent(fake_anthropic)
    assert [b["id"] for b in _blocks(sent, "tool_use")] == ["toolu_1"]
    assert [b["tool_use_id"] for b in _blocks(sent, "tool_result")] == ["toolu_1"]


# -- a cut reply, and the app's retry ---------------------------------------------------


def _cut_text_stream() -> FakeResponse:
    block = {"type": "text", "text": ""}
    delta = {"type": "text_delta", "text": "Your flight is cancel"}
    return FakeResponse(
        events=[
            _start(),
            _event({"type": "content_block_start", "index": 0, "content_block": block}),
            _event({"type": "content_block_delta", "index": 0, "delta": delta}),
            OVERLOADED,
        ]
    )


def test_a_cut_reply_is_marked_not_remembered_and_the_retry_logs_nothing_twice(
    fake_anthropic, anthropic_client, memory
):
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    history: list[dict[str, Any]] = [{"role": "user", "content": "hello"}]
    first = wrapped.messages.create(model=MODEL, max_tokens=64, messages=history)
    history += [
        {"role": "assistant", "content": first.content[0].text},
        {"role": "user", "content": "is my flight ok?"},
    ]
    fake_anthropic.enqueue(_cut_text_stream())
    with pytest.raises(ProviderError):
        list(wrapped.messages.create(model=MODEL, max_tokens=64, messages=history, stream=True))
    wrapped.messages.create(model=MODEL, max_tokens=64, messages=history)  # the app retries
    log = _log(wrapped)
    assert [(m.role, m.content) for m in log] == [
        ("user", "hello"),
        ("assistant", "You said: hello"),
        ("user", "is my flight ok?"),
        ("assistant", "Your flight is cancel"),
        ("assistant", "You said: is my flight ok?"),
    ]
    assert log[3].metadata[COMPLETE_KEY] is False
    assert COMPLETE_KEY not in log[4].metadata
    assert [m["role"] for m in _sent(fake_anthropic)] == ["user", "assistant", "user"]
    remembered = [r.text for r in memory.get_all(user_id="ana")]
    assert "Your flight is cancel" not in remembered
    assert "You said: is my flight ok?" in remembered


# -- empty turns ----------------------------------------------------------------------


def test_the_fake_refuses_an_empty_text_block_like_the_api(fake_anthropic, anthropic_client):
    client = anthropic_client
    empty = [{"role": "user", "content": [{"type": "text", "text": ""}]}]
    with pytest.raises(anthropic.BadRequestError, match="text content blocks must be non-empty"):
        client.messages.create(model=MODEL, max_tokens=8, messages=empty)
    fake_anthropic.enqueue_reply("scripted", AnthropicUsage(1, 1))
    hollow = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": []}]
    hollow.append({"role": "user", "content": "again"})
    with pytest.raises(anthropic.BadRequestError, match="must have non-empty content"):
        client.messages.create(model=MODEL, max_tokens=8, messages=hollow)
    ok = client.messages.create(model=MODEL, max_tokens=8, messages=empty[:0] + hollow[:1])
    assert ok.content[0].text == "scripted"  # the refusal left the script for the next call


def test_no_empty_turn_is_logged_or_sent(fake_anthropic, anthropic_client, memory):
    client = anthropic_client
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    wrapped = wrap(client, memory=memory, session="a", user_id="ana")
    wrapped.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": [image]}]
    )
    wrapped.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "what is in it?"}]
    )
    assert [m.role for m in _log(wrapped)] == ["user", "assistant", "user", "assistant"]
    assert _log(wrapped)[0].content == "[image]"
    assert "[image]" not in [r.text for r in memory.get_all(user_id="ana")]  # no text to keep
    assert _sent(fake_anthropic)[0] == {
        "role": "user",
        "content": [{"type": "text", "text": "[image]"}],
    }
    # a stream the app closes before any text arrives: nothing was said, nothing logged
    other = wrap(client, memory=memory, session="b", user_id="ana")
    fake_anthropic.enqueue_reply("long answer " * 10, AnthropicUsage(10, 20), stream=True)
    stream = other.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    next(iter(stream))
    stream.close()
    other.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "again"}]
    )
    assert [(m.role, m.content) for m in _log(other)][:2] == [("user", "hi"), ("user", "again")]
    assert len(other.calls) == 2 and not other.calls[0].complete


def test_an_empty_reply_in_an_older_log_is_not_sent(fake_anthropic, anthropic_client, memory):
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    wrapped.context.session.add(Message("user", "hi"), Message("assistant", ""))
    reply = wrapped.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "again"}]
    )
    assert reply.content[0].text
    assert [m["role"] for m in _sent(fake_anthropic)] == ["user", "user"]


def test_an_image_only_openai_question_is_logged_as_a_placeholder(
    fake_openai, openai_client, memory
):
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana")
    url = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    wrapped.chat.completions.create(model=GPT, messages=[{"role": "user", "content": [url]}])
    assert _log(wrapped)[0].content == "[image]"
    assert "[image]" not in [r.text for r in memory.get_all(user_id="ana")]  # no text to keep


# -- an abandoned stream ------------------------------------------------------------


@pytest.mark.usefixtures("no_gc")
def test_an_abandoned_stream_is_logged_before_the_next_call(
    fake_anthropic, anthropic_client, memory
):
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    streams = []
    for question in ["first question", "second question"]:
        fake_anthropic.enqueue_reply(
            f"answer to {question} " * 30, AnthropicUsage(10, 50), stream=True
        )
        stream = wrapped.messages.create(
            model=MODEL,
            max_tokens=64,
            messages=[{"role": "user", "content": question}],
            stream=True,
        )
        for i, _ in enumerate(stream):
            if i == 4:
                break  # the user pressed "stop"; the app neither closes nor reads on
        streams.append(stream)
    log = _log(wrapped)  # flush reports the stream still open
    assert [(m.role, m.content.split(" ")[:3]) for m in log] == [
        ("user", ["first", "question"]),
        ("assistant", ["answer", "to", "first"]),
        ("user", ["second", "question"]),
        ("assistant", ["answer", "to", "second"]),
    ]
    assert all(m.metadata[COMPLETE_KEY] is False for m in log[1::2])
    assert [c.complete for c in wrapped.calls] == [False, False]
    for stream in streams:  # the app's late close changes nothing logged
        stream.close()
    assert len(wrapped.calls) == 2 and len(_log(wrapped)) == 4


@pytest.mark.usefixtures("no_gc")
def test_an_abandoned_openai_stream_is_logged_before_the_next_call(
    fake_openai: FakeOpenAI, openai_client, memory
):
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana")
    fake_openai.enqueue_reply("partial answer " * 20, OpenAIUsage(10, 40), stream=True)
    stream = wrapped.chat.completions.create(
        model=GPT, messages=[{"role": "user", "content": "first"}], stream=True
    )
    for i, _ in enumerate(stream):
        if i == 3:
            break
    wrapped.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "second"}])
    log = _log(wrapped)
    assert [m.role for m in log] == ["user", "assistant", "user", "assistant"]
    assert log[1].content.startswith("partial answer") and log[1].metadata[COMPLETE_KEY] is False
    stream.close()


# -- a reply in several text blocks --------------------------------------------------


def test_a_reply_in_several_text_blocks_echoed_back_is_logged_once(memory):
    replies = iter(
        [[{"type": "text", "text": "Paris is sunny"}, {"type": "text", "text": " today."}], "ok"]
    )
    with FakeAnthropic(reply=lambda body: next(replies)) as fake, _client(fake) as client:
        wrapped = wrap(client, memory=memory, session="s", user_id="ana")
        history: list[dict[str, Any]] = [{"role": "user", "content": "weather?"}]
        reply = wrapped.messages.create(model=MODEL, max_tokens=64, messages=history)
        history += [
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in reply.content],
            },
            {"role": "user", "content": "thanks"},
        ]
        wrapped.messages.create(model=MODEL, max_tokens=64, messages=history)
        assert [(m.role, m.content) for m in _log(wrapped)] == [
            ("user", "weather?"),
            ("assistant", "Paris is sunny today."),
            ("user", "thanks"),
            ("assistant", "ok"),
        ]


def test_the_stream_error_reaches_the_app_as_before(fake_anthropic, anthropic_client):
    """Pass-through: the cut stream's error and record are unchanged by the above."""
    fake_anthropic.enqueue(_cut_text_stream())
    wrapped = wrap(anthropic_client)
    with pytest.raises(ProviderHTTPError):
        list(_ask_stream(wrapped))
    assert not wrapped.calls[0].complete
    assert wrapped.calls[0].reply == Message("assistant", "Your flight is cancel")


def _ask_stream(c: Any) -> Any:
    return c.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "go"}], stream=True
    )


def test_another_threads_call_leaves_a_stream_being_read_alone(
    fake_anthropic, anthropic_client, memory
):
    """Only the thread that opened a stream moves on from it by calling again."""
    import threading

    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    fake_anthropic.enqueue_reply("a streamed answer " * 10, AnthropicUsage(10, 30), stream=True)
    stream = wrapped.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "stream"}], stream=True
    )
    events = iter(stream)
    next(events)
    other = threading.Thread(
        target=wrapped.messages.create,
        kwargs={"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]},
    )
    other.start()
    other.join()
    rest = list(events)
    assert rest[-1].type == "message_stop"
    (streamed,) = [c for c in wrapped.calls if c.stream]
    assert streamed.complete and streamed.reply.content == "a streamed answer " * 10


# -- the fake's reply hook, streamed ----------------------------------------------------------


def _agent_turn(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A scripted agent turn: thinking, a sentence, two parallel tool calls."""
    return [
        {"type": "thinking", "thinking": "Two cities, one call each.", "signature": "sig_1"},
        {"type": "text", "text": "Let me look both up."},
        {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_b", "name": "weather", "input": {"city": "Oslo"}},
    ]


def test_a_reply_hooks_blocks_are_streamed_to_a_streaming_request(memory):
    """``FakeAnthropic(reply=...)`` returning content blocks answers ``stream=True`` with
    SSE events (it answered with a JSON body the SDK's stream cannot read): a streamed
    tool-use turn is scripted by its blocks, for the bare SDK and the wrapped client."""
    with (
        FakeAnthropic(reply=_agent_turn) as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        question = [{"role": "user", "content": "weather in paris and oslo?"}]
        with client.messages.stream(
            model=MODEL, max_tokens=64, messages=question, tools=TOOLS
        ) as stream:
            final = stream.get_final_message()
        assert [b.model_dump(exclude_none=True) for b in final.content] == _agent_turn({})
        assert final.stop_reason == "tool_use"
        wrapped = wrap(client, memory=memory, session="s", user_id="ana")
        events = list(
            wrapped.messages.create(
                model=MODEL, max_tokens=64, messages=question, tools=TOOLS, stream=True
            )
        )
        assert events[0].type == "message_start" and events[-1].type == "message_stop"
        (call,) = wrapped.calls
        assert call.stream and call.complete
        assert [c.id for c in call.reply.tool_calls] == ["toolu_a", "toolu_b"]
        assert json.loads(call.reply.tool_calls[1].arguments) == {"city": "Oslo"}
