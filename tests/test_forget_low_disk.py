"""SQLite ``forget`` on a disk with no room to rebuild the file, and a rebuild owed by a
process that died, finished by another process's ``close``.

Review s42 diff42A, finding 1: ``forget`` ends by rebuilding the file (``VACUUM``, which
writes a copy of it), and the WAL truncation waited on that rebuild. On a nearly full
disk the rebuild failed, the truncation was skipped, and the erased text stayed in the
-wal (or in the file, under the WAL's newer pages) for good; and every later commit of
every process tried the whole-file copy again, 0.2-1.4 s an add. Now the WAL is truncated
whatever the rebuild does, the rebuild stays owed, and this process tries it again at
most once a minute (the next open, ``forget`` and ``vacuum()`` at once).
The full disk is a per-file size limit (``RLIMIT_FSIZE``) on a child process running the
real store: a little above the file's size, so the checkpoint fits and the copy does not.

Finding 2: ``close`` only finished an erasure this process had left pending; a rebuild
owed by a process that died stayed owed until the next open, however many processes
that only read closed meanwhile.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder

# Adds are timed: run alone, after the rest (scripts/test.sh).
pytestmark = pytest.mark.serial

SECRET = b"ALICESECRET"

#: A child process: the real store on the file (busy timeout 200 ms, so a mark is past
#: its "fresh" window at once), a file-size limit of 2% above the file's size, then
#: forget alice, time 20 adds, try a vacuum, and report what the file and its -wal hold
#: (JSON).
CHILD = r"""
import json, os, resource, signal, sqlite3, statistics, sys, time
from contextos.errors import StoreError
from contextos.memory import Memory
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder

db = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)

def secrets():
    return {end or "db": open(db + end, "rb").read().count(b"ALICESECRET")
            for end in ("", "-wal") if os.path.exists(db + end)}

def mark():
    raw = sqlite3.connect(db)
    try:
        row = raw.execute("SELECT since FROM erasure_pending").fetchone()
    finally:
        raw.close()
    return None if row is None else row[0]

out = {}
store = SQLiteStore(db, busy_timeout_ms=200)
with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as m:
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    limit = os.path.getsize(db) * 102 // 100
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        out["forgotten"] = m.forget(user_id="alice")
    except StoreError as exc:
        out["error"] = str(exc)
    out["left"] = len(m.get_all(user_id="alice"))
    out["after_forget"] = secrets()
    out["mark_after_forget"] = mark()
    time.sleep(0.3)  # past the busy timeout: any write now may try the rebuild
    took, wal = [], []
    for i in range(20):
        t = time.perf_counter()
        m.add(f"bob later {i}", user_id="bob")
        took.append(time.perf_counter() - t)
        wal.append(os.path.getsize(db + "-wal"))
    out["add_median_s"] = statistics.median(took)
    out["wal_after_each_add"] = wal
    out["after_adds"] = secrets()
    try:
        m.vacuum()
    except StoreError as exc:
        out["vacuum_error"] = str(exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
out["mark_after_close"] = mark()
print(json.dumps(out))
"""


def _secrets(db: Path) -> dict[str, int]:
    """Alice's marker in the raw bytes of the file and its -wal."""
    return {
        end or "db": Path(f"{db}{end}").read_bytes().count(SECRET)
        for end in ("", "-wal")
        if Path(f"{db}{end}").exists()
    }


def _mark(db: Path) -> float | None:
    raw = sqlite3.connect(db)
    try:
        row = raw.execute("SELECT since FROM erasure_pending").fetchone()
    finally:
        raw.close()
    return None if row is None else float(row[0])


def _freelist(db: Path) -> int:
    raw = sqlite3.connect(db)
    try:
        return int(raw.execute("PRAGMA freelist_count").fetchone()[0])
    finally:
        raw.close()


def test_a_forget_with_no_room_to_rebuild_leaves_no_erased_text_and_slows_no_write(
    tmp_path: Path,
) -> None:
    db = tmp_path / "full.db"
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        for k in range(0, 3000, 200):  # about 4 MB: each failed rebuild costs ~0.1 s
            m.add(
                [f"bob {j} w{j * 7919 % 100003} q{j * 31 % 9973} " * 3 for j in range(k, k + 200)],
                user_id="bob",
            )
        m.add([f"{SECRET.decode()}{j} zebra" for j in range(20)], user_id="alice")
    assert _secrets(db)["db"] >= 20  # the text, and its history

    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(db)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)

    # The forget erased, and says why the file is not rebuilt and what it needs.
    assert "forgotten" not in out and out["left"] == 0
    assert "could not be rebuilt" in out["error"], out["error"]
    assert f"free on {tmp_path}" in out["error"], out["error"]
    assert "free on" in out["vacuum_error"], out["vacuum_error"]
    # No byte of alice is left in the file or its -wal: the WAL was truncated.
    assert out["after_forget"] == {"db": 0, "-wal": 0}
    assert out["after_adds"] == {"db": 0, "-wal": 0}
    # The rebuild is not tried after each write: the adds stay fast, and no checkpoint
    # after each emptied the -wal either (nothing erased is left in it to remove). A try
    # would show either way: one that fails is slow and its checkpoint empties the -wal;
    # one that fits (the -wal is smaller now) clears the mark.
    assert out["add_median_s"] < 0.02, out
    assert min(out["wal_after_each_add"]) > 0, out
    # It stays owed (a negative mark), left by this process's close (it tried a moment
    # ago) to the next process to open the file.
    assert out["mark_after_forget"] < 0 and out["mark_after_close"] < 0

    # With the room back, the next process to open the file rebuilds it.
    Memory(db, embedder=HashEmbedder(), background_embedding=False).close()
    assert _mark(db) is None and _freelist(db) == 0
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        assert len(m.get_all(user_id="bob", limit=1000)) == 1000
        assert m.get_all(user_id="alice") == []
    assert _secrets(db) == {"db": 0}


#: A process that dies right after its erasure committed, before its rebuild: the file
#: as such a forget's commit leaves it (alice's rows gone, their bytes still in free
#: space, the rebuild owed: a negative mark older than any busy timeout), then SIGKILL.
DIES = """
import os, signal, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE")
c.execute("DELETE FROM history WHERE user_id = 'alice'")
c.execute("DELETE FROM memories WHERE user_id = 'alice'")
c.execute("INSERT INTO erasure_pending (id, since) VALUES (1, -1.0)")
c.execute("COMMIT")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_reader_closing_finishes_a_rebuild_owed_by_a_process_that_died(
    tmp_path: Path,
) -> None:
    db = tmp_path / "died.db"
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        m.add([f"bob note {i} " + "x" * 400 for i in range(150)], user_id="bob")
        alice = [f"alice note {i} {SECRET.decode()}{i} " + "y" * 400 for i in range(150)]
        m.add(alice, user_id="alice")
    reader = Memory(db, embedder=HashEmbedder(), background_embedding=False)
    try:
        assert len(reader.search("note", user_id="bob", limit=5)) == 5
        died = subprocess.run([sys.executable, "-c", DIES, str(db)], timeout=60)
        assert died.returncode == -signal.SIGKILL
        assert _mark(db) == -1.0 and _freelist(db) > 0 and sum(_secrets(db).values()) > 0
        assert len(reader.search("note", user_id="bob", limit=5)) == 5  # reads do nothing
        assert _mark(db) == -1.0
    finally:
        reader.close()
    assert _mark(db) is None  # the reader's close rebuilt the file
    assert _freelist(db) == 0 and _secrets(db) == {"db": 0}
