"""``forget`` landing while a wrapped call is in flight: nothing of the call outlives it.

The question is logged before the call and the reply, with the remembered exchange,
after it (on the commit thread). A ``forget`` of the user that commits in between --
``contextos forget`` in another process, the server, a second Memory -- erased the
logged question, and the commit wrote the question back into memory (searchable) and
logged the reply as the first turn of the erased session.

A real ``anthropic`` client against the loopback fake (whose reply hook is where the
forget runs while the call is in flight), real SQLite files and PostgreSQL schemas;
the tokenizer is the seam where the forget lands inside the commit itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from cli_support import run_cli
from contextos import Scope, Session, wrap
from contextos.llm.tokens import Tokenizer, default_tokenizer
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.types import Message
from test_erasure_live import BOTH, _file_bytes, _rows_mentioning

MODEL = "claude-haiku-4-5"
SECRET = "qzpassport8812"
#: In the model's reply only: counted by the commit alone.
MARK = "qzreplymark"


def _ask(client: Any, text: str) -> None:
    client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": text}])
    client.flush()  # the reply and the remembered exchange are written (or not)


def _left(memory: Memory, *words: str) -> list[str]:
    """Ana's memories and the turns of her session ``s1`` that hold any of ``words``."""
    texts = [r.text for r in memory.get_all(user_id="ana", limit=1000)]
    texts += [t.message.content for t in memory.store.turns(Scope(session_id="s1"))]
    return [t for t in texts if any(w in t for w in words)]


def test_a_forget_from_another_process_during_the_call_is_not_undone_by_its_commit(
    tmp_path: Path, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    db = tmp_path / "m.db"

    def forget_then_answer(body: dict[str, Any]) -> str:
        # The question is logged; the model is answering when the user is erased.
        forgot = run_cli("forget", "-u", "ana", "--yes", db=db)
        assert forgot.returncode == 0, forgot.stderr
        # The app goes on after the erasure: what it adds for the user now is hers anew.
        with Memory(db, embedder=HashEmbedder(), background_embedding=False) as other:
            other.add("Ana moved to Porto in June.", user_id="ana")
        return f"Noted, {MARK}."

    fake_anthropic.reply = forget_then_answer
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
        wrapped = wrap(anthropic_client, memory, session="s1", user_id="ana")
        _ask(wrapped, f"My passport number is {SECRET}.")

        assert _left(memory, SECRET, MARK) == []
        assert all(
            SECRET not in h.record.text for h in memory.search("passport number", user_id="ana")
        )
        # The forget happened once: the commit saw it before writing anything, so
        # what the app added after it stays.
        assert [r.text for r in memory.get_all(user_id="ana")] == ["Ana moved to Porto in June."]

        fake_anthropic.reply = lambda body: "Hello."
        _ask(wrapped, "Hello, a new conversation.")
        assert SECRET not in json.dumps(fake_anthropic.messages_requests()[-1].json())
        turns = memory.store.turns(Scope(session_id="s1"))
        assert [(t.seq, t.message.content) for t in turns] == [
            (0, "Hello, a new conversation."),
            (1, "Hello."),
        ]
    assert SECRET.encode() not in _file_bytes(db)


class ActingTokenizer:
    """The default tokenizer (the seam where text is counted) that runs ``act`` the first
    time it counts ``MARK`` as ``how`` says: in a message (``Session.add`` counts the
    reply it logs) or in a text (``Memory.add`` counts each record it writes)."""

    def __init__(self, how: str, act: Callable[[], object]) -> None:
        self.inner: Tokenizer = default_tokenizer()
        self.name, self.exact = self.inner.name, self.inner.exact
        self.how, self.act = how, act
        self.acted = False

    def _see(self, how: str, text: str) -> None:
        if how == self.how and MARK in text and not self.acted:
            self.acted = True
            self.act()

    def count(self, text: str) -> int:
        self._see("text", text)
        return self.inner.count(text)

    def count_messages(self, messages: Sequence[Message]) -> int:
        self._see("message", " ".join(m.content for m in messages))
        return self.inner.count_messages(messages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextmanager
def _memories(
    kind: str, tmp_path: Path, tokenizer: ActingTokenizer
) -> Iterator[tuple[Memory, Callable[[], AbstractContextManager[Memory]]]]:
    """A Memory counting with ``tokenizer`` on a SQLite file or a fresh PostgreSQL
    schema, and a way to open a second, independent one on the same storage."""
    opts: dict[str, Any] = {"embedder": HashEmbedder(), "background_embedding": False}
    if kind == "sqlite":
        db = tmp_path / "m.db"
        with Memory(db, tokenizer=tokenizer, **opts) as m:
            yield m, lambda: Memory(db, **opts)
        return
    from contextos.store.postgres import PostgresStore
    from pg_support import pg_url, postgres_store

    with postgres_store() as store:
        m = Memory(store=store, tokenizer=tokenizer, **opts)
        try:
            yield m, lambda: Memory(store=PostgresStore(pg_url(), schema=store.schema), **opts)
        finally:
            m.close()


@BOTH
@pytest.mark.parametrize(
    "how", ["message", "text"], ids=["before-the-reply-is-logged", "before-it-is-remembered"]
)
def test_a_forget_landing_inside_the_commit_leaves_nothing_of_the_question(
    kind: str,
    how: str,
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    anthropic_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The commit checks the session before it writes; a forget that commits after that
    check -- before the reply is logged, or after it and before the exchange is
    remembered (the memories would be written after the erasure) -- is found by a
    second check after the writes, which purges the memories the commit wrote, and only
    them: what the app writes for the user after the forget stays. The reply is
    appended only while the log holds the question (checked in the append's own
    transaction): it used to be logged after the erasure, the first turn of the erased
    session, with a warning (turns go only by forget, and forgetting the user again
    took the app's later writes too)."""
    fake_anthropic.reply = lambda body: f"Noted, {MARK}."
    handles: list[Callable[[], AbstractContextManager[Memory]]] = []

    def forget() -> None:
        with handles[0]() as other:  # the server, the CLI: another handle on the storage
            assert other.forget("ana") > 0
            # The app goes on at once: a new session and a memory, hers anew.
            Session(other.store, "s2", user_id="ana").add(Message("user", "Hi again."))
            other.add("Ana moved to Porto in June.", user_id="ana")

    with _memories(kind, tmp_path, ActingTokenizer(how, forget)) as (memory, second):
        handles.append(second)
        memory.add(f"Ana's passport number is {SECRET}.", user_id="ana")
        wrapped = wrap(anthropic_client, memory, session="s1", user_id="ana")
        with caplog.at_level(logging.WARNING, logger="contextos.engine.context"):
            _ask(wrapped, f"Remember my passport number {SECRET}.")
        assert memory.tokenizer.acted  # type: ignore[attr-defined]

        assert _left(memory, SECRET, MARK) == []
        assert memory.store.turns(Scope(session_id="s1")) == []
        assert "erased" not in caplog.text
        assert all(
            SECRET not in h.record.text and MARK not in h.record.text
            for h in memory.search("passport number noted", user_id="ana")
        )
        # What the app wrote after the forget is still there.
        assert [r.text for r in memory.get_all(user_id="ana")] == ["Ana moved to Porto in June."]
        assert [t.message.content for t in memory.store.turns(Scope(session_id="s2"))] == [
            "Hi again."
        ]
        if kind == "postgres":
            assert _rows_mentioning(memory, SECRET) == []
    if kind == "sqlite":
        assert SECRET.encode() not in _file_bytes(tmp_path / "m.db")


def test_forgetting_another_user_of_a_shared_session_takes_nothing_of_this_user(
    tmp_path: Path, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    # Bob's turn is the log's last; Ana's client answers it (it logs nothing new). Bob
    # is forgotten while the model answers: the commit took Bob's turn for its own
    # question, found it gone, and forgot Ana -- her memories and other sessions too.
    db = tmp_path / "m.db"

    def forget_bob_then_answer(body: dict[str, Any]) -> str:
        assert run_cli("forget", "-u", "bob", "--yes", db=db).returncode == 0
        return "Sure."

    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
        memory.add("Ana likes green tea.", user_id="ana")
        Session(memory.store, "mine", user_id="ana").add(Message("user", "My own notes."))
        Session(memory.store, "room", user_id="bob").add(Message("user", "Bob: hello all"))
        wrapped = wrap(anthropic_client, memory, session="room", user_id="ana")
        fake_anthropic.reply = forget_bob_then_answer
        wrapped.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Bob: hello all"}]
        )
        wrapped.flush()
        assert [r.text for r in memory.get_all(user_id="ana")][-1] == "Ana likes green tea."
        assert [t.message.content for t in memory.store.turns(Scope(session_id="mine"))] == [
            "My own notes."
        ]
        assert [t.message.content for t in memory.store.turns(Scope(session_id="room"))] == [
            "Sure."
        ]
