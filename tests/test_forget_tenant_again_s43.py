"""A tenant erased again when nothing of it is left does not rebuild the file (a review,
s43): ``forget --whole-tenant`` erases twice more for the writes servers still admitted,
and each pass ran a whole-file ``VACUUM`` for nothing while every tenant's writes waited."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from contextos import Memory
from contextos.testing.embedders import HashEmbedder


def _free_pages(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return int(con.execute("PRAGMA freelist_count").fetchone()[0])


def _leave_free_pages(memory: Memory) -> None:
    """Purged rows leave free pages (a purge does not rebuild the file)."""
    added = memory.add([f"note {i}: " + "words " * 200 for i in range(120)], user_id="bo")
    memory.delete_many([r.id for r in added], purge=True)


def test_a_tenant_with_nothing_left_is_not_rebuilt_for(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    options = dict(embedder=HashEmbedder(), background_embedding=False)
    with (
        Memory(db, tenant="gone", **options) as gone,
        Memory(db, tenant="stays", **options) as stays,
    ):
        gone.add([f"acme card {n} ends 4242" for n in range(3)], user_id="ana")
        _leave_free_pages(stays)
        assert _free_pages(db) > 0
        assert gone.forget_tenant() == 3  # rows erased: the file is rebuilt
        assert _free_pages(db) == 0
        _leave_free_pages(stays)
        free = _free_pages(db)
        assert free > 0
        assert gone.forget_tenant() == 0  # nothing of it left: no rebuild
        assert _free_pages(db) == free
        gone.add(["a late write"], user_id="ana")
        assert gone.forget_tenant() == 1  # a late write is erased, the file rebuilt
        assert _free_pages(db) == 0
