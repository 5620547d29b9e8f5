"""Another wrapped client of the same session waits for this client's reply to be logged.

A web app that wraps a client per request, or a tool loop whose steps go to an Anthropic
and an OpenAI client in turn, may send only the new turn. The reply of the last call is
logged on that client's commit thread; only that client's own next call waited for it,
and the next request, on another client, got a window without the reply (two user turns
in a row) or had its tool results refused, their call not logged yet (a review: 4 to 11
runs in 20). Here the first client's commit is held at the store (a real SQLite file
the clients share through one Memory) until the second request reaches the loopback
fake, or for :data:`HOLD_S` at most: a request that waits for the commit reaches the
fake only after it. The real ``anthropic`` and ``openai`` SDK clients talk to the fakes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
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
from contextos.types import Message  # noqa: E402
from sdk_support import said  # noqa: E402

CLAUDE, GPT = "claude-sonnet-4-6", "gpt-4.1-mini"
#: The longest a held commit waits for the next request to reach the fake.
HOLD_S = 1.0
LOOKUP_A = [{"name": "lookup", "description": "Look up.", "input_schema": {"type": "object"}}]
LOOKUP_O = [
    {
        "type": "function",
        "function": {"name": "lookup", "description": "Look up.", "parameters": {"type": "object"}},
    }
]


class HeldStore:
    """The store as the clients' Memory sees it: its first append of a reply (a commit)
    waits for ``release`` (set by the fakes when the next request comes), or for
    :data:`HOLD_S`; with ``fail``, that append raises instead."""

    def __init__(self, store: SQLiteStore, *, fail: bool = False) -> None:
        self.store = store
        self.fail = fail
        self.held = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def append_turns(self, scope: Any, messages: Any, tokens: Any, **kwargs: Any) -> Any:
        if messages and messages[-1].role == "assistant" and not self.held.is_set():
            self.held.set()
            self.release.wait(HOLD_S)
            if self.fail:
                raise OSError("disk full")
        return self.store.append_turns(scope, messages, tokens, **kwargs)

    def answering(self, reply: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
        """A fake's reply hook that first releases a held commit."""

        def hook(body: dict[str, Any]) -> Any:
            if self.held.is_set():
                self.release.set()
            return reply(body)

        return hook


@pytest.fixture
def held(tmp_path: Path) -> Iterator[HeldStore]:
    store = SQLiteStore(tmp_path / "chat.db")
    try:
        yield HeldStore(store)
    finally:
        store.close()


@pytest.fixture
def memory(held: HeldStore) -> Iterator[Memory]:
    with Memory(store=held, embedder=HashEmbedder(), background_embedding=False) as m:  # type: ignore[arg-type]
        yield m


def log(memory: Memory) -> list[tuple[str, str]]:
    turns = Session(memory.store, "chat", user_id="ana").turns()
    return [(t.message.role, t.message.content) for t in turns]


def test_a_client_wrapped_per_request_finds_the_last_clients_reply(
    held: HeldStore, memory: Memory
) -> None:
    with (
        FakeAnthropic(reply=held.answering(lambda b: f"answer {len(b['messages'])}")) as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0) as sdk,
    ):
        first = wrap(sdk, memory=memory, session="chat", user_id="ana")
        asked = [{"role": "user", "content": "first question"}]
        answer = first.messages.create(model=CLAUDE, max_tokens=64, messages=asked)
        assert held.held.wait(10)  # its commit waits at the store
        second = wrap(sdk, memory=memory, session="chat", user_id="ana")  # the next request's
        asked = [{"role": "user", "content": "second question"}]  # only the new turn
        second_answer = second.messages.create(model=CLAUDE, max_tokens=64, messages=asked)
        first.flush()
        second.flush()
        sent = said(fake.messages_requests()[-1].json()["messages"])
    assert sent == [
        ("user", "first question"),
        ("assistant", answer.content[0].text),
        ("user", "second question"),
    ]
    assert log(memory) == [
        ("user", "first question"),
        ("assistant", answer.content[0].text),
        ("user", "second question"),
        ("assistant", second_answer.content[0].text),
    ]


def test_tool_results_sent_to_the_other_provider_find_their_call(
    held: HeldStore, memory: Memory
) -> None:
    call = [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}]
    with (
        FakeAnthropic(reply=held.answering(lambda b: call)) as fake_a,
        FakeOpenAI(reply=held.answering(lambda b: "It is 42.")) as fake_o,
        anthropic.Anthropic(base_url=fake_a.base_url, api_key="k", max_retries=0) as a_sdk,
        openai.OpenAI(base_url=fake_o.base_url, api_key="k", max_retries=0) as o_sdk,
    ):
        claude = wrap(a_sdk, memory=memory, session="chat", user_id="ana")
        gpt = wrap(
            o_sdk,
            memory=memory,
            session="chat",
            user_id="ana",
        )
        asked = [{"role": "user", "content": "What is the answer?"}]
        claude.messages.create(model=CLAUDE, max_tokens=64, tools=LOOKUP_A, messages=asked)
        assert held.held.wait(10)
        results = [{"role": "tool", "tool_call_id": "toolu_1", "content": "42"}]
        out = gpt.chat.completions.create(
            model=GPT, max_tokens=64, tools=LOOKUP_O, messages=results
        )
        claude.flush()
        gpt.flush()
        sent = said(fake_o.completions_requests()[-1].json()["messages"])
    assert out.choices[0].message.content == "It is 42."
    assert sent == [
        ("user", "What is the answer?"),
        ("assistant", "toolu_1"),
        ("tool", "42"),
    ]


def test_another_clients_failed_commit_is_raised_to_that_client(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "chat.db")
    held = HeldStore(store, fail=True)
    try:
        with (
            Memory(store=held, embedder=HashEmbedder(), background_embedding=False) as memory,  # type: ignore[arg-type]
            FakeAnthropic(reply=held.answering(lambda b: "an answer")) as fake,
            anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0) as sdk,
        ):
            first = wrap(sdk, memory=memory, session="chat", user_id="ana")
            second = wrap(sdk, memory=memory, session="chat", user_id="ana")
            first.messages.create(
                model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "one"}]
            )
            assert held.held.wait(10)
            second.messages.create(
                model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "two"}]
            )
            second.flush()
            with pytest.raises(OSError, match="disk full"):
                first.flush()
    finally:
        store.close()


class _TitlingMemory:
    """A ``MemoryLike`` over a real Memory whose ``add`` first asks the model, through
    another wrapped client of the same session, for a title of what it stores."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self.client: Any = None
        self.titles: list[str] = []

    def search(self, query: str, **kw: Any) -> Any:
        return self.memory.search(query, **kw)

    def add(self, messages: Sequence[Message], **scope: Any) -> Any:
        text = " / ".join(m.content for m in messages)
        asked = [{"role": "user", "content": f"A title for: {text}"}]
        out = self.client.messages.create(model=CLAUDE, max_tokens=32, messages=asked)
        self.titles.append(out.content[0].text)
        return self.memory.add(list(messages), **scope)

    def delete_many(self, memory_ids: Sequence[str], *, purge: bool = False) -> list[str]:
        return self.memory.delete_many(memory_ids, purge=purge)

    def get_all(self, **kw: Any) -> Any:
        return self.memory.get_all(**kw)


@pytest.mark.parametrize("background_commit", [True, False])
def test_a_commit_that_calls_another_client_of_the_session_finishes(
    tmp_path: Path, background_commit: bool
) -> None:
    with (
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        FakeAnthropic(reply=lambda b: f"answer {len(b['messages'])}") as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0) as sdk,
    ):
        titling = _TitlingMemory(memory)
        titling.client = wrap(sdk, memory=memory, session="chat", user_id="ana")
        chat = wrap(
            sdk,
            memory=titling,
            session=Session(memory.store, "chat", user_id="ana"),
            background_commit=background_commit,
        )
        failed: list[BaseException] = []

        def talk() -> None:
            try:
                asked = [{"role": "user", "content": "my bike is blue"}]
                chat.messages.create(model=CLAUDE, max_tokens=64, messages=asked)
                chat.flush()
                titling.client.flush()
            except BaseException as exc:
                failed.append(exc)

        worker = threading.Thread(target=talk, daemon=True)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "the commit hung"
        assert not failed, failed
        assert log(memory) == [
            ("user", "my bike is blue"),
            ("assistant", "answer 1"),
            ("user", "A title for: my bike is blue / answer 1"),
            ("assistant", titling.titles[0]),
        ]
