"""A stream the network cuts while the app reads it: the app gets a ProviderError.

The real ``anthropic`` / ``openai`` SDK clients against the loopback fakes, which
send a stream's first events and then drop the connection, or stall past the
client's read timeout. The SDKs map such errors only while sending; a stream's
body is read later, in the app's loop, where the HTTP library's own exception
(``httpx2.RemoteProtocolError``, ``httpx2.ReadTimeout``) came through unmapped.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.engine.context import COMPLETE_KEY  # noqa: E402
from contextos.errors import ProviderError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import AnthropicUsage, FakeAnthropic, message_start  # noqa: E402
from contextos.testing.fake_http import FakeResponse, SSEEvent  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI  # noqa: E402
from sdk_support import assert_logged_as_cut, first_events, read_in_thread  # noqa: E402

MODEL = "claude-sonnet-4"
GPT = "gpt-4.1-mini"
PARTIAL = "Your flight is cancel"
#: The client's read timeout, well under the fake's stall.
TIMEOUT = 0.5
#: What each SDK lets through (kept as the ProviderError's ``__cause__``): anthropic
#: the HTTP library's own error, openai its own mapping of it.
#: The transport error under the ProviderError: anthropic before 2.17 raised it as it
#: was, 2.17 and openai wrap it in their own error (its ``__cause__``).
CAUSES = {
    ("anthropic", "drop"): "RemoteProtocolError",
    ("anthropic", "stall"): "ReadTimeout",
    ("openai", "drop"): "RemoteProtocolError",
    ("openai", "stall"): "ReadTimeout",
}


def _cause_names(exc: BaseException) -> list[str]:
    """The class names down ``exc``'s ``__cause__`` chain, ``exc`` excluded."""
    names = []
    while exc.__cause__ is not None:
        exc = exc.__cause__
        names.append(type(exc).__name__)
    return names


def _anthropic_events() -> list[SSEEvent]:
    return first_events("anthropic", PARTIAL, model=MODEL, message_id="msg_cut")


def _openai_events() -> list[SSEEvent]:
    return first_events("openai", PARTIAL, model=GPT, message_id="msg_cut")


def _read_all(provider: str, wrapped: Any) -> None:
    question = [{"role": "user", "content": "is my flight ok?"}]
    if provider == "anthropic":
        stream = wrapped.messages.create(model=MODEL, max_tokens=64, messages=question, stream=True)
    else:
        stream = wrapped.chat.completions.create(model=GPT, messages=question, stream=True)
    for _ in stream:
        pass


@pytest.mark.parametrize("cut", ["drop", "stall"])
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_stream_cut_by_the_network_raises_a_provider_error_and_logs_the_fragment(
    memory: Memory, provider: str, cut: str
) -> None:
    fake: Any
    if provider == "anthropic":
        fake, sdk, events = FakeAnthropic(), anthropic.Anthropic, _anthropic_events()
    else:
        fake, sdk, events = FakeOpenAI(), openai.OpenAI, _openai_events()
    with (
        fake,
        sdk(base_url=fake.base_url, api_key="t", max_retries=0, timeout=TIMEOUT) as client,
    ):
        wrapped = wrap(client, memory=memory, session="s", user_id="ana")
        fake.enqueue(FakeResponse(events=events, cut=cut))
        with pytest.raises(ProviderError) as raised:
            _read_all(provider, wrapped)
        assert CAUSES[provider, cut] in _cause_names(raised.value)
        assert CAUSES[provider, cut] in str(raised.value)
        assert_logged_as_cut(wrapped, "is my flight ok?", PARTIAL)


def test_a_transport_error_names_itself_in_the_message(memory: Memory) -> None:
    """``str(ReadTimeout)`` is only "timed out": the message says which error it was."""
    with (
        FakeAnthropic() as fake,
        anthropic.Anthropic(
            base_url=fake.base_url, api_key="t", max_retries=0, timeout=TIMEOUT
        ) as client,
    ):
        fake.enqueue(FakeResponse(events=_anthropic_events(), cut="stall"))
        with pytest.raises(ProviderError, match="anthropic: ReadTimeout"):
            _read_all("anthropic", wrap(client))


class PacedEvent(SSEEvent):
    """An event the fake model produces a tenth of a second after the one before."""

    def encode(self) -> bytes:
        time.sleep(0.1)
        return super().encode()


def _paced_reply(provider: str, words: int) -> list[SSEEvent]:
    """A whole streamed reply of ``words`` deltas, as each API sends it, paced."""
    if provider == "anthropic":
        text = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": "tok "}] * words
        stop = {"stop_reason": "end_turn", "stop_sequence": None}
        shaped = [
            message_start("msg_paced", MODEL, AnthropicUsage(5, 1)),
            {"type": "content_block_start", "index": 0, "content_block": text},
            *({"type": "content_block_delta", "index": 0, "delta": d} for d in deltas),
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": stop, "usage": {"output_tokens": words}},
            {"type": "message_stop"},
        ]
        return [PacedEvent(json.dumps(e), e["type"]) for e in shaped]
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": GPT}
    role = {"role": "assistant", "content": ""}
    chunks = [
        {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        for delta in [role, *[{"content": "tok "}] * words]
    ]
    chunks.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return [PacedEvent(json.dumps(c)) for c in chunks]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_stop_generating_from_another_thread_ends_the_read_and_logs_a_fragment(
    memory: Memory, provider: str
) -> None:
    """A UI's "stop" (or a disconnect handler) closes the stream from another thread
    while the reader waits for the model's next event. Closing the running observer
    raised "generator already executing": the SDK's close never ran, the stream went on
    to its end and the stopped reply was logged as complete (a review). Now the
    reader's next read fails at once, as with the bare SDK, and the fragment is logged
    as incomplete."""
    fake: Any
    fake, sdk = (
        (FakeAnthropic(), anthropic.Anthropic)
        if provider == "anthropic"
        else (
            FakeOpenAI(),
            openai.OpenAI,
        )
    )
    words = 40
    with fake, sdk(base_url=fake.base_url, api_key="t", max_retries=0, timeout=30) as client:
        wrapped = wrap(client, memory=memory, session="s", user_id="ana")
        fake.enqueue(FakeResponse(events=_paced_reply(provider, words)))
        question = [{"role": "user", "content": "is my flight ok?"}]
        if provider == "anthropic":
            stream = wrapped.messages.create(
                model=MODEL, max_tokens=64, messages=question, stream=True
            )
        else:
            stream = wrapped.chat.completions.create(model=GPT, messages=question, stream=True)
        thread, read, ended = read_in_thread(stream)
        deadline = time.monotonic() + 10
        while len(read) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        stream.close()  # the reader is inside the stream, waiting for the next event
        thread.join(10)
        assert not thread.is_alive()
        assert len(read) < words // 2, "the stream stopped when it was closed"
        assert ended and isinstance(ended[0], ProviderError)
        (call,) = wrapped.calls
        assert not call.complete and call.reply is not None
        wrapped.flush()
        turns = [t.message for t in wrapped.context.session.turns()]
        assert turns[-1].role == "assistant" and turns[-1].metadata[COMPLETE_KEY] is False
        assert turns[-1].content.count("tok") < words // 2
