"""Another wrapped client of the session finds a streamed reply whose stream was dropped.

An app may stop reading a stream at its end marker (``message_stop``, ``finish_reason``)
and drop it: it has the whole reply. Another wrapped client of the same session (the next
request's, or the other provider's) then sent only the new turn, and its window lacked the
reply: Anthropic's dropped stream waited in the reporter's queue, OpenAI's (the SDK stream
holds itself) in its client's open set until a garbage collection. The reply was logged
after the next question, or the other provider refused the tool result (a review, diff41C).

Deterministic: the process's one stream reporter is kept busy by a blocker's stream
(another session, its commit inline, held at the store until the test ends), so a dropped
stream it would report waits in its queue; the OpenAI stream is kept referenced, as the
SDK's own cycle keeps it until a collection, and read in a ``contextvars`` context of its
own (a thread pool job's), so the next request's caller is not its reader. Real SQLite file,
the real ``anthropic`` / ``openai`` SDK clients against the loopback fakes.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.engine.session import Session  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.store.sqlite import SQLiteStore  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI  # noqa: E402
from sdk_support import said  # noqa: E402

CLAUDE, GPT = "claude-sonnet-4-6", "gpt-4.1-mini"
LOOKUP_A = [{"name": "lookup", "description": "Look up.", "input_schema": {"type": "object"}}]
LOOKUP_O = [
    {
        "type": "function",
        "function": {"name": "lookup", "description": "Look up.", "parameters": {"type": "object"}},
    }
]


class GatedStore:
    """The store as the Memory sees it: a reply appended to session ``blocker`` waits
    (``entered`` set) until ``gate`` opens, or 30 s at most."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def append_turns(self, scope: Any, messages: Any, tokens: Any, **kwargs: Any) -> Any:
        if scope.session_id == "blocker" and messages and messages[-1].role == "assistant":
            self.entered.set()
            self.gate.wait(30)
        return self.store.append_turns(scope, messages, tokens, **kwargs)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[GatedStore]:
    store = SQLiteStore(tmp_path / "chat.db")
    gated = GatedStore(store)
    try:
        yield gated
    finally:
        gated.gate.set()
        store.close()


@pytest.fixture
def memory(gated: GatedStore) -> Iterator[Memory]:
    with Memory(store=gated, embedder=HashEmbedder(), background_embedding=False) as m:  # type: ignore[arg-type]
        yield m


def busy_reporter(sdk: Any, memory: Memory, gated: GatedStore) -> Any:
    """Drop a stream of session ``blocker`` whose inline commit holds the stream reporter
    at the store until ``gated.gate`` opens; the blocker's client (flush it at the end)."""
    blocker = wrap(sdk, memory=memory, session="blocker", user_id="bo", background_commit=False)
    stream = blocker.messages.create(
        model=CLAUDE, max_tokens=64, stream=True, messages=[{"role": "user", "content": "hi"}]
    )
    for event in stream:
        if event.type == "message_stop":
            break
    del stream  # queued for the reporter, whose report commits inline, and waits
    assert gated.entered.wait(10)
    return blocker


def roles(memory: Memory) -> str:
    turns = Session(memory.store, "chat", user_id="ana").turns()
    return "".join(t.message.role[0] for t in turns)


def test_a_claude_stream_dropped_at_message_stop_is_in_the_next_clients_window(
    gated: GatedStore, memory: Memory
) -> None:
    with (
        FakeAnthropic(reply=lambda b: f"answer {len(b['messages'])}") as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0) as sdk,
    ):
        blocker = busy_reporter(sdk, memory, gated)
        first = wrap(sdk, memory=memory, session="chat", user_id="ana")
        stream = first.messages.create(
            model=CLAUDE,
            max_tokens=64,
            stream=True,
            messages=[{"role": "user", "content": "first question"}],
        )
        for event in stream:
            if event.type == "message_stop":
                break
        del stream  # queued behind the blocker's report
        second = wrap(sdk, memory=memory, session="chat", user_id="ana")  # the next request's
        second.messages.create(
            model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "second question"}]
        )
        sent = said(fake.messages_requests()[-1].json()["messages"])
        gated.gate.set()
        for client in (blocker, first, second):
            client.flush()
    assert sent == [
        ("user", "first question"),
        ("assistant", "answer 1"),
        ("user", "second question"),
    ]
    assert roles(memory) == "uaua"


def test_an_openai_stream_left_at_finish_reason_is_in_the_next_clients_window(
    memory: Memory,
) -> None:
    with (
        FakeOpenAI(reply=lambda b: f"answer {len(b['messages'])}") as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0) as sdk,
    ):
        kept: list[Any] = []  # as the SDK stream's own cycle keeps it until a collection

        def first_request() -> None:
            client = wrap(sdk, memory=memory, session="chat", user_id="ana")
            stream = client.chat.completions.create(
                model=GPT,
                max_tokens=64,
                stream=True,
                messages=[{"role": "user", "content": "first question"}],
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].finish_reason:
                    break
            kept.append(stream)

        def second_request() -> Any:
            client = wrap(sdk, memory=memory, session="chat", user_id="ana")
            client.chat.completions.create(
                model=GPT,
                max_tokens=64,
                messages=[{"role": "user", "content": "second question"}],
            )
            return client

        # One worker thread, each request in a copy of the submitter's context (anyio's
        # thread pool, ``asyncio.to_thread``): two callers, the first's thread alive.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(contextvars.copy_context().run, first_request).result()
            second = pool.submit(contextvars.copy_context().run, second_request).result()
        sent = said(fake.completions_requests()[-1].json()["messages"])
        second.flush()
        for chunk in kept[0]:  # nothing more to read: the loop just ends
            raise AssertionError(f"read after the reply was recorded: {chunk}")
    assert sent == [
        ("user", "first question"),
        ("assistant", "answer 1"),
        ("user", "second question"),
    ]
    assert roles(memory) == "uaua"


def test_a_claude_tool_call_dropped_at_message_stop_lets_gpt_take_its_result(
    gated: GatedStore, memory: Memory
) -> None:
    call = [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}]
    with (
        FakeAnthropic(reply=lambda b: call if b["messages"][-1]["role"] == "user" else "ok") as fa,
        FakeOpenAI(reply=lambda b: "It is 42.") as fo,
        anthropic.Anthropic(base_url=fa.base_url, api_key="k", max_retries=0) as a_sdk,
        openai.OpenAI(base_url=fo.base_url, api_key="k", max_retries=0) as o_sdk,
    ):
        blocker = busy_reporter(a_sdk, memory, gated)
        claude = wrap(a_sdk, memory=memory, session="chat", user_id="ana")
        gpt = wrap(
            o_sdk,
            memory=memory,
            session="chat",
            user_id="ana",
        )
        stream = claude.messages.create(
            model=CLAUDE,
            max_tokens=64,
            stream=True,
            tools=LOOKUP_A,
            messages=[{"role": "user", "content": "What is the answer?"}],
        )
        for event in stream:
            if event.type == "message_stop":
                break
        del stream
        out = gpt.chat.completions.create(
            model=GPT,
            max_tokens=64,
            tools=LOOKUP_O,
            messages=[{"role": "tool", "tool_call_id": "toolu_1", "content": "42"}],
        )
        sent = said(fo.completions_requests()[-1].json()["messages"])
        gated.gate.set()
        for client in (blocker, claude, gpt):
            client.flush()
    assert out.choices[0].message.content == "It is 42."
    assert sent == [("user", "What is the answer?"), ("assistant", "toolu_1"), ("tool", "42")]
