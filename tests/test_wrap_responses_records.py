"""What ``client.calls`` records of a Responses API call (recorded, never managed).

The usage of a streamed response comes only in its last event; a caller that stops at
the end of the text still has its call's usage recorded, as a Chat stream has. A
refusal is the reply's text, a cut stream keeps the function calls that had arrived
whole, and a failed response keeps its usage.

The real ``openai`` SDK client against the loopback fake, with scripted event streams.
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Any, Literal

import pytest

openai = pytest.importorskip("openai")

from contextos.errors import ProviderError  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_http import FakeResponse, SSEEvent  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI, OpenAIUsage  # noqa: E402
from contextos.types import ToolCall  # noqa: E402

GPT = "gpt-4.1-mini"
USAGE = OpenAIUsage(100, 7)
ANSWER = "The fastest train runs from Paris to Lyon."
REFUSAL = "I can't help with that."
Event = dict[str, Any]


@pytest.fixture
def fake(fake_openai: FakeOpenAI) -> FakeOpenAI:
    """The loopback fake (``conftest.fake_openai``), by a short name."""
    return fake_openai


@pytest.fixture
def wrapped(openai_client: Any) -> Any:
    """``wrap(openai.OpenAI(...))``, pass-through: Responses calls are never managed."""
    return wrap(openai_client)


# -- scripted responses --------------------------------------------------------------------


def _response(status: str, output: list[Event], usage: Event | None = None) -> Event:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": GPT,
        "status": status,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


def _message(part: Event) -> Event:
    return {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [part],
    }


def _message_events(kind: Literal["output_text", "refusal"], text: str) -> list[Event]:
    """The events of a message item holding ``text`` as an ``output_text`` or ``refusal``
    part, from its ``added`` to its ``done``."""
    field = "text" if kind == "output_text" else "refusal"
    part = {"type": kind, field: text, **({"annotations": []} if kind == "output_text" else {})}
    at = {"output_index": 0, "item_id": "msg_1", "content_index": 0}
    opened = {**_message(part), "status": "in_progress", "content": []}
    return [
        {"type": "response.output_item.added", "output_index": 0, "item": opened},
        {"type": "response.content_part.added", "part": {**part, field: ""}, **at},
        *[
            {"type": f"response.{kind}.delta", "delta": text[i : i + 8], **at}
            | ({"logprobs": []} if kind == "output_text" else {})
            for i in range(0, len(text), 8)
        ],
        {"type": f"response.{kind}.done", field: text, **at}
        | ({"logprobs": []} if kind == "output_text" else {}),
        {"type": "response.content_part.done", "part": part, **at},
        {"type": "response.output_item.done", "output_index": 0, "item": _message(part)},
    ]


def _call(n: int, arguments: str = '{"city":"Paris"}') -> Event:
    return {
        "type": "function_call",
        "id": f"fc_{n}",
        "call_id": f"call_{n}",
        "name": "get_weather",
        "arguments": arguments,
        "status": "completed",
    }


def _call_events(n: int, whole: bool = True) -> list[Event]:
    """A function call item's events; without ``whole``, cut inside its arguments."""
    at = {"output_index": n, "item_id": f"fc_{n}"}
    opened = {**_call(n, ""), "status": "in_progress"}
    events = [
        {"type": "response.output_item.added", "output_index": n, "item": opened},
        {"type": "response.function_call_arguments.delta", "delta": '{"city":', **at},
    ]
    if whole:
        events += [
            {"type": "response.function_call_arguments.delta", "delta": '"Paris"}', **at},
            {
                "type": "response.function_call_arguments.done",
                "arguments": _call(n)["arguments"],
                "name": "get_weather",
                **at,
            },
            {"type": "response.output_item.done", "output_index": n, "item": _call(n)},
        ]
    return events


def _stream(events: list[Event], **cut: Any) -> FakeResponse:
    """``response.created``, then ``events``, numbered; ``cut`` as :class:`FakeResponse`'s."""
    created = {"type": "response.created", "response": _response("in_progress", [])}
    numbered = [{**e, "sequence_number": n} for n, e in enumerate([created, *events])]
    return FakeResponse(
        events=[SSEEvent(data=json.dumps(e), event=e["type"]) for e in numbered], **cut
    )


def _completed(output: list[Event]) -> Event:
    return {
        "type": "response.completed",
        "response": _response("completed", output, USAGE.responses_wire()),
    }


def _create(wrapped: Any) -> Any:
    return wrapped.responses.create(model=GPT, input="Which is the fastest train?", stream=True)


# -- a caller that stops at the end of the text ----------------------------------------------


@pytest.mark.parametrize(
    "stop",
    ["response.output_text.done", "response.content_part.done", "response.output_item.done"],
)
def test_a_caller_that_stops_at_the_end_of_the_text_has_the_usage_recorded(
    stop: str, fake: FakeOpenAI, wrapped: Any
) -> None:
    """The whole answer is in hand at the text's end, and ``response.completed`` (the
    usage) follows at once: the wrapper reads it before handing the end on, as it reads a
    Chat stream's usage chunk (a review: the call was recorded with no usage)."""
    part = {"type": "output_text", "text": ANSWER, "annotations": []}
    fake.enqueue(_stream([*_message_events("output_text", ANSWER), _completed([_message(part)])]))
    with _create(wrapped) as stream:
        for event in stream:
            if event.type == stop:
                break
    (record,) = wrapped.calls
    assert (record.complete, record.reply.content) == (True, ANSWER)
    assert (record.usage.input_tokens, record.usage.output_tokens) == (100, 7)


@pytest.mark.serial
def test_reading_ahead_never_holds_back_the_next_items_events(
    fake: FakeOpenAI, wrapped: Any
) -> None:
    """The read-ahead after an item's end stops at the next event: the next item's first
    event reaches the app as it arrives, not when the response ends (here the server
    then stalls for 3 s before it drops the connection)."""
    events = [*_message_events("output_text", ANSWER), *_call_events(1, whole=False)]
    fake.enqueue(_stream(events, cut="stall", stall_seconds=3.0))
    seen: queue.Queue[str] = queue.Queue()

    def read() -> None:
        try:
            for event in _create(wrapped):
                seen.put(event.type)
        except ProviderError:
            seen.put("error")

    reader = threading.Thread(target=read)
    reader.start()
    got: list[str] = []
    while "response.function_call_arguments.delta" not in got:
        got.append(seen.get(timeout=1.5))  # queue.Empty: held back until the stall ends
    reader.join()


def test_a_stream_cut_after_an_item_ended_hands_on_the_items_end_before_the_error(
    fake: FakeOpenAI, wrapped: Any
) -> None:
    """The events read ahead (the text's, part's and item's ``done``) reach the app before
    the error that cut the stream: the app gets every event its record was made of."""
    fake.enqueue(_stream(_message_events("output_text", ANSWER), cut="drop"))
    seen: list[str] = []
    with pytest.raises(ProviderError):
        for event in _create(wrapped):
            seen.append(event.type)
    assert seen[-3:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    (record,) = wrapped.calls
    assert (record.complete, record.reply.content) == (False, ANSWER)


# -- what the record keeps -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["create", "stream", "cut_stream"])
def test_a_refusal_is_recorded_as_the_replys_text(how: str, fake: FakeOpenAI, wrapped: Any) -> None:
    """A message whose content is a ``refusal`` part, returned whole, streamed whole, or
    streamed and cut: the refusal is the reply, as on Chat (a review: recorded as an
    empty reply)."""
    part = {"type": "refusal", "refusal": REFUSAL}
    if how == "create":
        fake.enqueue(
            FakeResponse(json_body=_response("completed", [_message(part)], USAGE.responses_wire()))
        )
        wrapped.responses.create(model=GPT, input="Help me with something bad.")
    elif how == "stream":
        fake.enqueue(_stream([*_message_events("refusal", REFUSAL), _completed([_message(part)])]))
        list(_create(wrapped))
    else:
        fake.enqueue(_stream(_message_events("refusal", REFUSAL)[:-3], cut="drop"))
        with pytest.raises(ProviderError):
            list(_create(wrapped))
    (record,) = wrapped.calls
    assert record.reply.content == REFUSAL


def test_a_cut_stream_keeps_the_function_calls_that_arrived_whole(
    fake: FakeOpenAI, wrapped: Any
) -> None:
    """A call whose ``response.output_item.done`` arrived is whole; one cut inside its
    arguments is not (a review: the record of a cut stream had no calls at all)."""
    fake.enqueue(_stream([*_call_events(0), *_call_events(1, whole=False)], cut="drop"))
    with pytest.raises(ProviderError):
        list(_create(wrapped))
    (record,) = wrapped.calls
    assert not record.complete
    assert record.reply.tool_calls == (ToolCall("call_0", "get_weather", '{"city":"Paris"}'),)


def test_a_failed_response_keeps_its_usage(fake: FakeOpenAI, wrapped: Any) -> None:
    """``response.failed`` carries the response and its usage, which was dropped (a
    review): the call is recorded as incomplete, with what it used."""
    failed = _response("failed", [], USAGE.responses_wire())
    failed["error"] = {"code": "server_error", "message": "boom"}
    fake.enqueue(_stream([{"type": "response.failed", "response": failed}]))
    assert [e.type for e in _create(wrapped)][-1] == "response.failed"
    (record,) = wrapped.calls
    assert not record.complete
    assert (record.usage.input_tokens, record.usage.output_tokens) == (100, 7)
    assert wrapped.calls.total().input_tokens == 100
