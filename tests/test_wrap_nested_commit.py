"""A commit that makes a call through the same wrapped client finishes, in order.

``wrap(memory=...)`` takes any ``MemoryLike``; an application's ``add`` may ask the model
for something about what it stores (here: a title) through its own wrapped client. That
call runs inside the commit that remembers the exchange: on the commit thread, or inline
(``background_commit=False``). Its ``prepare`` waits for the commit in flight, and its
commit runs after the one before it: the committer held its lock while the caller's
``flush`` joined the commit thread, which then waited for that lock (a deadlock); the
commit thread joined itself ("cannot join current thread"); and an inline commit took a
lock it held already (a deadlock). The real ``anthropic`` SDK against the loopback fake,
a real Memory on SQLite; a hang fails the test after a join timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message

anthropic = pytest.importorskip("anthropic")

from contextos.providers import wrap  # noqa: E402

MODEL = "claude-sonnet-4"


class _TitlingMemory:
    """A ``MemoryLike`` over a real Memory whose ``add`` first asks the model, through
    the application's own wrapped client, for a title of what it stores (not for the
    title calls' own exchanges)."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self.client: Any = None
        self.titles: list[str] = []
        self._titling = False

    def search(self, query: str, **kw: Any) -> Any:
        return self.memory.search(query, **kw)

    def add(self, messages: Sequence[Message], **scope: Any) -> Any:
        if not self._titling:
            self._titling = True
            try:
                text = " / ".join(m.content for m in messages)
                asked = [{"role": "user", "content": f"A title for: {text}"}]
                out = self.client.messages.create(model=MODEL, max_tokens=32, messages=asked)
                self.titles.append(out.content[0].text)
            finally:
                self._titling = False
        return self.memory.add(list(messages), **scope)

    def delete_many(self, memory_ids: Sequence[str], *, purge: bool = False) -> list[str]:
        return self.memory.delete_many(memory_ids, purge=purge)

    def get_all(self, **kw: Any) -> Any:
        return self.memory.get_all(**kw)


@pytest.fixture
def own_memory(tmp_path: Path) -> Iterator[Memory]:
    """A Memory that does not wait for the wrapped client's commits when it closes (this
    MemoryLike does not register them): a commit thread the old committer hung is not
    joined at teardown."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        yield m


@pytest.mark.parametrize("background_commit", [True, False])
def test_a_commit_that_calls_the_same_client_finishes_in_order(
    own_memory: Memory, anthropic_client: Any, background_commit: bool
) -> None:
    titling = _TitlingMemory(own_memory)
    session = Session(own_memory.store, "s", user_id="ana")
    wrapped = wrap(
        anthropic_client,
        memory=titling,
        session=session,
        background_commit=background_commit,
    )
    titling.client = wrapped
    answers: list[str] = []
    failed: list[BaseException] = []

    def chat() -> None:
        try:
            for question in ("my locker code is 4711", "my bike is blue"):
                asked = [{"role": "user", "content": question}]
                out = wrapped.messages.create(model=MODEL, max_tokens=64, messages=asked)
                answers.append(out.content[0].text)
                wrapped.flush()
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=chat, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the commit hung"
    assert not failed, failed
    assert len(answers) == 2 and len(titling.titles) == 2
    log = [(t.message.role, t.message.content) for t in session.turns()]
    assert log == [
        ("user", "my locker code is 4711"),
        ("assistant", answers[0]),
        ("user", f"A title for: my locker code is 4711 / {answers[0]}"),
        ("assistant", titling.titles[0]),
        ("user", "my bike is blue"),
        ("assistant", answers[1]),
        ("user", f"A title for: my bike is blue / {answers[1]}"),
        ("assistant", titling.titles[1]),
    ]
    remembered = {r.text for r in own_memory.get_all(user_id="ana")}
    assert {"my locker code is 4711", "my bike is blue", *answers, *titling.titles} <= remembered
