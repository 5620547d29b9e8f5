"""Several streams open at once, and a call made while a stream is being read.

An app may open streams before it reads them (one per model, then read them one after
another, or side by side with ``zip``), and may call the model while it reads a stream
(a tool run inside the loop). Through ``wrap()`` these must work as with the bare SDK,
each stream recorded as the app received it. Only a managed call, whose window needs
the reply logged, ends a stream its caller has read part of; the app then gets the
events its record holds and a ``ProviderError``, never an event the record lacks.

The real ``anthropic`` / ``openai`` SDK clients against the loopback fakes, a real
SQLite memory file.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.engine.context import COMPLETE_KEY  # noqa: E402
from contextos.errors import ProviderError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI  # noqa: E402

CLAUDE = "claude-sonnet-4"
GPT = "gpt-4.1-mini"
#: The APIs a stream can come from: Anthropic Messages, OpenAI Chat Completions, and
#: OpenAI's Responses API (recorded, never managed).
KINDS = ["anthropic", "openai", "responses"]
QUESTIONS = ["Which is the fastest train?", "Name a river in Lyon, please.", "Say hello."]


@pytest.fixture
def sdk(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The SDK client of the test's ``kind``, against its loopback fake."""
    kind = request.getfixturevalue("kind")
    with FakeAnthropic() if kind == "anthropic" else FakeOpenAI() as fake:
        client_class = anthropic.Anthropic if kind == "anthropic" else openai.OpenAI
        with client_class(base_url=fake.base_url, api_key="t", max_retries=0) as client:
            yield client


def _wrapped(sdk: Any, memory: Memory, managed: bool) -> Any:
    return wrap(sdk, memory=memory, session="s", user_id="ana") if managed else wrap(sdk)


def _open(client: Any, kind: str, question: str) -> Any:
    """A stream (wrapped or not) of ``kind``, asking ``question``."""
    messages = [{"role": "user", "content": question}]
    if kind == "anthropic":
        return client.messages.create(model=CLAUDE, max_tokens=64, messages=messages, stream=True)
    if kind == "openai":
        return client.chat.completions.create(model=GPT, messages=messages, stream=True)
    return client.responses.create(model=GPT, input=question, stream=True)


def _ask(client: Any, kind: str, question: str) -> None:
    """A plain call of ``kind`` (wrapped or not)."""
    messages = [{"role": "user", "content": question}]
    if kind == "anthropic":
        client.messages.create(model=CLAUDE, max_tokens=64, messages=messages)
    elif kind == "openai":
        client.chat.completions.create(model=GPT, messages=messages)
    else:
        client.responses.create(model=GPT, input=question)


def _text(kind: str, event: Any) -> str:
    """The reply text one event carries."""
    if event is None:
        return ""
    if kind == "anthropic":
        delta = getattr(event, "delta", None)
        return str(getattr(delta, "text", "") or "") if event.type == "content_block_delta" else ""
    if kind == "openai":
        return str(event.choices[0].delta.content or "") if event.choices else ""
    return str(event.delta) if event.type == "response.output_text.delta" else ""


def _fan_out(client: Any, kind: str, order: str) -> list[str]:
    """Open one stream per question, then read them all: one after the other, or side by
    side (``zip``, to the end of the longest); each stream's text."""
    streams = [_open(client, kind, q) for q in QUESTIONS]
    texts = ["" for _ in streams]
    if order == "one_after_another":
        for n, stream in enumerate(streams):
            texts[n] = "".join(_text(kind, e) for e in stream)
    else:
        for events in itertools.zip_longest(*streams):
            texts = [t + _text(kind, e) for t, e in zip(texts, events, strict=True)]
    return texts


# -- streams opened before they are read -------------------------------------------------


@pytest.mark.parametrize("order", ["one_after_another", "side_by_side"])
@pytest.mark.parametrize("managed", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_streams_opened_before_they_are_read_are_each_read_whole_and_recorded(
    kind: str, managed: bool, order: str, sdk: Any, memory: Memory
) -> None:
    """Opening a stream is no call that leaves the stream opened before it, unread: each
    is read whole, as with the bare SDK, and recorded whole with its usage (a review:
    the wrapper closed the first as the second opened; the app got ``StreamClosed``)."""
    bare = _fan_out(sdk, kind, order)
    wrapped = _wrapped(sdk, memory, managed)
    assert _fan_out(wrapped, kind, order) == bare
    wrapped.flush()
    records = sorted(wrapped.calls, key=lambda r: bare.index(r.reply.content))
    assert [(r.stream, r.complete, r.reply.content) for r in records] == [
        (True, True, text) for text in bare
    ]
    assert all(r.usage.input_tokens > 0 and r.usage.output_tokens > 0 for r in records)


# -- a call made while a stream is being read ---------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_pass_through_call_while_reading_a_stream_leaves_it_to_be_read_whole(
    kind: str, sdk: Any
) -> None:
    """``wrap(client)`` logs nothing, so its calls need nothing of a stream being read:
    a tool that calls the model inside the loop leaves the stream to be read on, and
    recorded, whole (a review: it was recorded as the part read before the call, with
    no usage, while the app read on to the end)."""
    (bare,) = _read_around_a_call(sdk, kind, kind)
    wrapped = wrap(sdk)
    assert _read_around_a_call(wrapped, kind, kind) == [bare]
    side, streamed = wrapped.calls
    assert (side.stream, streamed.stream, streamed.complete) == (False, True, True)
    assert streamed.reply.content == bare and streamed.usage.output_tokens > 0


def _read_around_a_call(client: Any, kind: str, side: str) -> list[str]:
    """Read three events of a stream, make a ``side`` call, read on; the text read."""
    events = iter(_open(client, kind, QUESTIONS[0]))
    text = "".join(_text(kind, next(events)) for _ in range(3))
    _ask(client, side, "and a quick side question")
    return [text + "".join(_text(kind, e) for e in events)]


@pytest.mark.parametrize("kind", ["openai"])
def test_a_responses_call_while_reading_a_managed_stream_leaves_it_to_be_logged_whole(
    kind: str, sdk: Any, memory: Memory
) -> None:
    """A Responses API call (never managed) in the middle of a managed chat stream: the
    app reads on to the end, and the session log holds the whole answer the user saw,
    so the next call sends it back (a review: the log kept the fragment, and the next
    call sent the user's question with no answer)."""
    wrapped = _wrapped(sdk, memory, managed=True)
    (text,) = _read_around_a_call(wrapped, kind, "responses")
    assert text == "You said: " + QUESTIONS[0]
    wrapped.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "And?"}])
    wrapped.flush()
    turns = [t.message for t in wrapped.context.session.turns()]
    assert [(m.role, m.content, m.metadata.get(COMPLETE_KEY)) for m in turns[:2]] == [
        ("user", QUESTIONS[0], None),
        ("assistant", text, None),
    ]


@pytest.mark.parametrize("kind", ["responses"])
def test_a_managed_call_while_reading_a_responses_stream_leaves_it_to_be_read_whole(
    kind: str, sdk: Any, memory: Memory
) -> None:
    """A Responses stream logs nothing in the session, so a managed chat call in its
    middle needs nothing of it: the stream is read on and recorded whole."""
    wrapped = _wrapped(sdk, memory, managed=True)
    (text,) = _read_around_a_call(wrapped, kind, "openai")
    assert text == "You said: " + QUESTIONS[0]
    side, streamed = wrapped.calls
    assert (side.stream, streamed.stream, streamed.complete) == (False, True, True)
    assert streamed.reply.content == text and streamed.usage.output_tokens > 0


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_managed_call_while_reading_a_managed_stream_ends_it_where_its_record_ends(
    kind: str, sdk: Any, memory: Memory
) -> None:
    """A managed call needs the stream's reply logged first, so the stream its caller is
    reading is recorded as left, and closed. Reading on then raises ``ProviderError``,
    every time, after exactly the events the record and the log hold (a review: the app
    often read on to a whole reply, buffered, while a fragment was recorded)."""
    wrapped = _wrapped(sdk, memory, managed=True)
    events = iter(_open(wrapped, kind, QUESTIONS[0]))
    text = "".join(_text(kind, next(events)) for _ in range(3))
    _ask(wrapped, kind, "and a quick side question")
    with pytest.raises(ProviderError, match="recorded as left"):
        for event in events:
            text += _text(kind, event)
    streamed = wrapped.calls[0]
    assert (streamed.stream, streamed.complete, streamed.reply.content) == (True, False, text)
    wrapped.flush()
    logged = [t.message for t in wrapped.context.session.turns()][1]
    assert (logged.content, logged.metadata[COMPLETE_KEY]) == (text, False)


def _ended(kind: str, event: Any) -> bool:
    """Whether ``event`` is the protocol's end of the reply (before the stream's own end)."""
    if kind == "anthropic":
        return event.type == "message_delta"
    return bool(event.choices) and event.choices[0].finish_reason is not None


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_managed_call_made_in_the_loop_once_the_reply_ended_ends_the_loop(
    kind: str, sdk: Any, memory: Memory
) -> None:
    """The follow-up call made inside the loop once the reply's end marker arrived (a
    tool run at ``finish_reason``): the reply is whole and recorded so, usage included,
    and the loop just ends, as it would have a moment later, with no error."""
    wrapped = _wrapped(sdk, memory, managed=True)
    text = ""
    for event in _open(wrapped, kind, QUESTIONS[0]):
        text += _text(kind, event)
        if _ended(kind, event):
            _ask(wrapped, kind, "and what next?")
    streamed = wrapped.calls[0]
    assert (streamed.complete, streamed.reply.content) == (True, "You said: " + QUESTIONS[0])
    assert text == streamed.reply.content and streamed.usage.output_tokens > 0
    wrapped.flush()
    turns = [t.message for t in wrapped.context.session.turns()]
    assert [(m.content, m.metadata.get(COMPLETE_KEY)) for m in turns[:2]] == [
        (QUESTIONS[0], None),
        (text, None),
    ]


# -- a stream really left ----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_pass_through_stream_left_is_recorded_once_dropped(kind: str, sdk: Any) -> None:
    """A stream the app leaves half-read is not taken for left by a pass-through call
    (it may yet be read on); once the app drops it, it is recorded, as incomplete, at
    the next call (or ``flush()``), as the docs say of an abandoned stream."""
    wrapped = wrap(sdk)
    kept = _open(wrapped, kind, QUESTIONS[0])
    events = iter(kept)
    next(events)
    next(events)
    _ask(wrapped, kind, "something else")
    assert [(c.stream, c.complete) for c in wrapped.calls] == [(False, True)]
    del kept, events
    gc.collect()  # openai's stream holds itself: only the collector frees it
    _ask(wrapped, kind, "and another thing")
    assert [(c.stream, c.complete) for c in wrapped.calls] == [
        (False, True),
        (True, False),
        (False, True),
    ]


@pytest.mark.parametrize("kind", ["openai"])
def test_a_stream_whose_response_was_closed_under_it_raises_provider_error(
    kind: str, sdk: Any
) -> None:
    """The HTTP library's ``StreamClosed`` (a ``StreamError``, not a ``RequestError``)
    reached the app as it was; the docs promise ``ProviderError``."""
    stream = _open(wrap(sdk), kind, QUESTIONS[0])
    stream.response.close()
    with pytest.raises(ProviderError, match="StreamClosed"):
        list(stream)
