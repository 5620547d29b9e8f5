"""A PostgreSQL migration finishes under a statement_timeout, and gives up on a lock.

V8 drops and adds ``memories.tsv`` and ``ntok``, which rewrites the table (every row,
~8 s per 100,000 rows, under an exclusive lock). A ``statement_timeout`` in the URL's
options (or the role's) cancelled it at every open, so a store of 100,000 memories
could never be opened again. A migration runs without it now. Its lock waits are
bounded instead (``schema.MIGRATION_LOCK_TIMEOUT_S``): behind a long reader it fails
with a StoreError saying what to do, rather than queueing every other query on the
table behind its lock request for as long as that reader runs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from contextos.errors import StoreError
from contextos.store.postgres import schema as pg_schema
from contextos.store.postgres.schema import MIGRATIONS, V8_KEYWORD_WORDS
from contextos.types import Filter, Scope
from pg_support import connect, fresh_schema, pg_url, with_options

pytestmark = pytest.mark.postgres

#: Migrations before V8: a schema at this version is what the previous release left.
V8 = MIGRATIONS.index(V8_KEYWORD_WORDS)

#: Enough rows that V8's rewrite takes several times ``TIMEOUT_MS`` (~1 s here, ~80 µs
#: a row) while building them stays quick.
ROWS = 40_000
TIMEOUT_MS = 200


def _v7_database(schema: str, rows: int) -> None:
    """The schema as the release before V8 left it: ``rows`` memories of user ana, one
    of user bo."""
    with connect(pg_url(), schema) as con:
        con.execute(
            "CREATE TABLE schema_version ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for number, script in enumerate(MIGRATIONS[:V8], start=1):
            con.execute(script)
            con.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
        con.execute(
            "INSERT INTO memories (tenant, id, user_id, memory_type, text, created_at, "
            "updated_at, hash) SELECT 't', 'm' || i, 'ana', 'episodic', 'note ' || i || "
            "' about peanuts, the lake and ana@example.com plans', now(), now(), 'h' || i "
            "FROM generate_series(1, %s) AS i",
            (rows,),
        )
        con.execute(
            "INSERT INTO memories (tenant, id, user_id, memory_type, text, created_at, "
            "updated_at, hash) VALUES ('t', 'b1', 'bo', 'episodic', 'mail bo@example.com', "
            "now(), now(), 'b1')"
        )


def _version(schema: str) -> int:
    with connect(pg_url(), schema) as con:
        (version,) = con.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(version)


def test_an_old_store_opens_under_a_statement_timeout_shorter_than_its_migration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("psycopg")
    from contextos.store.postgres import PostgresStore

    caplog.set_level(logging.INFO, logger="contextos.store.postgres.schema")
    with fresh_schema("mig_stmt") as (_, schema):
        _v7_database(schema, ROWS)
        url = with_options(pg_url(), f"-c statement_timeout={TIMEOUT_MS}")
        store = PostgresStore(url, schema=schema)
        try:
            # the sessions keep the URL's timeout: only the migration ran without it
            with store._conn("test") as conn:
                assert conn.execute("SHOW statement_timeout").fetchone() == (f"{TIMEOUT_MS}ms",)
            hits = store.keyword_search(Filter(scope=Scope("t", "bo")), "example", limit=3)
            assert [h.id for h in hits] == ["b1"]
        finally:
            store.close()
        assert _version(schema) == len(MIGRATIONS)
        # V10 rewrites the table too, after V8
        (started, done) = [r for r in caplog.records if "V8 " in r.getMessage()]
        assert f"V8 is rewriting table memories ({ROWS + 1:,} rows" in started.getMessage()
        assert started.levelno == done.levelno == logging.INFO
        took = done.args[1]  # type: ignore[index]
        assert took * 1000 > 2 * TIMEOUT_MS, f"V8 took {took:.2f} s: raise ROWS"  # the premise


def test_a_migration_behind_a_long_reader_gives_up_and_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("psycopg")
    from contextos.store.postgres import PostgresStore

    monkeypatch.setattr(pg_schema, "MIGRATION_LOCK_TIMEOUT_S", 0.5)
    with fresh_schema("mig_lock") as (_, schema):
        _v7_database(schema, 10)
        reader: Any = connect(pg_url(), schema)
        try:
            # A transaction left open after a read of memories: its lock lasts until it
            # ends (here at most 8 s, so a migration that waits for ever fails the test
            # rather than hanging it).
            reader.execute("SET idle_in_transaction_session_timeout = '8s'")
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM memories").fetchone()
            start = time.monotonic()
            with pytest.raises(StoreError) as failed:
                PostgresStore(pg_url(), schema=schema).close()
            waited = time.monotonic() - start
            message = str(failed.value)
            assert "V8 waited more than 0.5 s for a lock another session holds" in message
            assert "pg_stat_activity" in message and "open the store again" in message
            assert waited < 4, waited
            # nothing changed, and nothing waits behind it: the table reads at once
            assert _version(schema) == V8
            with connect(pg_url(), schema) as other:
                other.execute("SET lock_timeout = '1s'")
                (rows,) = other.execute("SELECT count(*) FROM memories").fetchone()
                assert rows == 11
            reader.execute("COMMIT")
        finally:
            reader.close()
        PostgresStore(pg_url(), schema=schema).close()  # the reader gone: it migrates
        assert _version(schema) == len(MIGRATIONS)
