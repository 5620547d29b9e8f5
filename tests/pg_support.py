"""The PostgreSQL that ``make test`` starts (scripts/postgres.sh), as test helpers.

``source scripts/postgres.sh start`` exports ``CONTEXTOS_TEST_PG_URL``; when it
could not start it exports ``CONTEXTOS_TEST_PG_SKIP_REASON`` (and writes
``.pgdata/skip-reason``) instead, and the PostgreSQL tests skip with that
reason. Set ``CONTEXTOS_TEST_PG_REQUIRED=1`` to make them fail instead.

Each store gets a schema of its own, dropped afterwards, so tests never see
each other's rows and can run in any order.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

REPO = Path(__file__).resolve().parents[1]


def skip_reason() -> str:
    """Why there is no test PostgreSQL (for the skip message)."""
    reason = os.environ.get("CONTEXTOS_TEST_PG_SKIP_REASON", "")
    if not reason:
        try:
            reason = (REPO / ".pgdata" / "skip-reason").read_text(encoding="utf-8").strip()
        except OSError:
            reason = ""
    return reason or (
        "CONTEXTOS_TEST_PG_URL is not set: run the suite with `make test` "
        "(or `source scripts/postgres.sh start` first)"
    )


def pg_url() -> str:
    """The test server's URL, or skip (fail when CONTEXTOS_TEST_PG_REQUIRED is set)."""
    url = os.environ.get("CONTEXTOS_TEST_PG_URL", "")
    if url:
        return url
    if os.environ.get("CONTEXTOS_TEST_PG_REQUIRED"):
        pytest.fail(f"PostgreSQL is required but unavailable: {skip_reason()}")
    pytest.skip(f"PostgreSQL unavailable: {skip_reason()}")


def connect(url: str, schema: str | None = None) -> Any:
    """A plain autocommit psycopg connection (to look at what the store wrote)."""
    import psycopg

    options = f"-c search_path={schema},public" if schema else ""
    return psycopg.connect(url, autocommit=True, options=options)


def with_options(url: str, options: str) -> str:
    """``url`` with server settings for its sessions (``-c name=value ...``)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(options)}"


@contextmanager
def fresh_schema(prefix: str, options: str = "") -> Iterator[tuple[str, str]]:
    """A new schema of the test PostgreSQL (skips when none runs), dropped afterwards:
    a URL whose sessions work in it (and run with ``options``, e.g. ``-c
    lock_timeout=500``), and the schema's name."""
    url = pg_url()
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with connect(url) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_options(url, f"-c search_path={schema},public {options}".strip()), schema
    finally:
        with connect(url) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def files_holding(schema: str, needle: bytes) -> list[str] | None:
    """The relation files of ``schema`` on the test server's disk that contain
    ``needle``; None when its data directory is not visible from here."""
    base = Path(os.environ.get("CONTEXTOS_TEST_PG_DIR", "")) / "data"
    if not os.environ.get("CONTEXTOS_TEST_PG_DIR") or not base.is_dir():
        return None
    with connect(pg_url(), schema) as conn:
        files = [
            r[0]
            for r in conn.execute(
                "SELECT pg_relation_filepath(c.oid) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = %s "
                "AND pg_relation_filepath(c.oid) IS NOT NULL",
                (schema,),
            ).fetchall()
        ]
    found = []
    for name in files:
        path = base / name
        segments = [path, *sorted(path.parent.glob(path.name + ".*"))]
        if any(needle in seg.read_bytes() for seg in segments if seg.is_file()):
            found.append(name)
    return found


@contextmanager
def postgres_store(*, options: str = "", **kwargs: Any) -> Iterator[Any]:
    """A PostgresStore in a fresh schema; the schema is dropped afterwards."""
    from contextos.store.postgres import PostgresStore

    url = pg_url()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    store = PostgresStore(with_options(url, options) if options else url, schema=schema, **kwargs)
    try:
        yield store
    finally:
        store.close()
        with connect(url) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@contextmanager
def two_handles() -> Iterator[tuple[Any, Any]]:
    """Two PostgresStores on one fresh schema, as two processes (two app servers) hold
    the store; the schema is dropped afterwards."""
    from contextos.store.postgres import PostgresStore

    with postgres_store() as a:
        b = PostgresStore(pg_url(), schema=a.schema)
        try:
            yield a, b
        finally:
            b.close()


@contextmanager
def two_stores(kind: str, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """Two independent stores on one storage, as two processes hold it: on a SQLite file
    under ``tmp_path`` (``kind`` "sqlite") or on a fresh PostgreSQL schema."""
    if kind != "sqlite":
        with two_handles() as handles:
            yield handles
        return
    from contextos.store.sqlite import SQLiteStore

    a, b = SQLiteStore(tmp_path / "m.db"), SQLiteStore(tmp_path / "m.db")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@contextmanager
def memory_on(kind: str, tmp_path: Path, **kwargs: Any) -> Iterator[Any]:
    """A Memory on a SQLite file under ``tmp_path`` (``kind`` "sqlite") or on a fresh
    PostgreSQL schema (``kind`` "postgres", dropped afterwards): the two stores a test
    parametrised over both runs against, the Memory closed at the end."""
    from contextos.memory import Memory

    if kind == "sqlite":
        with Memory(tmp_path / "m.db", **kwargs) as m:
            yield m
        return
    with postgres_store() as store:
        m = Memory(store=store, **kwargs)
        try:
            yield m
        finally:
            m.close()


def at_once(action: Callable[[], object], threads: int = 8) -> list[BaseException]:
    """Run ``action`` on ``threads`` threads released together (processes opening one
    database at the same moment); what each raised, in no order."""
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            action()
        except BaseException as exc:  # collected: the caller's assertion shows them
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return errors


def rows_mentioning(url: str, schema: str, needles: list[str]) -> list[str]:
    """``"<table>: <needle>"`` for each needle found in a row (as text) of a table of
    ``schema``: how an erasure test proves no row keeps the erased words."""
    hits = []
    with connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_type = 'BASE TABLE'",
                (schema,),
            )
        ]
        assert tables
        for table in tables:
            for (row,) in conn.execute(f'SELECT t::text FROM {schema}."{table}" t'):
                hits += [f"{table}: {n}" for n in needles if n in row]
    return hits
