"""A transaction's end on SQLite (``store.sqlite._ended``) when an interrupt lands after
its COMMIT: the interrupt goes on as it came. A review (session 33) saw a SIGTERM just
after a COMMIT turn into "cannot rollback - no transaction is active", a traceback in
place of the benchmark's clean exit; a Ctrl-C there did the same to any CLI command."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from contextos.store.sqlite import _ended


def test_an_interrupt_after_the_commit_stays_the_interrupt(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "t.db", isolation_level=None)) as db:
        db.execute("CREATE TABLE t (x)")
        with pytest.raises(KeyboardInterrupt), _ended(db, "a write"):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (1)")
            db.execute("COMMIT")  # the commit went through ...
            raise KeyboardInterrupt  # ... and the interrupt came just after it
        assert db.execute("SELECT count(*) FROM t").fetchone() == (1,)
        with pytest.raises(KeyboardInterrupt), _ended(db, "a write"):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (2)")
            raise KeyboardInterrupt  # before the commit: rolled back
        assert db.execute("SELECT count(*) FROM t").fetchone() == (1,)
