"""The provider SDKs and their loopback fakes, by provider name, for tests that run the
same steps against Anthropic and OpenAI."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from contextos.testing.fake_anthropic import AnthropicUsage, FakeAnthropic, message_start
from contextos.testing.fake_http import SSEEvent
from contextos.testing.fake_openai import FakeOpenAI


def fake_and_sdk(provider: str) -> tuple[Any, Any]:
    """(the fake server class, the SDK client class) of ``provider`` ("anthropic" or
    "openai"); the SDK is imported here, so a test module that skips without it may
    call this."""
    if provider == "anthropic":
        import anthropic

        return FakeAnthropic, anthropic.Anthropic
    import openai

    return FakeOpenAI, openai.OpenAI


@contextmanager
def fake_and_client(provider: str, **fake_options: Any) -> Iterator[tuple[Any, Any]]:
    """The loopback fake of ``provider`` (made with ``fake_options``) and the real SDK
    client pointed at it, without retries; both closed at the end (a client left open
    was reported unclosed in whichever later test the garbage collector ran)."""
    fake_cls, sdk = fake_and_sdk(provider)
    with (
        fake_cls(**fake_options) as fake,
        sdk(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        yield fake, client


@contextmanager
def one_connection_client(provider: str, base_url: str, pool_timeout: float) -> Iterator[Any]:
    """The real SDK client of ``provider`` at ``base_url`` with a pool of one connection,
    waiting ``pool_timeout`` seconds at most for it (a connection never given back shows
    as the SDK's timeout), without retries."""
    import pytest

    sdk: Any = pytest.importorskip(provider)
    http = pytest.importorskip("httpx2" if provider == "anthropic" else "httpx")
    limits = http.Limits(max_connections=1, max_keepalive_connections=1)
    with sdk.DefaultHttpxClient(limits=limits) as pool:
        client_class = sdk.Anthropic if provider == "anthropic" else sdk.OpenAI
        timeout = sdk.Timeout(10.0, pool=pool_timeout)
        with client_class(
            base_url=base_url, api_key="t", max_retries=0, timeout=timeout, http_client=pool
        ) as client:
            yield client


def sent_by_sdk(provider: str, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` sent by the real SDK of ``provider`` to its loopback fake: the request the
    fake received (it refuses a malformed one, so the call must succeed)."""
    with fake_and_client(provider) as (fake, client):
        if provider == "anthropic":
            client.messages.create(**body)
            [request] = fake.messages_requests()
        else:
            client.chat.completions.create(**body)
            [request] = fake.completions_requests()
    return dict(request.json())


def openai_tool_call(call: dict[str, Any], model: str = "gpt-4.1-mini") -> Any:
    """A recorded Chat Completions answer (for ``FakeOpenAI.enqueue``) whose reply is the
    one tool call ``call`` (``{"id", "type": "function", "function": {...}}``)."""
    from contextos.testing.fake_http import FakeResponse

    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return FakeResponse(
        json_body={
            "id": f"chatcmpl-{call['id']}",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": message}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    )


def openai_choices(*texts: str, model: str = "gpt-4.1-mini") -> Any:
    """A recorded Chat Completions answer (for ``FakeOpenAI.enqueue``) with one choice
    per text (``n=len(texts)``), which the fake does not make."""
    from contextos.testing.fake_http import FakeResponse

    def choice(i: int, text: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": text, "refusal": None}
        return {"index": i, "message": message, "finish_reason": "stop", "logprobs": None}

    return FakeResponse(
        json_body={
            "id": "chatcmpl-choices",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [choice(i, text) for i, text in enumerate(texts)],
            "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48},
        }
    )


def said(messages: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(role, text) of each message sent, in either API's form (a tool call as its id)."""
    out = []
    for m in messages:
        content = m.get("content")
        blocks = [{"text": content}] if isinstance(content, str) else content or []
        parts = [str(b.get("text") or b.get("id") or b.get("content") or "") for b in blocks]
        parts += [c["id"] for c in m.get("tool_calls") or []]
        out.append((m["role"], " ".join(p for p in parts if p)))
    return out


def first_events(provider: str, text: str, *, model: str, message_id: str) -> list[SSEEvent]:
    """The first events of a streamed reply of ``provider`` saying ``text``, and no end:
    what a reader has seen when the stream stalls or the connection drops there."""
    if provider == "anthropic":
        block = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": text}
        return [
            SSEEvent(json.dumps(e), e["type"])
            for e in (
                message_start(message_id, model, AnthropicUsage(5, 1)),
                {"type": "content_block_start", "index": 0, "content_block": block},
                {"type": "content_block_delta", "index": 0, "delta": delta},
            )
        ]
    choice = {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model}
    return [SSEEvent(json.dumps({**chunk, "choices": [choice]}))]


def read_in_thread(stream: Any) -> tuple[threading.Thread, list[Any], list[BaseException]]:
    """Read ``stream`` to its end on a daemon thread, started here: the thread, the
    events read so far, and what ended the read (empty while it reads, or when the
    stream ended on its own)."""
    read: list[Any] = []
    ended: list[BaseException] = []

    def reader() -> None:
        try:
            for event in stream:
                read.append(event)
        except BaseException as exc:  # noqa: BLE001 - what the reader saw is the point
            ended.append(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    return thread, read, ended


def assert_logged_as_cut(wrapped: Any, question: str, partial: str) -> None:
    """The wrapped client's one call was cut after ``partial``: recorded incomplete, and
    the session's log holds ``question`` and the fragment marked not complete."""
    from contextos.engine.context import COMPLETE_KEY

    (call,) = wrapped.calls
    assert not call.complete and call.reply is not None and call.reply.content == partial
    wrapped.flush()
    turns = [t.message for t in wrapped.context.session.turns()]
    assert [(m.role, m.content) for m in turns] == [("user", question), ("assistant", partial)]
    assert turns[1].metadata[COMPLETE_KEY] is False
