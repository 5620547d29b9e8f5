"""A store left open while its database is restored (``pg_restore --clean``) goes on
working: its next calls run on fresh connections.

A review: ``pg_restore --clean --if-exists`` of a whole database under a running
``contextos serve`` dropped and created the ``vector`` extension again, with a new type
oid. The pool's connections had their searches prepared by psycopg (after
``prepare_threshold``, 5 runs), and a prepared statement keeps its parameters' types:
every search failed with XX000 "cache lookup failed for type 16386", a 503 "retry after
a moment", for ever, until a restart.

How the situation is made: for real, as a user makes it. ``--clean`` of the extension
cannot be scoped to one schema (the extension, and its type, belong to the database),
and the shared test database is used by other tests at the same time, so dropping its
``vector`` would break them. The test makes a database of its own instead (CREATE
DATABASE, skipped when the role may not), with the store's tables in it, runs the
user's commands on that database (``pg_dump -Fc``, then ``pg_restore --clean --if-exists
--single-transaction --exit-on-error``), and drops that database at the end; nothing
else on the server is touched. It skips, saying why, without a test PostgreSQL or
without pg_dump/pg_restore of the server's major version.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from contextos.memory import Memory
from contextos.store.postgres import PostgresStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, Scope

#: More runs of each statement than psycopg's prepare_threshold (5).
RUNS = 8


def _tool(name: str, major: int) -> str:
    """The path of PostgreSQL's ``name`` of the server's ``major`` version, or skip."""
    found = [*sorted(glob.glob(f"/usr/lib/postgresql/{major}/bin/{name}"))]
    on_path = shutil.which(name)
    if on_path:
        found.append(on_path)
    for path in found:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
        words = out.stdout.split()
        if out.returncode == 0 and words and words[-1].split(".")[0] == str(major):
            return path
    pytest.skip(f"no {name} of PostgreSQL {major} (the test server's) on this machine")


@contextmanager
def own_database() -> Iterator[tuple[str, int]]:
    """A new database on the test server (its URL and the server's major version),
    dropped afterwards; skips when the role may not create one."""
    import psycopg

    from pg_support import connect, pg_url

    url = pg_url()
    name = f"contextos_restore_{uuid.uuid4().hex[:12]}"
    with connect(url) as conn:
        major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
        try:
            conn.execute(f"CREATE DATABASE {name}")
        except psycopg.errors.InsufficientPrivilege as exc:
            pytest.skip(f"the test role may not create a database of its own: {exc}")
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        pytest.skip("CONTEXTOS_TEST_PG_URL is not a postgresql:// URL")
    try:
        yield urlunsplit(parts._replace(path=f"/{name}")), major
    finally:
        with connect(url) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _vector_oid(url: str) -> Any:
    from pg_support import connect

    with connect(url) as conn:
        return conn.execute("SELECT oid FROM pg_type WHERE typname = 'vector'").fetchone()[0]


def test_search_and_add_succeed_after_pg_restore_clean_under_an_open_store(
    tmp_path: Path,
) -> None:
    with own_database() as (url, major):
        pg_dump, pg_restore = _tool("pg_dump", major), _tool("pg_restore", major)
        store = PostgresStore(url)
        probe = Filter(Scope("t", "ana"))
        vector = HashEmbedder().embed(["bees"])[0]
        with Memory(store=store, embedder=HashEmbedder()) as memory:
            memory.add("Ana keeps bees on the roof.", user_id="ana")
            assert memory.flush(timeout=30)
            # Every statement of a search and of an add prepared on the pool's connections.
            for i in range(RUNS):
                assert memory.search("bees", user_id="ana")
                store.vector_search(probe, vector, limit=5)
                memory.add(f"Ana planted tree number {i}.", user_id="ana")
            assert memory.flush(timeout=30)
            before = _vector_oid(url)
            dump = tmp_path / "backup.pgc"
            subprocess.run([pg_dump, "-Fc", "-f", str(dump), url], check=True)
            done = subprocess.run(
                [
                    pg_restore,
                    "--clean",
                    "--if-exists",
                    "--single-transaction",
                    "--exit-on-error",
                    "-d",
                    url,
                    str(dump),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            # The situation of the review: the extension's type is a new one.
            assert _vector_oid(url) != before

            # The same open store: no error, on the first call already. The store's own
            # vector search first: Memory.search answers from its keyword arm when the
            # vector arm fails, which would hide the failure.
            store.vector_search(probe, vector, limit=5)
            for _ in range(RUNS):
                hits = memory.search("bees", user_id="ana")
                assert [h.record.text for h in hits][:1] == ["Ana keeps bees on the roof."]
            memory.add("Ana sells honey at the market.", user_id="ana")
            assert memory.flush(timeout=30)
            texts = [h.record.text for h in memory.search("honey market", user_id="ana")]
            assert "Ana sells honey at the market." in texts
