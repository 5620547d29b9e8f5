"""The owner lock's lease: renewed by its holder before each write, fenced when lost,
and taken at once from a holder killed on this host.

Why (a review of the agent memory tools): the lease was taken once and never looked
at again. A holder paused past it (SIGSTOP, a VM pause) went on writing beside the
editor that took it over, and a file both made was lost; a holder killed with
``kill -9`` left its owner's next command waiting 30 s for "The memory store is busy
or unavailable".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from contextos import Memory, Scope
from contextos.agent import MemoryTool
from contextos.agent.lock import LeaseLost, OwnerBusy, owner_lock, renew_lease
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder

ANA = Scope("default", user_id="ana")


def test_a_holder_that_renews_keeps_the_lock_past_its_lease(store: Store) -> None:
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        with owner_lock(store, ANA, "files", lease_s=0.4):
            held.set()
            for _ in range(6):  # 1.2 s of writes, three leases long
                time.sleep(0.2)
                renew_lease()
        done.set()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    try:
        with pytest.raises(OwnerBusy), owner_lock(store, ANA, "files", wait_s=0.8):
            pass
    finally:
        thread.join()
    assert done.is_set()


def test_a_holder_paused_past_its_lease_writes_nothing_more(store: Store) -> None:
    with owner_lock(store, ANA, "files", lease_s=0.3):
        time.sleep(0.5)  # paused past the lease ...
        taken = threading.Event()

        def other() -> None:  # ... while another editor takes the lock
            with owner_lock(store, ANA, "files", wait_s=2.0):
                taken.set()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert taken.is_set()
        with pytest.raises(LeaseLost, match="passed to another editor"):
            renew_lease()


HOLD = """
import sys, time
from contextos import Memory, Scope
from contextos.agent.lock import owner_lock
from contextos.testing.embedders import HashEmbedder

with Memory(sys.argv[1], embedder=HashEmbedder(), background_embedding=False) as memory:
    with owner_lock(memory.store, Scope("default", user_id="ana"), "files"):
        print("held", flush=True)
        time.sleep(120)
"""


def test_a_holder_killed_on_this_host_leaves_the_lock_to_the_next_command(
    tmp_path: Path,
) -> None:
    db = tmp_path / "files.db"
    Memory(db, embedder=HashEmbedder(), background_embedding=False).close()
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD), str(db)],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "held"
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
        tool = MemoryTool(memory, user_id="ana")
        start = time.monotonic()
        made = tool.call({"command": "create", "path": "/memories/a.md", "file_text": "a\n"})
        assert made == "File created successfully at: /memories/a.md"
        assert time.monotonic() - start < 5.0  # not the lease's 20 s, nor OwnerBusy at 30


HOLD_AWHILE = """
import sys, time
from contextos import Memory, Scope
from contextos.agent.lock import owner_lock
from contextos.testing.embedders import HashEmbedder

with Memory(sys.argv[1], embedder=HashEmbedder(), background_embedding=False) as memory:
    with owner_lock(memory.store, Scope("default", user_id="ana"), "files"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
        print("released", time.time(), flush=True)
"""

TAKE = """
import sys, time
from contextos import Memory, Scope
from contextos.agent.lock import owner_lock
from contextos.testing.embedders import HashEmbedder

with Memory(sys.argv[1], embedder=HashEmbedder(), background_embedding=False) as memory:
    with owner_lock(memory.store, Scope("default", user_id="ana"), "files"):
        print("taken", time.time(), flush=True)
"""


def _in_own_pid_namespace(after: int, *argv: str) -> list[str]:
    """``argv`` run as a process of a PID namespace of its own, after ``after`` other
    processes there (its pid is then about ``after + 2``)."""
    script = f'for i in $(seq {after}); do /bin/true; done; "$@"'
    return ["unshare", "-pf", "--mount-proc", "sh", "-c", script, "sh", *argv]


def _namespaces_available() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        done = subprocess.run(["unshare", "-pf", "--mount-proc", "true"], capture_output=True)
    except OSError:
        return False
    return done.returncode == 0


@pytest.mark.skipif(
    not _namespaces_available(), reason="needs Linux and `unshare -p` (root or user namespaces)"
)
def test_a_live_holder_in_another_pid_namespace_keeps_the_lock(tmp_path: Path) -> None:
    """Two containers of one pod share a host name, not their pids: a holder alive in one
    was judged dead by a process of the other, whose namespace had no process with its
    pid, and both held the lock (review s57). The next one now waits for the release."""
    db = tmp_path / "files.db"
    Memory(db, embedder=HashEmbedder(), background_embedding=False).close()
    # The holder's pid is about 62; the taker's is 2, in a namespace with no process 62.
    hold = _in_own_pid_namespace(
        60, sys.executable, "-c", textwrap.dedent(HOLD_AWHILE), str(db), "4"
    )
    with subprocess.Popen(hold, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        take = _in_own_pid_namespace(0, sys.executable, "-c", textwrap.dedent(TAKE), str(db))
        taken = subprocess.run(take, capture_output=True, text=True, timeout=60)
        released = holder.stdout.readline().split()
        holder.wait(timeout=60)
    assert taken.returncode == 0, taken.stderr
    assert released[0] == "released"
    assert float(taken.stdout.split()[1]) >= float(released[1])  # not while it was held
