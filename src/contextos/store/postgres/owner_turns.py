"""Turns of one user's inferring adds across handles on one PostgreSQL database.

An inferring add decides its facts on what the user's memories are as read and
writes only if that still holds (``Plan.commit``); a refused add decides again. Threads
of one ``Memory`` take turns per user (``KeyedLocks``), but handles in other processes
(replicas of a server, workers) only met each other's writes as refusals: with sixteen
handles adding one user's facts at once, each try lost to whichever add wrote first,
and an add could lose all of its ``ADD_TRIES`` tries (1 of 240 in a CI run) and fail.

Here such adds take turns too, through a session-level advisory lock of the user's
(``pg_try_advisory_lock``), held from the first read to the write. The locks live on
one connection of their own per store, outside the pool: a lock held on a pooled
connection would hold that connection while a model thinks, and adds of eight users
at once would leave none for their own reads. The connection is shared by the store's
threads, so a turn is polled for (a non-blocking try, then a short random wait) rather
than waited on.

The turn is an aid to progress, never what keeps the memories right: the write is
conditional as before. A turn not had within ``wait_s`` (another process's model took
that long), or a lock connection that failed, lets the add go on without it, to be
refused and decided again if it meets another writer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from contextos.store import forks
from contextos.types import Scope

log = logging.getLogger(__name__)

#: How long an inferring add waits for another handle's add of the same user's facts
#: to write before it decides without its turn. Long enough for a model's answer.
OWNER_TURN_WAIT_S = 60.0
#: The longest pause between two tries for a turn.
POLL_CAP_S = 0.02


def owner_key(schema: str | None, owner: Scope) -> str:
    """The lock's name: the store's schema and the whole owner scope (a session's, for
    adds that name no user or agent: other sessions' adds do not wait), distinct from
    every transaction lock the store takes on a scope (``_check_newest``: the JSON of
    the scope alone), which the add takes while it holds its turn, on another
    connection of the same process."""
    fields = [owner.tenant, owner.user_id, owner.agent_id, owner.session_id]
    return json.dumps(["owner turn", schema, *fields])


#: Set on the lock connection: a server's ``idle_session_timeout`` (which managed
#: services set) would end it, and every turn it holds, while a model thinks.
_NO_IDLE_TIMEOUT = "SET idle_session_timeout = 0"


class OwnerTurns:
    """``with turns.held(owner):`` runs one inferring add of ``owner`` at a time among
    the handles on one database (see the module docstring)."""

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        schema: str | None = None,
        wait_s: float = OWNER_TURN_WAIT_S,
    ) -> None:
        self._connect = connect
        self._schema = schema
        self._wait_s = wait_s
        self._guard = threading.Lock()  # one statement at a time on the shared connection
        self._conn: Any = None
        self._closed = False

    @contextmanager
    def held(self, owner: Scope) -> Iterator[bool]:
        """The owner's turn while the block runs; yields whether it was had."""
        key = owner_key(self._schema, owner)
        had = self._take(key)
        try:
            yield had
        finally:
            if had:
                self._run("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", key)

    def close(self) -> None:
        """Close the lock connection (every turn it holds ends with it)."""
        with self._guard:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def inherited_by_fork(self) -> None:
        """In a forked child: the connection is the parent's and is never used or closed
        here (``store.forks``). The guard is not taken: a thread of the parent that held
        it at the fork does not exist here, and the child would wait for it for ever."""
        if self._conn is not None:
            forks.inherit(self._conn)
        self._conn = None
        self._closed = True
        self._guard = threading.Lock()

    def _take(self, key: str) -> bool:
        deadline = time.monotonic() + self._wait_s
        pause = 0.001
        while True:
            got = self._run("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", key)
            if got is None:
                return False  # no lock connection: go on without the turn
            if got:
                return True
            if time.monotonic() >= deadline:
                log.warning("an inferring add waited %.0f s for its turn; going on", self._wait_s)
                return False
            time.sleep(random.uniform(0, pause))
            pause = min(POLL_CAP_S, pause * 2)

    def _run(self, sql: str, key: str) -> bool | None:
        """The statement's boolean on the lock connection (opened on first use); None
        when there is none (closed, or it failed: it is dropped, and with it every lock
        it held, so the turns end as if released)."""
        import psycopg

        with self._guard:
            if self._closed:
                return None
            try:
                return bool(self._connection().execute(sql, (key,)).fetchone()[0])
            except psycopg.Error as exc:
                log.warning("PostgreSQL lock connection failed, adds go on without turns: %s", exc)
                self._drop()
                return None
            except BaseException:
                # A Ctrl-C while the statement was on the wire: whether the server took
                # or freed the lock is unknown, and a turn left held would keep every
                # other process's add of the user waiting for ``wait_s``.
                self._drop()
                raise

    def _connection(self) -> Any:
        """The lock connection, opened when there is none or the last one was closed (a
        restart, ``pg_terminate_backend``): a turn taken after a restart is a turn."""
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
            # PostgreSQL 13 or older: no idle_session_timeout to turn off.
            with contextlib.suppress(psycopg.errors.UndefinedObject):
                self._conn.execute(_NO_IDLE_TIMEOUT)
        return self._conn

    def _drop(self) -> None:
        """Close the lock connection (its turns end with it); the next use opens one."""
        if self._conn is not None:
            self._conn.close()
        self._conn = None
