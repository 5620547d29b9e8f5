"""``contextos serve`` on a PostgreSQL that has too few connections, and the liveness
settings of the store's sessions. A role with a connection limit stands for a server
out of connections. Real server, real PostgreSQL, real HTTP. (A server stopped while
PostgreSQL is frozen: tests/test_shutdown_frozen_pg.py.)
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from cli_support import logged_server

httpx = pytest.importorskip("httpx")

from contextos.server.keys import KeyStore  # noqa: E402
from contextos.store.postgres.pool import LIVENESS, with_liveness  # noqa: E402
from contextos.types import Scope  # noqa: E402


def test_the_stores_sessions_carry_the_liveness_settings_unless_the_url_sets_them() -> None:
    # TCP keepalives and tcp_user_timeout (with application_name) are set by one rule,
    # each only where the URL names none: the name is the one visible from the server.
    from contextos.store.postgres import PostgresStore
    from pg_support import connect, fresh_schema, pg_url

    with fresh_schema("live") as (url, schema):
        store = PostgresStore(url, schema=schema)
        try:
            store.find_by_hash(Scope(tenant="t", user_id="u"), "0" * 32)  # a session in use
            with connect(pg_url()) as conn:
                names = {
                    r[0]
                    for r in conn.execute(
                        "SELECT application_name FROM pg_stat_activity WHERE datname = "
                        "current_database() AND pid <> pg_backend_pid()"
                    ).fetchall()
                }
            assert "contextos" in names, names
        finally:
            store.close()
    assert with_liveness("postgresql://h/db", {}) == LIVENESS
    for key in LIVENESS:  # the URL's own value is kept (libpq reads it from the URL)
        assert key not in with_liveness(f"postgresql://h/db?{key}=7", {})
    # A service file's settings and the user's PGAPPNAME win; a malformed URL is left
    # for the connection to refuse in its own words.
    assert with_liveness("postgresql:///?service=prod", {"x": 1}) == {"x": 1}
    assert with_liveness("postgresql://h/db?sslmod=require", {"x": 1}) == {"x": 1}


def test_pgappname_names_the_stores_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGAPPNAME", "billing-worker")
    assert "application_name" not in with_liveness("postgresql://h/db", {})
    monkeypatch.setenv("PGSERVICE", "prod")
    assert with_liveness("postgresql://h/db", {}) == {}


def test_workers_past_the_databases_connections_wait_instead_of_crashing(
    tmp_path: Path,
) -> None:
    """``serve --workers 2`` against a role PostgreSQL allows too few connections for
    both: the second worker died at start with a 45-line traceback and uvicorn started
    it again at once, for ever (24 crashes, 1,398 log lines in 45 s in a review). It now
    waits and tries again, one line a try, while the first worker serves."""
    from urllib.parse import urlsplit, urlunsplit

    from pg_support import connect, pg_url

    role = f"capped_{uuid.uuid4().hex[:8]}"
    admin = pg_url()
    with connect(admin) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'capped' CONNECTION LIMIT 3")
        conn.execute(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
    try:
        parts = urlsplit(admin)
        host = parts.netloc.rsplit("@", 1)[-1]
        query = f"options=-csearch_path%3D{role}%2Cpublic&application_name={role}"
        url = urlunsplit((parts.scheme, f"{role}:capped@{host}", parts.path, query, ""))
        with KeyStore(url) as keys:
            key = keys.create("acme").secret
        log = tmp_path / "serve.log"
        with logged_server(url, log, "--workers", "2") as (base, proc):
            # The second worker finds no connection and says so (it tries 1 s, 2 s, 4 s
            # apart), while the first serves.
            deadline = time.monotonic() + 30
            while "could not open the store" not in log.read_text(errors="replace"):
                assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
                time.sleep(0.2)
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as c:
                answer = c.post("/v1/memories", json={"messages": "tea", "user_id": "a"})
            proc.terminate()
            proc.wait(timeout=60)
        said = log.read_text(encoding="utf-8", errors="replace")
        assert answer.status_code == 201, answer.text
        assert "could not open the store" in said, said[-2000:]
        assert "Traceback" not in said, said[-3000:]
    finally:
        with connect(admin) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(f"DROP SCHEMA {role} CASCADE")
            conn.execute(f"DROP ROLE {role}")
