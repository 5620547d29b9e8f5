"""A CLI command waits for this process's vectors only, and briefly.

``contextos add`` waits for its memory's vector before it ends, and ``search`` lets
the process embed what is pending first, so a memory is found by meaning without the
user doing anything. Both waited for the whole file's queue: records another process
claimed included. A command killed after its add (its claim lasting ``CLAIM_LEASE_S``)
made every later command on the file wait ~30 s, whatever its user or tenant; a backlog
of another tenant's memories, as long as it took to embed (a review). Now they wait
for what this process can embed, at most ``VECTOR_WAIT_S``; what is left is found by
its words meanwhile. The real CLI in subprocesses, on a real SQLite file.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from cli_support import run_cli
from contextos.cli.common import VECTOR_WAIT_S
from contextos.store.sqlite import SQLiteStore
from contextos.types import MemoryRecord, Scope, content_hash

#: A dead importer's claim: longer than any wait the commands below may make, so a
#: command that waits for it fails the test instead of passing late.
LEASE_S = 120

CLAIM_AND_DIE = """
import os, sys
from contextos.store.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
claimed = store.claim_vectors("a-process-that-died", limit=10, lease_s=float(sys.argv[2]))
print(len(claimed), flush=True)
os._exit(0)  # no release: the claim stays until its lease runs out
"""


def test_a_dead_processes_claim_holds_up_no_other_command(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    store = SQLiteStore(db)  # a memory another tenant's importer wrote, then died
    text = "green tea at noon"
    store.put(
        [MemoryRecord(id="m1", text=text, scope=Scope("acme", "ana"), hash=content_hash(text))]
    )
    store.close()
    dead = subprocess.run(
        [sys.executable, "-c", CLAIM_AND_DIE, str(db), str(LEASE_S)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dead.stdout.strip() == "1", dead.stderr
    started = time.monotonic()
    added = run_cli("add", "I drink black coffee", "-u", "bob", db=db)
    add_took = time.monotonic() - started
    assert added.returncode == 0 and added.stdout.startswith("added "), added.stderr
    started = time.monotonic()
    found = run_cli("search", "coffee", "-u", "bob", "--json", db=db)
    search_took = time.monotonic() - started
    assert found.returncode == 0, found.stderr
    assert "I drink black coffee" in found.stdout
    print(f"add {add_took:.1f} s, search {search_took:.1f} s (claim of {LEASE_S} s held)")
    # Each waited for its own process's work (well under a second here, with the hash
    # embedder), not for the claim, nor until VECTOR_WAIT_S ran out.
    assert add_took < VECTOR_WAIT_S and search_took < VECTOR_WAIT_S
    store = SQLiteStore(db)
    try:  # the dead process's record waits for its claim to run out; bob's has its vector
        assert store.embedding_status("acme").pending == 1
        assert store.embedding_status().pending == 1
    finally:
        store.close()
