"""A session's turns as an online app writes and corrects them, on both stores.

- A group chat: Ann and Bob add their own turns with their own ``user_id`` (so that
  ``forget(user)`` reaches them), the assistant its replies with the session alone. The
  turns were numbered (``metadata["seq"]``) and quoted per (user, session): three took
  number 1 and Ann's answer was indexed as replying to her own earlier turn. They are
  numbered and quoted per session now, from threads, handles and processes alike.
- An update of a turn (a redaction) rewrites its quote in the reply's indexed context,
  in the update's own transaction: the removed words no longer find the reply. It reads
  and locks only the reply (by its number), not every record quoting an "ok". A new
  speaker's name replaces the old one in the turn's own context too.
- Whether a turn takes facts beside it on an update is the add's choice (``facts=``),
  not the updating Memory's ``turn_facts``.
"""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from contextos.errors import Conflict
from contextos.memory import Memory
from contextos.memory.ingest import renamed_context
from contextos.memory.render import FACT_OF
from contextos.store.base import Newest, Patch, Store
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, MemoryRecord, Scope

BOTH = pytest.mark.parametrize("kind", ["sqlite", "postgres"])
EVERY = Filter(include_invalid=True)
DAY = "2024-03-04T10:00:00"


@contextmanager
def handles(
    kind: str, tmp_path: Path, n: int, wrap: Callable[[Any], Any] | None = None, **options: Any
) -> Iterator[list[Memory]]:
    """``n`` Memory handles (a store each, vectors written inline) on one SQLite file or
    one PostgreSQL schema, as replicas of a server; ``wrap`` wraps each store."""
    with ExitStack() as stack:
        if kind == "sqlite":
            stores: list[Any] = [SQLiteStore(tmp_path / "m.db") for _ in range(n)]
        else:
            from contextos.store.postgres import PostgresStore
            from pg_support import pg_url, postgres_store

            first = stack.enter_context(postgres_store())
            stores = [first] + [PostgresStore(pg_url(), schema=first.schema) for _ in range(n - 1)]
        out = []
        for store in stores:
            wrapped = wrap(store) if wrap is not None else store
            memory = Memory(
                store=wrapped, embedder=HashEmbedder(), background_embedding=False, **options
            )
            stack.callback(store.close)
            stack.callback(memory.close)
            out.append(memory)
        yield out


def session_turns(memory: Memory, session: str) -> list[MemoryRecord]:
    """The turns of ``session`` (no facts), in the order of their numbers."""
    records = memory.get_all(session_id=session, filters=EVERY, limit=1000)
    turns = [r for r in records if FACT_OF not in r.metadata]
    return sorted(turns, key=lambda r: r.metadata["seq"])


def quoted(record: MemoryRecord) -> str:
    """The reply part of a record's context (what it answers), "" when none."""
    at = record.context.find("replying to ")
    return record.context[at:] if at >= 0 else ""


def stored_quote(memory: Memory, memory_id: str) -> str:
    """The reply part of the stored record's context."""
    record = memory.get(memory_id)
    assert record is not None
    return quoted(record)


# -- one numbering per session ----------------------------------------------------------


GROUP = [
    ("ann", "Ann", "I just got back from Qwertyvale."),
    ("bob", "Bob", "Was it sunny there?"),
    (None, None, "Welcome back! Qwertyvale is lovely in spring."),
    ("ann", "Ann", "Yes, very sunny, answering Bob."),
    ("bob", "Bob", "Great, I will go next week."),
]


@BOTH
def test_a_group_chat_numbers_and_quotes_its_turns_per_session(kind: str, tmp_path: Path) -> None:
    with handles(kind, tmp_path, 1) as (memory,):
        for user, name, text in GROUP:
            message = {"role": "user" if user else "assistant", "content": text}
            if name:
                message["name"] = name
            memory.add(message, user_id=user, session_id="g", event_time=DAY)
        turns = session_turns(memory, "g")
        assert [(r.metadata["seq"], r.text) for r in turns] == [
            (n, text) for n, (_, _, text) in enumerate(GROUP)
        ]
        assert quoted(turns[0]) == ""
        assert quoted(turns[1]) == "replying to Ann: I just got back from Qwertyvale."
        assert quoted(turns[2]) == "replying to Bob: Was it sunny there?"
        # Ann answers the assistant's turn before hers, not her own earlier one.
        assert quoted(turns[3]) == f"replying to {GROUP[2][2]}"
        assert quoted(turns[4]) == "replying to Ann: Yes, very sunny, answering Bob."
        # Each user's turns are still theirs: forget reaches them.
        assert [r.text for r in memory.get_all(user_id="ann")] == [GROUP[3][2], GROUP[0][2]]


class RefusalCounting:
    """A real store that counts the writes it refused (``Conflict``), at the Store seam."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.refused = 0

    def put(self, records: Any, **kw: Any) -> None:
        try:
            self._store.put(records, **kw)
        except Conflict:
            self.refused += 1
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_threads_of_one_memory_adding_as_two_users_take_turns(tmp_path: Path) -> None:
    # Threads of one Memory take turns per session (a lock per stripe of sessions),
    # so they never refuse each other's writes; keyed by the add's whole scope, two
    # users of one session held two locks and refused each other.
    store = RefusalCounting(SQLiteStore(tmp_path / "m.db"))
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as memory:
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: memory.add(f"turn {i}", user_id="ab"[i % 2], session_id="g"),
                    range(60),
                )
            )
        assert store.refused == 0
        assert [r.metadata["seq"] for r in session_turns(memory, "g")] == list(range(60))


def _adder(kind: str, where: str, schema: str | None, user: str, n: int, start: Any) -> None:
    """One process adding ``n`` turns to session g as ``user`` (its own store)."""
    if kind == "sqlite":
        store: Any = SQLiteStore(where)
    else:
        from contextos.store.postgres import PostgresStore

        store = PostgresStore(where, schema=schema)
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as memory:
        start.wait(60)  # both processes add at once, not one after the other
        for i in range(n):
            memory.add(
                {"role": "user", "name": user, "content": f"{user} says {i}"},
                user_id=user,
                session_id="g",
                event_time=DAY,
            )
    store.close()


@BOTH
def test_two_processes_adding_as_two_users_number_and_quote_each_turn_once(
    kind: str, tmp_path: Path
) -> None:
    # Each user's add was checked against that user's newest record alone, so two
    # users' adds never conflicted and both took one number. Now the write is based
    # on the session's newest record, in the write's own transaction.
    n = 30
    with handles(kind, tmp_path, 1) as (memory,):
        if kind == "sqlite":
            where, schema = str(tmp_path / "m.db"), None
        else:
            from pg_support import pg_url

            where, schema = pg_url(), memory.store.schema  # type: ignore[attr-defined]
        ctx = multiprocessing.get_context("spawn")
        start = ctx.Barrier(2)
        procs = [
            ctx.Process(target=_adder, args=(kind, where, schema, user, n, start))
            for user in ("Ann", "Bob")
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(180)
            assert p.exitcode == 0
        turns = session_turns(memory, "g")
        assert [r.metadata["seq"] for r in turns] == list(range(2 * n))
        assert {r.user_id for r in turns} == {"Ann", "Bob"}
        for before, turn in zip(turns, turns[1:], strict=False):
            assert quoted(turn) == f"replying to {before.metadata['speaker']}: {before.text}"


# -- an update rewrites the quote of the turn ---------------------------------------------


SECRET = "zqxsecret4242"
SAID = f"My card number is {SECRET} and I went to Lisbon yesterday."
REDACTED = "My card number is [redacted] and I went to Lisbon yesterday."
REPLY = "I booked you a hotel in Porto yesterday."  # with a fact of its own


def _words_found(memory: Memory, words: str, user: str | None = "ann") -> list[str]:
    """Texts of the records a keyword search for ``words`` finds (text or context)."""
    flt = Filter(scope=Scope(memory.tenant, user, session_id="s1"))
    ranked = memory.store.keyword_search(flt, words, limit=20)
    return [r.text for r in memory.store.get_many(memory.tenant, [h.id for h in ranked])]


@BOTH
@pytest.mark.parametrize("facts", [False, True])
def test_redacting_a_turn_rewrites_its_quote_in_the_reply(
    kind: str, facts: bool, tmp_path: Path
) -> None:
    with handles(kind, tmp_path, 1) as (memory,):
        said, reply = memory.add(
            [
                {"role": "user", "name": "Ann", "content": SAID},
                {"role": "assistant", "name": "Max", "content": REPLY},
            ],
            user_id="ann",
            session_id="s1",
            event_time=DAY,
            facts=facts,
        )
        assert _words_found(memory, SECRET)  # the keyword index holds it (and is loaded)
        memory.update(said.id, REDACTED)
        kept = memory.get_all(user_id="ann", session_id="s1", filters=EVERY)
        replies = [r for r in kept if r.metadata["seq"] == reply.metadata["seq"]]
        assert len(replies) == (2 if facts else 1)  # the reply, and a fact beside it
        for record in replies:
            assert quoted(record) == f"replying to Ann: {REDACTED}"
            assert record.context == f"Max | 04 March 2024 Monday | replying to Ann: {REDACTED}"
        assert all(SECRET not in f"{r.text} {r.context}" for r in kept)
        assert _words_found(memory, SECRET) == []
        assert REPLY in _words_found(memory, "redacted")
        # The old text stays where the docs say: the turn's history.
        assert memory.history(said.id)[-1].old_text == SAID


@BOTH
def test_a_new_speaker_is_quoted_in_the_reply(kind: str, tmp_path: Path) -> None:
    with handles(kind, tmp_path, 1) as (memory,):
        said, reply = memory.add(
            [{"role": "user", "name": "Ann", "content": "I live in Oslo."}, "Noted."],
            user_id="ann",
            session_id="s1",
        )
        memory.update(said.id, metadata={"speaker": "Annabel"})
        assert stored_quote(memory, reply.id) == "replying to Annabel: I live in Oslo."


@BOTH
def test_only_the_reply_to_the_updated_turn_is_rewritten(kind: str, tmp_path: Path) -> None:
    # Chats repeat short turns: the reply to another "ok" keeps its quote.
    with handles(kind, tmp_path, 1) as (memory,):
        first_ok, first_reply, second_ok, second_reply = memory.add(
            ["ok", "Shall I book it?", "ok", "Booked."], user_id="ann", session_id="s1"
        )
        memory.update(first_ok.id, "ok, but only the Tuesday flight")
        assert stored_quote(memory, first_reply.id) == "replying to ok, but only the Tuesday flight"
        assert stored_quote(memory, second_reply.id) == "replying to ok"
        assert stored_quote(memory, second_ok.id) == "replying to Shall I book it?"


@BOTH
def test_a_quote_of_an_earlier_version_is_rewritten_too(kind: str, tmp_path: Path) -> None:
    # A reply stored before updates rewrote quotes quotes the turn as first said; the
    # next update of the turn reaches it through the turn's history.
    with handles(kind, tmp_path, 1) as (memory,):
        said, reply = memory.add([SAID, "Noted."], user_id="ann", session_id="s1")
        memory.store.update(memory.tenant, said.id, Patch(text="My card number is unknown."))
        assert SECRET in stored_quote(memory, reply.id)
        memory.update(said.id, REDACTED)
        assert stored_quote(memory, reply.id) == f"replying to {REDACTED}"


@BOTH
def test_a_reply_stored_before_numbering_is_requoted_too(kind: str, tmp_path: Path) -> None:
    # The stores select the reply by its number, and keep the rows written before
    # sessions were numbered (no ``seq``), which any turn's quote may be in.
    with handles(kind, tmp_path, 1) as (memory,):
        [said] = memory.add(SAID, user_id="ann", session_id="s1")
        unnumbered = MemoryRecord(
            id=str(uuid.uuid4()),
            text="Noted.",
            scope=said.scope,
            metadata={"role": "assistant"},
            context=f"replying to {SAID}",
        )
        memory.store.put([unnumbered])
        memory.update(said.id, REDACTED)
        assert stored_quote(memory, unnumbered.id) == f"replying to {REDACTED}"


@BOTH
@pytest.mark.parametrize("facts", [False, True])
def test_a_new_speaker_leaves_the_old_name_in_no_context(
    kind: str, facts: bool, tmp_path: Path
) -> None:
    # The reply's quote followed a new speaker, but the turn's own context (and the
    # facts beside it, which copy it) kept the old name: a search for it found the turn.
    with handles(kind, tmp_path, 1) as (memory,):
        said, reply = memory.add(
            [
                {"role": "user", "name": "Ann Smith", "content": "I moved to Oslo last week."},
                {"role": "assistant", "content": "Noted."},
            ],
            user_id="ann",
            session_id="s1",
            event_time=DAY,
            facts=facts,
        )
        assert said.context == "Ann Smith | 04 March 2024 Monday"
        assert _words_found(memory, "Smith")
        updated = memory.update(said.id, metadata={**said.metadata, "speaker": "User 17"})
        assert updated.context == "User 17 | 04 March 2024 Monday"
        assert memory.get(said.id) == updated
        assert stored_quote(memory, reply.id) == "replying to User 17: I moved to Oslo last week."
        kept = memory.get_all(user_id="ann", session_id="s1", filters=EVERY)
        assert len(kept) > 2 if facts else len(kept) == 2  # a fact beside the turn
        assert all("Smith" not in f"{r.text} {r.context}" for r in kept)
        assert _words_found(memory, "Smith") == []


def _turn(speaker: str | None, context: str) -> MemoryRecord:
    meta = {"role": "user", **({"speaker": speaker} if speaker is not None else {})}
    return MemoryRecord(
        id="t", text="ok", scope=Scope("t", session_id="s"), metadata=meta, context=context
    )


@pytest.mark.parametrize(
    ("old", "new", "context", "renamed"),
    [
        (
            "Ann",
            "Bea",
            "Ann | 04 March 2024 Monday | replying to ok",
            "Bea | 04 March 2024 Monday | replying to ok",
        ),
        ("Ann", "Bea", "Ann", "Bea"),
        ("Ann", None, "Ann | replying to ok", "replying to ok"),
        ("Ann", None, "Ann", ""),
        (None, "Bea", "replying to ok", "Bea | replying to ok"),
        (None, "Bea", "", "Bea"),
        ("Ann", "Bea", "Annabel | replying to ok", "Annabel | replying to ok"),  # not its name
        ("Ann", "Ann", "Ann | replying to Ann: hi", "Ann | replying to Ann: hi"),
    ],
)
def test_the_name_part_of_a_turns_context_follows_its_speaker(
    old: str | None, new: str | None, context: str, renamed: str
) -> None:
    assert renamed_context(_turn(old, context), _turn(new, context)) == renamed


class UpdatingBeforeTheFirstPut:
    """A real store whose first ``put`` lets ``update()`` commit first: another writer
    redacting the session's newest turn between an add's read of it and its write."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.update_first: Callable[[], object] | None = None

    def put(self, records: Any, **kw: Any) -> None:
        hook, self.update_first = self.update_first, None
        if hook is not None:
            hook()
        self._store.put(records, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@BOTH
def test_an_add_racing_a_redaction_of_the_turn_it_answers_quotes_the_new_text(
    kind: str, tmp_path: Path
) -> None:
    # The redaction rewrote every reply stored, but the add had read the turn before
    # it: its reply was written with the old words. The write is based on the newest
    # record's text too now, and the add reads it again.
    with handles(kind, tmp_path, 2, wrap=UpdatingBeforeTheFirstPut) as (memory, editor):
        [said] = memory.add(SAID, user_id="ann", session_id="s1")
        store = memory.store
        assert isinstance(store, UpdatingBeforeTheFirstPut)
        store.update_first = lambda: editor.update(said.id, REDACTED)
        [reply] = memory.add("Noted.", session_id="s1")
        assert quoted(reply) == f"replying to {REDACTED}"
        assert stored_quote(memory, reply.id) == f"replying to {REDACTED}"


@BOTH
def test_an_add_racing_a_new_speaker_of_the_turn_it_answers_quotes_the_new_name(
    kind: str, tmp_path: Path
) -> None:
    # The add's write was based on the newest turn's id and text hash: a new speaker
    # (same text) passed, and the reply kept the name the update had just removed.
    with handles(kind, tmp_path, 2, wrap=UpdatingBeforeTheFirstPut) as (memory, editor):
        [said] = memory.add(
            {"role": "user", "name": "Ann Smith", "content": SAID}, user_id="ann", session_id="s1"
        )
        store = memory.store
        assert isinstance(store, UpdatingBeforeTheFirstPut)
        renamed = {**said.metadata, "speaker": "User 17"}
        store.update_first = lambda: editor.update(said.id, metadata=renamed)
        [reply] = memory.add("Noted.", session_id="s1")
        assert quoted(reply) == f"replying to User 17: {SAID}"
        assert stored_quote(memory, reply.id) == f"replying to User 17: {SAID}"


def test_a_write_based_on_a_text_updated_since_is_refused(store: Store) -> None:
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    [said] = memory.add(SAID, user_id="ann", session_id="s1")
    session = Filter(scope=Scope(memory.tenant, session_id="s1"), include_invalid=True)
    seen = Newest(session, said.id, said.updated_at)
    memory.update(said.id, REDACTED)
    [late] = memory.add("Noted.", user_id="bob", session_id="s2")  # a record to put
    with pytest.raises(Conflict):
        store.put([replace(late, id=str(uuid.uuid4()))], after=seen)
    store.put([replace(late, id=str(uuid.uuid4()))], after=Newest(session, said.id))
    memory.close()


# -- whether a turn takes facts is the add's choice ----------------------------------------


def _facts(memory: Memory, session: str) -> list[str]:
    records = memory.get_all(user_id="ann", session_id=session, filters=EVERY)
    return sorted(r.text for r in records if FACT_OF in r.metadata)


def test_whether_a_turn_takes_facts_is_decided_by_its_add(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    ann: dict[str, Any] = {"user_id": "ann", "event_time": DAY}
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as plain:
        # Added with facts (none in this text), updated through a default Memory.
        [hola] = plain.add("Hola, ¿qué tal?", session_id="s1", facts=True, **ann)
        assert hola.metadata["turn_facts"] is True
        plain.update(hola.id, "I visited Zanzibar yesterday.")
        assert _facts(plain, "s1") == ["User visited Zanzibar on 3 March 2024."]
        plain.update(hola.id, "Hola otra vez.")
        assert _facts(plain, "s1") == []
        plain.update(hola.id, metadata={"tag": "x"})  # the mark stays, as seq and role do
        plain.update(hola.id, "I visited Plumbrook yesterday.")
        assert _facts(plain, "s1") == ["User visited Plumbrook on 3 March 2024."]
        # A fact carries no mark of its own.
        facts = [r for r in plain.get_all(user_id="ann", session_id="s1") if FACT_OF in r.metadata]
        assert [f for f in facts if "turn_facts" in f.metadata] == []
        [without] = plain.add(
            "I visited Qwertyvale yesterday.", session_id="s2", facts=False, **ann
        )
        assert "turn_facts" not in without.metadata
        with pytest.raises(ValueError, match="turn_facts"):
            plain.add("hi", session_id="s3", metadata={"turn_facts": True}, **ann)
        with pytest.raises(ValueError, match="turn_facts"):
            plain.add({"role": "user", "content": "hi", "turn_facts": True}, session_id="s3", **ann)
        plain.add("hi", metadata={"turn_facts": True}, **ann)  # outside a session: the caller's
    with Memory(
        db, embedder=HashEmbedder(), background_embedding=False, turn_facts=True
    ) as facts_on:
        # Added without facts, updated through a turn_facts Memory: still none.
        facts_on.update(without.id, metadata={"tag": "x"})
        facts_on.update(without.id, "I visited Plumbrook yesterday.")
        assert _facts(facts_on, "s2") == []


def test_outside_a_session_a_callers_turn_facts_key_is_replaced_with_the_metadata(
    tmp_path: Path,
) -> None:
    # ``turn_facts`` is the library's only on a session turn (its ``True``); outside a
    # session it is the caller's, and replacing the metadata dropped it no more.
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory:
        [note] = memory.add("note", user_id="ann", metadata={"turn_facts": "draft", "tag": 1})
        assert memory.update(note.id, metadata={"tag": 2}).metadata == {"role": "user", "tag": 2}
        stored = memory.get(note.id)
        assert stored is not None and stored.metadata == {"role": "user", "tag": 2}
        [turn] = memory.add("a turn", user_id="ann", session_id="s1", facts=True)
        assert memory.update(turn.id, metadata={"tag": 2}).metadata["turn_facts"] is True


# -- an update reads and locks only the reply to its turn -----------------------------------


def test_an_update_of_an_ok_locks_only_the_reply_to_it() -> None:
    # Every record of a chat of "ok"s quotes "ok" (the replies the turns, the turns
    # "Booked"), and the update of one "ok" locked each of them on PostgreSQL, to keep
    # the one reply: every other update, delete or erasure in the session waited. Here
    # another transaction holds every other row of the session; the update goes through.
    from pg_support import connect, pg_url, postgres_store

    with postgres_store(options="-c lock_timeout=2s") as store:
        memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
        chat = [text for i in range(40) for text in ("ok", f"Booked room {i}.")]
        records = memory.add(chat, user_id="ann", session_id="s1")
        turn, reply = records[40], records[41]
        assert (quoted(reply), quoted(turn)) == ("replying to ok", "replying to Booked room 19.")
        with connect(pg_url(), store.schema) as other, other.transaction():
            held = other.execute(
                "SELECT id FROM memories WHERE tenant = %s AND session_id = 's1' "
                "AND NOT id = ANY(%s) FOR NO KEY UPDATE",
                (memory.tenant, [turn.id, reply.id]),
            ).fetchall()
            assert len(held) == len(records) - 2
            memory.update(turn.id, "okay")  # waits on none of them (else: lock_timeout)
        assert stored_quote(memory, reply.id) == "replying to okay"
        assert stored_quote(memory, records[43].id) == "replying to ok"
        memory.close()
