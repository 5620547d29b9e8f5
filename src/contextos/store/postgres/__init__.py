"""The scale-out Store: PostgreSQL with full-text search and pgvector.

- One connection pool (psycopg 3 + psycopg_pool) per store; connections run in
  autocommit and every write is one explicit transaction, so a failure leaves
  nothing half-done.
- Lexical search: a stored ``tsvector`` (text at weight A, context at weight B)
  with a GIN index, queried as an OR of the query's words and ranked by Okapi
  BM25 computed in SQL (see ``postgres_bm25``).
- Dense search: a ``vectors`` table with a cosine HNSW index per vector size;
  pgvector's iterative index scan (0.8+) keeps filtered searches from coming
  back short.
- Every statement filters on ``tenant`` and every key starts with it (see
  ``schema_postgres``), so tenants can be partitioned apart.
- Driver errors become :class:`~contextos.errors.StoreError` at this seam.

Times are sent from Python (like the SQLite store does) so ``created_after``
filters agree with the caller's clock, and come back as aware UTC datetimes.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import math
import os
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar, cast

import numpy as np

from contextos.errors import Conflict, DuplicateId, MissingExtraError, NotFound, StoreError
from contextos.retry import wait_before_retry
from contextos.store import forks
from contextos.store import records as shared  # the parameter of put() is named records
from contextos.store.base import (
    QUARANTINED_SHOWN,
    Close,
    EmbeddingStatus,
    ErasedThenInterrupted,
    Erasure,
    Newest,
    Patch,
    Quarantined,
    Ranked,
    Repeats,
    Vector,
    check_newest,
    check_repeats,
    check_unchanged,
    newest_checks,
    stamped_after,
)
from contextos.store.erasure import REPLY_MARK, Scrub
from contextos.store.filters import open_clause, pointing_clause
from contextos.store.owner_turns import OWNER_TURN_WAIT_S
from contextos.store.pages import pages_after
from contextos.store.postgres.bm25 import bm25_sql
from contextos.store.postgres.codec import (
    POSTGRES,
    RECORD_COLUMNS,
    filter_sql,
    metadata_jsonb,
    or_tsquery,
    record_from_row,
    record_params,
    tsquery_words,
    vector_text,
)
from contextos.store.postgres.owner_turns import OwnerTurns
from contextos.store.postgres.pool import (
    WriteSlots,
    checked_connection,
    open_pool,
    stale_session,
    with_liveness,
)
from contextos.store.postgres.schema import ensure_hnsw_index, migrate
from contextos.store.postgres.sessions import META_SQL, PgSessionLog, lock_sessions
from contextos.store.postgres.vacuum import vacuum as run_vacuum
from contextos.store.records import RECORD_FIELDS
from contextos.store.records import nul_reads_as_absent as _absent_if_nul
from contextos.text.query import query_terms
from contextos.times import opt_utc, utc
from contextos.types import Filter, HistoryEvent, MemoryRecord, Message, Scope, Turn

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_INSERT_RECORD = (
    f"INSERT INTO memories ({', '.join(RECORD_FIELDS)}) "
    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s::jsonb,%s,%s,%s,%s,%s,%s::jsonb,%s,%s,%s)"
)
_INSERT_HISTORY = shared.insert_history_sql("%s")

#: How long a statement of the store waits for a lock (``lock_timeout``) unless the
#: database says otherwise (the URL's ``options``, ``PGOPTIONS``, the role's or the
#: database's settings, the server's configuration: any setting of it is kept, 0
#: included). PostgreSQL's own default is 0, no limit: one row lock held outside the
#: store (an admin's open transaction, another app server that lost its network in the
#: middle of one) kept each update of that row waiting for as long as it lasted, every
#: connection of the pool filled with them, and every other tenant's call failed after
#: waiting 10 s for a connection. 5 s is far longer than any write of the store holds
#: a lock (milliseconds). It bounds ``vacuum``'s lock waits too, whatever is set.
LOCK_TIMEOUT_S = 5.0


# `PostgresStore.list` shadows the builtin inside the class body, hence these aliases.
_Records = list[MemoryRecord]
#: Records each with its key (``list_after``).
_Keyed = list[tuple[MemoryRecord, str]]
_Ranks = list[Ranked]
#: How many times ``forget`` runs when its user's sessions moved while it locked them, or
#: PostgreSQL ended it to break a deadlock.
_ERASE_TRIES = 5
#: How many times a write of one transaction runs when PostgreSQL ended it to break a
#: deadlock (:func:`_again_after_deadlock`).
DEADLOCK_TRIES = 5

#: True while a write runs that is run again if PostgreSQL ends it in a deadlock: the
#: deadlock is then logged at DEBUG, not as a failure (``PostgresStore._conn``).
_DEADLOCK_RETRIED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "deadlock_retried", default=False
)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _again_after_deadlock(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a write of one transaction again, after a random wait, when PostgreSQL ended it
    to break a deadlock (40P01: it rolled back whole, so nothing of it holds), and at once
    when its connection had a statement prepared before the database changed under it
    (``pool.stale_session``: the transaction rolled back too, and the pool replaces its
    connections, so the next try runs on a fresh one).

    Why: an erasure (``forget``, ``delete(purge=True)``) locks a user's rows, history
    and the replies quoting them in an order an add, a delete or a vector write cannot
    share, and PostgreSQL ends one of two transactions that wait on each other. Only
    ``forget`` tried again; every other write raised the deadlock to its caller (a
    review: two processes adding, purging and forgetting one user: 3-12 errors in 15 s,
    an add's vector write among them, its record stored; SQLite, one writer at a time,
    none)."""

    @functools.wraps(method)
    def again(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        for attempt in range(DEADLOCK_TRIES):
            token = _DEADLOCK_RETRIED.set(attempt < DEADLOCK_TRIES - 1)
            try:
                return method(*args, **kwargs)
            except StoreError as exc:
                if attempt == DEADLOCK_TRIES - 1:
                    raise
                if stale_session(exc.__cause__):
                    continue
                if not _deadlocked(exc):
                    raise
                wait_before_retry(attempt + 4)  # up to 16 ms, then 32, 64...
            finally:
                _DEADLOCK_RETRIED.reset(token)
        raise AssertionError("unreachable")  # pragma: no cover

    return again


def _deadlocked(exc: StoreError) -> bool:
    """Whether ``exc`` is PostgreSQL's deadlock error (sqlstate 40P01)."""
    return getattr(exc.__cause__, "sqlstate", None) == "40P01"


class _SessionsMoved(Exception):
    """A ``forget`` found a session of its user begun while it locked the others'."""


def _stale_vectors(model: str, dimensions: int | None) -> tuple[str, tuple[object, ...]]:
    """The WHERE clause of the vectors another model wrote or, given ``dimensions``, of
    another size, and its parameters. ``<`` / ``>`` rather than ``!=``: each arm is a
    range of the index on (model, dim) (schema V11), so a store whose vectors are all
    current answers without reading them."""
    if dimensions is None:
        return "WHERE model < %s OR model > %s", (model, model)
    return (
        "WHERE model < %s OR model > %s OR (model = %s AND dim < %s) OR (model = %s AND dim > %s)",
        (model, model, model, dimensions, model, dimensions),
    )


_Turns = list[Turn]
_TurnTexts = list[tuple[int, str, str]]
_Strs = list[str]
log = logging.getLogger(__name__)

_Rows = list[Any]
_Events = list[HistoryEvent]


def _now() -> datetime:
    return datetime.now(UTC)


class PostgresStore(shared.PatchUpdates, shared.VectorWrites):
    """Store on a PostgreSQL database with pgvector. Thread-safe.

    Args:
        url: a ``postgresql://`` URL (or libpq conninfo string).
        schema: keep the tables in this schema (created if missing) instead of the
            search path's default; tests use one schema per test.
        max_connections: size of the connection pool.
        connect_timeout: seconds to wait for the server before raising StoreError.
        owner_turn_wait_s: how long an inferring add waits for another handle's add of
            the same user's facts before it decides without its turn
            (``owner_turns``); 0 never waits.

    Example:
        >>> store = PostgresStore("postgresql://app@127.0.0.1/contextos")  # doctest: +SKIP
    """

    read_only = False  # a role without write grants fails its writes instead

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        max_connections: int = 8,
        connect_timeout: float = 10.0,
        owner_turn_wait_s: float = OWNER_TURN_WAIT_S,
    ) -> None:
        try:
            import psycopg
            import psycopg_pool  # noqa: F401 - open_pool's, imported when a pool opens
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise MissingExtraError("postgres", exc.name or "psycopg") from None
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema must be a lower-case identifier, got {schema!r}")
        self._psycopg = psycopg
        self.schema = schema
        info = _conninfo(url)
        self._where = (
            f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
        )
        # The URL's own options (e.g. ?options=-c%20hnsw.ef_search%3D100) come first;
        # without them, PGOPTIONS'. Why: libpq reads PGOPTIONS only when a connection
        # names no options, and the store always names some, so a lock_timeout,
        # statement_timeout or search_path set there was dropped (a review).
        options = " ".join(
            o
            for o in (
                info.get("options") or os.environ.get("PGOPTIONS", ""),
                "-c TimeZone=UTC",
                f"-c search_path={schema},public" if schema else "",
            )
            if o
        )
        kwargs = with_liveness(
            url,
            {
                "autocommit": True,
                "options": options,
                "connect_timeout": max(1, int(connect_timeout)),
            },
        )
        self._setup(url, schema, kwargs)
        if self._iterative_scan:
            # For every connection of the pool, so a vector search is one statement in
            # autocommit (a SET LOCAL needed a transaction: four round trips, not one).
            # Before the URL's options, which may still override it.
            kwargs["options"] = f"-c hnsw.iterative_scan=relaxed_order {kwargs['options']}"
        if self._lock_timeout_set is None:  # set nowhere: the store's default
            kwargs["options"] = f"-c lock_timeout={_ms(LOCK_TIMEOUT_S)} {kwargs['options']}"
        self._lock_timeout = self._lock_timeout_set or f"{LOCK_TIMEOUT_S:g}s"
        try:
            self._pool = open_pool(
                url, kwargs, max_size=max_connections, timeout=connect_timeout, name="contextos"
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {self._where}: {exc}") from exc
        self._tries = max_connections + 1  # every pooled connection may be closed, and one new
        self._write_slots = WriteSlots(max_connections, connect_timeout)
        self._indexed_dims: set[int] = set()
        self._sessions = PgSessionLog(self._tx, self._read)
        self._owner_turns = OwnerTurns(
            lambda: psycopg.connect(url, **kwargs), schema=self._tables_in, wait_s=owner_turn_wait_s
        )
        self._forked = False
        self._pid = forks.track(self)

    def _inherited_by_fork(self) -> None:
        """In a forked child (``store.forks``): every later use raises a StoreError that
        says to open the store in this process. The pool is left alone: its sockets
        are the parent's, and closing them here would end the parent's sessions."""
        forks.inherit(self._pool)
        self._pool = cast(Any, forks.OpenedBeforeFork(self._where, self._pid))
        self._owner_turns.inherited_by_fork()
        self._forked = True

    def _setup(self, url: str, schema: str | None, kwargs: dict[str, Any]) -> None:
        """Create the schema if asked, migrate, and learn pgvector's version; on one
        plain connection so a refused connection reports the server's own reason."""
        try:
            with self._psycopg.connect(url, **kwargs) as conn:
                if schema is not None:
                    # IF NOT EXISTS is not race-free: of processes creating the same new
                    # schema at once, the later ones fail on pg_namespace's unique index.
                    # The schema exists then, which is all that is needed.
                    with contextlib.suppress(self._psycopg.errors.UniqueViolation):
                        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                migrate(conn)
                row = conn.execute(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
                ).fetchone()
                lock_timeout = conn.execute(
                    "SELECT current_setting('lock_timeout'), source "
                    "FROM pg_settings WHERE name = 'lock_timeout'"
                ).fetchone()
                tables_in = conn.execute("SELECT current_schema()").fetchone()
                encoding = conn.execute("SELECT current_setting('server_encoding')").fetchone()
        except self._psycopg.Error as exc:
            raise StoreError(f"cannot open PostgreSQL store at {self._where}: {exc}") from exc
        #: The schema the tables are in (``schema``, or the first of the URL's search_path).
        self._tables_in = str(tables_in[0]) if tables_in else None
        #: Whether the keyword index folds its words ("ß" "ss", "ς" "σ", full-width ASCII
        #: ASCII; schema V10), which it does in a UTF-8 database only: a query's words are
        #: folded to match (``codec.tsquery_words``).
        self._fold_words = encoding is not None and encoding[0] == "UTF8"
        version = tuple(int(p) for p in re.findall(r"\d+", row[0] if row else "0")[:2])
        self._iterative_scan = version >= (0, 8)
        # The session's lock_timeout as set (None: set nowhere, LOCK_TIMEOUT_S then).
        self._lock_timeout_set: str | None = None
        if lock_timeout is not None and lock_timeout[1] != "default":
            self._lock_timeout_set = str(lock_timeout[0])

    # -- plumbing ----------------------------------------------------------
    @contextmanager
    def _conn(self, what: str) -> Iterator[Any]:
        """A pooled connection (checked: ``pool.checked_connection``); driver errors
        inside become StoreError."""
        try:
            with checked_connection(self._pool, self._tries) as conn:
                yield conn
        except self._psycopg.DataError as exc:
            # A value the database cannot hold (a NUL character in text, a number out of
            # range) is the caller's input: a ValueError, whatever the edge.
            raise ValueError(f"PostgreSQL cannot store this value: {_first_line(exc)}") from None
        except self._psycopg.errors.ProgramLimitExceeded as exc:
            # 54000: a value past one of PostgreSQL's size limits (a text whose keyword
            # index passes tsvector's 1 MB) is the caller's input too, and will fail the
            # same way every time: a ValueError, not a StoreError ("retry after a moment").
            raise ValueError(_limit_message(exc)) from None
        except self._psycopg.errors.LockNotAvailable as exc:
            # 55P03: lock_timeout (LOCK_TIMEOUT_S unless set) passed. A StoreError, as a
            # busy SQLite store is: the transaction changed nothing and a later try may pass.
            log.warning("PostgreSQL %s gave up on a lock (%s): %s", what, self._where, exc)
            raise StoreError(
                f"PostgreSQL {what} waited more than {self._lock_timeout} (lock_timeout) for "
                "a lock another session holds (a transaction left open, a long query: see "
                "pg_stat_activity) and changed nothing; try again later"
            ) from exc
        except self._psycopg.Error as exc:
            # The server, port and database stay in the log, never in the error text,
            # which may reach an HTTP or MCP client. A deadlock that a try other than the
            # last of ``_again_after_deadlock`` (or of forget's) met is run again: a
            # warning said "failed" of writes that then succeeded (a review).
            retried = exc.sqlstate == "40P01" and _DEADLOCK_RETRIED.get()
            level = logging.DEBUG if retried else logging.WARNING
            if stale_session(exc):
                # checked_connection had the pool replace its connections; the call is
                # run again on a fresh one (``_read``, ``_again_after_deadlock``).
                log.warning(
                    "PostgreSQL %s met a statement prepared before the database changed "
                    "(a restore, DDL) (%s): %s; its connections are replaced",
                    what,
                    self._where,
                    exc,
                )
            else:
                log.log(level, "PostgreSQL %s failed (%s): %s", what, self._where, exc)
            raise StoreError(f"PostgreSQL {what} failed: {_first_line(exc)}") from exc

    @contextmanager
    def _tx(self, what: str, committed: shared.Committed | None = None) -> Iterator[Any]:
        """A cursor inside one transaction (committed on success, rolled back otherwise),
        on one of the connections writes may take (:class:`~.pool.WriteSlots`);
        ``committed`` is marked done once the COMMIT has returned."""
        with self._write_slots.held(what), self._conn(what) as conn:
            with conn.transaction(), conn.cursor() as cur:
                yield cur
            if committed is not None:
                committed.done = True

    def _read(self, sql: str, params: Sequence[object] = ()) -> _Rows:
        """The rows of one query; run again, once, on a fresh connection when the first
        one's prepared statement was stale (``pool.stale_session``: a ``pg_restore
        --clean`` or DDL since it was prepared), so the call still succeeds."""
        for attempt in range(2):
            try:
                with self._conn("read") as conn:
                    return list(conn.execute(sql, params).fetchall())
            except StoreError as exc:
                if attempt or not stale_session(exc.__cause__):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def closed(self) -> bool:
        return self._forked or bool(self._pool.closed)

    def close(self) -> None:
        if not self._forked:  # a fork's child: the pool is the parent's
            self._owner_turns.close()
            self._pool.close()

    def clock(self) -> float:
        """The database server's clock (one round trip): app hosts whose clocks disagree
        judge a lease (``Store.clock``) by the one clock that stamped it, as the
        embedding claims do with ``now()`` (a review: a host 150 s ahead took over a live
        archive hold, and one 30 s ahead took a held owner lock)."""
        return float(self._read("SELECT extract(epoch FROM clock_timestamp())")[0][0])

    def owner_turn(self, owner: Scope) -> AbstractContextManager[bool]:
        """One inferring add of ``owner`` at a time among every handle on this database,
        through an advisory lock (``owner_turns``); yields whether the turn was had."""
        return self._owner_turns.held(owner)

    # -- records -------------------------------------------------------------
    @_again_after_deadlock
    def put(
        self,
        records: Sequence[MemoryRecord],
        *,
        actor: str = "api",
        after: Newest | Sequence[Newest] | None = None,
        unchanged: Mapping[str, str] | None = None,
        closes: Sequence[Close] = (),
        repeats: Sequence[Repeats] = (),
    ) -> None:
        if not records and not closes:
            return
        tenant = records[0].tenant if records else closes[0].based_on.tenant
        now = _now()
        with self._duplicate_is_value_error(), self._tx("write") as cur:
            for each in newest_checks(after):
                newest = _check_newest(cur, each)
                records = stamped_after(records, each.filter.scope, newest, now)
            if unchanged or closes:
                self._check_unchanged(cur, tenant, unchanged or {}, closes)
            _check_repeats(cur, repeats)
            _insert_records(cur, records, now, actor)
            self._close_in(_Update(cur), closes, actor=actor)

    def _check_unchanged(
        self, cur: Any, tenant: str, unchanged: Mapping[str, str], closes: Sequence[Close]
    ) -> None:
        """``put``'s ``unchanged``, and the rows of its ``closes`` locked for update (``NO
        KEY``: an embedding worker's ``FOR KEY SHARE`` does not hold it up). The rows are
        locked for share, so an erasure of them cannot commit before this write does; one
        that holds them already (not yet committed) refuses the write at once (``NOWAIT``:
        waiting on an erasure that in turn waits on this write's other locks would
        deadlock; so would two writers that share a row and both wait to close it), and
        the caller's next try reads what it left."""
        try:
            if closes:
                cur.execute(
                    "SELECT id FROM memories WHERE tenant = %s AND id = ANY(%s) "
                    "ORDER BY id FOR NO KEY UPDATE NOWAIT",
                    (tenant, [c.based_on.id for c in closes]),
                )
            if not unchanged:
                return
            found = cur.execute(
                "SELECT id, hash FROM memories WHERE tenant = %s AND id = ANY(%s) "
                "AND valid_to IS NULL ORDER BY id FOR SHARE NOWAIT",
                (tenant, list(unchanged)),
            ).fetchall()
        except self._psycopg.errors.LockNotAvailable:
            raise Conflict("a record it was derived from is being changed") from None
        check_unchanged(unchanged, found)

    @contextmanager
    def _duplicate_is_value_error(self) -> Iterator[None]:
        """A record id that exists already is the caller's error (ValueError), as on
        SQLite, not a store failure."""
        try:
            yield
        except StoreError as exc:
            if isinstance(exc.__cause__, self._psycopg.errors.UniqueViolation):
                raise DuplicateId(
                    f"a record with this id already exists: {exc.__cause__}"
                ) from None
            raise

    def restore(
        self, records: Sequence[MemoryRecord], *, actor: str = "import"
    ) -> dict[str, MemoryRecord | None]:
        if not records:
            return {}
        tenant = shared.one_tenant(records)
        now = _now()
        # Restores of one tenant queue on one transaction lock of it: each then reads
        # (READ COMMITTED: a statement's snapshot is taken after the lock) the rows the
        # one before it committed, and counts them as stored. Without it, two overlapping
        # imports each missed the other's uncommitted rows, and the second's insert
        # failed on the key, three times ("a record with this id already exists" after a
        # warning each; review s57). A duplicate still possible (an ``add`` of the id
        # meanwhile) is a DuplicateId (a ValueError). The lock is waited for without
        # ``lock_timeout`` (a batch ahead may take longer: a StoreError ended the import
        # behind it), which applies again after it; its key names the schema (stores in
        # two schemas queued on each other; a review).
        with self._duplicate_is_value_error(), self._tx("write") as cur:
            key = json.dumps(["restore", self._tables_in, tenant])
            (timeout,) = cur.execute("SELECT current_setting('lock_timeout')").fetchone()
            cur.execute("SET LOCAL lock_timeout = 0")
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
            cur.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
            rows = cur.execute(
                f"SELECT {RECORD_COLUMNS} FROM memories m WHERE m.tenant = %s AND m.id = ANY(%s)",
                (tenant, [r.id for r in records]),
            ).fetchall()
            found: dict[str, MemoryRecord | None] = {
                stored.id: stored for stored in map(record_from_row, rows)
            }
            _insert_records(cur, [r for r in records if r.id not in found], now, actor)
        return found

    # Reads by an id holding NUL answer as for an unknown id (PostgreSQL cannot send it;
    # no store holds one): records.nul_reads_as_absent, on each method below that takes
    # an id or a scope.
    @_absent_if_nul(None, "tenant", "memory_id")
    def get(self, tenant: str, memory_id: str) -> MemoryRecord | None:
        rows = self._read(
            f"SELECT {RECORD_COLUMNS} FROM memories m WHERE m.tenant = %s AND m.id = %s",
            (tenant, memory_id),
        )
        return record_from_row(rows[0]) if rows else None

    @_absent_if_nul([], "tenant", "ids")
    def get_many(self, tenant: str, ids: Sequence[str]) -> _Records:
        if not ids:
            return []
        rows = self._read(
            f"SELECT {RECORD_COLUMNS} FROM memories m WHERE m.tenant = %s AND m.id = ANY(%s)",
            (tenant, list(ids)),
        )
        found = {r.id: r for r in map(record_from_row, rows)}
        return [found[i] for i in ids if i in found]

    def _patch_sets(self, patch: Patch) -> tuple[object, tuple[list[str], list[object]]]:
        now = _now()
        return now, shared.patch_sets(
            patch, now, mark="%s", time=opt_utc, to_json=metadata_jsonb, json_cast="::jsonb"
        )

    @_again_after_deadlock
    def update(self, tenant: str, memory_id: str, patch: Patch, **options: Any) -> MemoryRecord:
        """``Store.update``, run again when PostgreSQL ends it to break a deadlock: an
        update of a session turn locks the replies quoting it after the turn
        (``RecordUpdate.requote``), an order an erasure scrubbing the session's replies,
        or an update of one of those replies, cannot share."""
        return super().update(tenant, memory_id, patch, **options)

    @contextmanager
    def _updating(self) -> Iterator[shared.RecordUpdate]:
        with self._duplicate_is_value_error(), self._tx("update") as cur:
            yield _Update(cur)

    @_absent_if_nul(NotFound, "tenant", "memory_id")
    @_again_after_deadlock
    def delete(
        self, tenant: str, memory_id: str, *, actor: str = "api", purge: bool = False
    ) -> None:
        with self._tx("delete") as cur:
            if not _delete_records(cur, tenant, [memory_id], purge=purge, now=_now(), actor=actor):
                raise NotFound(f"no memory {memory_id!r}")

    @_absent_if_nul([], "tenant", "ids")
    @_again_after_deadlock
    def delete_many(
        self,
        tenant: str,
        ids: Sequence[str],
        *,
        actor: str = "api",
        purge: bool = False,
        derived: Collection[str] = (),
        based_on: Sequence[MemoryRecord] = (),
    ) -> _Strs:
        with self._tx("delete") as cur:
            for read in based_on:  # locked until the deletes commit
                row = cur.execute(
                    f"SELECT {RECORD_COLUMNS} FROM memories m "
                    "WHERE m.tenant = %s AND m.id = %s FOR UPDATE",
                    (tenant, read.id),
                ).fetchone()
                shared.check_unchanged(read, None if row is None else record_from_row(row))
            deleted = _delete_records(
                cur, tenant, ids, purge=purge, now=_now(), actor=actor, derived=derived
            )
            if purge:
                _purge_remains(cur, tenant, ids, deleted)
            return deleted

    @_absent_if_nul([], "scope", "content_hash")
    def find_by_hash(self, scope: Scope, content_hash: str) -> _Records:
        rows = self._read(
            f"SELECT {RECORD_COLUMNS} FROM memories m {_LIVE_BY_HASH} ORDER BY m.created_at, m.seq",
            _by_hash_params(scope, content_hash),
        )
        return [record_from_row(r) for r in rows]

    @_absent_if_nul([], "flt")
    def list(
        self, flt: Filter, *, limit: int = 100, offset: int = 0, max_bytes: int | None = None
    ) -> _Records:
        # The one listing: ``list_after``'s, without its keys.
        keyed = self.list_after(flt, limit=limit, offset=offset, max_bytes=max_bytes)
        return [record for record, _key in keyed]

    @_absent_if_nul([], "flt")
    def list_after(
        self,
        flt: Filter,
        *,
        after: str | None = None,
        limit: int = 100,
        offset: int = 0,
        max_bytes: int | None = None,
        oldest_first: bool = False,
    ) -> _Keyed:
        return self._list_after(
            self._read,
            flt,
            after=after,
            limit=limit,
            offset=offset,
            max_bytes=max_bytes,
            oldest_first=oldest_first,
        )

    def list_snapshot(
        self, flt: Filter, *, limit: int = 500, max_bytes: int | None = None
    ) -> Iterator[_Keyed]:
        # One REPEATABLE READ READ ONLY transaction on one connection, held until the
        # iterator ends: every page sees the database as it was at its first query.
        with self._conn("read") as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

            def read(sql: str, params: Sequence[object] = ()) -> _Rows:
                return list(conn.execute(sql, params).fetchall())

            yield from pages_after(
                lambda after: self._list_after(
                    read, flt, after=after, limit=limit, max_bytes=max_bytes, oldest_first=True
                )
            )

    def _list_after(
        self,
        read: Callable[[str, Sequence[object]], _Rows],
        flt: Filter,
        *,
        after: str | None = None,
        limit: int = 100,
        offset: int = 0,
        max_bytes: int | None = None,
        oldest_first: bool = False,
    ) -> _Keyed:
        """:meth:`list_after`, its queries run by ``read``."""
        where, params = filter_sql(flt, _now())
        if after is not None:
            at, row = shared.split_list_key(after)
            try:
                # timestamptz holds microseconds, as a datetime: the time round-trips.
                when = utc(datetime.fromisoformat(at))
            except (TypeError, ValueError):
                raise ValueError("not a key of this list (after)") from None
            where += f" AND (m.created_at, m.seq) {'>' if oldest_first else '<'} (%s, %s)"
            params = [*params, when, row]
        way = "ASC" if oldest_first else "DESC"
        order = f"ORDER BY m.created_at {way}, m.seq {way}"
        columns = f"{RECORD_COLUMNS}, m.seq"
        if max_bytes is None:
            rows = read(
                f"SELECT {columns} FROM memories m WHERE {where} {order} LIMIT %s OFFSET %s",
                (*params, limit, offset),
            )
        else:
            sized = read(
                "SELECT m.seq, octet_length(m.text) + octet_length(m.metadata::text) "
                f"FROM memories m WHERE {where} {order} LIMIT %s OFFSET %s",
                (*params, limit, offset),
            )
            rows = read(
                f"SELECT {columns} FROM memories m WHERE m.seq = ANY(%s) {order}",
                (shared.within_bytes(sized, max_bytes),),
            )
        out: _Keyed = []
        for r in rows:
            record = record_from_row(r[:-1])
            at = utc(record.created_at).isoformat()
            out.append((record, shared.list_key(at, int(r[-1]))))
        return out

    @_absent_if_nul([], "scope", "ids")
    def pointing_to(self, scope: Scope, key: str, ids: Sequence[str]) -> _Records:
        if not ids:
            return []
        where, params = filter_sql(Filter(scope=scope, include_invalid=True), _now())
        pointing, more = pointing_clause(POSTGRES, key, ids)
        rows = self._read(
            f"SELECT {RECORD_COLUMNS} FROM memories m WHERE {where} AND {pointing}",
            (*params, *more),
        )
        return [record_from_row(r) for r in rows]

    @_absent_if_nul(0, "flt")
    def count(self, flt: Filter) -> int:
        where, params = filter_sql(flt, _now())
        return int(self._read(f"SELECT count(*) FROM memories m WHERE {where}", params)[0][0])

    @_absent_if_nul([], "tenant", "memory_id")
    def history(
        self, tenant: str, memory_id: str, *, offset: int = 0, limit: int | None = None
    ) -> _Events:
        return shared.read_history(
            self._read, tenant, memory_id, mark="%s", time=utc, offset=offset, limit=limit
        )

    def forget(self, scope: Scope) -> Erasure:
        return self._erase(shared.erasure_target(scope))

    @_absent_if_nul(0, "tenant")
    def forget_tenant(self, tenant: str) -> int:
        """Every row of ``tenant`` goes (records, and with them their vectors, queue
        and quarantine rows; history, turns, session metadata). The tenant's session
        logs are locked first, as ``forget`` locks a user's: an append under way
        commits before the deletes, one after waits and then writes after them. A
        memory added after the DELETE of the records read them stays, and so does its
        history (``shared.OF_NO_MEMORY``)."""
        with self._tx("forget_tenant") as cur:
            sessions = cur.execute(
                "SELECT session_id FROM turns WHERE tenant = %s UNION "
                "SELECT session_id FROM session_meta WHERE tenant = %s",
                (tenant, tenant),
            ).fetchall()
            lock_sessions(cur, tenant, [r[0] for r in sessions])
            gone = cur.execute("DELETE FROM memories WHERE tenant = %s", (tenant,)).rowcount
            cur.execute(
                f"DELETE FROM history WHERE tenant = %s AND {shared.OF_NO_MEMORY}", (tenant,)
            )
            for table in ("turns", "session_meta"):
                cur.execute(f"DELETE FROM {table} WHERE tenant = %s", (tenant,))
        return int(gone)

    @_absent_if_nul(Erasure(0), "scope")
    def _erase(self, scope: Scope) -> Erasure:
        """``forget`` of a scope with a user. Run again, from the start, when the user
        began a session while it locked theirs (locked after them, out of order, two
        erasures of users sharing sessions could wait on each other), or when PostgreSQL
        ended it to break a deadlock, or its connection's prepared statement was stale
        (``pool.stale_session``; it took nothing then)."""
        for attempt in range(_ERASE_TRIES):
            last = attempt == _ERASE_TRIES - 1
            token = _DEADLOCK_RETRIED.set(not last)
            try:
                return self._erase_once(scope, any_order=last)
            except _SessionsMoved:
                continue
            except StoreError as exc:
                if last or not (_deadlocked(exc) or stale_session(exc.__cause__)):
                    raise
                wait_before_retry(attempt + 4)
            finally:
                _DEADLOCK_RETRIED.reset(token)
        raise AssertionError("unreachable")  # pragma: no cover

    def _erase_once(self, scope: Scope, *, any_order: bool) -> Erasure:
        """One try of :meth:`_erase`. A Ctrl-C once its COMMIT has returned is raised as
        :class:`~contextos.store.base.ErasedThenInterrupted`, with what it erased, as
        SQLite's ``forget`` raises it (little runs here after the COMMIT)."""
        t = scope.tenant
        committed = shared.Committed()
        erased = Erasure(0)  # counted in the transaction, before its COMMIT
        try:
            with self._tx("forget", committed) as cur:
                # The sessions' logs locked first, as an append locks its own
                # (``lock_sessions``): one under way commits before the deletes below read the
                # log, and one after waits, then finds the turn it follows gone. (The deletes
                # alone missed a reply appended while they ran: it stayed, the first turn of
                # the erased session.) A session the user began meanwhile is locked too.
                sessions = shared.erased_sessions(cur, scope, mark="%s")
                lock_sessions(cur, t, sessions)
                more = set(shared.erased_sessions(cur, scope, mark="%s")) - set(sessions)
                if more and not any_order:
                    raise _SessionsMoved  # rolled back: the next try locks them all in order
                lock_sessions(cur, t, more)
                sessions = [*sessions, *sorted(more)]
                rows = shared.erased_rows(
                    cur, scope, sessions, mark="%s", any_of=_any_of, listed=list
                )
                doomed = cur.execute(
                    f"DELETE FROM memories WHERE {rows.records} RETURNING id, text",
                    rows.record_args,
                ).fetchall()
                # Turns of the sessions locked only: a session the user began after the
                # second look is written after this erasure (its question and reply stay
                # together), where deleting its question here left its reply behind.
                turns = cur.execute(
                    f"DELETE FROM turns WHERE {rows.turns} RETURNING session_id, content",
                    rows.turn_args,
                ).fetchall()
                # The history goes too, and with it every text those memories had: a reply
                # quotes a turn as first said, so the texts an update replaced are scrubbed.
                # (Not of a memory added since the DELETE above read the table: it stays.)
                history, history_args = rows.history([r[0] for r in doomed])
                earlier = cur.execute(
                    f"DELETE FROM history WHERE {history} RETURNING old_text, new_text",
                    history_args,
                ).fetchall()
                texts = {x for row in earlier for x in row if x}
                texts.update(r[1] for r in doomed)
                texts.update(r[1] for r in turns)
                # (The user's records without a session, where an older version quoted
                # the message before in the same add, were deleted above.)
                _scrub_contexts(cur, t, Scrub(texts), sessions=sessions)
                cur.execute(f"DELETE FROM session_meta WHERE {rows.records}", rows.record_args)
                # A session that lost turns and lives on (another user's, shared): its
                # compaction state (the rolling summary quotes those turns) starts over.
                # The server's clock (``clock``), which stamps the holds it is compared with.
                [(erased_at,)] = cur.execute(
                    "SELECT extract(epoch FROM clock_timestamp())"
                ).fetchall()
                shared.reset_session_meta(
                    cur, t, sorted({r[0] for r in turns}), _now(), META_SQL, float(erased_at)
                )
                emptied = shared.sessions_emptied(
                    cur, t, (r[0] for r in turns), mark="%s", any_of=_any_of, listed=list
                )
                erased = Erasure(len(doomed), sessions=emptied, turns=len(turns))
        except KeyboardInterrupt as exc:
            if committed.done:
                raise ErasedThenInterrupted(erased) from exc
            raise
        return erased

    def vacuum(self) -> tuple[str, ...]:
        """Rewrite contextos's tables and indexes so erased rows leave no bytes in them.

        After ``forget`` or ``delete(purge=True)`` the rows are gone from every query,
        but their bytes stay in dead tuples (and GIN/HNSW index entries) until a
        VACUUM, and plain VACUUM only marks that space free. ``VACUUM FULL`` writes
        new files holding live rows only; a CHECKPOINT then lets old WAL segments be
        recycled, which renames them for reuse with their bytes intact until new WAL
        overwrites them (docs/postgres.md, *Erasure*, says what removes them; archived
        WAL and replicas keep their copies). It takes an exclusive lock on each table
        while it runs. The steps and why each is where it is: :mod:`.vacuum`.

        Each table's lock is waited for at most ``LOCK_TIMEOUT_S`` (less when the
        session's ``lock_timeout`` is shorter): while VACUUM FULL waits for its lock
        behind a long reader (a report, a ``pg_dump``, a transaction left open), every
        other query on the table queues behind its request. Past that it stops with a
        StoreError naming the table; the tables before it are vacuumed.

        VACUUM FULL also copies the erased rows that a transaction begun before the
        erasure may still read (PostgreSQL keeps them for its snapshot), wherever in
        the database it runs, on any table, and so do a standby's query (with
        ``hot_standby_feedback``: a walsender's or a replication slot's xmin), a
        logical slot's ``catalog_xmin`` (for ``pg_statistic``), a prepared transaction
        and ``vacuum_defer_cleanup_age``. Those are waited for (a standby's feedback
        longer: ``vacuum._feedback_wait_s``); the vacuum then runs anyway and ends with
        a StoreError naming what is left, since their bytes may be kept. Why: an open
        transaction in an unrelated app on the same database left a forgotten user's
        text in the new files, and vacuum said nothing.

        It ends with ``VACUUM FULL pg_catalog.pg_statistic``: the statistics rows the
        ANALYZEs replaced (most common values: user ids, words of the text) stay there
        as dead tuples otherwise; a role that may not gets a note instead.

        A role without superuser or ``pg_checkpoint`` may not run the CHECKPOINT (and
        some managed servers offer none): the tables are rewritten all the same, and
        the returned note says that old WAL keeps the erased bytes until the next
        automatic checkpoint. Why: the app's own role (a managed PostgreSQL's) got
        "vacuum failed", exit 1, after every table was rewritten, so a nightly erasure
        job could never succeed. The notes are in the StoreError's text too when one
        ends the vacuum.
        """
        with self._conn("vacuum") as conn:
            return run_vacuum(conn, self._psycopg, LOCK_TIMEOUT_S)

    @_absent_if_nul(None, "tenant", "ids", "owner")
    def quarantine_vectors(
        self,
        tenant: str,
        ids: Sequence[str],
        error: str,
        *,
        owner: str | None = None,
        model: str | None = None,
    ) -> None:
        with self._tx("quarantine") as cur:
            if owner is not None:
                ids = _unclaim(cur, tenant, list(ids), owner)
            cur.execute(
                "INSERT INTO vector_quarantine (tenant, memory_id, error, at, model) "
                "SELECT tenant, id, %s, now(), %s FROM memories "
                "WHERE tenant = %s AND id = ANY(%s) "
                "ON CONFLICT (tenant, memory_id) DO UPDATE "
                "SET error = excluded.error, at = now(), model = excluded.model",
                (
                    shared.nul_written_out(error)[:500],
                    None if model is None else shared.nul_written_out(model),
                    tenant,
                    list(ids),
                ),
            )
            cur.execute(
                "DELETE FROM pending_vectors WHERE tenant = %s AND memory_id = ANY(%s)",
                (tenant, list(ids)),
            )

    @_absent_if_nul(EmbeddingStatus(pending=0), "tenant")
    def embedding_status(self, tenant: str | None = None) -> EmbeddingStatus:
        where, params = ("WHERE tenant = %s", [tenant]) if tenant is not None else ("", [])
        pending = self._read(f"SELECT count(*) FROM pending_vectors {where}", params)[0][0]
        total = self._read(f"SELECT count(*) FROM vector_quarantine {where}", params)[0][0]
        rows = self._read(
            f"SELECT memory_id, tenant, error, at FROM vector_quarantine {where} "
            f"ORDER BY at LIMIT {QUARANTINED_SHOWN}",
            params,
        )
        return EmbeddingStatus(
            pending=int(pending),
            quarantined=tuple(Quarantined(r[0], r[1], r[2], utc(r[3])) for r in rows),
            quarantined_total=int(total),
        )

    # -- search -------------------------------------------------------------
    @_absent_if_nul([], "flt")
    def keyword_search(
        self, flt: Filter, query: str, *, limit: int, context_weight: float = 0.5
    ) -> _Ranks:
        """Okapi BM25 over text and context (context scaled by ``context_weight``), best
        first; see ``postgres_bm25`` for why not ``ts_rank``."""
        words = tsquery_words(query_terms(query), fold=self._fold_words)
        if not words or limit <= 0:
            return []
        where, params = filter_sql(flt, _now())
        sql = bm25_sql(where, float(context_weight))
        rows = self._read(sql, (words, or_tsquery(words), *params, *params, limit))
        return [Ranked(r[0], float(r[1])) for r in rows]

    @_absent_if_nul([], "flt")
    def vector_search(self, flt: Filter, vector: Vector, *, limit: int) -> _Ranks:
        query = np.asarray(vector, dtype=np.float32).ravel()
        dim = int(query.size)
        if limit <= 0 or dim == 0:
            return []
        where, params = filter_sql(flt, _now())
        probe = vector_text(query)
        distance = f"v.vec::vector({dim}) <=> %s::vector({dim})"
        scoped = (
            "FROM vectors v JOIN memories m ON m.tenant = v.tenant AND m.id = v.memory_id "
            f"WHERE v.dim = {dim} AND v.tenant = %s AND {where}"
        )
        # A zero vector (query or stored) has no direction: pgvector's distance is NaN,
        # taken as 1 (cosine 0), as SQLite's dot product gives, so no hit scores NaN.
        ranked = (
            "z AS (SELECT id, seq, CASE WHEN d = 'NaN' THEN 1 ELSE d END AS d FROM c) "
            "SELECT id, 1 - d FROM z ORDER BY d, seq"
        )
        # pgvector >= 0.8 scans its HNSW index iteratively under the filter (set for the
        # pool's connections), so a scope's hits are not cut short by other scopes'...
        args = (flt.scope.tenant, *params)
        rows = self._read(
            f"WITH c AS MATERIALIZED (SELECT m.id, m.seq, {distance} AS d {scoped} "
            f"ORDER BY {distance} LIMIT %s), {ranked}",
            (probe, *args, probe, limit),
        )
        # ...until it has read hnsw.max_scan_tuples (20,000) index entries: a small scope
        # whose vectors lie far from the query in a large tenant came back short, even
        # empty. When the scope holds more vectors than came back, every one of them is
        # ranked instead (no ORDER BY in the CTE for the index to serve): exact, and
        # costing a pass over the scope's vectors. A search that fills its limit, nearly
        # every one, costs nothing more; one short of it, one count of at most limit rows.
        if len(rows) < limit and self._holds_more(scoped, args, len(rows)):
            rows = self._read(
                f"WITH c AS MATERIALIZED (SELECT m.id, m.seq, {distance} AS d {scoped}), "
                f"{ranked} LIMIT %s",
                (probe, *args, limit),
            )
        return [Ranked(r[0], float(r[1])) for r in rows]

    def without_vectors(self, tenant: str, ids: Sequence[str], *, dimensions: int) -> set[str]:
        """One indexed read of ``vectors`` (its primary key) for the ids asked."""
        asked = [i for i in ids if "\x00" not in i and "\x00" not in tenant]  # name nothing
        held: set[str] = set()
        if asked:
            rows = self._read(
                "SELECT memory_id FROM vectors WHERE tenant = %s AND memory_id = ANY(%s) "
                "AND dim = %s",
                (tenant, asked, dimensions),
            )
            held = {r[0] for r in rows}
        return {i for i in ids if i not in held}

    @_absent_if_nul({}, "tenant", "ids")
    def vector_scores(self, tenant: str, ids: Sequence[str], vector: Vector) -> dict[str, float]:
        """One indexed read of ``vectors`` (its primary key) for the ids asked, scored as
        ``vector_search`` scores (a zero vector's NaN distance as cosine 0)."""
        query = np.asarray(vector, dtype=np.float32).ravel()
        dim = int(query.size)
        if not ids or dim == 0:
            return {}
        rows = self._read(
            f"SELECT memory_id, vec::vector({dim}) <=> %s::vector({dim}) FROM vectors "
            "WHERE tenant = %s AND memory_id = ANY(%s) AND dim = %s",
            (vector_text(query), tenant, list(ids), dim),
        )
        return {r[0]: 1.0 - (1.0 if math.isnan(r[1]) else float(r[1])) for r in rows}

    def _holds_more(self, scoped: str, args: Sequence[object], found: int) -> bool:
        """Whether more than ``found`` vectors are in ``scoped`` (vector_search's FROM and
        WHERE, with its parameters ``args``); counts at most ``found + 1``."""
        held = self._read(
            f"SELECT count(*) FROM (SELECT 1 {scoped} LIMIT %s) AS n", (*args, found + 1)
        )
        return int(held[0][0]) > found

    # -- vectors -------------------------------------------------------------
    @_again_after_deadlock
    def _write_vectors(self, batch: shared.VectorWrite) -> None:
        tenant, vecs = batch.tenant, batch.vectors
        dim = int(vecs.shape[1])
        if dim not in self._indexed_dims:
            with self._tx("index build") as cur:
                ensure_hnsw_index(cur, dim)
            self._indexed_dims.add(dim)
        latest = {memory_id: k for k, memory_id in enumerate(batch.ids)}  # last one wins
        with self._tx("vector write") as cur:
            if batch.owner is not None:
                claimed = _unclaim(cur, tenant, list(latest), batch.owner)
                latest = {i: latest[i] for i in claimed}
            cur.execute(
                "INSERT INTO vectors (tenant, memory_id, dim, model, vec) "
                f"SELECT m.tenant, m.id, {dim}, %s, u.v::vector({dim}) "
                "FROM unnest(%s::text[], %s::text[]) AS u(id, v) "
                "JOIN memories m ON m.tenant = %s AND m.id = u.id "
                "ON CONFLICT (tenant, memory_id) DO UPDATE SET "
                "dim = excluded.dim, model = excluded.model, vec = excluded.vec",
                (
                    batch.model,
                    list(latest),
                    [vector_text(vecs[k]) for k in latest.values()],
                    tenant,
                ),
            )
            cur.execute(
                "DELETE FROM pending_vectors WHERE tenant = %s AND memory_id = ANY(%s)",
                (tenant, list(latest)),
            )

    def requeue_stale_vectors(self, model: str, *, dimensions: int | None = None) -> int:
        # No vector is stored under a model holding NUL (PostgreSQL cannot hold one), so
        # each is another model's, as SQLite answers; the name itself is never sent.
        stale, params = ("", ()) if "\x00" in model else _stale_vectors(model, dimensions)
        failed = "" if "\x00" in model else "WHERE model IS DISTINCT FROM %s"
        with self._tx("requeue stale vectors") as cur:
            cur.execute(
                "INSERT INTO pending_vectors (tenant, memory_id) "
                f"SELECT tenant, memory_id FROM vectors {stale} "
                f"UNION SELECT tenant, memory_id FROM vector_quarantine {failed} "
                "ON CONFLICT DO NOTHING",
                (*params, model) if stale else (),
            )
            queued = int(cur.rowcount)
            cur.execute(f"DELETE FROM vector_quarantine {failed}", (model,) if failed else ())
            return queued

    def pending_vectors(self, *, limit: int) -> _Records:
        rows = self._read(
            f"SELECT {RECORD_COLUMNS} FROM pending_vectors p JOIN memories m "
            "ON m.tenant = p.tenant AND m.id = p.memory_id ORDER BY m.seq LIMIT %s",
            (limit,),
        )
        return [record_from_row(r) for r in rows]

    @_absent_if_nul([], "owner")  # no claim is held under it: nothing is claimed
    def claim_vectors(self, owner: str, *, limit: int, lease_s: float) -> _Records:
        # One statement, its own transaction: SKIP LOCKED passes over rows another
        # worker is claiming at this instant; leases are on the database's clock.
        with self._tx("vector claim") as cur:
            rows = cur.execute(
                "WITH free AS (SELECT p.tenant, p.memory_id FROM pending_vectors p "
                "JOIN memories m ON m.tenant = p.tenant AND m.id = p.memory_id "
                "WHERE p.claimed_until < now() OR p.claimed_by = %s "
                "ORDER BY m.seq LIMIT %s FOR UPDATE OF p SKIP LOCKED), "
                "mine AS (UPDATE pending_vectors p SET claimed_by = %s, "
                "claimed_until = now() + make_interval(secs => %s) FROM free "
                "WHERE p.tenant = free.tenant AND p.memory_id = free.memory_id "
                "RETURNING p.tenant, p.memory_id) "
                f"SELECT {RECORD_COLUMNS} FROM mine JOIN memories m "
                "ON m.tenant = mine.tenant AND m.id = mine.memory_id ORDER BY m.seq",
                (owner, limit, owner, float(lease_s)),
            ).fetchall()
        return [record_from_row(r) for r in rows]

    @_absent_if_nul(0, "owner")
    def extend_claim(self, owner: str, *, lease_s: float) -> int:
        with self._tx("vector claim") as cur:
            cur.execute(
                "UPDATE pending_vectors SET claimed_until = now() + make_interval(secs => %s) "
                "WHERE claimed_by = %s",
                (float(lease_s), owner),
            )
            return int(cur.rowcount)

    # -- session logs (postgres_sessions.PgSessionLog) ---------------------------
    def append_turns(
        self,
        scope: Scope,
        messages: Sequence[Message],
        tokens: Sequence[int],
        *,
        after: Turn | None = None,
        newest: int | None = None,
    ) -> _Turns:
        return self._sessions.append_turns(scope, messages, tokens, after=after, newest=newest)

    @_absent_if_nul([], "scope")
    def turns(
        self,
        scope: Scope,
        *,
        after_seq: int = -1,
        limit: int | None = None,
        newest: bool = False,
        max_bytes: int | None = None,
        settled: bool = False,
    ) -> _Turns:
        return self._sessions.turns(
            scope,
            after_seq=after_seq,
            limit=limit,
            newest=newest,
            max_bytes=max_bytes,
            settled=settled,
        )

    @_absent_if_nul([], "scope")
    def turn_texts(
        self, scope: Scope, *, after_seq: int = -1, limit: int | None = None
    ) -> _TurnTexts:
        return self._sessions.turn_texts(scope, after_seq=after_seq, limit=limit)

    @_absent_if_nul(None, "scope")
    def turns_since(self, scope: Scope, last: Turn, *, revision: str | None) -> _Turns | None:
        return self._sessions.turns_since(scope, last, revision=revision)

    def set_session_meta(self, scope: Scope, meta: Mapping[str, Any]) -> None:
        self._sessions.set_session_meta(scope, meta)

    @_absent_if_nul(False, "revision")  # a NUL scope is a write's: refused, named
    def swap_session_meta(
        self, scope: Scope, meta: Mapping[str, Any], *, revision: str | None
    ) -> bool:
        return self._sessions.swap_session_meta(scope, meta, revision=revision)

    @_absent_if_nul({}, "scope")
    def session_meta(self, scope: Scope) -> dict[str, Any]:
        return self._sessions.session_meta(scope)

    @_absent_if_nul(({}, None), "scope")
    def session_meta_revision(self, scope: Scope) -> tuple[dict[str, Any], str | None]:
        return self._sessions.session_meta_revision(scope)

    @_absent_if_nul([], "scope")
    def sessions(self, scope: Scope) -> _Strs:
        return self._sessions.sessions(scope)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _limit_message(exc: BaseException) -> str:
    """What a caller is told about a value past one of PostgreSQL's limits (54000)."""
    first = _first_line(exc)
    if "tsvector" in first:
        return (
            f"PostgreSQL cannot index this text for keyword search ({first}): the words "
            "of a memory's text and context may take at most 1 MB there; split it"
        )
    return f"PostgreSQL cannot store this value: {first}"


class _Update(shared.RecordUpdate):
    """update()'s SQL on PostgreSQL: rows by (tenant, id), locked with FOR UPDATE."""

    mark = "%s"

    def locked(self, tenant: str, memory_id: str) -> tuple[tuple[str, str], MemoryRecord] | None:
        found = self.cur.execute(
            f"SELECT {RECORD_COLUMNS} FROM memories m WHERE m.tenant = %s AND m.id = %s FOR UPDATE",
            (tenant, memory_id),
        ).fetchone()
        return None if found is None else ((tenant, memory_id), record_from_row(found))

    def drop_vector(self, key: tuple[str, str]) -> None:
        self.cur.execute("DELETE FROM vectors WHERE tenant = %s AND memory_id = %s", key)
        # A claimant is embedding the old text: end its claim, so its set_vectors skips
        # the record and the next claim embeds the new text.
        self.cur.execute(
            "INSERT INTO pending_vectors (tenant, memory_id) VALUES (%s, %s) "
            "ON CONFLICT (tenant, memory_id) DO UPDATE "
            "SET claimed_by = NULL, claimed_until = '-infinity'",
            key,
        )
        self.cur.execute("DELETE FROM vector_quarantine WHERE tenant = %s AND memory_id = %s", key)

    def write(
        self, key: tuple[str, str], sets: Sequence[str], params: Sequence[object]
    ) -> MemoryRecord:
        row = self.cur.execute(
            f"UPDATE memories m SET {', '.join(sets)} WHERE m.tenant = %s AND m.id = %s "
            f"RETURNING {RECORD_COLUMNS}",
            (*params, *key),
        ).fetchone()
        return record_from_row(row)

    def remove(self, tenant: str, ids: Sequence[str], *, now: Any, actor: str) -> None:
        _delete_records(self.cur, tenant, ids, purge=False, now=now, actor=actor, derived=ids)

    def insert(self, records: Sequence[MemoryRecord], *, now: Any, actor: str) -> None:
        _insert_records(self.cur, records, now, actor)

    def quoting(
        self, tenant: str, session_id: str, probes: Sequence[str], seq: int | None
    ) -> list[tuple[tuple[str, str], MemoryRecord]]:
        # One pass over the session's rows (``memories_session``); only the rows kept
        # are locked. ``NO KEY``: an embedding worker's ``FOR KEY SHARE`` does not hold
        # it up.
        numbered = (
            ""
            if seq is None
            else "AND (jsonb_typeof(m.metadata->'seq') IS DISTINCT FROM 'number' "
            "OR m.metadata->'seq' = to_jsonb(%s::bigint)) "
        )
        rows = self.cur.execute(
            f"SELECT {RECORD_COLUMNS} FROM memories m WHERE m.tenant = %s "
            f"AND m.session_id = %s {numbered}"
            "AND EXISTS (SELECT 1 FROM unnest(%s::text[]) p WHERE strpos(m.context, p) > 0) "
            "ORDER BY m.id FOR NO KEY UPDATE",
            (tenant, session_id, *(() if seq is None else (seq,)), list(probes)),
        ).fetchall()
        return [((tenant, r.id), r) for r in map(record_from_row, rows)]

    def set_context(self, key: tuple[str, str], context: str) -> None:
        self.cur.execute(
            "UPDATE memories SET context = %s WHERE tenant = %s AND id = %s", (context, *key)
        )


def _insert_records(cur: Any, records: Sequence[MemoryRecord], now: datetime, actor: str) -> None:
    """Insert ``records``, queue them for vectors and log their ADD events, in the
    transaction open on ``cur``."""
    cur.executemany(_INSERT_RECORD, [record_params(r, now) for r in records])
    cur.executemany(
        "INSERT INTO pending_vectors (tenant, memory_id) VALUES (%s, %s)",
        [(r.tenant, r.id) for r in records],
    )
    cur.executemany(
        _INSERT_HISTORY,
        [shared.add_event(r, now, actor) for r in records],
    )


def _delete_records(
    cur: Any,
    tenant: str,
    ids: Sequence[str],
    *,
    purge: bool,
    now: datetime,
    actor: str,
    derived: Collection[str] = (),
) -> _Strs:
    """Delete those of ``ids`` that exist and log each deletion, in the transaction
    open on ``cur``; returns the ids deleted. A purge also scrubs the copies of every
    text they had (history's, read before it is blanked) from the contexts of their
    sessions' records, and of the records without a session of their scopes (see
    ``store/erasure.py``). ``derived``: the ids of records made from another (a turn's
    facts, ``Derived.drop``), whose history is logged as a purge's: the record they were
    made from keeps the text, and a later purge of it must find no copy left."""
    rows = cur.execute(
        "DELETE FROM memories WHERE tenant = %s AND id = ANY(%s) "
        "RETURNING id, user_id, text, session_id, agent_id",
        (tenant, list(dict.fromkeys(ids))),
    ).fetchall()
    if purge and rows:
        gone = [r[0] for r in rows]
        texts = {r[2] for r in rows} | set(shared.history_texts(cur, tenant, gone, mark="%s"))
        _scrub_contexts(
            cur,
            tenant,
            Scrub(texts),
            sessions=sorted({r[3] for r in rows if r[3] is not None}),
            loose={(r[1], r[4]) for r in rows if r[3] is None},
        )
    shared.log_deletions(
        cur,
        tenant,
        [shared.Deletion(r[0], r[1], r[2], r[3]) for r in rows],
        blank={r[0] for r in rows if purge or r[0] in derived},
        at=now,
        actor=actor,
        mark="%s",
    )
    return [r[0] for r in rows]


def _purge_remains(cur: Any, tenant: str, ids: Sequence[str], deleted: Sequence[str]) -> None:
    """Purge what is left of those of ``ids`` deleted earlier without a purge
    (:func:`~contextos.store.records.purge_remains`): their history's texts, and the
    copies of them in any context of the tenant (history written before it named the
    memory's session names none)."""
    gone = set(deleted)
    remains = [i for i in dict.fromkeys(ids) if i not in gone]
    texts = shared.purge_remains(cur, tenant, remains, mark="%s") if remains else []
    _scrub_contexts(cur, tenant, Scrub(texts), sessions=(), anywhere=True)


def _unclaim(cur: Any, tenant: str, ids: list[str], owner: str) -> list[str]:
    """Take out of the queue those of ``ids`` whose row ``owner`` still claims, and
    return them. A record whose text changed since the claim (``_Update.drop_vector``
    ends it), or whose claim another worker took over, is skipped: the vector in hand
    may describe text it no longer has. The memories are locked first, as update()
    locks them before their vector and queue rows (the same order, so no deadlock), and
    the DELETE then reads the claims as a concurrent update left them."""
    cur.execute(
        "SELECT 1 FROM memories WHERE tenant = %s AND id = ANY(%s) ORDER BY id FOR KEY SHARE",
        (tenant, ids),
    )
    rows = cur.execute(
        "DELETE FROM pending_vectors WHERE tenant = %s AND memory_id = ANY(%s) "
        "AND claimed_by = %s RETURNING memory_id",
        (tenant, ids, owner),
    ).fetchall()
    return [r[0] for r in rows]


def _any_of(column: str) -> str:
    """PostgreSQL's test that ``column`` is one of a list given as one array parameter."""
    return f"{column} = ANY(%s)"


def _scrub_contexts(
    cur: Any,
    tenant: str,
    scrub: Scrub,
    *,
    sessions: Sequence[str],
    loose: Iterable[tuple[str | None, str | None]] = (),
    anywhere: bool = False,
) -> None:
    """Remove the copies ``scrub`` finds from the context of the records in
    ``sessions``, and of those without a session whose ``(user_id, agent_id)`` is in
    ``loose`` that quote a turn (only an older version wrote such quotes); with
    ``anywhere``, of every record of the tenant whose context holds one."""
    if not scrub:
        return
    rows: list[tuple[str, str]] = []
    if anywhere:
        # One scan for every probe, not one statement a probe: a purge of 700 memories
        # deleted earlier made 700 round trips, each reading the whole tenant.
        rows += cur.execute(
            "SELECT m.id, m.context FROM memories m WHERE m.tenant = %s AND m.context <> '' "
            "AND EXISTS (SELECT 1 FROM unnest(%s::text[]) AS p(probe) "
            "WHERE strpos(m.context, p.probe) > 0)",
            (tenant, list(scrub.probes)),
        ).fetchall()
    if sessions:
        rows += cur.execute(
            "SELECT id, context FROM memories WHERE tenant = %s AND context <> '' "
            "AND session_id = ANY(%s)",
            (tenant, list(sessions)),
        ).fetchall()
    for user_id, agent_id in sorted(loose, key=repr):
        # "= %s" or "IS NULL" per id, not IS NOT DISTINCT FROM: the scope index serves it.
        user = "user_id IS NULL" if user_id is None else "user_id = %s"
        agent = "agent_id IS NULL" if agent_id is None else "agent_id = %s"
        ids = [i for i in (user_id, agent_id) if i is not None]
        rows += cur.execute(
            f"SELECT id, context FROM memories WHERE tenant = %s AND {user} AND {agent} "
            "AND session_id IS NULL AND strpos(context, %s) > 0",
            (tenant, *ids, REPLY_MARK),
        ).fetchall()
    changed = [(new, tenant, memory_id) for memory_id, ctx in rows if (new := scrub(ctx)) != ctx]
    if changed:  # psycopg's executemany of nothing still opens a pipeline: a round trip
        cur.executemany("UPDATE memories SET context = %s WHERE tenant = %s AND id = %s", changed)


#: The live records of one scope with one text hash (``find_by_hash``, ``put``'s
#: ``repeats``).
_LIVE_BY_HASH = (
    "WHERE m.tenant = %s AND m.hash = %s "
    "AND m.user_id IS NOT DISTINCT FROM %s AND m.agent_id IS NOT DISTINCT FROM %s "
    "AND m.session_id IS NOT DISTINCT FROM %s "
    f"AND {open_clause('m', 'now()')}"
)


def _by_hash_params(scope: Scope, content_hash: str) -> tuple[object, ...]:
    return (scope.tenant, content_hash, scope.user_id, scope.agent_id, scope.session_id)


def _check_repeats(cur: Any, repeats: Sequence[Repeats]) -> None:
    """``put``'s ``repeats`` checks. Writers of new texts in one scope queue on one
    transaction lock of the scope (in READ COMMITTED, two writers of one text would each
    miss the other's uncommitted row and both write); each then reads the rows committed
    before it and is refused if one repeats it. One lock a scope, not a text: a lock a
    text held 30,000 locks for an add of 30,000 texts, past the server's lock table
    ("out of shared memory"; a review)."""
    for scope in sorted({seen.scope for seen in repeats}, key=repr):
        key = json.dumps(["repeat", scope.tenant, scope.user_id, scope.agent_id, scope.session_id])
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
    for seen in repeats:
        ids = cur.execute(
            f"SELECT m.id FROM memories m {_LIVE_BY_HASH}", _by_hash_params(seen.scope, seen.hash)
        )
        check_repeats(seen, (row[0] for row in ids.fetchall()))


def _check_newest(cur: Any, after: Newest) -> datetime | None:
    """Raise Conflict unless the newest record matching ``after.filter`` is
    ``after.id`` (last updated at ``after.updated_at``, where given:
    ``base.check_newest``); return its creation time (None: there is none). Writers based on
    one scope queue on a transaction lock of that scope (two adds would both see the
    same newest record and both write), and the newest row is locked for share: an
    erasure that deleted it and has not committed yet is waited for, and the row then
    no longer counts."""
    scope = after.filter.scope
    key = json.dumps([scope.tenant, scope.user_id, scope.agent_id, scope.session_id])
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
    where, params = filter_sql(after.filter, _now())
    newest = cur.execute(
        f"SELECT m.id, m.updated_at, m.created_at FROM memories m WHERE {where} "
        "ORDER BY m.created_at DESC, m.seq DESC LIMIT 1 FOR SHARE",
        params,
    ).fetchone()
    check_newest(after, newest and (newest[0], utc(newest[1])))
    return utc(newest[2]) if newest else None


def _conninfo(url: str) -> dict[str, str]:
    """The parts of a URL or conninfo string (ValueError when it is malformed)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    except psycopg.Error as exc:
        raise ValueError(
            f"not a PostgreSQL URL: {_without_quoted(exc, url)} (a password or other "
            "part holding '%', '@', ':' or '/' must be percent-encoded, e.g. '%' as '%25')"
        ) from None


def _without_quoted(exc: BaseException, url: str) -> str:
    """libpq's complaint about ``url``, up to the first thing it quotes.

    Why: it quotes the part it could not read, which may be the password (an unencoded
    "%" in a generated one) or the whole URL, and this line reaches logs and terminals
    (a review saw ``invalid percent-encoded token: "Pa%ss-SECRET"``). Cut at the first
    quote, not each quoted part: a password holding ``"`` pairs the quotes wrongly."""
    said = _first_line(exc).replace(url, "...").split('"', 1)[0]
    return said.rstrip(' :"') or "libpq could not read it"


__all__ = ["PostgresStore"]
