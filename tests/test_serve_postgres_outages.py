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


def test_an_outage_is_logged_in_the_servers_format_without_a_line_a_retry(
    tmp_path: Path,
) -> None:
    """PostgreSQL gone for a few seconds under a client that keeps asking: psycopg_pool's
    own lines ("error connecting in 'contextos': ...", with a tab-indented "Is the server
    running" line after each) were written bare, split over lines, about 13 a second
    (193 in a 15 s outage, a review). They now come in the server's format (a level
    prefix), one line each, and a line repeated within seconds is written once."""
    import threading

    from pg_support import fresh_schema
    from tcp_proxy import proxied

    with fresh_schema("outlog") as (url, _schema), proxied(url) as (through, proxy):
        with KeyStore(through) as keys:
            key = keys.create("acme").secret
        log = tmp_path / "serve.log"
        with (
            logged_server(through, log) as (base, _proc),
            httpx.Client(
                base_url=base, timeout=30, headers={"Authorization": f"Bearer {key}"}
            ) as c,
        ):
            assert c.post("/v1/memories/search", json={"query": "tea", "user_id": "a"}).is_success
            proxy.down()
            asking = time.monotonic() + 4.0

            def ask() -> None:
                with httpx.Client(
                    base_url=base, timeout=30, headers={"Authorization": f"Bearer {key}"}
                ) as each:
                    while time.monotonic() < asking:
                        each.post("/v1/memories/search", json={"query": "tea", "user_id": "a"})

            clients = [threading.Thread(target=ask) for _ in range(4)]
            for t in clients:
                t.start()
            for t in clients:
                t.join(timeout=60)
            proxy.up()
            back = c.post("/v1/memories/search", json={"query": "tea", "user_id": "a"})
        said = log.read_text(encoding="utf-8", errors="replace")
    assert back.is_success, back.text
    lines = said.splitlines()
    pool_lines = [line for line in lines if "error connecting in" in line]
    assert pool_lines, said[-3000:]  # the outage was seen (else the test tests nothing)
    assert not [line for line in lines if line[:1].isspace()], said[-3000:]
    assert all(line.startswith("WARNING:") for line in pool_lines), pool_lines[:5]
    # One line per distinct message in a few seconds, not one a retry.
    assert len(pool_lines) <= 2 * len(set(pool_lines)) + 2, pool_lines


def test_a_repeat_after_the_window_says_how_many_were_left_out() -> None:
    import logging

    from contextos.server.log_repeats import REMEMBERED, OneLineQuietRepeats

    quiet = OneLineQuietRepeats(window_s=0.3)

    def record(msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("psycopg.pool", logging.WARNING, __file__, 1, msg, args, None)

    first = record("error connecting in %r: %s", "pool", "refused\n\tIs the server running?")
    assert quiet.filter(first)
    assert first.getMessage() == "error connecting in 'pool': refused Is the server running?"
    same = "error connecting in 'pool': refused\n\tIs the server running?"
    assert not any(quiet.filter(record(same)) for _ in range(5))
    assert quiet.filter(record("another message"))  # each distinct message its own window
    time.sleep(0.35)
    later = record(same)
    assert quiet.filter(later)
    assert later.getMessage().endswith("(5 more like it in the last 0.3 s)")
    # A flood of distinct messages is not remembered without bound: the oldest is
    # forgotten (so written again at once, inside its window).
    assert all(quiet.filter(record(f"message {n}")) for n in range(REMEMBERED + 1))
    assert not quiet.filter(record(f"message {REMEMBERED}"))
    assert quiet.filter(record("message 0"))
    # Lines under warning (a --log-level that asks for them) are all written.
    debug = logging.LogRecord("psycopg.pool", logging.DEBUG, __file__, 1, "try\n\tagain", (), None)
    assert quiet.filter(debug) and quiet.filter(debug) and debug.getMessage() == "try again"
