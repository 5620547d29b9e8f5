"""``contextos serve`` on a PostgreSQL that freezes, or that has too few connections.

A database host that freezes keeps its TCP connections open: a request whose query was
sent waits for an answer, and its thread is no daemon. A server sent SIGTERM then
printed "contextos stopped (store closed)" and ran on for as long as the database stayed
frozen, whatever ``--shutdown-timeout`` said, until its supervisor killed it (a review:
still running 90 s after SIGTERM). The freeze is made real here: the server's own
PostgreSQL backends (found by their ``application_name``) are stopped with SIGSTOP,
and always resumed. A role with a connection limit stands for a server out of
connections. Real server, real PostgreSQL, real HTTP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from cli_support import logged_server

httpx = pytest.importorskip("httpx")

from contextos.server.keys import KeyStore  # noqa: E402
from contextos.store.postgres.pool import LIVENESS, with_liveness  # noqa: E402
from contextos.types import Scope  # noqa: E402

# It stops PostgreSQL backends and times a shutdown: alone, after the rest.
pytestmark = pytest.mark.serial


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_server_stops_within_its_bounds_while_postgres_is_frozen(
    tmp_path: Path, workers: str
) -> None:
    from pg_support import connect, fresh_schema, pg_url

    name = f"contextos-frozen-{uuid.uuid4().hex[:8]}"
    with fresh_schema("frozen") as (url, _schema):
        url = f"{url}&application_name={name}"
        with KeyStore(url) as keys:
            key = keys.create("acme").secret
        log = tmp_path / "serve.log"
        options = ("--shutdown-timeout", "1", "--workers", workers)
        with logged_server(url, log, *options) as (base, proc):
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=base, headers=headers, timeout=5) as http:
                body = {"messages": "before the freeze", "user_id": "ana"}
                assert http.post("/v1/memories", json=body).status_code == 201

            # Reads at once first, so the pool holds several idle sessions to freeze: with
            # one, the server's own background reads (its embedding worker's) could take
            # it first, and every add got a new session (seen in session 49 on base and
            # head alike).
            def read() -> None:
                with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
                    c.get("/v1/memories", params={"user_id": "ana"})

            readers = [threading.Thread(target=read) for _ in range(16)]
            for r in readers:
                r.start()
            for r in readers:
                r.join()
            with connect(pg_url()) as conn:
                pids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (name,)
                    ).fetchall()
                ]
            assert pids, "the server's PostgreSQL sessions were not found by their name"
            try:
                for pid in pids:
                    os.kill(pid, signal.SIGSTOP)
                answers: list[object] = []

                def add(i: int) -> None:
                    try:
                        with httpx.Client(base_url=base, headers=headers, timeout=120) as c:
                            answers.append(
                                c.post("/v1/memories", json={"messages": f"n{i}", "user_id": "a"})
                            )
                    except httpx.HTTPError as exc:
                        answers.append(exc)

                clients = [threading.Thread(target=add, args=(i,)) for i in range(3)]
                for c in clients:
                    c.start()
                time.sleep(2)  # an add took a frozen session (others may get new ones)
                assert len(answers) < len(clients), answers
                proc.send_signal(signal.SIGTERM)
                began = time.monotonic()
                try:
                    proc.wait(timeout=75)
                except subprocess.TimeoutExpired:
                    pytest.fail("the server was still running 75 s after SIGTERM")
                took = time.monotonic() - began
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
            for c in clients:
                c.join(30)
    said = log.read_text(encoding="utf-8", errors="replace")
    print(f"stopped {took:.1f} s after SIGTERM; {len(answers)} answers")
    # --shutdown-timeout 1, then at most 45 s (stop_watch.SHUTDOWN_LIMIT_S): 5 s once
    # the store is closed, whatever threads still wait
    assert took < 60, (took, said[-2000:])
    assert proc.returncode == 0, said[-2000:]
    if workers == "1":  # the add on the frozen session holds a thread of this process
        assert "still wait" in said, said[-2000:]
    # The add the freeze held was cut off by the shutdown: answered in the API's error
    # shape (a plain-text 500 and a 30-line traceback in the log, before).
    cut = [a for a in answers if isinstance(a, httpx.Response) and a.status_code != 201]
    assert cut, answers
    assert all(a.status_code == 503 and a.headers.get("retry-after") == "1" for a in cut), [
        (a.status_code, a.text) for a in cut
    ]
    assert all(a.json()["error"]["type"] == "ShuttingDown" for a in cut)
    assert "Exception in ASGI application" not in said, said[-3000:]
    assert "cut off by the shutdown: POST '/v1/memories'" in said, said[-2000:]


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
            time.sleep(8)  # the second worker tries 1 s, 2 s, 4 s apart meanwhile
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
