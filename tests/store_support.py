"""SQLite files as an older contextos left them, for the upgrade tests; rows written
behind a store's back, as another process or an older version would; code run on a
store in another process."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path

from contextos.embed import Vectors
from contextos.store.base import Store
from contextos.store.sqlite import SQLiteStore
from contextos.store.sqlite.schema import MIGRATIONS, _statements
from contextos.testing.embedders import HashEmbedder


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


def foreign_sql(store: Store, sql: str, params: Sequence[object]) -> None:
    """Run ``sql`` (``?`` marks) on ``store``'s database through a connection of its own,
    as another process would (an older contextos, a hand-written fix), giving up after
    half a second if the row or file is locked."""
    if isinstance(store, SQLiteStore):
        con = sqlite3.connect(store.path, timeout=0.5)
        try:
            con.execute(sql, params)
            con.commit()
        finally:
            con.close()
        return
    from pg_support import connect

    schema = getattr(store, "schema", None)
    with connect(os.environ["CONTEXTOS_TEST_PG_URL"], schema) as con:
        con.execute("SET lock_timeout = 500")
        con.execute(sql.replace("?", "%s"), params)


def in_other_process(path: Path, code: str) -> None:
    """Run ``code`` in a new Python process with ``store`` open on ``path``."""
    script = (
        textwrap.dedent(
            f"""
        from datetime import UTC, datetime
        from contextos.store.base import Patch
        from contextos.store.sqlite import SQLiteStore
        from contextos.types import MemoryRecord, Scope, content_hash
        def rec(i, text, user, tenant="t1"):
            return MemoryRecord(id=i, text=text, scope=Scope(tenant=tenant, user_id=user),
                                hash=content_hash(text), created_at=datetime.now(UTC))
        store = SQLiteStore({str(path)!r})
        """
        )
        + textwrap.dedent(code)
        + "\nstore.close()\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


class GatedEmbedder(HashEmbedder):
    """Embeds as the shipped HashEmbedder once ``release`` is set (a remote embedder
    that is slow, or one that hangs until released); ``started`` is set by its first
    call."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.started.set()
        self.release.wait(timeout=60)
        return super().embed(texts)
