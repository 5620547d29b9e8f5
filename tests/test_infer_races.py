"""``Memory.add(infer=True)`` beside other writers of one session: other adds (plain or
inferring, from threads, handles and processes) and ``forget``.

An inferring add numbers its facts after the session's newest record, as a plain add
numbers its turns; it used to read that record outside the write's compare-and-set, so
concurrent adds repeated numbers (40 adds of one session, 11 numbers taken twice or more)
and a forget in between went unseen. Both stores wherever the code is per store.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from contextos import Filter
from contextos.errors import Conflict
from contextos.memory import Memory
from contextos.memory.extract import Candidate
from contextos.memory.reconcile import Decision, HeuristicReconciler, LLMReconciler
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.testing.llm import ScriptedLLM
from contextos.types import MemoryRecord, Message

BOTH = pytest.mark.parametrize("kind", ["sqlite", "postgres"])
EVERY = Filter(include_invalid=True)  # closed facts keep their number too


@contextmanager
def handles(
    kind: str,
    tmp_path: Path,
    n: int,
    wrap: Callable[[Any], Any] | None = None,
    turn_wait_s: float | None = None,
    **options: Any,
) -> Iterator[list[Memory]]:
    """``n`` independent Memory handles (a store each, vectors written inline) on one
    SQLite file or one PostgreSQL schema, as a server and a CLI, or two replicas; with
    ``wrap``, each store is ``wrap(store)`` (a wrapper at the Store seam); with
    ``turn_wait_s``, adds wait that long for another handle's add of the user's facts
    (``owner_turn_wait_s``)."""
    with ExitStack() as stack:
        waits: dict[str, Any] = {}
        if turn_wait_s is not None:
            waits["owner_turn_wait_s"] = turn_wait_s
        if kind == "sqlite":
            db = tmp_path / "m.db"
            explicit = wrap is not None or waits
            stores: list[Any] = [SQLiteStore(db, **waits) if explicit else None for _ in range(n)]
        else:
            from contextos.store.postgres import PostgresStore
            from pg_support import pg_url, postgres_store

            first = stack.enter_context(postgres_store(**waits))
            stores = [first] + [
                PostgresStore(pg_url(), schema=first.schema, **waits) for _ in range(n - 1)
            ]
        out = []
        for store in stores:
            if store is not None and wrap is not None:
                store = wrap(store)
            where = {"store": store} if store is not None else {"path_or_url": db}
            memory = Memory(**where, embedder=HashEmbedder(), background_embedding=False, **options)
            stack.callback(memory.close)
            out.append(memory)
        yield out


def say(memory: Memory, i: int) -> int:
    """Add turn ``i`` to session s: every third one verbatim, the others inferred (one
    fact each, in words no other turn uses); returns how many records it wrote."""
    if i % 3 == 0:
        return len(memory.add(f"turn number {i}", user_id="u", session_id="s"))
    turn = {"role": "user", "name": "Ana", "content": f"My sister Zoe{i} plays the violin{i}."}
    return len(memory.add(turn, user_id="u", session_id="s", infer=True))


def numbers(memory: Memory) -> list[int]:
    """The session positions of every record of session s, sorted."""
    return sorted(
        r.metadata["seq"] for r in memory.get_all(session_id="s", filters=EVERY, limit=1000)
    )


@BOTH
def test_concurrent_inferring_and_plain_adds_number_each_turn_once(
    kind: str, tmp_path: Path
) -> None:
    with handles(kind, tmp_path, 2) as (memory, other):
        with ThreadPoolExecutor(8) as pool:
            wrote = list(pool.map(lambda i: say((memory, other)[i % 2], i), range(60)))
        assert wrote == [1] * 60
        assert numbers(memory) == list(range(60))


class RefusalCountingStore:
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


def test_threads_of_one_memory_take_turns_instead_of_refusing_each_other(
    tmp_path: Path,
) -> None:
    # Every add to a session is conditional on its newest record; threads of one handle
    # used to race for it, and the slow inferring adds lost their tries to the fast.
    store = RefusalCountingStore(SQLiteStore(tmp_path / "m.db"))
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as memory:
        with ThreadPoolExecutor(8) as pool:
            wrote = list(pool.map(lambda i: say(memory, i), range(60)))
        assert wrote == [1] * 60
        assert store.refused == 0
        assert numbers(memory) == list(range(60))


# On PostgreSQL its 16 stores hold up to 46 of the server's 60 connections: alone.
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.serial)])
def test_many_handles_adding_to_one_session_all_get_through(kind: str, tmp_path: Path) -> None:
    # One thread per handle, as replicas of a server: refused writes are tried again
    # after random, growing waits; retried in step, 15 of 300 adds on PostgreSQL ran out
    # of tries.
    with handles(kind, tmp_path, 16) as all_handles:
        with ThreadPoolExecutor(16) as pool:
            wrote = list(pool.map(lambda i: say(all_handles[i % 16], i), range(240)))
        assert wrote == [1] * 240
        assert numbers(all_handles[0]) == list(range(240))


def _adder(db: str, worker: int, n: int, start: Any) -> None:
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
        start.wait(60)  # both processes add at once, not one after the other
        for i in range(worker, 2 * n, 2):
            say(memory, i)


def test_two_processes_inferring_into_one_session_number_each_turn_once(tmp_path: Path) -> None:
    db = str(tmp_path / "m.db")
    Memory(db, embedder=HashEmbedder()).close()  # the schema first
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_adder, args=(db, w, 60, start)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
        assert numbers(memory) == list(range(120))


@BOTH
def test_an_inferring_add_racing_forget_writes_nothing_it_read_before(
    kind: str, tmp_path: Path
) -> None:
    # The reconciler decides on the similar facts it read, and a model may merge one
    # into the fact it adds. A forget of the user that committed while the model
    # thought left that merged fact, with the erased words, written after the erasure.
    def merge(system: str, messages: Sequence[Message]) -> str:
        eraser.forget("ana")  # commits between the add's reads and its write
        text = "Ana lived in Paris zq7secret and moved to Rome."
        return json.dumps({"action": "ADD", "target": None, "text": text, "reason": "merged"})

    llm = ScriptedLLM([merge])
    with handles(kind, tmp_path, 2, reconciler=LLMReconciler(llm)) as (memory, eraser):
        ana: dict[str, Any] = {"user_id": "ana", "session_id": "s", "infer": True}
        eraser.add({"role": "user", "name": "Ana", "content": "I live in Paris zq7secret."}, **ana)
        memory.add({"role": "user", "name": "Ana", "content": "I moved to Rome."}, **ana)
        kept = memory.get_all(user_id="ana", filters=EVERY)
        assert [r.text for r in kept] == ["Ana moved to Rome."]  # decided again, alone
        assert [r.metadata["seq"] for r in kept] == [0]
        assert len(llm.calls) == 1  # with nothing similar left, no model call


def merging_after(erase: Callable[[], object]) -> ScriptedLLM:
    """A reconciler's model that merges the fact it was shown into the new one, after
    ``erase()`` committed (on its first call only: between the add's reads and its
    write; the add's next try is decided on what is left)."""
    calls: list[int] = []

    def merge(system: str, messages: Sequence[Message]) -> str:
        if not calls:
            erase()
        calls.append(1)
        text = "Ana lived in Paris zq7secret and moved to Rome."
        return json.dumps({"action": "ADD", "target": None, "text": text, "reason": "merged"})

    return ScriptedLLM([merge])


@BOTH
@pytest.mark.parametrize("session", [None, "other"])
def test_an_inferring_add_racing_forget_outside_its_session_writes_nothing_it_read(
    kind: str, tmp_path: Path, session: str | None
) -> None:
    # The check of the session's newest record covers only an add in a session, and
    # only erasures in that session: outside a session (or with the erased fact in
    # another one) a model that merged a fact it was shown wrote its text again after
    # the user's forget.
    llm = merging_after(lambda: eraser.forget("ana"))
    with handles(kind, tmp_path, 2, reconciler=LLMReconciler(llm)) as (memory, eraser):
        said = {"role": "user", "name": "Ana", "content": "I live in Paris zq7secret."}
        eraser.add(said, user_id="ana", session_id="s0", infer=True)
        moved = {"role": "user", "name": "Ana", "content": "I moved to Rome."}
        memory.add(moved, user_id="ana", session_id=session, infer=True)
        kept = memory.get_all(user_id="ana", filters=EVERY)
        assert [r.text for r in kept] == ["Ana moved to Rome."]  # decided again, alone
        assert len(llm.calls) == 1  # with nothing similar left, no model call


@BOTH
def test_an_inferring_add_racing_the_deletion_of_a_fact_it_was_shown(
    kind: str, tmp_path: Path
) -> None:
    # One fact deleted (not the user forgotten) while the model merged it: the add is
    # refused and decided again without it.
    def delete_paris() -> None:
        (paris,) = eraser.search("Paris", user_id="ana")
        eraser.delete(paris.record.id)

    llm = merging_after(delete_paris)
    with handles(kind, tmp_path, 2, reconciler=LLMReconciler(llm)) as (memory, eraser):
        said = {"role": "user", "name": "Ana", "content": "I live in Paris zq7secret."}
        eraser.add(said, user_id="ana", infer=True)
        memory.add(
            {"role": "user", "name": "Ana", "content": "I moved to Rome."},
            user_id="ana",
            infer=True,
        )
        kept = memory.get_all(user_id="ana", filters=EVERY)
        assert [r.text for r in kept] == ["Ana moved to Rome."]


# -- adds deciding about one fact at once --------------------------------------------------
# Two adds that replaced one fact (Paris -> Berlin, Paris -> Rome) both kept their
# replacement, and one fact added twice at once was stored twice: each commit checked only
# the content hash of the facts it was shown, and closing a fact does not change it.
def said(text: str) -> dict[str, str]:
    return {"role": "user", "name": "Ana", "content": text}


class MeetingStore:
    """A real store whose next ``put`` once ``meet`` is set waits until every store
    sharing it has reached its own: the adds all decided on one read before any writes,
    as adds on replicas do while a model thinks (a wrapper at the Store seam)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.meet: threading.Barrier | None = None

    def put(self, records: Any, **kw: Any) -> None:
        meet, self.meet = self.meet, None
        if meet is not None:
            meet.wait(30)
        self._store.put(records, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class Watching:
    """The heuristic decider, keeping the live facts each decision was shown."""

    def __init__(self) -> None:
        self.inner = HeuristicReconciler()
        self.shown: list[list[str]] = []

    def decide(self, candidate: Candidate, similar: Sequence[MemoryRecord]) -> Decision:
        self.shown.append(sorted(r.text for r in similar if r.valid_to is None))
        return self.inner.decide(candidate, similar)


@contextmanager
def at_once(
    kind: str, tmp_path: Path, seed: str | None, texts: Sequence[str], sessions: Sequence[Any]
) -> Iterator[tuple[Memory, list[Watching]]]:
    """``seed`` added first, then each of ``texts`` by its own handle, all at once (each
    decided before any writes); yields a handle and each handle's decider.

    Such adds take turns (``Store.owner_turn``); here no add waits for its turn, as
    when the wait ran out or the lock failed, which leaves the conditional write alone
    to keep the facts right."""
    stores: list[MeetingStore] = []

    def meeting(store: Any) -> MeetingStore:
        stores.append(MeetingStore(store))
        return stores[-1]

    with handles(kind, tmp_path, len(texts), wrap=meeting, turn_wait_s=0) as memories:
        if seed is not None:
            memories[0].add(said(seed), user_id="ana", infer=True)
        meet = threading.Barrier(len(texts))
        for store in stores:
            store.meet = meet
        deciders = [Watching() for _ in memories]
        for memory, decider in zip(memories, deciders, strict=True):
            memory.reconciler = decider

        def add(i: int) -> None:
            memories[i].add(said(texts[i]), user_id="ana", session_id=sessions[i], infer=True)

        with ThreadPoolExecutor(len(texts)) as pool:
            list(pool.map(add, range(len(texts))))
        yield memories[0], deciders


def every_fact(memory: Memory) -> list[MemoryRecord]:
    return memory.get_all(user_id="ana", filters=EVERY, limit=100)


SESSIONS = pytest.mark.parametrize("sessions", [(None, None), ("s1", "s2"), ("s1", None)])


@BOTH
@SESSIONS
def test_two_adds_replacing_one_fact_at_once_leave_one_chain(
    kind: str, tmp_path: Path, sessions: tuple[Any, Any]
) -> None:
    texts = ["I live in Berlin.", "I live in Rome."]
    with at_once(kind, tmp_path, "I live in Paris.", texts, sessions) as (memory, deciders):
        every = every_fact(memory)
    live = [r for r in every if r.valid_to is None]
    assert len(live) == 1  # not Berlin and Rome both
    by_id = {r.id: r for r in every}
    (paris,) = [r for r in every if r.text == "Ana lives in Paris."]
    first = by_id[paris.metadata["superseded_by"]]
    second = by_id[first.metadata["superseded_by"]]
    assert first.metadata["supersedes"] == paris.id
    assert second.metadata["supersedes"] == first.id and second == live[0]
    assert len(every) == 3
    # The refused add was decided again, on what the other one wrote.
    assert sorted(len(d.shown) for d in deciders) == [1, 2]
    assert max(deciders, key=lambda d: len(d.shown)).shown[1] == [first.text]


@BOTH
@SESSIONS
def test_one_fact_added_twice_at_once_is_stored_once(
    kind: str, tmp_path: Path, sessions: tuple[Any, Any]
) -> None:
    texts = ["I live in Berlin.", "I live in Berlin."]
    with at_once(kind, tmp_path, None, texts, sessions) as (memory, deciders):
        assert [r.text for r in every_fact(memory)] == ["Ana lives in Berlin."]
    assert sorted(d.shown for d in deciders) == [[[]], [[], ["Ana lives in Berlin."]]]


@BOTH
def test_one_fact_ended_twice_at_once_is_closed_once(kind: str, tmp_path: Path) -> None:
    # A DELETE writes no record, only a close: its put checked nothing, and the second
    # close overwrote the first.
    texts = ["I don't live in Paris anymore.", "I don't live in Paris anymore."]
    with at_once(kind, tmp_path, "I live in Paris.", texts, (None, None)) as (memory, _):
        (paris,) = [r for r in every_fact(memory) if r.text == "Ana lives in Paris."]
        assert paris.valid_to is not None
        assert [e.event for e in memory.history(paris.id)] == ["ADD", "DELETE"]


class LettingAnotherIn:
    """The heuristic decider, whose first decision starts ``second()`` on another thread
    and gives it a second to reach a decision of its own before deciding."""

    def __init__(self, second: Callable[[], object]) -> None:
        self.second = second
        self.inner = HeuristicReconciler()
        self.shown: list[list[str]] = []
        self.other_decided = threading.Event()
        self.thread: threading.Thread | None = None

    def decide(self, candidate: Candidate, similar: Sequence[MemoryRecord]) -> Decision:
        first = self.thread is None
        if first:
            self.thread = threading.Thread(target=self.second)
            self.thread.start()
            self.other_decided.wait(1)  # in vain while it waits for this add to write
        else:
            self.other_decided.set()
        self.shown.append(sorted(r.text for r in similar if r.valid_to is None))
        return self.inner.decide(candidate, similar)


def test_threads_of_one_memory_adding_one_users_facts_take_turns(tmp_path: Path) -> None:
    # Refused and decided again, they would stay right; taking turns, the second decides
    # once, on what the first wrote (in another session: the session's lock is not it).
    store = RefusalCountingStore(SQLiteStore(tmp_path / "m.db"))
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as memory:

        def second() -> None:
            memory.add(said("I live in Berlin."), user_id="ana", session_id="s2", infer=True)

        decider = memory.reconciler = LettingAnotherIn(second)
        memory.add(said("I live in Berlin."), user_id="ana", session_id="s1", infer=True)
        assert decider.thread is not None
        decider.thread.join(30)
        assert [r.text for r in memory.get_all(user_id="ana", filters=EVERY)] == [
            "Ana lives in Berlin."
        ]
        assert decider.shown == [[], ["Ana lives in Berlin."]]
        assert store.refused == 0


@BOTH
def test_handles_adding_one_users_facts_take_turns(kind: str, tmp_path: Path) -> None:
    # Replicas of a server: the second add decided and wrote while the first one's
    # model thought, and the first was refused and decided again. Sixteen handles adding
    # at once: an add lost every one of its 50 tries in a CI run (the test above).
    with handles(kind, tmp_path, 2, wrap=RefusalCountingStore) as (memory, other):

        def second() -> None:
            other.add(said("I live in Berlin."), user_id="ana", session_id="s2", infer=True)

        decider = memory.reconciler = other.reconciler = LettingAnotherIn(second)
        memory.add(said("I live in Berlin."), user_id="ana", session_id="s1", infer=True)
        assert decider.thread is not None
        decider.thread.join(30)
        assert [r.text for r in every_fact(memory)] == ["Ana lives in Berlin."]
        assert decider.shown == [[], ["Ana lives in Berlin."]]  # each decided once
        assert [cast(Any, m.store).refused for m in (memory, other)] == [0, 0]


# -- a shown fact changed by another writer while the model decides ------------------------
def deciding(before_reply: Callable[[], object], *replies: dict[str, Any]) -> ScriptedLLM:
    """A reconciler's model that runs ``before_reply()`` on its first call (another
    writer commits between the add's reads and its write), then answers ``replies`` in
    turn."""

    def answer(i: int) -> Callable[[str, Sequence[Message]], str]:
        def reply(system: str, messages: Sequence[Message]) -> str:
            if i == 0:
                before_reply()
            return json.dumps(replies[i])

        return reply

    return ScriptedLLM([answer(i) for i in range(len(replies))])


def update(text: str | None) -> dict[str, Any]:
    return {"action": "UPDATE", "target": 0, "text": text, "reason": "moved"}


@BOTH
def test_a_fact_rewritten_while_the_model_merges_it_is_shown_again(
    kind: str, tmp_path: Path
) -> None:
    # The user redacted a fact while the model merged its old text into the update: the
    # write is refused (the docs promise every shown fact still has the text it was shown
    # with), and the model decides again on the redacted text.
    def redact() -> None:
        eraser.update(paris.id, text="Ana lives in Paris.")

    merged = "Ana lived in Paris at 12 zq7secret street and moved to Berlin."
    llm = deciding(redact, update(merged), update("Ana lived in Paris and moved to Berlin."))
    with handles(kind, tmp_path, 2, reconciler=LLMReconciler(llm)) as (memory, eraser):
        # A fact (only facts are reconciled with, never a text added verbatim).
        (paris,) = eraser.add(
            said("I live in Paris at 12 zq7secret street."), user_id="ana", infer=True
        )
        memory.add(said("I moved to Berlin."), user_id="ana", infer=True)
        every = memory.get_all(user_id="ana", filters=EVERY)
        assert not any("zq7secret" in r.text for r in every)
        assert len(llm.calls) == 2
        assert '{"index": 0, "memory": "Ana lives in Paris."}\n' in llm.calls[1].messages[0].content
        live = [r.text for r in every if r.valid_to is None]
        assert live == ["Ana lived in Paris and moved to Berlin."]


@BOTH
def test_a_fact_rewritten_while_the_model_decides_to_replace_it_stays(
    kind: str, tmp_path: Path
) -> None:
    # Closed for its old text, the new one ("Lyon", which the model never saw) ended.
    def rewrite() -> None:
        eraser.update(paris.id, text="Ana lives in Lyon.")

    noop = {"action": "NOOP", "target": 0, "text": None, "reason": "Lyon is newer"}
    llm = deciding(rewrite, update(None), noop)
    with handles(kind, tmp_path, 2, reconciler=LLMReconciler(llm)) as (memory, eraser):
        (paris,) = eraser.add(said("I live in Paris."), user_id="ana", infer=True)
        assert memory.add(said("I live in Berlin."), user_id="ana", infer=True) == []
        lyon = memory.get(paris.id)
        assert lyon.text == "Ana lives in Lyon." and lyon.valid_to is None
        assert "superseded_by" not in lyon.metadata
        assert len(llm.calls) == 2


@BOTH
@pytest.mark.parametrize("erase", ["delete", "forget"])
def test_the_target_erased_while_the_model_decides_is_decided_again_without_it(
    kind: str, tmp_path: Path, erase: str
) -> None:
    # add() raised NotFound for an id its caller never passed, and lost the new fact.
    def erase_paris() -> None:
        if erase == "delete":
            eraser.delete(paris.id)
        else:
            eraser.forget("ana")

    llm = deciding(erase_paris, update(None))
    with handles(kind, tmp_path, 2, reconciler=LLMReconciler(llm)) as (memory, eraser):
        (paris,) = eraser.add(said("I live in Paris."), user_id="ana", infer=True)
        wrote = memory.add(said("I live in Berlin."), user_id="ana", infer=True)
        assert [r.text for r in wrote] == ["Ana lives in Berlin."]
        assert "supersedes" not in wrote[0].metadata
        kept = memory.get_all(user_id="ana", filters=EVERY)
        assert [r.text for r in kept] == ["Ana lives in Berlin."]
        assert len(llm.calls) == 1  # with nothing similar left, no model call


class _ChattyReconciler(HeuristicReconciler):
    """Decides as the heuristic one does, and meanwhile the user says something in
    another session, through another handle (a chat going on while a fact is decided)."""

    def __init__(self, chat: Memory) -> None:
        self.chat, self.calls = chat, 0

    def decide(self, candidate: Candidate, similar: Sequence[MemoryRecord]) -> Decision:
        self.calls += 1
        self.chat.add(f"small talk {self.calls}", user_id="u", session_id="chat")
        return super().decide(candidate, similar)


@BOTH
def test_an_inferring_add_is_written_while_its_user_chats_elsewhere(
    kind: str, tmp_path: Path
) -> None:
    # The plan checks the user's newest record (an add of the same fact meanwhile
    # must be seen); a chat turn is not such a fact. Refusing on it, the add decided
    # again on every try, each time behind a new turn, and failed after 50.
    with handles(kind, tmp_path, 2) as (memory, chat):
        reconciler = _ChattyReconciler(chat)
        memory.reconciler = reconciler
        turn = {"role": "user", "name": "Ana", "content": "My sister Zoe plays the violin."}
        written = memory.add(turn, user_id="u", infer=True)
        assert [r.text for r in written] == ["Ana's sister Zoe plays the violin."]
        assert reconciler.calls == 1  # decided once, written after the chat's turn


class _Meeting(HeuristicReconciler):
    """Waits in ``decide`` until ``parties`` adds are deciding at once."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)

    def decide(self, candidate: Candidate, similar: Sequence[MemoryRecord]) -> Decision:
        self.barrier.wait()  # BrokenBarrierError: the other user's add was kept waiting
        return super().decide(candidate, similar)


def test_two_users_inferring_at_once_through_one_memory_do_not_wait_for_each_other(
    tmp_path: Path,
) -> None:
    # A Memory's inferring adds take turns per user (or agent); users whose locks
    # shared one of 64 stripes added one after the other, the reconciler's model calls
    # included. The two users here are chosen to share a stripe.
    from contextos.memory.reconcile import owner_scope
    from contextos.types import Scope

    def stripe(user: str) -> int:
        return hash(owner_scope(Scope(tenant="default", user_id=user))) % 64

    other = next(f"user{i}" for i in range(10_000) if stripe(f"user{i}") == stripe("alice"))
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        m.reconciler = _Meeting(2)
        turns = {
            u: {"role": "user", "name": u, "content": "I play the violin."}
            for u in ("alice", other)
        }
        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda u: m.add(turns[u], user_id=u, infer=True), turns))
        assert [len(records) for records in done] == [1, 1]
