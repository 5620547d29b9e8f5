"""A store's database as an old release left it, for the migration tests: opened again
at will and looked at directly (SQL on its own connection), on a real SQLite file or a
real PostgreSQL schema."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from contextos.store.base import Store
from contextos.store.postgres.schema import MIGRATIONS as POSTGRES_MIGRATIONS
from contextos.store.postgres.schema import V7_FACT_OF
from contextos.store.sqlite import SQLiteStore
from contextos.store.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from contextos.store.sqlite.schema import V9_FACT_OF
from pg_support import connect, fresh_schema, pg_url

#: The versions before SQLite's V9 / PostgreSQL's V7 (facts linked by ``source`` then).
BEFORE_V9_SQLITE = SQLITE_MIGRATIONS.index(V9_FACT_OF)
BEFORE_V7_POSTGRES = POSTGRES_MIGRATIONS.index(V7_FACT_OF)


@dataclass
class Backend:
    """One store's file or schema: opened again at will, and looked at directly."""

    kind: str
    open: Callable[[], Store]
    sql: Callable[[str], list[tuple[Any, ...]]]  # runs SQL on its own connection

    def set_version(self, version: int) -> None:
        """Record ``version`` as the schema's last migration."""
        if self.kind == "sqlite":
            self.sql(f"PRAGMA user_version = {version}")
        else:
            self.sql(f"DELETE FROM schema_version WHERE version > {version}")

    def set_back_before_v9(self) -> None:
        """The schema version as the release before V9 / V7 left the database. Later
        migrations run again too; each can (SQLite's V10 alters nothing, PostgreSQL's V8
        is written to), once the columns SQLite's V12 and V14 add are gone, as they were
        in that release."""
        if self.kind == "sqlite":
            self.sql("ALTER TABLE vector_quarantine DROP COLUMN model")
            self.sql("DROP INDEX history_session")
            self.sql("ALTER TABLE history DROP COLUMN session_id")
            self.set_version(BEFORE_V9_SQLITE)
        else:
            self.set_version(BEFORE_V7_POSTGRES)

    def vectors(self) -> list[tuple[Any, ...]]:
        """Every stored vector with its record, model and (SQLite) write sequence."""
        if self.kind == "sqlite":
            return self.sql(
                "SELECT m.id, v.vseq, v.model, v.vec FROM vectors v "
                "JOIN memories m ON m.rowid = v.mem_rowid ORDER BY m.id"
            )
        return self.sql("SELECT memory_id, model, vec::text FROM vectors ORDER BY memory_id")

    def reindexed(self) -> int:
        """Entries of SQLite's index log (records other processes' vector indexes re-read)."""
        return int(self.sql("SELECT count(*) FROM index_log")[0][0]) if self.kind == "sqlite" else 0


def sqlite_sql(path: Path) -> Callable[[str], list[tuple[Any, ...]]]:
    """Runs SQL on the SQLite file ``path``, each statement on its own connection."""

    def run(sql: str) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(path)
        try:
            rows = con.execute(sql).fetchall()
            con.commit()
            return rows
        finally:
            con.close()

    return run


B = TypeVar("B", bound=Backend)

#: The ``params`` of a migration test's ``backend`` fixture.
KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def backend_of(kind: str, tmp_path: Path, name: str, cls: type[B]) -> Iterator[B]:
    """A fresh SQLite file under ``tmp_path``, or a fresh PostgreSQL schema named after
    ``name`` (dropped at the end), as a ``cls``."""
    if kind == "sqlite":
        path = tmp_path / "old.db"
        yield cls("sqlite", lambda: SQLiteStore(path), sqlite_sql(path))
        return
    pytest.importorskip("psycopg")
    from contextos.store.postgres import PostgresStore

    with fresh_schema(name) as (_, schema):

        def run(sql: str) -> list[tuple[Any, ...]]:
            with connect(pg_url(), schema) as con:
                cur = con.execute(sql)
                return list(cur.fetchall()) if cur.description else []

        yield cls("postgres", lambda: PostgresStore(pg_url(), schema=schema), run)
