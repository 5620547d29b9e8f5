"""Leases are stamped and judged by one clock, the store's (``Store.clock``), and a lease
ending further ahead of it than its holder could have set counts as ended.

Why (a review of clocks): the offload archive hold and the agent owner lock were stamped
with the holder's clock and judged with the reader's. A host 150 s ahead took over a live
archive hold (34 turns stored twice in long-term memory), and one 30 s ahead took an owner
lock another held (two holders at once). On SQLite, a host whose clock stepped back an
hour kept a dead worker's embedding claim for that hour, and ``flush(timeout=60)``
returned False.

The other clock is honest here: a lease that a process with another clock wrote is
written into the real SQLite file (sqlite3) or through the store's own compare-and-set,
as any writer would; a host whose clock is ahead of PostgreSQL's is a child process whose
``time.time`` runs ahead (as the review's skew did), and everything goes through the
public API.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from contextos.agent.lock import OwnerBusy, lock_scope, owner_lock
from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.store.base import Store
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import MemoryRecord, Message, Scope, content_hash
from memory_support import FailsOnce

ANA = Scope("default", user_id="ana")

#: A hold or lease stamped before this host's clock stepped back an hour (the review's
#: step), by a holder on another host: no process here can vouch that it died.
AN_HOUR = 3600.0
ELSEWHERE = "a-holder-on-another-host"

#: Runs ``sys.argv[1]`` (code) in a process whose ``time.time`` runs ``sys.argv[2]``
#: seconds ahead of this machine's (an app host whose clock is ahead of PostgreSQL's);
#: ``URL`` and ``SCHEMA`` are the store's.
AHEAD = """
import sys, time
_real = time.time
time.time = lambda: _real() + float(sys.argv[2])
URL, SCHEMA = sys.argv[3], sys.argv[4]
exec(sys.argv[1])
"""


def _ahead(code: str, seconds: float, url: str, schema: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", AHEAD, code, str(seconds), url, schema],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# -- embedding claims (SQLite) --------------------------------------------------------


def _pending_record(db: Path) -> None:
    store = SQLiteStore(db)
    try:
        text = "black coffee at dawn"
        store.put(
            [MemoryRecord(id="m1", text=text, scope=Scope("t", "ana"), hash=content_hash(text))]
        )
    finally:
        store.close()


def _claimed_until(db: Path, until: float) -> None:
    """A worker that died held the record's claim until ``until`` (this host's clock)."""
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE pending_vectors SET claimed_by = 'a-worker-that-died', claimed_until = ?",
            (until,),
        )


def test_a_claim_stamped_before_the_clock_stepped_back_does_not_hold_up_flush(
    tmp_path: Path,
) -> None:
    db = tmp_path / "m.db"
    _pending_record(db)
    _claimed_until(db, time.time() + AN_HOUR + 30)  # claimed, then the clock went back 1 h
    with Memory(db, tenant="t", embedder=HashEmbedder(), background_embedding=False) as m:
        started = time.monotonic()
        assert m.flush(timeout=10) is True
        assert time.monotonic() - started < 5
        assert m.embedding_status().pending == 0


def test_a_claim_within_its_lease_still_holds(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    _pending_record(db)
    _claimed_until(db, time.time() + 30)  # a live worker's claim, one lease ahead
    with Memory(db, tenant="t", embedder=HashEmbedder(), background_embedding=False) as m:
        assert m.flush(timeout=0.3) is False
        assert m.embedding_status().pending == 1


# -- the offload archive hold ---------------------------------------------------------


def _owed(memory: Memory) -> tuple[Session, tuple[int, ...]]:
    """Session "chat" of 40 turns, compacted: the turns rotated out are owed to memory."""
    app = Session(memory.store, "chat", tenant=memory.tenant, user_id="ana")
    app.add(
        *[Message("user", f"turn {i}: the codeword is cw{i}x, about Lisbon") for i in range(40)]
    )
    with pytest.raises(RuntimeError):
        app.compact(300, "offload", memory=FailsOnce(memory))
    owed = app.state().unarchived
    assert owed and app.state().archiver == ""
    return app, owed


def _hold(app: Session, until: float) -> None:
    """Hold the owed turns as an offload on another host does, until ``until``, through
    the store's compare-and-set."""
    store = app.store
    meta, revision = store.session_meta_revision(app.scope)
    history = {**meta["history"], "archiver": ELSEWHERE, "archiver_until": until}
    assert store.swap_session_meta(app.scope, {**meta, "history": history}, revision=revision)


def _archived(memory: Memory) -> Counter[int]:
    records = memory.get_all(session_id="chat", limit=1000)
    return Counter(int(r.metadata["turn_seq"]) for r in records)


def test_an_archive_hold_stamped_before_the_clock_stepped_back_is_over(tmp_path: Path) -> None:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        app, owed = _owed(m)
        _hold(app, app.store.clock() + 100)  # a live hold, within its lease: kept
        assert app.compact(300, "offload", memory=m).archived == 0
        assert not _archived(m)
        _hold(app, app.store.clock() + AN_HOUR + 100)  # held, then the clock went back 1 h
        assert app.compact(300, "offload", memory=m).archived == len(owed)
        archived = _archived(m)
        assert sorted(archived) == list(owed) and set(archived.values()) == {1}
        assert app.state().unarchived == () and app.state().archiver == ""


#: Host B, its clock ahead: compacts session "chat" with offload; prints what it stored.
COMPACT = """
from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.store.postgres import PostgresStore
from contextos.testing.embedders import HashEmbedder

store = PostgresStore(URL, schema=SCHEMA)
memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
session = Session(store, "chat", tenant=memory.tenant, user_id="ana")
print(session.compact(300, "offload", memory=memory).archived)
memory.close()
"""


@pytest.mark.postgres
def test_a_host_ahead_of_postgres_does_not_take_over_a_live_archive_hold() -> None:
    from pg_support import pg_url, postgres_store

    with postgres_store() as store:
        m = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
        try:
            app, owed = _owed(m)
            _hold(app, store.clock() + 100)  # a live holder: 100 s of its lease left
            assert _ahead(COMPACT, 150, pg_url(), store.schema) == "0"
            assert not _archived(m)  # not stored by host B while the holder stores them
            _hold(app, store.clock() - 1)  # the holder died elsewhere: its lease ran out
            assert _ahead(COMPACT, 150, pg_url(), store.schema) == str(len(owed))
            assert set(_archived(m).values()) == {1}
        finally:
            m.close()


# -- the agent owner lock -------------------------------------------------------------


def _lease(store: Store, until: float, **more: object) -> None:
    """The files lock of ana, held until ``until`` by an editor on another host."""
    where = lock_scope(ANA, "files")
    _, revision = store.session_meta_revision(where)
    lease = {"holder": "editor-elsewhere", "until": until, "host": "another-host", "pid": 7}
    assert store.swap_session_meta(where, {**lease, **more}, revision=revision)


def test_a_lock_stamped_before_the_clock_stepped_back_is_taken(store: Store) -> None:
    _lease(store, store.clock() + 10, lease_s=20.0)  # within its lease: held
    with pytest.raises(OwnerBusy), owner_lock(store, ANA, "files", wait_s=0.3):
        pass
    _lease(store, store.clock() + AN_HOUR, lease_s=20.0)  # then the clock went back 1 h
    started = time.monotonic()
    with owner_lock(store, ANA, "files", wait_s=5):
        assert time.monotonic() - started < 2
    _lease(store, store.clock() + AN_HOUR)  # a lease that names no length: the taker's
    with owner_lock(store, ANA, "files", wait_s=5):
        pass


def test_a_longer_lease_than_the_taker_s_is_judged_by_its_own_length(store: Store) -> None:
    _lease(store, store.clock() + 100, lease_s=120.0)  # an editor that took 2 min
    with pytest.raises(OwnerBusy), owner_lock(store, ANA, "files", wait_s=0.3):
        pass


#: Host B, its clock ahead: tries ana's files lock for a second; prints what it got.
TAKE = """
from contextos.agent.lock import OwnerBusy, owner_lock
from contextos.store.postgres import PostgresStore
from contextos.types import Scope

store = PostgresStore(URL, schema=SCHEMA)
try:
    with owner_lock(store, Scope("default", user_id="ana"), "files", wait_s=1.0):
        print("took")
except OwnerBusy:
    print("busy")
store.close()
"""


@pytest.mark.postgres
def test_a_host_ahead_of_postgres_does_not_take_a_held_owner_lock() -> None:
    from pg_support import pg_url, postgres_store

    with postgres_store() as store:
        with owner_lock(store, ANA, "files"):  # host A holds it (a 20 s lease)
            assert _ahead(TAKE, 30, pg_url(), store.schema) == "busy"
        assert _ahead(TAKE, 30, pg_url(), store.schema) == "took"
