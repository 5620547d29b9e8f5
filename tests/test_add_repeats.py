"""An exact repeat returns the stored memory, also when it arrives at the same instant.

A double submit (two request threads of one app adding one text for one user at once)
stored the text twice on SQLite and nearly always on PostgreSQL, and search then
returned both copies (a review, session 34). Adds of one text in one scope now take
turns within a process, and across processes the write is refused when another
stored the text meanwhile (``Store.put``'s ``repeats``); tried again, the add hands
back that record. Both stores, real Memory handles, real threads and processes.
"""

from __future__ import annotations

import multiprocessing
import threading
import unicodedata
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contextos.memory import Memory
from contextos.store.base import Repeats, Store
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import MemoryRecord, Scope, content_hash


def test_one_text_added_by_many_threads_at_once_is_stored_once(store: Store) -> None:
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)

    def add(user_id: str, gate: threading.Barrier, ids: list[str]) -> None:
        gate.wait()
        ids.extend(r.id for r in memory.add("I am allergic to peanuts", user_id=user_id))

    for user in range(6):
        gate = threading.Barrier(12)
        ids: list[str] = []
        threads = [threading.Thread(target=add, args=(f"u{user}", gate, ids)) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        stored = memory.get_all(user_id=f"u{user}")
        assert [r.text for r in stored] == ["I am allergic to peanuts"], user
        assert set(ids) == {stored[0].id}  # every add handed back the stored one
    # Other texts and other users are not held up by it: each stored once, in parallel.
    both = memory.add(["tea", "coffee"], user_id="u0")
    assert {r.text for r in memory.get_all(user_id="u0")} == {r.text for r in both} | {
        "I am allergic to peanuts"
    }


@contextmanager
def handles(kind: str, tmp_path: Path, n: int) -> Iterator[list[Memory]]:
    """``n`` Memory handles on one store, each with its own store (connections,
    in-process locks): as many processes would have."""
    with ExitStack() as stack:
        if kind == "sqlite":
            stores: list[Store] = [SQLiteStore(tmp_path / "m.db") for _ in range(n)]
        else:
            from contextos.store.postgres import PostgresStore
            from pg_support import pg_url, postgres_store

            first = stack.enter_context(postgres_store())
            stores = [first] + [PostgresStore(pg_url(), schema=first.schema) for _ in range(n - 1)]
        out = []
        for store in stores:
            memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
            out.append(stack.enter_context(memory))
        yield out


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_one_text_added_through_many_handles_at_once_is_stored_once(
    kind: str, tmp_path: Path
) -> None:
    # Two processes (server workers, a CLI beside a server) adding one text at once
    # both found nothing and both stored it: the in-process turns do not span them.
    # With put()'s repeats check taken out, this fails on both stores.
    with handles(kind, tmp_path, 8) as memories:
        for user in range(4):
            gate = threading.Barrier(8)

            def add(memory: Memory, user_id: str = f"u{user}", gate: Any = gate) -> list[str]:
                gate.wait(30)
                return [r.id for r in memory.add("I am allergic to peanuts", user_id=user_id)]

            with ThreadPoolExecutor(8) as pool:
                ids = {i for handed in pool.map(add, memories) for i in handed}
            stored = memories[0].get_all(user_id=f"u{user}")
            assert [r.text for r in stored] == ["I am allergic to peanuts"], user
            assert ids == {stored[0].id}  # every add handed back the stored one


def _add_texts(db: str, texts: list[str], gate: Any, out: Any) -> None:
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
        gate.wait(60)
        out.put([r.id for text in texts for r in memory.add(text, user_id="ana")])


def test_processes_adding_the_same_texts_at_once_store_each_once(tmp_path: Path) -> None:
    db = str(tmp_path / "m.db")
    Memory(db, embedder=HashEmbedder()).close()  # the schema first
    texts = [f"I keep a plant called Fern number {i}" for i in range(40)]
    ctx = multiprocessing.get_context("spawn")
    gate, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_add_texts, args=(db, texts, gate, out)) for _ in range(4)]
    for p in procs:
        p.start()
    handed = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
        stored = memory.get_all(user_id="ana", limit=1000)
    assert sorted(r.text for r in stored) == sorted(texts)
    assert all(
        ids == [r.id for r in sorted(stored, key=lambda r: texts.index(r.text))] for ids in handed
    )


def test_a_text_in_decomposed_form_repeats_its_composed_form(store: Store) -> None:
    # "café" with a combining accent (as macOS file names and some pastes give it) was
    # a second memory beside the composed "café": one text to a reader, stored twice.
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    (first,) = memory.add("Ana's favourite café is Zoë's", user_id="ana")
    decomposed = unicodedata.normalize("NFD", first.text)
    assert decomposed != first.text
    (again,) = memory.add(decomposed, user_id="ana")
    assert again.id == first.id
    assert [r.text for r in memory.get_all(user_id="ana")] == [first.text]


def test_a_write_of_30000_new_texts_checks_its_repeats_under_one_lock(tmp_path: Path) -> None:
    # The repeats check first took a transaction lock a text: an add of 30,000 texts
    # failed with "out of shared memory" (past the server's lock table), and while one
    # held them other sessions' locks failed too. One lock a scope now.
    from pg_support import postgres_store

    scope = Scope(tenant="t", user_id="u")
    now = datetime.now(UTC)
    records = [
        MemoryRecord(
            id=str(uuid.uuid4()),
            text=f"fact {i}",
            scope=scope,
            created_at=now,
            updated_at=now,
            valid_from=now,
            hash=content_hash(f"fact {i}"),
        )
        for i in range(30_000)
    ]
    with postgres_store() as store:
        store.put(records, repeats=[Repeats(scope, r.hash, frozenset()) for r in records])
        assert len(store.find_by_hash(scope, records[-1].hash)) == 1
