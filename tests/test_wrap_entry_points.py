"""The SDK entry points besides ``create`` on a wrapped client: managed, or refused.

The real ``anthropic`` / ``openai`` SDK clients against the loopback fakes. An entry
point that would send a request around the wrapper must not silently drop the
session's context: it is managed (``stream``, ``parse``, ``with_options``, ``copy``) or refused
with a clear error (``with_raw_response``, ``with_streaming_response``).
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("anthropic")
pytest.importorskip("openai")

from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI  # noqa: E402

MODEL = "claude-sonnet-4"
GPT = "gpt-4.1-mini"
QUESTION = [{"role": "user", "content": "hi"}]


def _log(wrapped: Any) -> list[tuple[str, str]]:
    wrapped.flush()
    return [(t.message.role, t.message.content) for t in wrapped.context.session.turns()]


@pytest.mark.parametrize(
    "path",
    [
        ("messages", "with_raw_response"),
        ("beta", "messages", "with_streaming_response"),
        ("with_raw_response",),
    ],
)
def test_a_raw_response_entry_point_is_refused_on_a_managed_client(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory, path: tuple[str, ...]
) -> None:
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    target: Any = wrapped
    with pytest.raises(TypeError, match="bypasses contextos"):
        for name in path:
            target = getattr(target, name)
    assert fake_anthropic.messages_requests() == []


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_the_sdks_own_loops_and_beta_helpers_are_refused_on_a_managed_client(
    fake_anthropic: FakeAnthropic,
    anthropic_client: Any,
    fake_openai: FakeOpenAI,
    openai_client: Any,
    memory: Memory,
    provider: str,
) -> None:
    """Anthropic's ``beta.messages.tool_runner`` and OpenAI's ``beta.chat.completions``
    helpers call the SDK's own ``create``: through a managed client they sent the
    question without the session's history and logged nothing (a review). Refused
    there; a pass-through client, which manages nothing, still reaches them."""
    client = anthropic_client if provider == "anthropic" else openai_client
    path = ("beta", "messages", "tool_runner") if provider == "anthropic" else ("beta", "chat")
    wrapped = wrap(client, memory=memory, session="s", user_id="ana")
    target: Any = wrapped
    with pytest.raises(TypeError, match="bypasses contextos"):
        for name in path:
            target = getattr(target, name)
    target = wrap(client)
    for name in path:
        target = getattr(target, name)
    assert target is not None
    assert fake_anthropic.messages_requests() == [] and len(fake_openai.requests) == 0


def test_with_options_stays_wrapped(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
) -> None:
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    faster = wrapped.with_options(timeout=5.0)
    faster.messages.create(model=MODEL, max_tokens=64, messages=QUESTION)
    assert _log(wrapped) == [("user", "hi"), ("assistant", "You said: hi")]
    assert len(wrapped.calls) == 1


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_copy_stays_wrapped_like_with_options(
    fake_anthropic: FakeAnthropic,
    anthropic_client: Any,
    fake_openai: FakeOpenAI,
    openai_client: Any,
    memory: Memory,
    provider: str,
) -> None:
    """``copy`` is the SDKs' name for ``with_options``: it must not fall through to the
    bare SDK client, whose calls would skip the session silently."""
    client = anthropic_client if provider == "anthropic" else openai_client
    wrapped = wrap(client, memory=memory, session="s", user_id="ana")
    copied = wrapped.copy(timeout=5.0)
    assert copied.unwrapped is not client and copied.unwrapped.timeout == 5.0
    if provider == "anthropic":
        copied.messages.create(model=MODEL, max_tokens=64, messages=QUESTION)
    else:
        copied.chat.completions.create(model=GPT, messages=QUESTION)
    assert _log(wrapped) == [("user", "hi"), ("assistant", "You said: hi")]
    assert len(wrapped.calls) == 1


def test_openais_stream_helper_works_and_is_recorded(
    fake_openai: FakeOpenAI, openai_client: Any
) -> None:
    wrapped = wrap(openai_client)  # pass-through
    with wrapped.chat.completions.stream(model=GPT, messages=QUESTION) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "You said: hi"
    (call,) = wrapped.calls
    assert call.stream and call.complete and call.usage.output_tokens > 0


@pytest.mark.parametrize("managed", [False, True])
def test_openais_stream_helper_shows_no_usage_chunk_it_did_not_ask_for(
    fake_openai: FakeOpenAI, openai_client: Any, memory: Memory, managed: bool
) -> None:
    """The wrapper asks for the usage chunk (``include_usage``) to record the usage; the
    helper's events showed it as a chunk with no choices, which the bare SDK never
    sends unasked, and an app's ``event.chunk.choices[0]`` failed on it (a review)."""
    wrapped = wrap(openai_client, memory=memory, session="s") if managed else wrap(openai_client)
    with wrapped.chat.completions.stream(model=GPT, messages=QUESTION) as stream:
        chunks = [e.chunk for e in stream if e.type == "chunk"]
    assert chunks and all(c.choices for c in chunks)
    (call,) = wrapped.calls
    assert call.complete and call.usage.input_tokens > 0 and call.usage.output_tokens > 0
    asked = {"include_usage": True}
    with wrapped.chat.completions.stream(
        model=GPT, messages=QUESTION, stream_options=asked
    ) as stream:
        chunks = [e.chunk for e in stream if e.type == "chunk"]
    assert [c for c in chunks if not c.choices], "asked for: shown, as by the bare SDK"


def test_openais_stream_helper_and_parse_are_managed(
    fake_openai: FakeOpenAI, openai_client: Any, memory: Memory
) -> None:
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana")
    with wrapped.chat.completions.stream(model=GPT, messages=QUESTION) as stream:
        stream.until_done()
    wrapped.chat.completions.parse(model=GPT, messages=[{"role": "user", "content": "again"}])
    assert _log(wrapped) == [
        ("user", "hi"),
        ("assistant", "You said: hi"),
        ("user", "again"),
        ("assistant", "You said: again"),
    ]
    assert [c.complete for c in wrapped.calls] == [True, True]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"memory_limit": 0}, "memory_limit must be an integer between 1 and 1000"),
        ({"memory_limit": 1001}, "memory_limit must be an integer between 1 and 1000"),
        (
            {"memory_limit": 600, "memory_placement": "topic"},
            "memory_limit must be an integer between 1 and 500",
        ),
        ({"memory_tokens": 0}, "memory_tokens must be a positive integer"),
        ({"memory_tokens": -5}, "memory_tokens must be a positive integer"),
    ],
)
def test_memory_room_out_of_range_is_refused_by_wrap_not_by_every_call(
    fake_anthropic: FakeAnthropic,
    anthropic_client: Any,
    memory: Memory,
    options: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        wrap(anthropic_client, memory=memory, session="s", user_id="ana", **options)
    assert fake_anthropic.messages_requests() == []
