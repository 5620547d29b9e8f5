"""SQLite files as an older contextos left them, for the upgrade tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from contextos.store.sqlite.schema import MIGRATIONS, _statements


def sqlite_file_at(path: Path, version: int) -> sqlite3.Connection:
    """A new SQLite file at ``path`` with the first ``version`` migrations applied, as a
    release of that schema version wrote it; the open connection, uncommitted, for the
    caller to add the old rows it needs (commit and close it before opening a store)."""
    con = sqlite3.connect(path)
    for script in MIGRATIONS[:version]:
        for statement in _statements(script):
            con.execute(statement)
    con.execute(f"PRAGMA user_version = {int(version)}")
    return con
