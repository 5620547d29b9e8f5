"""Compaction racing itself, pins and erasures, on both stores.

Shaped like the bugs a reviewer found: two Sessions (threads, each with its own
store handle, as a wrapped client and ``contextos compact`` in two processes)
compact one session with ``offload`` at once; a pin is made from another Session
while a compaction summarizes (a slow model call); ``forget`` lands while a
compaction summarizes. The summarizer is the seam where the test acts.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from contextos import Filter, Scope
from contextos.engine.session import CompactionResult, Session
from contextos.memory import Memory
from contextos.store.base import Store
from contextos.store.records import ERASED_AT_KEY
from contextos.testing.embedders import HashEmbedder
from contextos.types import Hit, MemoryRecord, Message
from test_erasure_live import (
    BOTH,
    ActingSummarizer,
    _file_bytes,
    _rows_mentioning,
    compact_while_forgetting,
    live_memory,
)

LOREM = "lorem ipsum dolor sit amet " * 20


def _chat(session: Session, n: int, text: str = LOREM) -> None:
    session.add(
        *[Message("user" if i % 2 == 0 else "assistant", f"turn {i} {text}") for i in range(n)]
    )


# -- the compare-and-set itself ----------------------------------------------------------


def test_swap_writes_only_at_the_revision_it_read(store: Store) -> None:
    scope = Scope(tenant="t1", user_id="u1", session_id="s1")
    assert store.session_meta_revision(scope) == ({}, None)
    assert store.swap_session_meta(scope, {"k": 1}, revision=None)  # absent: inserted
    assert not store.swap_session_meta(scope, {"k": 2}, revision=None)  # now present
    meta, rev = store.session_meta_revision(scope)
    assert meta == {"k": 1} and rev is not None
    assert store.swap_session_meta(scope, {"k": 3}, revision=rev)
    assert not store.swap_session_meta(scope, {"k": 4}, revision=rev)  # stale
    assert store.session_meta(scope) == {"k": 3}
    store.set_session_meta(scope, {"k": 5})  # unconditional, but a new revision too
    assert store.session_meta_revision(scope)[1] not in (None, rev)
    with pytest.raises(ValueError, match="reserved"):
        store.set_session_meta(scope, {"_revision": "mine"})


def test_a_new_log_and_forget_each_draw_a_new_revision(store: Store) -> None:
    """Never a revision seen before: a writer that read the state before an erasure
    (or before the row was deleted and made again) can never match it afterwards."""
    ana = Scope(tenant="t1", user_id="ana", session_id="room")
    bob = Scope(tenant="t1", user_id="bob", session_id="room")
    store.append_turns(ana, [Message("user", "ana was here")], [3])
    store.append_turns(bob, [Message("user", "bob was here")], [3])
    hall = Scope(tenant="t1", user_id="bob", session_id="hall")  # bob's row, ana's turn
    store.append_turns(hall, [Message("user", "bob opened the hall")], [3])
    store.append_turns(replace(hall, user_id="ana"), [Message("user", "ana too")], [3])
    store.set_session_meta(hall, {"history": {"summary": "ana too"}})
    meta, first = store.session_meta_revision(bob)
    assert meta == {} and first is not None
    hall_rev = store.session_meta_revision(hall)[1]
    store.forget(Scope(tenant="t1", user_id="ana"))
    # The row named ana and went with her; bob's turn lives on, so it is made again.
    # What is left of the meta is when the erasure reset it (engine/owed.py reads it).
    meta, second = store.session_meta_revision(bob)
    assert set(meta) == {ERASED_AT_KEY} and second not in (None, first)
    # bob's row is reset in place, at a new revision too.
    meta, hall_now = store.session_meta_revision(hall)
    assert set(meta) == {ERASED_AT_KEY} and hall_now not in (None, hall_rev)
    assert sorted(store.sessions(Scope(tenant="t1"))) == ["hall", "room"]
    assert store.sessions(Scope(tenant="t1", user_id="ana")) == []


# -- two compactions at once --------------------------------------------------------------


def _offload_at_once(memories: Sequence[Memory], session_id: str) -> list[CompactionResult]:
    """Each Memory's own Session compacts ``session_id`` with offload, all at once."""
    barrier = threading.Barrier(len(memories))
    results: list[CompactionResult] = []

    def run(mem: Memory) -> None:
        s = Session(mem.store, session_id, tenant=mem.tenant, user_id="ana")
        barrier.wait()
        results.append(s.compact(2000, "offload", memory=mem))

    threads = [threading.Thread(target=run, args=(m,)) for m in memories]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@BOTH
def test_two_sessions_offloading_one_log_at_once_archive_each_turn_once(
    kind: str, tmp_path: Path
) -> None:
    with live_memory(kind, tmp_path) as (memory, second), second() as other:
        for round_ in range(3):  # a few races: each must leave every turn archived once
            sid = f"chat-{round_}"
            _chat(Session(memory.store, sid, tenant=memory.tenant, user_id="ana"), 60)
            results = _offload_at_once([memory, other], sid)
            state = Session(memory.store, sid, tenant=memory.tenant, user_id="ana").state()
            records = memory.store.list(
                Filter(scope=Scope(tenant=memory.tenant, session_id=sid)), limit=1000
            )
            seqs = [int(r.metadata["turn_seq"]) for r in records]
            assert sorted(seqs) == sorted(set(seqs)), "a turn was archived twice"
            assert set(seqs) == set(range(state.archived_to + 1))
            assert sum(r.archived for r in results) == len(seqs) > 0
            assert sum(r.plan is not None for r in results) == state.compactions == 1
            assert not any(r.raced and r.plan for r in results)


@BOTH
def test_a_pin_made_while_a_compaction_summarizes_is_kept(kind: str, tmp_path: Path) -> None:
    with live_memory(kind, tmp_path) as (memory, second), second() as other:
        app = Session(memory.store, "chat", tenant=memory.tenant, user_id="ana")
        _chat(app, 60)
        elsewhere = Session(other.store, "chat", tenant=memory.tenant, user_id="ana")
        pins: list[tuple[int, ...]] = []
        slow = ActingSummarizer(lambda: pins.append(elsewhere.pin(3).pinned))
        done = app.compact(2000, "summarize", summarizer=slow)
        assert pins == [(3,)]
        # The compaction planned on the state before the pin: it is dropped, not saved.
        assert done.plan is None and done.raced and done.state.pinned == (3,)
        again = app.compact(2000, "summarize")
        assert again.plan is not None and 3 not in again.plan.rotate
        assert again.state.pinned == (3,) == app.state().pinned
        assert again.state.summary is not None


@BOTH
def test_a_key_another_writer_sets_while_a_compaction_summarizes_costs_it_nothing(
    kind: str, tmp_path: Path
) -> None:
    """Each wrapped call's commit writes its key of the meta (``commits``) when it ends;
    a compaction in another process lost its compare-and-set to that write and threw its
    summary (a model call) away (a review: 10 of 11). Another key changed is no race."""
    with live_memory(kind, tmp_path) as (memory, second), second() as other:
        app = Session(memory.store, "chat", tenant=memory.tenant, user_id="ana")
        _chat(app, 60)
        app.pin(0)  # a state saved once: the log has its epoch
        elsewhere = Session(other.store, "chat", tenant=memory.tenant, user_id="ana")
        slow = ActingSummarizer(lambda: elsewhere.change_meta("commits", lambda _m: {"k": 1}))
        done = app.compact(2000, "summarize", summarizer=slow)
        assert done.plan is not None and not done.raced
        assert app.state().summary is not None
        assert memory.store.session_meta(app.scope)["commits"] == {"k": 1}


@BOTH
def test_pins_made_at_once_from_two_sessions_are_all_kept(kind: str, tmp_path: Path) -> None:
    with live_memory(kind, tmp_path) as (memory, second), second() as other:
        _chat(Session(memory.store, "chat", tenant=memory.tenant, user_id="ana"), 40)
        barrier = threading.Barrier(2)

        def run(mem: Memory, seqs: range) -> None:
            s = Session(mem.store, "chat", tenant=mem.tenant, user_id="ana")
            barrier.wait()
            for seq in seqs:
                s.pin(seq)

        halves = ((memory, range(0, 40, 2)), (other, range(1, 40, 2)))
        threads = [threading.Thread(target=run, args=half) for half in halves]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        pinned = Session(memory.store, "chat", tenant=memory.tenant, user_id="ana").state().pinned
        assert pinned == tuple(range(40))


# -- an erasure while a compaction summarizes ----------------------------------------------


def _no_trace(kind: str, memory: Memory, tmp_path: Path, secret: str) -> None:
    """``secret`` is nowhere in the storage (the SQLite file's bytes, every PG table)."""
    if kind == "sqlite":
        memory.close()
        assert secret.encode() not in _file_bytes(tmp_path / "m.db")
    else:
        assert _rows_mentioning(memory, secret) == []


@BOTH
def test_forget_during_a_shared_summary_leaves_none(kind: str, tmp_path: Path) -> None:
    """The session lives on (bob's turns remain): forget resets its row in place."""
    secret = "qzvioletlane"
    with live_memory(kind, tmp_path) as (memory, second):
        bob = Session(memory.store, "room", tenant=memory.tenant, user_id="bob")
        _chat(bob, 4, "bob says the weather is fine today " * 5)
        ana = Session(memory.store, "room", tenant=memory.tenant, user_id="ana")
        _chat(ana, 50, f"I live at {secret}, write it down " * 5)

        done = compact_while_forgetting(bob, second, "ana", 300)
        assert done.plan is None and done.raced
        assert secret not in json.dumps(memory.store.session_meta(bob.scope))
        assert bob.compact(30, "summarize", force=True).plan is not None  # on what remains
        assert secret not in json.dumps(memory.store.session_meta(bob.scope))
        _no_trace(kind, memory, tmp_path, secret)


@BOTH
def test_a_second_forget_during_a_summary_leaves_none(kind: str, tmp_path: Path) -> None:
    """ana opened the room (its row names her); forgetting her leaves bob's turns. A
    compaction then reads the room's state and forget(bob) lands while it summarizes:
    bob's text must not be written back (no revision to compare with would let it)."""
    secret = "qzamberroad"
    with live_memory(kind, tmp_path) as (memory, second):
        ana = Session(memory.store, "room", tenant=memory.tenant, user_id="ana")
        _chat(ana, 4)
        bob = Session(memory.store, "room", tenant=memory.tenant, user_id="bob")
        _chat(bob, 50, f"my locker code is {secret}, keep it " * 5)
        memory.forget("ana")

        done = compact_while_forgetting(bob, second, "bob", 300)
        assert done.plan is None and done.raced
        assert secret not in json.dumps(memory.store.session_meta(bob.scope))
        _no_trace(kind, memory, tmp_path, secret)


class _ForgetBeforeAdd:
    """A memory (the ``MemoryLike`` seam) whose ``add`` comes after ``forget`` ran: the
    erasure lands between the compaction's save and its archive."""

    def __init__(self, memory: Memory, forget: Callable[[], object]) -> None:
        self.memory = memory
        self.forget = forget

    def search(self, query: str, **kwargs: Any) -> list[Hit]:
        return self.memory.search(query, **kwargs)

    def add(self, messages: Any, **scope: Any) -> Sequence[MemoryRecord]:
        self.forget()
        return self.memory.add(messages, **scope)

    def delete_many(self, memory_ids: Sequence[str], *, purge: bool = False) -> list[str]:
        return self.memory.delete_many(memory_ids, purge=purge)

    def get_all(self, **kwargs: Any) -> Sequence[MemoryRecord]:
        return self.memory.get_all(**kwargs)


@BOTH
def test_copies_archived_of_erased_turns_are_purged(kind: str, tmp_path: Path) -> None:
    _offload_racing_forget(kind, tmp_path, "qzcopperhill", _ForgetBeforeAdd)


def _offload_racing_forget(
    kind: str, tmp_path: Path, secret: str, racing: type[_ForgetBeforeAdd]
) -> None:
    """An offload of ana's turns whose archive ``racing`` interleaves with another
    process's ``forget("ana")``: nothing archived, nothing of hers left anywhere."""
    with live_memory(kind, tmp_path) as (memory, second):
        app = Session(memory.store, "chat", tenant=memory.tenant, user_id="ana")
        _chat(app, 60, f"my pin code is {secret}, remember it " * 5)

        def forget() -> None:
            with second() as other:
                other.forget("ana")

        done = app.compact(2000, "offload", memory=racing(memory, forget))
        assert done.plan is not None and done.plan.rotate  # saved before the erasure
        assert done.archived == 0  # never stored, or stored, then erased: dropped
        assert memory.get_all(user_id="ana") == []
        assert done.state == app.state()
        _no_trace(kind, memory, tmp_path, secret)


class _CountingDeletes(_ForgetBeforeAdd):
    """:class:`_ForgetBeforeAdd` that records each ``delete_many`` call's ids."""

    calls: list[list[str]] = []

    def delete_many(self, memory_ids: Sequence[str], *, purge: bool = False) -> list[str]:
        assert purge
        type(self).calls.append(list(memory_ids))
        return super().delete_many(memory_ids, purge=purge)


@BOTH
def test_the_copies_of_erased_turns_are_purged_in_one_call(kind: str, tmp_path: Path) -> None:
    # One purge at a time cost ~40 ms each: an offload of 8,000 turns racing a forget
    # over HTTP held the tenant's windows, and left the forgotten text searchable,
    # for 436 s (a review).
    _CountingDeletes.calls = []
    _offload_racing_forget(kind, tmp_path, "qzamberfield", _CountingDeletes)
    assert len(_CountingDeletes.calls) == 1 and len(_CountingDeletes.calls[0]) > 1


class _ForgetAfterAdd(_ForgetBeforeAdd):
    """A memory whose ``add`` is followed by ``forget``: the erasure lands after the
    archive wrote its copies and before the check that purges those of erased turns."""

    def add(self, messages: Any, **scope: Any) -> Sequence[MemoryRecord]:
        records = self.memory.add(messages, **scope)
        self.forget()
        return records


@BOTH
def test_forget_between_the_archive_and_its_check_fails_no_compaction(
    kind: str, tmp_path: Path
) -> None:
    # The check found the copies of the erased turns and purged them, but forget had
    # taken them already: NotFound failed the compaction (and a wrapped call with it).
    _offload_racing_forget(kind, tmp_path, "qzslatebridge", _ForgetAfterAdd)


@BOTH
def test_an_erasure_during_an_offload_purges_only_the_erased_turns_copies(
    kind: str, tmp_path: Path
) -> None:
    # The copies of erased turns were told by their source_id, a caller's dia_id when
    # given: in a room where ana's and bob's turns share one, forget(ana) landing before
    # the archive purged bob's copies with hers. A turn is its seq.
    with live_memory(kind, tmp_path) as (memory, second):
        bob = Session(memory.store, "room", tenant=memory.tenant, user_id="bob")
        ana = Session(memory.store, "room", tenant=memory.tenant, user_id="ana")
        for i in range(20):
            bob.add(Message("user", f"bob {i} {LOREM}", metadata={"dia_id": "same"}))
            ana.add(Message("user", f"ana {i} {LOREM}", metadata={"dia_id": "same"}))

        def forget() -> None:
            with second() as other:
                other.forget("ana")

        done = bob.compact(300, "offload", memory=_ForgetBeforeAdd(memory, forget), force=True)
        assert done.plan is not None
        bobs = [t.seq for t in bob.store.turns(bob.scope) if t.seq in done.plan.rotate]
        left = memory.get_all(session_id="room", limit=1000)
        assert bobs and sorted(int(r.metadata["turn_seq"]) for r in left) == bobs
        assert {r.user_id for r in left} == {"bob"}


@BOTH
def test_offload_files_each_turn_of_a_shared_session_under_its_author(
    kind: str, tmp_path: Path
) -> None:
    """bob's Session compacts a room ana talks in: her archived turns are hers, and
    forgetting her leaves none of them (they were filed under bob before)."""
    secret = "qzcedarcourt"
    with live_memory(kind, tmp_path) as (memory, _):
        bob = Session(memory.store, "room", tenant=memory.tenant, user_id="bob")
        bob.add(Message("user", "bob opens the room " + LOREM))
        ana = Session(memory.store, "room", tenant=memory.tenant, user_id="ana")
        _chat(ana, 30, f"I live at {secret} " + LOREM)
        bob.add(Message("user", "bob closes the room " + LOREM))
        done = bob.compact(300, "offload", memory=memory, force=True)
        assert done.plan is not None and done.archived == len(done.plan.rotate)
        owners = {r.user_id for r in memory.get_all(session_id="room", limit=1000)}
        assert owners == {"bob", "ana"}
        assert all(secret not in r.text for r in memory.get_all(user_id="bob", limit=1000))
        memory.forget("ana")
        left = memory.get_all(session_id="room")
        assert [r.text[:18] for r in left] == ["bob opens the room"]
        _no_trace(kind, memory, tmp_path, secret)


def _offload_in_a_process(
    where: tuple[str, str, str], session_id: str, barrier: Any, out: Any
) -> None:
    """One process's compaction (as ``contextos compact --strategy offload`` beside a
    wrapped client): its own store handle, started with the other's."""
    from contextos.store.postgres import PostgresStore
    from contextos.store.sqlite import SQLiteStore

    kind, location, schema = where
    store = SQLiteStore(location) if kind == "sqlite" else PostgresStore(location, schema=schema)
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as mem:
        s = Session(store, session_id, tenant=mem.tenant, user_id="ana")
        barrier.wait()
        out.put(s.compact(2000, "offload", memory=mem).archived)


@BOTH
def test_two_processes_offloading_one_log_at_once_archive_each_turn_once(
    kind: str, tmp_path: Path
) -> None:
    ctx = multiprocessing.get_context("spawn")
    with live_memory(kind, tmp_path) as (memory, _):
        _chat(Session(memory.store, "chat", tenant=memory.tenant, user_id="ana"), 60)
        if kind == "sqlite":
            where = ("sqlite", str(tmp_path / "m.db"), "")
        else:
            from pg_support import pg_url

            where = ("postgres", pg_url(), memory.store.schema)  # type: ignore[attr-defined]
        barrier, out = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(target=_offload_in_a_process, args=(where, "chat", barrier, out))
            for _ in range(2)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0, 0]
        archived = [out.get(timeout=5) for _ in procs]
        records = memory.get_all(session_id="chat", limit=1000)
        seqs = [int(r.metadata["turn_seq"]) for r in records]
        assert sorted(seqs) == sorted(set(seqs)), "a turn was archived twice"
        assert sum(archived) == len(seqs) > 0
