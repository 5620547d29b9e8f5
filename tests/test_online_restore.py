"""An online restore of an older backup into the SQLite file an open ``Memory`` holds
(``sqlite3 memory.db ".restore backup.db"``, or the backup API into the live file): the
process's in-memory keyword and vector indexes must follow the file's history back.

They catch up from the last ``index_log`` seq and vector seq they read. After a restore
the file hands out those seqs again, so a catch-up from where they were found nothing:
memories written after the restore were never found by search in that process, and
memories the restore brought back had no vector hit, until it restarted (a review)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from contextos.embed import Vectors
from contextos.errors import EmbedderUnavailable
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, Scope

#: SQLite's online backup API in a process of its own, as an operator's ``sqlite3``
#: shell runs ``.backup`` and ``.restore``: through SQLite's locks, into the same file
#: (same inode: the store's check for a replaced file does not see it).
_BACKUP = """
import sqlite3, sys
source, target = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
source.backup(target)
target.close()
source.close()
"""


def _online_copy(source: Path, target: Path) -> None:
    """Copy ``source`` onto ``target`` while other processes have it open."""
    subprocess.run([sys.executable, "-c", _BACKUP, str(source), str(target)], check=True)


def _found(memory: Memory, query: str, memory_id: str, user: str) -> tuple[bool, bool]:
    """Whether a search of ``user`` for ``query`` returns ``memory_id`` by keyword and by
    vector (its lexical and dense ranks)."""
    for hit in memory.search(query, user_id=user, limit=5):
        if hit.record.id == memory_id:
            return hit.lexical_rank is not None, hit.dense_rank is not None
    return False, False


@pytest.mark.parametrize("written_after", [5, 40])
def test_an_open_memory_follows_an_online_restore(tmp_path: Path, written_after: int) -> None:
    """New memories, written after the restore, are found by keyword and vector; one the
    restore brought back (a user forgotten after the backup) is found by both; those it
    removed are in neither index. ``written_after``: 5 leaves the file's log ending below
    where the process had read it; 40 takes it past that before the next search, so the
    same seqs now name other records."""
    db, backup = tmp_path / "memory.db", tmp_path / "backup.db"
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
        memory.add("alice keeps bees on the roof", user_id="alice")
        bob = memory.add("bob owns a red bicycle", user_id="bob")[0].id
        assert _found(memory, "bicycle", bob, "bob") == (True, True)
        _online_copy(db, backup)
        gone = [
            memory.add(f"alice gone{i} planted tulips", user_id="alice")[0].id for i in range(30)
        ]
        memory.forget("bob")
        assert _found(memory, "gone7 planted tulips", gone[7], "alice") == (True, True)

        _online_copy(backup, db)  # the restore, under the open Memory
        new = [
            memory.add(f"alice fresh{i} adopted a cat", user_id="alice")[0].id
            for i in range(written_after)
        ]

        for i, memory_id in enumerate(new):
            assert _found(memory, f"fresh{i} adopted a cat", memory_id, "alice") == (True, True)
        assert _found(memory, "bicycle", bob, "bob") == (True, True)
        alice = Filter(scope=Scope(memory.tenant, user_id="alice"))
        query = HashEmbedder().embed(["alice gone7 planted tulips"])[0]
        held = {r.id for r in memory.store.keyword_search(alice, "tulips", limit=100)}
        held |= {r.id for r in memory.store.vector_search(alice, query, limit=100)}
        assert held.isdisjoint(gone)


class _Embedder(HashEmbedder):
    """The embedder seam as the test needs it: while ``down``, EmbedderUnavailable (the
    memories stay pending); a text holding ``refused`` is a ValueError (quarantined)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.refused: str | None = None

    def embed(self, texts: Sequence[str]) -> Vectors:
        if self.down:
            raise EmbedderUnavailable("the embedder is down")
        if self.refused is not None and any(self.refused in t for t in texts):
            raise ValueError(f"cannot embed a text holding {self.refused!r}")
        return super().embed(texts)


def test_new_vectors_are_found_after_a_restore_took_only_vectors_back(tmp_path: Path) -> None:
    """The file's change log as the process read it, only its vectors gone back: a backup
    taken while ten memories waited for their vectors, restored after they got them.
    Their vectors' seqs are free again, and when they are not re-embedded (refused
    now: quarantined), the next memory's vector takes the first of them."""
    db, backup = tmp_path / "memory.db", tmp_path / "backup.db"
    embedder = _Embedder()
    with Memory(db, embedder=embedder, background_embedding=False) as memory:
        embedder.down = True
        for i in range(10):
            memory.add(f"alice waited{i} for a vector", user_id="alice")
        _online_copy(db, backup)  # the ten pending in it
        embedder.down = False
        assert memory.flush(10)
        assert memory.search("waited3", user_id="alice")[0].dense_rank is not None

        _online_copy(backup, db)
        embedder.refused = "waited"
        new = memory.add("alice fresh adopted a cat", user_id="alice")[0].id

        assert memory.embedding_status().quarantined_total == 10
        assert _found(memory, "fresh adopted a cat", new, "alice") == (True, True)
