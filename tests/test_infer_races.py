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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from contextos import Filter
from contextos.errors import Conflict
from contextos.memory import Memory
from contextos.memory.reconcile import LLMReconciler
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.testing.llm import ScriptedLLM
from contextos.types import Message

BOTH = pytest.mark.parametrize("kind", ["sqlite", "postgres"])
EVERY = Filter(include_invalid=True)  # closed facts keep their number too


@contextmanager
def handles(kind: str, tmp_path: Path, n: int, **options: Any) -> Iterator[list[Memory]]:
    """``n`` independent Memory handles (a store each, vectors written inline) on one
    SQLite file or one PostgreSQL schema, as a server and a CLI, or two replicas."""
    with ExitStack() as stack:
        if kind == "sqlite":
            db = tmp_path / "m.db"
            stores: list[Any] = [None] * n
        else:
            from contextos.store.postgres import PostgresStore
            from pg_support import pg_url, postgres_store

            first = stack.enter_context(postgres_store())
            stores = [first] + [PostgresStore(pg_url(), schema=first.schema) for _ in range(n - 1)]
        out = []
        for store in stores:
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


@BOTH
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
