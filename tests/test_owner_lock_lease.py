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
