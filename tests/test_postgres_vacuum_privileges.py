"""``contextos vacuum`` as the application's own role, not a superuser (what a managed
PostgreSQL gives an app): the role owns its database and the tables contextos created
there; a superuser ran ``CREATE EXTENSION vector`` once (docs/postgres.md).

Why: the vacuum rewrote every table, then its final CHECKPOINT (superuser or
``pg_checkpoint`` only) was refused and the command said "vacuum failed", exit 1, so a
nightly erasure job under the app's role could never succeed (a review, session 57).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from pg_support import connect, pg_url

pytestmark = pytest.mark.postgres
pytest.importorskip("psycopg")

CLI = [sys.executable, "-c", "from contextos.cli.main import main; main()"]


@contextmanager
def app_database() -> Iterator[tuple[str, str]]:
    """A new login role, not a superuser, owning a new database with ``vector`` in it
    (created by the test's superuser); the app's URL and the superuser's URL of that
    database. Both are dropped afterwards."""
    admin = pg_url()
    tag = uuid.uuid4().hex[:10]
    role, db, password = f"ctx_app_{tag}", f"ctx_app_{tag}", f"pw{tag}"
    parts = urlsplit(admin)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{role}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    app_url = urlunsplit((parts.scheme, netloc, f"/{db}", parts.query, ""))
    admin_db_url = urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))
    with connect(admin) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f"CREATE DATABASE {db} OWNER {role}")
    try:
        with connect(admin_db_url) as conn:
            conn.execute("CREATE EXTENSION vector")
        yield app_url, admin_db_url
    finally:
        with connect(admin) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--db", url, *args], capture_output=True, text=True, timeout=120)


def files_holding(admin_db_url: str, needle: bytes) -> list[str] | None:
    """The relation files of the database's ``public`` schema holding ``needle`` (after
    a checkpoint by the superuser, so what is in shared buffers is on disk too); None
    when the server's data directory is not visible from here."""
    base = Path(os.environ.get("CONTEXTOS_TEST_PG_DIR", "")) / "data"
    if not os.environ.get("CONTEXTOS_TEST_PG_DIR") or not base.is_dir():
        return None
    with connect(admin_db_url) as conn:
        conn.execute("CHECKPOINT")
        rows = conn.execute(
            "SELECT c.relname, pg_relation_filepath(c.oid) FROM pg_class c JOIN "
            "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
            "AND pg_relation_filepath(c.oid) IS NOT NULL"
        ).fetchall()
    found = []
    for name, path in rows:
        file = base / path
        if any(needle in f.read_bytes() for f in [file, *file.parent.glob(file.name + ".*")]):
            found.append(name)
    return found


def test_vacuum_by_a_role_that_may_not_checkpoint_succeeds_and_says_what_waits() -> None:
    secret = "qznonsupervacuum4"
    with app_database() as (url, admin_db_url):
        with connect(url) as conn:
            (checkpoints,) = conn.execute(
                "SELECT rolsuper OR pg_has_role(current_user, 'pg_checkpoint', 'USAGE') "
                "FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
        assert not checkpoints  # the shape of use: the app's role may not checkpoint
        for args in (
            ("add", f"my code word is {secret}", "-u", "ana"),
            ("add", "bob keeps his own notes", "-u", "bob"),
            ("forget", "-u", "ana", "--yes"),
        ):
            step = _cli(url, *args)
            assert step.returncode == 0, step.stdout + step.stderr
        run = _cli(url, "vacuum")
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.strip() == "vacuumed"
        note = " ".join(run.stderr.split())
        assert "note: every table was rewritten" in note, run.stderr
        assert "next automatic checkpoint" in note and "pg_checkpoint" in note
        as_json = _cli(url, "--json", "vacuum")
        assert as_json.returncode == 0, as_json.stdout + as_json.stderr
        out = json.loads(as_json.stdout)
        assert out["vacuumed"] is True and "pg_checkpoint" in out["notes"][0]
        found = files_holding(admin_db_url, secret.encode())
        if found is None:
            pytest.skip("the test PostgreSQL's data directory is not visible here")
        assert found == [], f"bytes of the user remain in {found}"


def test_vacuum_leaves_no_replaced_planner_statistics_quoting_a_forgotten_user() -> None:
    """vacuum's ANALYZE puts a frequent user's id among the planner statistics' most
    common values; after forget, the next vacuum's ANALYZE replaces that row, and the
    old one stayed in pg_statistic's file as a dead tuple (a review found the id there
    4 times). vacuum now rewrites pg_statistic too."""
    from contextos.memory import Memory
    from contextos.store.postgres import PostgresStore
    from contextos.testing.embedders import HashEmbedder

    user = "qzstatsuser5"
    with app_database() as (_, admin_db_url):
        memory = Memory(
            store=PostgresStore(admin_db_url), embedder=HashEmbedder(), background_embedding=False
        )
        try:
            for i in range(30):
                memory.add(f"note {i} of the frequent one", user_id=user)
                memory.add(f"note {i} of bob", user_id="bob")
            for i in range(20):
                memory.add(f"a note of user {i}", user_id=f"other{i}")
            assert memory.vacuum() == ()  # its ANALYZE quotes the user in the statistics
            with connect(admin_db_url) as conn:
                (quoted,) = conn.execute(
                    "SELECT count(*) FROM pg_stats WHERE most_common_vals::text LIKE %s",
                    (f"%{user}%",),
                ).fetchone()
            assert quoted > 0
            memory.forget(user)
            assert memory.vacuum() == ()
        finally:
            memory.close()
            memory.store.close()
        found = statistic_files_holding(admin_db_url, user.encode())
        if found is None:
            pytest.skip("the test PostgreSQL's data directory is not visible here")
        assert found == [], f"bytes of the user remain in {found}"


def statistic_files_holding(admin_db_url: str, needle: bytes) -> list[str] | None:
    """pg_statistic's files (heap and TOAST) in the database that hold ``needle``."""
    base = Path(os.environ.get("CONTEXTOS_TEST_PG_DIR", "")) / "data"
    if not os.environ.get("CONTEXTOS_TEST_PG_DIR") or not base.is_dir():
        return None
    with connect(admin_db_url) as conn:
        conn.execute("CHECKPOINT")
        rows = conn.execute(
            "SELECT c.relname, pg_relation_filepath(c.oid) FROM pg_class c WHERE c.oid IN "
            "('pg_catalog.pg_statistic'::regclass, (SELECT reltoastrelid FROM pg_class "
            "WHERE oid = 'pg_catalog.pg_statistic'::regclass))"
        ).fetchall()
    return [name for name, path in rows if needle in (base / path).read_bytes()]


def test_vacuum_that_ends_naming_a_holder_keeps_its_notes() -> None:
    """A vacuum that ends with the error naming an older transaction also says what its
    role could not do. Why: the notes ("may not run CHECKPOINT") were dropped with that
    error, so the operator ended the transaction, ran vacuum again, and only then
    learnt about the role's privileges (a review, session 57)."""
    with app_database() as (url, _):
        step = _cli(url, "add", "a note of ana", "-u", "ana")
        assert step.returncode == 0, step.stdout + step.stderr
        # The app's own role: one that is no superuser sees its own sessions' horizons.
        with connect(url) as other:
            other.execute("BEGIN")
            other.execute("SELECT txid_current()").fetchone()  # older than the erasure
            (pid,) = other.execute("SELECT pg_backend_pid()").fetchone()
            step = _cli(url, "forget", "-u", "ana", "--yes")
            assert step.returncode == 0, step.stdout + step.stderr
            run = _cli(url, "vacuum")
            other.execute("ROLLBACK")
        error = " ".join(run.stderr.split())
        assert run.returncode == 1, run.stdout + run.stderr
        assert f"pid {pid}" in error and "Also: every table was rewritten" in error, error
        assert "pg_checkpoint" in error
