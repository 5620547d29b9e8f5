"""A lock held outside the store never makes the PostgreSQL store wait for ever.

- The store's connections run with a ``lock_timeout`` (``LOCK_TIMEOUT_S``, 5 s, unless
  the database sets one: the URL's options, the role's...). Without one, a row locked by
  a session outside (an admin's open transaction, another app server that lost its
  network in the middle of one) kept every PATCH of that row waiting: the pool's eight
  connections filled with them and every other tenant's search got a 503 after waiting
  10 s for a connection, for as long as the lock stayed.
- ``contextos vacuum`` waits at most that long for each table's lock, whatever the
  session's ``lock_timeout``: behind an open reader its VACUUM FULL waited for ever, and
  every query of every process on the table queued behind its lock request.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest

from contextos.errors import StoreError
from contextos.store.base import Patch
from contextos.types import MemoryRecord, Scope, content_hash
from pg_support import connect, fresh_schema, pg_url

pytestmark = pytest.mark.postgres
pytest.importorskip("psycopg")

CLI = [sys.executable, "-c", "from contextos.cli.main import main; main()"]

#: Seconds an outside session holds its lock at most (``idle_in_transaction_session_
#: timeout``): longer than any wait the store should make, so a store that waits for
#: the lock instead of giving up fails the test (it then succeeds) rather than hangs it.
HELD_AT_MOST_S = 15


@contextmanager
def held(
    schema: str, sql: str, params: tuple[Any, ...] = (), *, isolation: str = "READ COMMITTED"
) -> Iterator[Any]:
    """A session outside the store, in ``schema``, that ran ``sql`` in a transaction it
    leaves open (and its locks held) until the block ends or ``HELD_AT_MOST_S`` passes;
    with ``isolation="REPEATABLE READ"`` (as pg_dump) it keeps its snapshot too."""
    conn = connect(pg_url(), schema)
    try:
        conn.execute(f"SET idle_in_transaction_session_timeout = '{HELD_AT_MOST_S}s'")
        conn.execute(f"BEGIN ISOLATION LEVEL {isolation}")
        conn.execute(sql, params).fetchall()
        yield conn
    finally:
        with contextlib.suppress(Exception):  # the server ended the session: no lock left
            conn.execute("ROLLBACK")
        conn.close()


def _record(memory_id: str, text: str) -> MemoryRecord:
    return MemoryRecord(id=memory_id, text=text, scope=Scope("t", "u"), hash=content_hash(text))


def test_a_pool_connection_gives_up_on_a_row_locked_outside_after_the_default_timeout() -> None:
    """Nothing set in the URL or the database: an update of a row another session holds
    fails after ``LOCK_TIMEOUT_S`` with a StoreError that says what happened."""
    from contextos.store.postgres import LOCK_TIMEOUT_S, PostgresStore

    with fresh_schema("lock_default") as (url, schema):
        store = PostgresStore(pg_url(), schema=schema)
        try:
            store.put([_record("m1", "the first text")])
            with held(schema, "SELECT 1 FROM memories WHERE id = 'm1' FOR UPDATE"):
                start = time.monotonic()
                with pytest.raises(StoreError) as failed:
                    store.update("t", "m1", Patch(text="edited"))
                waited = time.monotonic() - start
            assert LOCK_TIMEOUT_S - 0.5 < waited < LOCK_TIMEOUT_S + 3, waited
            message = str(failed.value)
            assert "waited more than 5s (lock_timeout) for a lock another session holds" in (
                message
            )
            assert "pg_stat_activity" in message and "changed nothing" in message
            got = store.get("t", "m1")
            assert got is not None and got.text == "the first text"
            store.update("t", "m1", Patch(text="edited"))  # the lock gone, it passes
        finally:
            store.close()


def _gives_up_after_300ms(store: Any, schema: str) -> None:
    """A patch of a row locked outside fails after the 300 ms ``lock_timeout`` set for
    ``store``'s sessions (not the store's own 5 s)."""
    store.put([_record("m1", "the first text")])
    with held(schema, "SELECT 1 FROM memories WHERE id = 'm1' FOR UPDATE"):
        start = time.monotonic()
        with pytest.raises(StoreError, match=r"waited more than 300ms \(lock_timeout\)"):
            store.update("t", "m1", Patch(text="edited"))
        assert time.monotonic() - start < 3


def test_the_urls_lock_timeout_is_kept() -> None:
    """A ``lock_timeout`` in the URL's options is the one the store's connections use."""
    from contextos.store.postgres import PostgresStore

    with fresh_schema("lock_url", "-c lock_timeout=300") as (url, schema):
        store = PostgresStore(url, schema=schema)
        try:
            _gives_up_after_300ms(store, schema)
        finally:
            store.close()


def test_pgoptions_are_kept_when_the_url_names_no_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libpq reads ``PGOPTIONS`` only for a connection that names no options, and the
    store names some: a ``lock_timeout`` (or ``statement_timeout``) set there was dropped,
    though docs/postgres.md says it is kept (a review)."""
    from contextos.store.postgres import PostgresStore

    schema = f"pgopt_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=300 -c statement_timeout=4321")
    store = PostgresStore(pg_url(), schema=schema)
    try:
        _gives_up_after_300ms(store, schema)
    finally:
        store.close()
        with connect(pg_url()) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_patches_of_a_row_locked_outside_do_not_starve_other_tenants_of_connections() -> None:
    """The reviewer's run: ``contextos serve`` (a pool of 8), an admin's transaction
    holding one memory's row lock, ten PATCHes of that memory. Each is answered 503 with
    Retry-After once the lock timeout passes (500 ms from the URL's options here; the
    default's 5 s is the test above), another tenant's search is served meanwhile, and
    once the lock is gone a PATCH goes through."""
    httpx = pytest.importorskip("httpx")
    from contextos.bench.serve import running_server
    from contextos.server.keys import KeyStore

    with fresh_schema("lock_serve", "-c lock_timeout=500") as (url, schema):
        with KeyStore(url) as keys:
            acme = {"Authorization": f"Bearer {keys.create('acme').secret}"}
            other = {"Authorization": f"Bearer {keys.create('other').secret}"}
        with running_server(url, "--embedder", "hash", "--rate", "0") as (base, _proc):

            def call(method: str, path: str, key: dict[str, str], body: Any) -> Any:
                return httpx.request(method, base + path, json=body, headers=key, timeout=30)

            added = call("POST", "/v1/memories", acme, {"messages": "apples", "user_id": "u"})
            assert added.status_code == 201, added.text
            mid = added.json()["results"][0]["id"]
            body = {"messages": "pears of the other tenant", "user_id": "v"}
            assert call("POST", "/v1/memories", other, body).status_code == 201

            def patch(i: int) -> tuple[Any, float]:
                start = time.monotonic()
                resp = call("PATCH", f"/v1/memories/{mid}", acme, {"text": f"edited {i}"})
                return resp, time.monotonic() - start

            with (
                held(schema, "SELECT 1 FROM memories WHERE id = %s FOR UPDATE", (mid,)),
                ThreadPoolExecutor(10) as pool,
            ):
                patches = [pool.submit(patch, i) for i in range(10)]
                time.sleep(0.3)  # every connection of the pool waits on the lock now
                start = time.monotonic()
                search = call(
                    "POST", "/v1/memories/search", other, {"query": "pears", "user_id": "v"}
                )
                searched = time.monotonic() - start
                answers = [f.result() for f in patches]
            assert search.status_code == 200, search.text
            assert [h["memory"]["text"] for h in search.json()["results"]] == [body["messages"]]
            assert searched < 5, searched  # not the pool's 10 s wait for a connection
            for resp, took in answers:
                assert resp.status_code == 503, resp.text
                assert resp.headers["retry-after"] == "1"
                assert took < 5, took
            again = call("PATCH", f"/v1/memories/{mid}", acme, {"text": "edited at last"})
            assert again.status_code == 200, again.text
            got = call("GET", f"/v1/memories/{mid}", acme, None).json()
            assert got["text"] == "edited at last"


def test_vacuum_behind_an_open_reader_gives_up_and_names_the_table() -> None:
    """``contextos vacuum`` on a database whose sessions wait for locks without limit
    (``lock_timeout=0``, PostgreSQL's own default) while a transaction that read
    ``memories`` stays open: it stops after ``LOCK_TIMEOUT_S`` with a message naming the
    table and where to look, and a query that queued behind its lock request then runs.
    With the reader gone, vacuum runs."""
    from contextos.store.postgres import LOCK_TIMEOUT_S, PostgresStore

    with fresh_schema("vacuum_lock", "-c lock_timeout=0") as (url, schema):
        PostgresStore(url, schema=schema).close()  # migrated

        def vacuum() -> subprocess.Popen[str]:
            return subprocess.Popen(
                [*CLI, "--db", url, "vacuum"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

        with held(schema, "SELECT count(*) FROM memories"):
            proc = vacuum()
            try:
                _wait_for_lock_waiter("VACUUM")
                # A query of another session now queues behind vacuum's request.
                other = connect(pg_url(), schema)
                other.execute("SET lock_timeout = '20s'")
                ran: list[float] = []
                start = time.monotonic()

                def count() -> None:
                    other.execute("SELECT count(*) FROM memories").fetchone()
                    ran.append(time.monotonic() - start)

                reader = threading.Thread(target=count)
                reader.start()
                out, _ = proc.communicate(timeout=HELD_AT_MOST_S + 10)
                reader.join(timeout=HELD_AT_MOST_S + 10)
                other.close()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert proc.returncode == 1, out
        assert f"vacuum waited more than {LOCK_TIMEOUT_S:g} s for a lock on table memories" in out
        assert "pg_stat_activity" in out and "tables vacuumed before it: none" in out
        assert ran and ran[0] < LOCK_TIMEOUT_S + 3, ran
        again = vacuum()
        out, _ = again.communicate(timeout=60)
        assert again.returncode == 0 and "vacuumed" in out, out


def _wait_for_lock_waiter(query: str) -> None:
    """Until a session running ``query`` waits for a lock."""
    with connect(pg_url()) as conn:
        for _ in range(200):
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE %s",
                (f"{query}%",),
            ).fetchone()[0]
            if waiting:
                return
            time.sleep(0.05)
    raise AssertionError(f"no session running {query} waits for a lock")


def test_a_store_opens_while_another_process_migrates_under_a_short_lock_timeout() -> None:
    """With a ``lock_timeout`` in the URL, a process opening the store while another one
    migrated (holding the migrations' advisory lock longer than that) failed; it waits
    for the migration, which must finish, and opens."""
    from contextos.store.postgres import PostgresStore
    from contextos.store.postgres.schema import LOCK_KEY

    with fresh_schema("lock_migrating", "-c lock_timeout=200") as (url, schema):
        with held(schema, "SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,)) as migrating:
            opened: list[Any] = []
            opener = threading.Thread(
                target=lambda: opened.append(PostgresStore(url, schema=schema))
            )
            opener.start()
            time.sleep(1)  # five lock timeouts
            assert opener.is_alive() and not opened
            migrating.execute("COMMIT")
            opener.join(timeout=30)
        assert len(opened) == 1
        opened[0].close()


def _waiting_on_a_lock(schema: str, query_start: str, within_s: float = 10) -> None:
    """Return once a session of ``schema``'s database waits on a lock in a statement that
    starts with ``query_start`` (pg_stat_activity)."""
    deadline = time.monotonic() + within_s
    with connect(pg_url()) as watch:
        while time.monotonic() < deadline:
            rows = watch.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                (query_start + "%",),
            ).fetchall()
            if rows:
                return
            time.sleep(0.02)
    raise AssertionError(f"no session waited on a lock in {query_start!r}")


def test_a_purge_that_postgresql_ends_to_break_a_deadlock_is_run_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two transactions that wait on each other: PostgreSQL ends one (40P01) and it rolls
    back whole. A purge that met an erasure or an add so raised the deadlock to its
    caller (a review: 3-12 errors in 15 s of two processes adding, purging and
    forgetting one user). Here a session outside holds the purged memory's history and
    then asks for its row; it waits 10 s before it looks for a deadlock, the store's
    session 1 s (the default), so the store's transaction is the one ended, and runs
    again once the outside session is gone."""
    from contextos.store.postgres import PostgresStore

    with fresh_schema("deadlock") as (url, schema):
        store = PostgresStore(pg_url(), schema=schema)
        try:
            store.put([_record("m1", "the secret")])
            caplog.set_level(logging.DEBUG, logger="contextos")
            with held(
                schema,
                "SELECT 1 FROM history WHERE tenant = 't' AND memory_id = 'm1' FOR UPDATE",
            ) as outside:
                outside.execute("SET deadlock_timeout = '10s'")
                with ThreadPoolExecutor(1) as pool:
                    purge = pool.submit(store.delete, "t", "m1", purge=True)
                    _waiting_on_a_lock(schema, "UPDATE history")  # m1's row is the store's
                    # The cycle: PostgreSQL ends the store's transaction after 1 s, and
                    # this one gets the row.
                    outside.execute("SELECT 1 FROM memories WHERE id = 'm1' FOR UPDATE")
                    outside.execute("ROLLBACK")
                    purge.result(timeout=30)  # the run after the deadlock: no error
            assert store.get("t", "m1") is None
            # Logged, but not as a failure: the write was run again and succeeded (a
            # warning said "PostgreSQL delete failed ... deadlock detected").
            deadlocks = [r for r in caplog.records if "deadlock detected" in r.getMessage()]
            assert deadlocks and all(r.levelno == logging.DEBUG for r in deadlocks)
            assert [e.old_text or e.new_text for e in store.history("t", "m1")] == [None, None]
        finally:
            store.close()


def _forgotten(schema_url: str, secret: str) -> Any:
    """A Memory on ``schema_url`` where a user said ``secret`` and was then forgotten."""
    from contextos.memory import Memory
    from contextos.store.postgres import PostgresStore
    from contextos.testing.embedders import HashEmbedder

    memory = Memory(
        store=PostgresStore(schema_url), embedder=HashEmbedder(), background_embedding=False
    )
    memory.add(f"my code word is {secret}", user_id="ana")
    memory.add("bob keeps his own notes", user_id="bob")
    return memory


def test_vacuum_names_a_transaction_older_than_it_that_keeps_erased_bytes() -> None:
    """A transaction begun before the erasure, anywhere in the database (here a snapshot,
    as pg_dump keeps, that touched no contextos table, so no lock is in the way), can
    still read the erased rows, and VACUUM FULL copies them into its new files. vacuum
    waits for it at most ``LOCK_TIMEOUT_S``, then says so, naming its pid, instead of
    "vacuumed"; once it has ended, vacuum leaves no byte of the user."""
    from contextos.store.postgres import LOCK_TIMEOUT_S
    from pg_support import files_holding

    secret = "qzolderthanvacuum1"
    with fresh_schema("vacuum_horizon") as (url, schema):
        memory = _forgotten(url, secret)
        with held(schema, "SELECT 1", isolation="REPEATABLE READ") as reader:
            memory.forget("ana")
            (pid,) = reader.execute("SELECT pg_backend_pid()").fetchone()
            started = time.monotonic()
            with pytest.raises(StoreError, match=r"transaction\(s\) that began before it") as err:
                memory.vacuum()
            assert f"pid {pid}" in str(err.value) and "pg_stat_activity" in str(err.value)
            assert LOCK_TIMEOUT_S <= time.monotonic() - started < LOCK_TIMEOUT_S + 8
        memory.vacuum()  # the reader gone: it succeeds
        found = files_holding(schema, secret.encode())
        memory.close()
        memory.store.close()  # passed in: the caller's to close
        if found is None:
            pytest.skip("the test PostgreSQL's data directory is not visible here")
        assert found == [], f"bytes of the user remain in {found}"


def test_vacuum_names_a_prepared_transaction_older_than_it_that_keeps_erased_bytes() -> None:
    """A transaction of another app prepared for two-phase commit before the erasure
    holds the database's cleanup horizon as an open one does, and VACUUM FULL copied the
    erased rows into its new files: `contextos vacuum` said "vacuumed" (it looked at
    client backends only; a standby's query with hot_standby_feedback, seen as a
    walsender's or a slot's xmin, did the same). It now waits, then exits 1 naming the
    prepared transaction; once it is rolled back, vacuum leaves no byte of the user."""
    from pg_support import files_holding

    secret = "qzpreparedbeforevacuum3"
    with fresh_schema("vacuum_prepared") as (url, schema):
        with connect(pg_url(), schema) as probe:
            (slots,) = probe.execute("SHOW max_prepared_transactions").fetchone()
        if int(slots) == 0:
            pytest.skip(
                "the test PostgreSQL runs with max_prepared_transactions = 0 (clusters "
                "scripts/postgres.sh creates have 4): no transaction can be prepared"
            )
        memory = _forgotten(url, secret)
        other = connect(pg_url(), schema)
        gid = f"other-app-{uuid.uuid4().hex[:8]}"
        try:
            other.execute("CREATE TABLE other_app (x int)")
            other.execute("BEGIN")
            other.execute("INSERT INTO other_app VALUES (1)")
            other.execute(f"PREPARE TRANSACTION '{gid}'")
            memory.forget("ana")
            run = subprocess.run(
                [*CLI, "--db", url, "vacuum"], capture_output=True, text=True, timeout=60
            )
            assert run.returncode == 1, run.stdout + run.stderr
            assert "vacuumed" not in run.stdout
            assert f"prepared transaction '{gid}'" in run.stderr, run.stderr
            assert "pg_prepared_xacts" in run.stderr
        finally:
            with contextlib.suppress(Exception):
                other.execute(f"ROLLBACK PREPARED '{gid}'")
            other.close()
        memory.vacuum()  # nothing older now: it succeeds
        found = files_holding(schema, secret.encode())
        memory.close()
        memory.store.close()  # passed in: the caller's to close
        if found is None:
            pytest.skip("the test PostgreSQL's data directory is not visible here")
        assert found == [], f"bytes of the user remain in {found}"


def test_vacuum_waits_for_an_older_transaction_that_ends_soon() -> None:
    """An older transaction that ends within the wait: vacuum waits for it, then leaves
    no byte of the forgotten user and raises nothing."""
    from pg_support import files_holding

    secret = "qzolderthanvacuum2"
    with fresh_schema("vacuum_wait") as (url, schema):
        memory = _forgotten(url, secret)
        with held(schema, "SELECT 1", isolation="REPEATABLE READ") as reader:
            memory.forget("ana")
            ender = threading.Timer(1.0, lambda: reader.execute("ROLLBACK"))
            ender.start()
            started = time.monotonic()
            memory.vacuum()
            waited = time.monotonic() - started
            ender.join()
        assert waited >= 0.9, waited
        found = files_holding(schema, secret.encode())
        memory.close()
        memory.store.close()  # passed in: the caller's to close
        if found is None:
            pytest.skip("the test PostgreSQL's data directory is not visible here")
        assert found == [], f"bytes of the user remain in {found}"
        assert [r.text for r in memory_texts(url)] == ["bob keeps his own notes"]


def memory_texts(url: str) -> list[Any]:
    from contextos.store.postgres import PostgresStore
    from contextos.types import Filter

    store = PostgresStore(url)
    try:
        return store.list(Filter(scope=Scope(tenant="default", user_id="bob")), limit=10)
    finally:
        store.close()
