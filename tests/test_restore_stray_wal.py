"""A backup copied in where the store's file was, beside that file's ``-wal``.

An operator restores the way people do: the running store's file moved aside, the
backup (made with ``VACUUM INTO``: a file in rollback-journal mode) copied to its name.
The moved file's ``-wal`` and ``-shm`` stay under the old name, beside the backup. The
next open switched the backup to WAL mode and SQLite replayed the other file's frames
onto it: the restored file was damaged, and the old file's last acknowledged writes were
in neither file (a review of restores). Now that open is refused, naming the stray
``-wal`` and what to do, and nothing is changed; done as it says, both files are whole.
Real SQLite files, a real Memory.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from contextos.errors import StoreFault
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder


def _memory(path: Path) -> Memory:
    return Memory(path, embedder=HashEmbedder(), background_embedding=False)


def _texts(path: Path) -> list[str]:
    with _memory(path) as memory:
        return sorted(r.text for r in memory.get_all(user_id="ann", limit=1000))


#: The running server: adds, then keeps its store open (its last writes in the -wal)
#: until its standard input closes.
RUNNING = """
import sys
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
memory = Memory(sys.argv[1], embedder=HashEmbedder(), background_embedding=False)
for i in range(40):
    memory.add(f"fact {i} before the backup", user_id="ann")
print("added", flush=True)
sys.stdin.readline()
for i in range(5):
    memory.add(f"fact {i} after the backup", user_id="ann")
print("added", flush=True)
sys.stdin.readline()
memory.close()
"""


def test_a_backup_copied_beside_the_replaced_files_wal_is_refused_and_left_whole(
    tmp_path: Path,
) -> None:
    path, old, backup = tmp_path / "memory.db", tmp_path / "old.db", tmp_path / "backup.db"
    running = subprocess.Popen(
        [sys.executable, "-c", RUNNING, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert running.stdout is not None and running.stdin is not None
        assert running.stdout.readline() == "added\n"
        with sqlite3.connect(path) as con:
            con.execute(f"VACUUM INTO '{backup}'")
        running.stdin.write("\n")
        running.stdin.flush()
        assert running.stdout.readline() == "added\n"
        wal = tmp_path / "memory.db-wal"
        assert wal.stat().st_size > 0  # the running store's last writes are there

        path.rename(old)
        shutil.copyfile(backup, path)
        with pytest.raises(StoreFault, match="memory.db-wal belongs to another database file") as e:
            _memory(path)  # a CLI call on the restored file while the old server runs
        assert "move memory.db-wal and memory.db-shm aside" in str(e.value)
        assert path.read_bytes() == backup.read_bytes()  # nothing replayed onto it
        assert wal.stat().st_size > 0

        # As the message says: the old process stopped, its -wal and -shm moved beside it.
        running.stdin.write("\n")
        running.stdin.flush()
        assert running.wait(30) == 0
    finally:
        if running.poll() is None:
            running.kill()
            running.wait(10)
        for pipe in (running.stdin, running.stdout):
            if pipe is not None:
                pipe.close()
    for end in ("-wal", "-shm"):
        stray = tmp_path / f"memory.db{end}"
        if stray.exists():
            stray.rename(tmp_path / f"old.db{end}")
    assert _texts(path) == sorted(f"fact {i} before the backup" for i in range(40))
    assert len(_texts(old)) == 45  # the replaced file kept its last writes


def _posix_locks(path: Path) -> list[str]:
    """This process's POSIX locks on the file at ``path`` (Linux's /proc/locks), each
    without the line's ordinal (which moves as other processes take and drop locks)."""
    inode = f":{path.stat().st_ino} "
    pid = f" {os.getpid()} "
    lines = Path("/proc/locks").read_text().splitlines()
    return sorted(
        line.split(":", 1)[1].strip()
        for line in lines
        if "POSIX" in line and pid in line and inode in line
    )


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
def test_a_second_store_on_a_file_this_process_holds_leaves_its_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check reads the file's header with a descriptor of its own, and closing any
    # descriptor of a file drops every POSIX lock the process holds on it, SQLite's
    # included: never done while a store of this process has the file open, under
    # whatever path (a relative one after a chdir: the diff's review).
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    with _memory(Path("memory.db")) as first:
        first.add("a fact", user_id="ann")
        assert (tmp_path / "memory.db-wal").stat().st_size > 0
        held = _posix_locks(tmp_path / "memory.db")
        assert held, "SQLite holds a lock on the file while a connection is open"
        monkeypatch.chdir(tmp_path / "sub")
        with _memory(Path("../memory.db")) as second:
            assert _posix_locks(tmp_path / "memory.db") == held
            assert [r.text for r in second.get_all(user_id="ann")] == ["a fact"]
