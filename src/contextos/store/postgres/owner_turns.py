"""The users' turns (``store.owner_turns``) on PostgreSQL: session-level advisory locks,
``pg_try_advisory_lock``, on one connection of the store's own, outside the pool. A lock
held on a pooled connection would hold that connection while a model thinks, and adds
of eight users at once would leave none for their own reads. The lock's name holds the
schema the tables are in, and differs from every transaction lock the store takes on a
scope (``_check_newest``: the JSON of the scope alone), which the add takes while it
holds its turn, on another connection of the same process.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from contextos.store import forks
from contextos.store.owner_turns import OWNER_TURN_WAIT_S, PolledTurns

log = logging.getLogger(__name__)

#: Set on the lock connection: a server's ``idle_session_timeout`` (which managed
#: services set) would end it, and every turn it holds, while a model thinks.
_NO_IDLE_TIMEOUT = "SET idle_session_timeout = 0"


class OwnerTurns(PolledTurns):
    """The users' turns among the handles on one PostgreSQL database."""

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        schema: str | None = None,
        wait_s: float = OWNER_TURN_WAIT_S,
    ) -> None:
        super().__init__(namespace=schema, wait_s=wait_s)
        self._connect = connect
        self._conn: Any = None

    def close(self) -> None:
        """Close the lock connection (every turn it holds ends with it)."""
        with self._guard:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def inherited_by_fork(self) -> None:
        """In a forked child: the connection is the parent's and is never used or closed
        here (``store.forks``)."""
        if self._conn is not None:
            forks.inherit(self._conn)
        self._conn = None
        super().inherited_by_fork()

    def _try_lock(self, key: str) -> bool | None:
        return self._run("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", key)

    def _unlock(self, key: str) -> None:
        self._run("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", key)

    def _try_shared(self, key: str) -> bool | None:
        return self._run("SELECT pg_try_advisory_lock_shared(hashtextextended(%s, 0))", key)

    def _unlock_shared(self, key: str) -> None:
        self._run("SELECT pg_advisory_unlock_shared(hashtextextended(%s, 0))", key)

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
