"""The PostgreSQL store as several app servers use it: one of them with a clock behind
the others', and all of them through an outage of the server.

- A session's turns follow the order their writes committed in, whatever clock stamped
  them: with ``created_at`` from each process's clock, a server 2 s behind another never
  wrote the session's newest turn, so the next turn repeated a number
  (``metadata["seq"]``) and answered the wrong turn.
- After an outage, the first call once the server is back reaches it: psycopg_pool's
  default kept retrying a lost connection for 5 minutes at doubling waits, so after ~45 s
  down the next try was half a minute away and every call failed meanwhile.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contextos.errors import Conflict, StoreError
from contextos.memory import Memory
from contextos.store.base import Newest
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, MemoryRecord, Scope, content_hash
from pg_support import connect, pg_url
from pg_support import two_handles as two_servers

pytestmark = pytest.mark.postgres
pytest.importorskip("psycopg")

SESSION = Scope("t", "alice", session_id="chat")
IN_SESSION = Filter(scope=SESSION, include_invalid=True)
BEHIND = timedelta(seconds=2)


def _turn(n: int, at: datetime) -> MemoryRecord:
    text = f"turn {n}"
    return MemoryRecord(
        id=f"r{n}", text=text, scope=SESSION, created_at=at, updated_at=at, hash=content_hash(text)
    )


def test_a_turn_written_by_a_server_whose_clock_is_behind_becomes_the_newest() -> None:
    with two_servers() as (a, b):
        for n in range(6):
            writer = (a, b)[n % 2]  # alternating, as two servers behind a load balancer
            clock = datetime.now(UTC) - (BEHIND if writer is b else timedelta(0))
            newest = writer.list(IN_SESSION, limit=1)
            assert [r.id for r in newest] == ([f"r{n - 1}"] if n else [])
            writer.put([_turn(n, clock)], after=Newest(IN_SESSION, f"r{n - 1}" if n else None))
        # Newest first, in the order the writes committed.
        assert [r.id for r in a.list(IN_SESSION)] == [f"r{n}" for n in reversed(range(6))]
        stamps = [r.created_at for r in reversed(b.list(IN_SESSION))]
        assert stamps == sorted(stamps) and len(set(stamps)) == 6
        # A write based on an older newest is still refused (Conflict): unchanged.
        with pytest.raises(Conflict):
            b.put([_turn(9, datetime.now(UTC))], after=Newest(IN_SESSION, "r4"))


class ClockBehind:
    """A Store as an app server whose clock is ``behind`` sees it: every record it
    writes is stamped that much earlier; everything else is the store's own."""

    def __init__(self, store: Any, behind: timedelta) -> None:
        self._store = store
        self._behind = behind

    def put(self, records: Sequence[MemoryRecord], **kwargs: Any) -> None:
        self._store.put([self._early(r) for r in records], **kwargs)

    def _early(self, r: MemoryRecord) -> MemoryRecord:
        created = (r.created_at or datetime.now(UTC)) - self._behind
        return replace(r, created_at=created, updated_at=created)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_two_servers_with_skewed_clocks_number_and_answer_a_sessions_turns_in_order() -> None:
    with two_servers() as (a, b):
        servers = [
            Memory(store=a, tenant="t", embedder=HashEmbedder(), background_embedding=False),
            Memory(
                store=ClockBehind(b, BEHIND),
                tenant="t",
                embedder=HashEmbedder(),
                background_embedding=False,
            ),
        ]
        said = []
        for n in range(6):
            name = "AB"[n % 2]
            said.append(f"{name} says number {n}")
            servers[n % 2].add(
                {"role": "user", "content": said[-1]}, user_id="alice", session_id="chat"
            )
        turns = sorted(a.list(IN_SESSION), key=lambda r: r.metadata["seq"])
        assert [(r.metadata["seq"], r.text) for r in turns] == list(enumerate(said))
        for before, turn in zip(turns, turns[1:], strict=False):
            assert before.text in turn.context  # each answers the turn before it


@contextmanager
def own_database() -> Iterator[tuple[str, str]]:
    """A new database of the test PostgreSQL (dropped afterwards): a conninfo string for
    it, and its name. Its own, so that its outage touches no other test's store."""
    from psycopg.conninfo import make_conninfo

    url = pg_url()
    name = f"outage_{uuid.uuid4().hex[:12]}"
    with connect(url) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(url, dbname=name), name
    finally:
        with connect(url) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _server(name: str, *, up: bool) -> None:
    """Down: the database ends its sessions and refuses new ones, as a server that
    stopped (or is starting up) does; up: it takes them again."""
    with connect(pg_url()) as conn:
        conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {str(up).lower()}")
        if not up:
            conn.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


def test_the_first_call_after_an_outage_reaches_the_server_again() -> None:
    from contextos.store.postgres import PostgresStore

    flt = Filter(scope=Scope("t", "u"))
    with own_database() as (url, name):
        # A call waits at most 1 s for a connection: the outage below is 4.5 of those.
        store = PostgresStore(url, connect_timeout=1)
        try:
            assert store.count(flt) == 0
            _server(name, up=False)
            down = time.monotonic()
            with pytest.raises(StoreError):  # a call while down fails, as it must
                store.count(flt)
            # The pool tried to reconnect at 0 s, 1 s, 3 s, 7 s... (psycopg_pool's
            # default: for 5 minutes): the next try after the server is back, at ~7 s,
            # was past this call's wait.
            time.sleep(max(0.0, 4.5 - (time.monotonic() - down)))
            _server(name, up=True)
            assert store.count(flt) == 0
        finally:
            store.close()
