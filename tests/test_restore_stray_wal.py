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

import shutil
import sqlite3
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


def test_a_backup_copied_beside_the_replaced_files_wal_is_refused_and_left_whole(
    tmp_path: Path,
) -> None:
    path, old, backup = tmp_path / "memory.db", tmp_path / "old.db", tmp_path / "backup.db"
    running = _memory(path)  # the server that keeps the file open
    for i in range(40):
        running.add(f"fact {i} before the backup", user_id="ann")
    with sqlite3.connect(path) as con:
        con.execute(f"VACUUM INTO '{backup}'")
    for i in range(5):
        running.add(f"fact {i} after the backup", user_id="ann")
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
    running.close()
    for end in ("-wal", "-shm"):
        stray = tmp_path / f"memory.db{end}"
        if stray.exists():
            stray.rename(tmp_path / f"old.db{end}")
    assert _texts(path) == sorted(f"fact {i} before the backup" for i in range(40))
    assert len(_texts(old)) == 45  # the replaced file kept its last writes
