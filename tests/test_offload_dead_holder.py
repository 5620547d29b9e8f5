"""An offload whose holder died does not keep the next offload from storing the turns.

An offload's save lists the turns it rotated out and holds them (``HistoryState.archiver``,
a lease of ``ARCHIVE_LEASE_S``) while its ``memory.add`` stores them. A process killed
there (OOM, a deploy, kill -9) kept them held for the whole lease: the restarted app's
next offload stored nothing and listed its own rotated turns under the dead hold, so for
two minutes every turn rotated out was in neither the window nor long-term memory, and a
search for them found nothing (a crash review). These tests kill a real process inside
its archive, on a real SQLite file and on PostgreSQL, and check that a new process's
offload right after stores every orphaned turn once; that a live holder in another
process is still never taken over (a turn stored twice); that a hold naming another
machine still lasts its lease; and that a failing store releases its hold.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.types import Message
from memory_support import OPEN_MEMORY_IN_CHILD, FailsOnce, child_storage

BOTH = pytest.mark.parametrize("kind", ["sqlite", "postgres"])

#: A chat process: logs turns ``first`` to ``last`` of session "chat", then compacts
#: with ``offload`` (budget 300: the turns do not fit). With ``hang``, its ``memory.add``
#: says ARCHIVING and waits for a line on stdin before its first store (where the test kills
#: it, or lets it go on). Prints ``ARCHIVED <records> <rotated?>``.
CHAT = (
    """
import sys
from contextos.engine.session import Session
from contextos.types import Message

kind, where, schema, mode, first, last = sys.argv[1:7]
"""
    + OPEN_MEMORY_IN_CHILD
    + """


class Hangs:
    def __init__(self, memory):
        self.memory, self.first = memory, True

    def __getattr__(self, name):
        return getattr(self.memory, name)

    def add(self, *args, **kwargs):
        if self.first:
            self.first = False
            print("ARCHIVING", flush=True)
            sys.stdin.readline()
        return self.memory.add(*args, **kwargs)


session = Session(memory.store, "chat", tenant=memory.tenant, user_id="ana")
roles = ("user", "assistant")
session.add(*[
    Message(roles[i % 2], f"turn {i}: the codeword is cw{i}x, about the trip to Lisbon")
    for i in range(int(first), int(last))
])
done = session.compact(300, "offload", memory=Hangs(memory) if mode == "hang" else memory)
print("ARCHIVED", done.archived, done.plan is not None, flush=True)
memory.close()
"""
)


def _holder(where: list[str], first: int, last: int) -> subprocess.Popen[str]:
    """A chat process that compacts and is now inside its archive's ``memory.add``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHAT, *where, "hang", str(first), str(last)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ARCHIVING"
    return proc


def _chat(where: list[str], first: int, last: int) -> tuple[int, bool]:
    """A new chat process's turns and offload: (records it stored, whether it compacted)."""
    done = subprocess.run(
        [sys.executable, "-c", CHAT, *where, "plain", str(first), str(last)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    _, archived, planned = done.stdout.split()
    return int(archived), planned == "True"


def _archived(memory: Memory) -> Counter[int]:
    """How many records each archived turn has."""
    records = memory.get_all(session_id="chat", limit=1000)
    return Counter(int(r.metadata["turn_seq"]) for r in records)


def _session(memory: Memory) -> Session:
    return Session(memory.store, "chat", tenant=memory.tenant, user_id="ana")


@BOTH
def test_a_new_process_stores_at_once_the_turns_a_killed_offload_held(
    kind: str, tmp_path: Path
) -> None:
    with child_storage(kind, tmp_path) as (memory, where):
        with _holder(where, 0, 40) as holder:
            holder.kill()  # SIGKILL, while its memory.add stores the rotated turns
        assert holder.returncode == -signal.SIGKILL
        orphaned = _session(memory).state().unarchived
        assert orphaned and not _archived(memory)  # out of the window, in no memory

        started = time.monotonic()
        archived, planned = _chat(where, 40, 60)  # the restarted app, at once
        took = time.monotonic() - started

        assert planned  # it rotated more turns out
        state = _session(memory).state()
        seqs = _archived(memory)
        assert [s for s, n in seqs.items() if n > 1] == []  # none stored twice
        assert sorted(seqs) == list(range(state.start_seq))  # the dead one's and its own
        assert set(orphaned) < set(seqs) and state.unarchived == () and state.archiver == ""
        assert archived == sum(seqs.values())
        hits = memory.search("cw3x", user_id="ana")
        assert hits and hits[0].record.metadata["turn_seq"] == 3  # found by a search
        assert took < 60, f"the restarted offload took {took:.1f} s"


@BOTH
def test_a_live_holder_in_another_process_is_not_taken_over(kind: str, tmp_path: Path) -> None:
    with child_storage(kind, tmp_path) as (memory, where):
        with _holder(where, 0, 40) as holder:
            try:
                archived, planned = _chat(where, 40, 60)  # another process, meanwhile
                assert planned and archived == 0  # its turns are listed under the live hold
                assert not _archived(memory)
                assert holder.stdin is not None and holder.stdout is not None
                holder.stdin.write("\n")  # the holder's memory.add goes on
                holder.stdin.flush()
                out = holder.stdout.readline().split()
                assert holder.wait(60) == 0
            finally:
                if holder.poll() is None:
                    holder.kill()
        state = _session(memory).state()
        seqs = _archived(memory)
        assert [s for s, n in seqs.items() if n > 1] == []  # none stored twice
        assert sorted(seqs) == list(range(state.start_seq)) and state.unarchived == ()
        assert int(out[1]) == sum(seqs.values())  # the holder stored the other's turns too


def _rename_holder(session: Session, rename: Any) -> None:
    """Write the state's hold back as ``rename(archiver)`` names it, through the store's
    public compare-and-set, as any writer would."""
    store = session.store
    meta, revision = store.session_meta_revision(session.scope)
    history = {**meta["history"], "archiver": rename(meta["history"]["archiver"])}
    assert store.swap_session_meta(session.scope, {**meta, "history": history}, revision=revision)


def _let_the_hold_run_out(session: Session) -> None:
    """What two minutes would do: the hold on the turns expires."""
    store = session.store
    meta, revision = store.session_meta_revision(session.scope)
    history = {**meta["history"], "archiver_until": 0.0}
    assert store.swap_session_meta(session.scope, {**meta, "history": history}, revision=revision)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="names processes by /proc")
def test_a_hold_named_by_another_machine_lasts_its_lease(tmp_path: Path) -> None:
    # Its process cannot be looked at from here: taken over while it still stores, its
    # turns were stored twice. It is waited for, as before, until the lease runs out.
    with child_storage("sqlite", tmp_path) as (memory, where):
        with _holder(where, 0, 40) as holder:
            holder.kill()
        app = _session(memory)
        archiver = app.state().archiver
        assert "@" in archiver and f"/{holder.pid}/" in archiver  # names its process
        _rename_holder(app, lambda a: a.replace("@", "@another-boot-id-", 1))
        assert app.compact(300, "offload", memory=memory, force=True).archived == 0
        assert not _archived(memory)
        _let_the_hold_run_out(app)
        app.compact(300, "offload", memory=memory)
        state = app.state()
        assert sorted(_archived(memory)) == list(range(state.start_seq))
        assert set(_archived(memory).values()) == {1}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="names processes by /proc")
def test_a_hold_whose_pid_another_process_took_is_over(tmp_path: Path) -> None:
    # The holder died and its pid went to a new process: it started at another time.
    with child_storage("sqlite", tmp_path) as (memory, where):
        with _holder(where, 0, 40) as holder:
            holder.kill()
        app = _session(memory)
        with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
            try:

                def pid_of_other(archiver: str) -> str:
                    named, _, _ = archiver.rpartition(f"/{holder.pid}/")
                    return f"{named}/{other.pid}/1"  # started at boot: not that process

                _rename_holder(app, pid_of_other)
                assert app.compact(300, "offload", memory=memory).archived > 0
            finally:
                other.kill()
        state = app.state()
        assert state.unarchived == () and sorted(_archived(memory)) == list(range(state.start_seq))


def test_a_failed_archive_releases_its_hold(tmp_path: Path) -> None:
    # "A failing store in between leaves them listed: the next offload stores them
    # first". It held them for the lease instead, its own process's next call included.
    with child_storage("sqlite", tmp_path) as (memory, _):
        app = _session(memory)
        app.add(*[Message("user", f"turn {i}: about the trip to Lisbon {i}") for i in range(40)])
        flaky = FailsOnce(memory)
        with pytest.raises(RuntimeError):
            app.compact(300, "offload", memory=flaky)
        owed = app.state().unarchived
        assert owed and app.state().archiver == ""  # listed, not held
        assert app.compact(300, "offload", memory=flaky).archived == len(owed)
        assert sorted(_archived(memory)) == list(owed) and app.state().unarchived == ()


def test_this_process_never_judges_its_own_hold_dead() -> None:
    from contextos.engine.compaction import HistoryState
    from contextos.engine.offload import archive_claim, hold_runs

    claim = archive_claim()
    held = HistoryState(unarchived=(1,), archiver=claim, archiver_until=time.time() + 60)
    assert hold_runs(held, time.time())
    assert not hold_runs(HistoryState(archiver=claim, archiver_until=time.time() - 1), time.time())
    if Path("/proc/self/stat").exists():
        assert f"/{os.getpid()}/" in claim
