"""The API-key table on PostgreSQL: through connection loss, and opened by many at once.

- ``contextos serve`` read its keys through one connection, reconnected only after a
  statement failed on it: the first request after every connection loss (a restart of
  PostgreSQL, ``pg_terminate_backend``, ``idle_session_timeout`` as managed services and
  proxies set it) was a 503. Its connections are checked before use now, as the store's.
- ``CREATE TABLE IF NOT EXISTS`` is not race-free: of processes opening the key table of
  a new database at once (replicas rolling out), some failed on pg_type's unique index.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest

from pg_support import at_once, connect, fresh_schema, pg_url

pytestmark = pytest.mark.postgres
pytest.importorskip("psycopg")
httpx = pytest.importorskip("httpx")

ADMIN = "an-admin-key-of-the-test-0123"


@contextmanager
def served(options: str = "") -> Iterator[tuple[str, str, str, dict[str, str]]]:
    """``contextos serve`` on a fresh schema whose every session carries an application
    name of its own (so the test can end them all): the server's URL, that name, the
    schema, and the headers of a key of tenant acme."""
    from contextos.bench.serve import running_server
    from contextos.server.keys import KeyStore

    name = f"keys_{uuid.uuid4().hex[:12]}"
    with fresh_schema("keys_srv", options) as (url, schema):
        url = f"{url}&application_name={name}"
        with KeyStore(url) as keys:
            key = {"Authorization": f"Bearer {keys.create('acme').secret}"}
        flags = ("--embedder", "hash", "--rate", "0", "--admin-key", ADMIN)
        with running_server(url, *flags) as (base, _proc):
            yield base, name, schema, key


def _search(base: str, key: dict[str, str]) -> Any:
    return httpx.post(
        f"{base}/v1/memories/search", json={"query": "x", "user_id": "u"}, headers=key, timeout=30
    )


def _sessions(name: str, where: str = "true") -> int:
    with connect(pg_url()) as conn:
        found = conn.execute(
            f"SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND {where}",
            (name,),
        ).fetchone()[0]
    return int(found)


def _grow_the_pools(base: str, name: str, schema: str, key: dict[str, str]) -> None:
    """Six searches at once, held on a lock of ``memories`` until each has a connection
    of the server's store: its pool holds six connections (or more) afterwards, as after
    any burst of traffic."""
    locker = connect(pg_url(), schema)
    try:
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE memories IN ACCESS EXCLUSIVE MODE")
        with ThreadPoolExecutor(6) as pool:
            searches = [pool.submit(_search, base, key) for _ in range(6)]
            for _ in range(100):
                if _sessions(name, "wait_event_type = 'Lock'") >= 6:
                    break
                time.sleep(0.05)
            locker.execute("ROLLBACK")
            assert [f.result().status_code for f in searches] == [200] * 6
    finally:
        locker.close()
    assert _sessions(name) >= 7  # the store's six, and the key table's


def _end_sessions(name: str) -> int:
    """End every session of application ``name`` (as an administrator, or a restart of
    the server, does); how many there were."""
    with connect(pg_url()) as conn:
        ended = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
            "FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        ).fetchone()[0]
    return int(ended)


def test_the_first_requests_after_the_servers_sessions_were_ended_are_served() -> None:
    """Every session of a server that just served a burst is ended (a restart of
    PostgreSQL or a failover does that): the next request reads the key table and the
    store at once. It was a 503 from the key table's one connection; and with four or
    more connections in the store's pool, psycopg_pool's own check slept 1 s, 2 s, 4 s
    between the dead ones and the request failed after 10 s."""
    with served() as (base, name, schema, key):
        _grow_the_pools(base, name, schema, key)
        assert _end_sessions(name) >= 7
        time.sleep(1.2)  # past the key cache (1 s): the next request reads the table
        start = time.monotonic()
        searched = _search(base, key)
        assert searched.status_code == 200, searched.text
        assert time.monotonic() - start < 3
        assert _end_sessions(name) >= 2
        listed = httpx.get(f"{base}/v1/keys", headers={"Authorization": f"Bearer {ADMIN}"})
        assert listed.status_code == 200, listed.text
        assert [k["tenant"] for k in listed.json()["results"]] == ["acme"]


def test_a_key_table_whose_idle_sessions_the_server_closes_still_answers() -> None:
    """PostgreSQL closes sessions idle for 1 s (``idle_session_timeout``, set here in the
    URL as a managed service sets it for the role): every request after an idle spell
    found the key table's connection closed and was a 503."""
    with served("-c idle_session_timeout=1000") as (base, name, schema, key):
        _grow_the_pools(base, name, schema, key)
        for _ in range(2):
            time.sleep(1.5)  # idle past the timeout, and past the key cache
            start = time.monotonic()
            searched = _search(base, key)
            assert searched.status_code == 200, searched.text
            assert time.monotonic() - start < 3


def test_processes_opening_a_new_key_table_at_once_all_open_it() -> None:
    """Eight openers at once on a new schema, twelve times: each opens the table (on
    pg_type's unique index, 2 in 30 failed)."""
    from contextos.server.keys import KeyStore

    errors: list[BaseException] = []
    for _ in range(12):
        with fresh_schema("keys_race") as (url, _schema):
            errors += at_once(lambda url=url: KeyStore(url).close())
    assert errors == []
