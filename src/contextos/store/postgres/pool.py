"""Connection pools to PostgreSQL: the store's, and the API-key table's.

Each connection is checked with a round trip (an empty statement) before it is handed
out, and one the server closed while it sat in the pool (a restart or failover,
``pg_terminate_backend``, ``idle_session_timeout`` as managed services and proxies set
it) is dropped and the next one tried at once, up to every connection the pool holds
and then a new one. Nothing has been sent on a connection dropped so, so a write is
never sent twice.

Why not psycopg_pool's own ``check``: after each connection that fails its check it
sleeps, 1 s, 2 s, 4 s..., before trying the next. Every connection of the pool dies
together (a restart ends them all; an idle timeout ends every idle one), so with four
or more in the pool the first call after the loss waited out the pool's whole timeout
(10 s) and failed: a 503.

psycopg and psycopg_pool (the ``postgres`` extra) are imported only when a pool opens.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from contextos.errors import StoreError

#: libpq settings every connection gets unless its URL sets them (see :func:`with_liveness`).
LIVENESS = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
    "application_name": "contextos",
}


def with_liveness(url: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus the :data:`LIVENESS` settings that neither ``url`` nor ``kwargs``
    names. Why: with libpq's defaults (the system's TCP keepalive, two hours of
    silence), a query whose server's host froze, or whose network path went away after
    it was sent, waited for an answer without limit, holding its connection and its
    request; a server told to stop could not (a review). With TCP keepalives after 30 s
    of silence and unacknowledged data given up after 60 s, such a query ends with a
    StoreError (503) in about a minute. ``application_name`` names contextos's sessions
    in ``pg_stat_activity``. A ``PGAPPNAME`` keeps the user's name; a ``service`` (in
    the URL or ``PGSERVICE``) keeps its file's settings: none is added then."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = {k for k, v in conninfo_to_dict(url).items() if v is not None}
    except psycopg.Error:
        return dict(kwargs)  # a malformed URL: the connection says what is wrong with it
    if "service" in given or os.environ.get("PGSERVICE"):
        return dict(kwargs)  # a service file's settings win, as libpq reads them
    if os.environ.get("PGAPPNAME"):
        given.add("application_name")  # the user's name for their sessions
    return {**{k: v for k, v in LIVENESS.items() if k not in given | set(kwargs)}, **kwargs}


def open_pool(url: str, kwargs: dict[str, Any], *, max_size: int, timeout: float, name: str) -> Any:
    """A ``psycopg_pool.ConnectionPool`` of 1 to ``max_size`` connections, opened (its
    first connection made; psycopg errors are the caller's to turn into StoreError).
    ``timeout``: seconds a call waits for a connection. The pool tries to replace a
    connection it lost for :data:`NUDGE_S` before it leaves that to the next call (or to
    its nudger, :func:`_nudge`, while calls wait), which connects at once.
    With psycopg_pool's default, 300 s, the next try after an outage of tens of seconds
    was up to half a minute away, and every call failed until then; with 10 s, a call
    begun during the outage failed although the server was back."""
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        url,
        kwargs=kwargs,
        min_size=1,
        max_size=max_size,
        open=False,
        timeout=timeout,
        reconnect_timeout=min(timeout, NUDGE_S),
        name=name,
    )
    try:
        pool.open(wait=True, timeout=timeout)
    except BaseException:
        pool.close()
        raise
    nudger = threading.Thread(target=_nudge, args=(weakref.ref(pool),), name=f"{name}-nudge")
    nudger.daemon = True
    nudger.start()
    return pool


#: How often a pool's nudger looks whether calls wait while the pool fails to connect,
#: and how long the pool tries to replace a connection it lost before it leaves that to
#: the next call (see :func:`_nudge`).
NUDGE_S = 1.0


@contextmanager
def checked_connection(pool: Any, tries: int) -> Iterator[Any]:
    """A connection of ``pool`` that answered a round trip just now. Those found closed
    are dropped (the pool replaces them) and the next one is tried, ``tries`` at most:
    one more than the pool's size reaches a new connection."""
    import psycopg

    for _ in range(tries):
        with pool.connection() as conn:
            try:
                conn.execute("")
            except psycopg.Error:
                if not conn.closed:  # not a connection lost: not ours to hide
                    raise
                continue  # back to the pool, which drops it and opens another
            try:
                yield conn
            except psycopg.Error as exc:
                if stale_session(exc):
                    _replace_all(pool, conn)
                raise
            return
    raise psycopg.OperationalError(f"no connection of {tries} tried was open")


def stale_session(exc: BaseException | None) -> bool:
    """Whether ``exc`` is an error that no retry on its connection mends: a statement
    that psycopg prepared on it (after ``prepare_threshold`` runs, 5) keeps a type or a
    result shape the database no longer has. XX000 "cache lookup failed for type ...":
    the ``vector`` extension was dropped and created again (``pg_restore --clean`` of a
    whole database gives it a new type oid), and the prepared statements' parameters
    still name the old one; 0A000 "cached plan must not change result type": DDL changed
    the columns a prepared statement returns.

    Why: such errors came back on every call for ever (a review: after a ``pg_restore
    --clean`` under a running server, every search a 503 "retry after a moment" until
    a restart), since the connection went back to the pool with its prepared statements."""
    sqlstate = getattr(exc, "sqlstate", None)
    message = str(getattr(getattr(exc, "diag", None), "message_primary", None) or exc)
    if sqlstate == "XX000":
        return message.startswith("cache lookup failed")
    if sqlstate == "0A000":
        return message.startswith("cached plan must not change result type")
    return False


def _replace_all(pool: Any, conn: Any) -> None:
    """Have the pool replace ``conn`` and every other connection it holds (``drain``:
    those idle at once, those in use, ``conn`` among them, when given back): each was
    opened before the change that made ``conn``'s statements stale, so each may have the
    same statements prepared. New connections prepare their own. Without ``drain``
    (a pool older than psycopg_pool 3.2), ``conn`` is closed: the pool drops it."""
    drain = getattr(pool, "drain", None)
    if drain is None:
        conn.close()
    else:
        drain()


def _nudge(held: weakref.ref[Any]) -> None:
    """While the pool ``held`` (weakly: a store dropped unclosed lets its pool go) is
    open: every :data:`NUDGE_S`, when calls wait for a connection and
    the pool failed to connect since the last look, ask it for one (a short wait at the
    back of the queue, given back at once if served), which makes it try to connect now.

    Why: after an outage the pool tries again 1 s, 2 s, 4 s... after its last failure,
    and a waiting call asked only once, when it began. A call begun while the server
    was down waited out its 10 s and failed although the server had been back for
    seconds (a review: back at 7.2 s, failed at 10.1 s; four apps lost a call each over
    an 8 s restart). The pool now gives up its own tries after :data:`NUDGE_S`, and this
    asks again each second, so a waiting call is served about a second after the server
    is back. Why not the waiting calls themselves, asking again in slices: a call that
    asks again goes to the back of the queue, and on a busy pool of a server that
    answers, a later call was served first and the earlier one timed out (a review of
    that first fix)."""
    from psycopg_pool import PoolTimeout

    seen = 0
    while True:
        time.sleep(NUDGE_S)
        pool = held()
        if pool is None or pool.closed:
            return
        failed = seen
        try:
            stats = pool.get_stats()
            failed = int(stats.get("connections_errors", 0))
            if failed > seen and stats.get("requests_waiting", 0):
                pool.putconn(pool.getconn(timeout=0.05))
        except PoolTimeout:
            pass  # the pool tries to connect: the waiting calls are served first
        except Exception:  # closed meanwhile, or anything else: the calls' own waits end
            if pool.closed:
                return
        seen = failed
        del pool


#: Connections of the pool a transaction (a write) may not take: they stay free for
#: reads (:class:`WriteSlots`).
READ_RESERVE = 2


class WriteSlots:
    """How many of the pool's connections transactions may hold at once: all but
    :data:`READ_RESERVE` (at least one), so reads always find one.

    Why: reads and writes share one pool. A table lock held elsewhere (a migration, a
    ``LOCK TABLE`` from psql, a long transaction) kept every write to it waiting up to
    ``lock_timeout`` on its connection; two or three tenants appending turns filled the
    pool that way and another tenant's searches, which never touch that table, waited
    for a connection as long as the lock lasted (20 s for a 20 s lock; a review), where
    docs/server.md promises reads answered while writes wait. A transaction nested in
    one its thread already holds takes no second slot (it would wait for itself)."""

    def __init__(self, pool_size: int, wait_s: float) -> None:
        self._slots = threading.BoundedSemaphore(max(1, pool_size - READ_RESERVE))
        self._depth = threading.local()
        self._wait_s = wait_s

    @contextmanager
    def held(self, what: str) -> Iterator[None]:
        """A slot for the block (the one already held by this thread, if any); a
        StoreError when none frees within ``wait_s``, as a full pool answers."""
        depth = getattr(self._depth, "n", 0)
        if depth == 0 and not self._slots.acquire(timeout=self._wait_s):
            raise StoreError(
                f"PostgreSQL {what} waited more than {self._wait_s:g} s for a connection: "
                "every one a write may use is busy (writes waiting for a lock, a slow "
                "database); try again later"
            )
        self._depth.n = depth + 1
        try:
            yield
        finally:
            self._depth.n = depth
            if depth == 0:
                self._slots.release()
