"""The default Store: one SQLite file with FTS5 (BM25) and vectors.

- WAL mode; readers never block the writer. ``synchronous`` defaults to
  NORMAL: a committed write survives a crash (kill -9) of any process, and the
  file is never corrupted; only an OS crash or power cut can lose the last
  commits. ``synchronous="FULL"`` also survives those, at one fsync per
  commit (measured here: add p50 0.4 ms with NORMAL, 4.5 ms with FULL).
- Writes take the lock up front (``BEGIN IMMEDIATE``) and wait up to
  ``busy_timeout`` for other processes, so two writers serialise cleanly; the
  timeout counts from when a write began, its wait behind this process's other
  writes included (``SQLiteStore._write``).
- A write first checks that the path still names the file (and -wal, -shm) the
  store opened: one removed or replaced under a running process is a StoreFault,
  not writes acknowledged into a file no later open finds (``_Opened``).
- ``secure_delete`` overwrites deleted content, and ``forget`` rewrites the
  FTS index, rebuilds the file (``VACUUM``) and truncates the WAL, so a forgotten
  user's text does not linger in free pages, nor in the free space of live pages
  (where b-tree splits leave old copies of cells that ``secure_delete`` never sees).
- Vectors are BLOBs in the ``vectors`` table, mirrored by an in-process
  :class:`~contextos.store.sqlite.vector_index.VectorIndex` (see there for why).
- Keyword search ranks with FTS5's BM25, computed by an in-process
  :class:`~contextos.store.sqlite.lexical_index.LexicalIndex` (see there for why).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import numpy as np

from contextos.errors import NotFound, StoreError, StoreFault
from contextos.store import forks
from contextos.store import records as shared  # the parameter of put() is named records
from contextos.store.base import (
    LEASE_REACH,
    QUARANTINED_SHOWN,
    Close,
    EmbeddingStatus,
    ErasedThenInterrupted,
    Erasure,
    ErasurePending,
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
from contextos.store.sqlite.codec import (
    RECORD_COLUMNS,
    SQLITE,
    TURN_COLUMNS,
    filter_sql,
    from_epoch,
    metadata_json,
    opt_epoch,
    record_row,
    row_to_record,
    turn_from_row,
    turn_row,
)
from contextos.store.sqlite.lexical_index import MAX_BLOCKS, LexicalIndex, LexRow
from contextos.store.sqlite.owner_turns import FileTurns
from contextos.store.sqlite.schema import MIGRATIONS, READABLE_FROM, migrate, newer_schema
from contextos.store.sqlite.vector_index import IndexRow, VectorIndex
from contextos.text.query import query_terms
from contextos.types import Filter, HistoryEvent, MemoryRecord, Message, Scope, Turn

#: The time of a list key (``list_after``): a float as ``repr`` writes it.
_EPOCH_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?")

_INSERT_HISTORY = shared.insert_history_sql("?")
_INSERT_RECORD = (
    f"INSERT INTO memories ({', '.join(shared.RECORD_FIELDS)}) "
    f"VALUES ({','.join('?' * len(shared.RECORD_FIELDS))})"
)


#: Seconds ahead of the clock past which an embedding claim's end is taken to have been
#: stamped before the clock stepped back (``claim_vectors``), whatever the claimant's lease:
#: ten minutes, well past any claim's lease (30 s by default).
_CLAIM_REACH_S = 600.0


#: How this store writes the session-meta statements (``records.MetaSQL``).
_META_SQL = shared.MetaSQL(
    mark="?",
    json_cast="",
    same_revision=f"json_extract(meta, '$.{shared.REVISION_KEY}') IS ?",
    in_sessions="IN (SELECT value FROM json_each(?))",
    decode=json.loads,
    revision=f"json_extract(meta, '$.{shared.REVISION_KEY}')",
)


#: The live records of one scope with one text hash (``find_by_hash``, ``put``'s
#: ``repeats``). INDEXED BY: for its ORDER BY the planner preferred walking the
#: tenant's created_at index (every record of the tenant, on every add) to the hash.
_LIVE_BY_HASH = (
    "INDEXED BY memories_hash WHERE tenant = ? AND hash = ? "
    "AND user_id IS ? AND agent_id IS ? AND session_id IS ? "
    f"AND {open_clause('memories', '?')}"
)


def _listing_index(flt: Filter) -> str:
    """The index a listing of ``flt`` walks, named where the planner would pick another.

    Why: a session is the narrowest scope, and its index (``memories_session``) holds
    the listing's order too; but with a user named as well the planner took the user's
    (``memories_user_time``), whose order also fits, and walked every record of the
    user to find the session's (a big user's old session: all of them). Other scopes
    are left to the planner: with a user it walks that user's index, with a type the
    type's (``memories_type_user``/``_agent``)."""
    return "INDEXED BY memories_session " if flt.scope.session_id is not None else ""


def _by_hash_params(scope: Scope, content_hash: str, now: float) -> tuple[object, ...]:
    return (scope.tenant, content_hash, scope.user_id, scope.agent_id, scope.session_id, now)


def scope_terms(scope: Scope) -> builtins.list[str]:
    """The full-text terms of ``scope``'s user, agent and session (those it names), as
    the ``scope_terms`` column writes them: a letter and the hex of tenant, 0x1f, id."""
    return [
        prefix + f"{scope.tenant}\x1f{value}".encode().hex()
        for prefix, value in (("u", scope.user_id), ("a", scope.agent_id), ("s", scope.session_id))
        if value is not None
    ]


#: How long one try of an erasure's WAL checkpoint may hold the file's writers off while
#: it waits for readers (``SQLiteStore._truncate_wal``), in ms.
CHECKPOINT_TRY_MS = 100

#: Tries of an erasure's checkpoint in a row that copied the WAL up to the same frame:
#: a reader keeps one snapshot (a backup, a ``sqlite3`` shell), and the next tries do not
#: wait for it in the busy handler, which held every writer off meanwhile
#: (``SQLiteStore._truncate_wal``).
PINNED_TRIES = 2

#: Seconds between the tries while such a reader stays.
PINNED_PAUSE_S = 0.25

#: One slice of a write's wait for another process's write lock (``SQLiteStore._begin``),
#: in ms: between slices Python runs its signal handlers (Ctrl-C).
BEGIN_SLICE_MS = 100

#: How long this process's later writes, purges and close leave a rebuild that failed
#: (``VACUUM`` found no room for its copy of the file) before one tries it again, in s
#: (:class:`_PutOff`). The next ``forget``, ``vacuum()`` and the next process to open
#: the file try at once.
REBUILD_RETRY_S = 60.0


class SQLiteStore(shared.PatchUpdates, shared.VectorWrites):
    """Store on one SQLite file. Thread-safe; several processes may share the file."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 10_000,
        synchronous: str = "NORMAL",
        lexical_users: int = MAX_BLOCKS,
        owner_turn_wait_s: float = OWNER_TURN_WAIT_S,
    ) -> None:
        """``lexical_users``: how many (tenant, user) the keyword index holds in memory
        at most, the least recently searched dropped first and read again at its next
        search (:data:`~contextos.store.sqlite.lexical_index.MAX_BLOCKS`).
        ``owner_turn_wait_s``: how long an inferring add waits for another handle's add
        of the same user's facts before it decides without its turn
        (``store.owner_turns``); 0 never waits."""
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError("synchronous must be NORMAL, FULL or EXTRA")
        if lexical_users < 1:
            raise ValueError("lexical_users must be at least 1")
        self._lexical_users = lexical_users
        self.path = Path(path)
        #: The path as opened, whatever directory the process moves to later.
        self._absolute_path = os.path.abspath(path)
        self._lock = threading.RLock()
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._db, self._held = _connect(str(path), busy_timeout_ms, synchronous.upper())
        self.read_only = bool(self._db.execute("PRAGMA query_only").fetchone()[0])
        #: The files this store writes, as they were when it opened them (``_write``
        #: checks the path still names them); None where it never writes.
        self._opened = None if self.read_only or str(path) == ":memory:" else _Opened.now(path)
        self._owner_turns = FileTurns(
            ":memory:" if self.read_only else str(path), wait_s=owner_turn_wait_s
        )
        # Reads use a connection of their own: a write waiting for another process's
        # lock (up to busy_timeout) holds ``_lock``, and reads must not queue behind it.
        # WAL lets this reader see every committed write without blocking any writer.
        self._read_lock = threading.RLock()
        self._reader = (
            self._db
            if self.read_only or str(path) == ":memory:"
            else _open_reader(str(path), busy_timeout_ms)
        )
        self._index: VectorIndex | None = None
        self._index_vseq = 0  # vectors loaded up to this vseq
        self._index_log_seq = 0  # index_log read up to this seq
        self._index_log_id: str | None = None  # the record its row ``_index_log_seq`` names
        self._seen_version: tuple[int, int] = (-1, -1)
        # The keyword index and where it has read the file up to (``_fresh_lexical``).
        self._lexical_lock = threading.Lock()
        self._lexical: LexicalIndex | None = None
        self._lexical_log_seq = 0
        self._lexical_log_id: str | None = None  # as ``_index_log_id``
        self._lexical_version: tuple[int, int] = (-1, -1)
        #: Scopes whose keyword search failed on a fresh index (``_lexical_hits``).
        self._lexical_failing: dict[tuple[str, str | None], _Failing] = {}
        self._erasure_pending = bool(
            not self.read_only and self._db.execute("SELECT 1 FROM erasure_pending").fetchone()
        )
        #: The pending erasure's mark (``since``) this process has rebuilt the file for
        #: (:meth:`_rebuild_if_marked`): a retry flips the mark without a second VACUUM.
        self._rebuilt_since: float | None = None
        #: A rebuild that failed here a moment ago, not tried again until it is due.
        self._put_off: _PutOff | None = None
        #: Commits made on this connection: ``PRAGMA data_version`` only tells about
        #: other connections', so the index also watches this counter.
        self._writes = 0
        self._closed = False
        self._forked = False
        #: Set when SQLite found the file damaged (:meth:`_failed`): every later write is
        #: refused with it.
        self._damage: StoreFault | None = None
        self._pid = forks.track(self)
        if self._erasure_pending:
            # A process died between an erasure's commit and its WAL truncation (or gave
            # up on a reader): finish it now. Only a later write did, so a process that
            # only reads kept the erased text in the -wal for as long as it ran (a review).
            self._retry_erasure()

    def _inherited_by_fork(self) -> None:
        """In a forked child (``store.forks``): every later use raises a StoreError that
        says to open the store in this process; the connections are left alone."""
        forks.inherit(self._db, self._reader, self._lexical)
        if not self._closed and str(self.path) != ":memory:":
            forks.inherit_file(self._absolute_path)
        gone = cast(sqlite3.Connection, forks.OpenedBeforeFork(self.path, self._pid))
        self._db = self._reader = gone
        self._lock, self._read_lock = threading.RLock(), threading.RLock()
        self._lexical_lock = threading.Lock()
        self._index, self._lexical = None, None
        self._owner_turns.inherited_by_fork()
        self._forked = True

    # -- plumbing ----------------------------------------------------------
    @contextmanager
    def _write(self, committed: shared.Committed | None = None) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), this process's
        writes one at a time (``_lock``); ``committed`` is marked done once its COMMIT
        has gone through (:func:`_ended`).

        The busy timeout is the whole wait of a write, counted from when it arrives
        here: the wait for ``_lock`` (this process's other writes) and then for the
        file's write lock (``BEGIN IMMEDIATE``, other processes') share it. Each used
        to have its own: behind another process's lock held past the timeout, the
        writes queued on ``_lock`` each waited the full timeout again in turn, the
        k-th answered after k times 10 s (a review)."""
        wait_s = self._busy_timeout_ms / 1000
        deadline = time.monotonic() + wait_s
        if not self._lock.acquire(timeout=wait_s):
            raise StoreError(
                f"database is busy: waited the busy timeout ({self._busy_timeout_ms} ms) "
                "behind this process's other writes (another process holding the write "
                "lock, or a long write here such as a vacuum)"
            )
        try:
            if self.read_only:
                raise StoreFault(
                    f"cannot write the database {self.path}: it was opened read-only (its "
                    "file or its folder is not writable by this process); make them writable "
                    "(chmod, chown) and open it again (restart contextos serve or mcp)"
                )
            if self._damage is not None:
                raise self._damage
            self._begin(deadline)
            try:
                with _ended(self._db, "write", self._failed, committed):
                    yield self._db
                    if self._writes % PRUNE_INDEX_LOG_EVERY == 0:
                        _prune_index_log(self._db)
            finally:
                self._writes += 1
            self._retry_erasure(leave_fresh=True)
        finally:
            self._lock.release()

    def _begin(self, deadline: float) -> None:
        """``BEGIN IMMEDIATE``, waiting for other processes' write lock until ``deadline``
        (``time.monotonic``) at most; ``_lock`` held. First, that the path still names
        the file this store opened (:meth:`_check_same_file`).

        The wait is taken in slices of ``BEGIN_SLICE_MS``: SQLite's busy handler sleeps
        in C, where Python runs no signal handler, so one wait of the whole timeout
        left a Ctrl-C (or SIGTERM) behind another process's lock unseen for up to
        10 s (a review). Between slices the interpreter runs its handlers."""
        self._check_same_file()
        try:
            self._db.execute(f"PRAGMA busy_timeout = {BEGIN_SLICE_MS}")
            try:
                while True:
                    try:
                        self._db.execute("BEGIN IMMEDIATE")
                        return
                    except sqlite3.OperationalError as exc:
                        busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                        if not busy or time.monotonic() >= deadline:
                            raise
            finally:
                self._db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        except sqlite3.OperationalError as exc:
            raise _write_refused(self._opened, exc) from exc
        except sqlite3.ProgrammingError as exc:  # closed
            raise StoreError(f"write failed: {exc}") from exc

    def _check_same_file(self) -> None:
        """Raise a StoreFault when the database file (or its -wal or -shm) was removed or
        replaced since this store opened it (``rm``, ``mv``, ``cp new.db memory.db``
        while ``contextos serve`` ran). SQLite writes on through the file it holds open
        and reports success, so every later write was acknowledged and then lost: gone
        with the unlinked file, or with a -wal another process made anew (a review).
        Three ``os.stat`` calls per write transaction: 7 µs in a loop, about 20 µs among
        real writes (cold caches) on a 2-core machine. 2,000 adds (hash embedder), median
        per add: 0.93 ms instead of 0.91 with vectors written inline (three write
        transactions an add), 0.45 instead of 0.43 with background embedding (one)."""
        if self._opened is None or self.closed:
            return  # the write fails as a closed store's (SQLite removed the -wal at close)
        moved = self._opened.moved()
        if moved is not None:
            raise StoreFault(
                f"the database file {moved} was removed or replaced after this process "
                "opened it; a write now would be lost, so none is made: close and open the "
                "database again (restart contextos serve or mcp)"
            )

    def _failed(self, what: str, exc: sqlite3.DatabaseError) -> StoreError:
        """The error of a read or write SQLite failed. A damaged file (SQLite's "database
        disk image is malformed", "file is not a database") is a :class:`StoreFault`
        naming the file, and no write is made after it. Why: a backup put in place
        beside a crashed server's old -wal (SQLite then replays that -wal onto it) was
        answered "busy, retry after a moment" for every read, for ever, while adds were
        still acknowledged into the damaged file (a review)."""
        if not _damaged(exc):
            return StoreError(f"{what} failed: {exc}")
        self._damage = StoreFault(damaged_message(self.path, exc))
        return self._damage

    def _retry_erasure(self, *, leave_fresh: bool = False) -> None:
        """After a commit (``leave_fresh``), at open or at close: finish an erasure left
        pending by any process, if no reader holds the old pages any more (never
        blocks); after a commit, a rebuild the process that erased is still making is
        left to it (:meth:`_rebuild_if_marked`). Nothing to do for a rebuild put off
        whose WAL this process truncated since (:class:`_PutOff`): a checkpoint after
        every write would cost two fsyncs each, and nothing erased is left in the WAL."""
        try:
            if not self._erasure_pending:
                row = self._db.execute("SELECT since FROM erasure_pending").fetchone()
                if row is None or self._wal_clean_for(float(row[0])):
                    return
                self._erasure_pending = True
            self._truncate_wal(wait=False, leave_fresh=leave_fresh)
        except (StoreError, sqlite3.DatabaseError):
            pass  # still held by a reader: the next write or close tries again

    def _wal_clean_for(self, since: float) -> bool:
        """Whether the rebuild the mark ``since`` owes is put off here and this process
        truncated the WAL after it failed (:class:`_PutOff`)."""
        put_off = self._put_off
        return put_off is not None and put_off.truncated_for == since and put_off.waiting()

    def _read(self, sql: str, params: Sequence[object] = ()) -> builtins.list[Any]:
        with self._read_lock:
            try:
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._failed("read", exc) from exc
            except OverflowError:
                # A number SQLite cannot hold (an offset or seq past 2**63-1) is the
                # caller's input: a ValueError in one line, as PostgreSQL's DataError is.
                raise ValueError(
                    "a number in this read is too large for SQLite (at most 2**63-1)"
                ) from None

    @property
    def closed(self) -> bool:
        """Also true when the connection was closed without :meth:`close` (a process
        tearing down, a test simulating a crash): nothing can be done on it either."""
        if self._closed or self._forked:
            return True
        try:
            self._db.in_transaction  # noqa: B018 - raises once the connection is closed
        except sqlite3.ProgrammingError:
            return True
        return False

    def clock(self) -> float:
        """This host's clock: every process on a SQLite file runs on one host, so leases
        (``Store.clock``) are judged by the clock that stamped them."""
        return time.time()

    def owner_turn(self, owner: Scope) -> contextlib.AbstractContextManager[bool]:
        """One inferring add of ``owner`` at a time among every handle on this file,
        through a lock in ``<db>-turns`` (``store.sqlite.owner_turns``); yields whether
        the turn was had."""
        return self._owner_turns.held(owner)

    def close(self) -> None:
        if self._forked:  # a fork's child: the connections are the parent's
            self._closed = True
            return
        with self._lock:
            still_open = not self.closed  # a second close, or a connection gone: no SQL
            self._closed = True
            if still_open and not self.read_only:
                # From the file's table, not only this process's flag: a rebuild owed by
                # a process that died is finished here too, not left to the next open
                # (a process that only read never did it, a review). Else the next
                # process to write or open finishes it.
                self._retry_erasure()
            with self._read_lock:
                if self._reader is not self._db:
                    self._reader.close()
            self._db.close()
            if still_open:
                _release(self._held)
        self._owner_turns.close()
        with self._lexical_lock:
            if self._lexical is not None:
                self._lexical.close()
                self._lexical = None

    # -- records -------------------------------------------------------------
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
        now = time.time()
        with self._write() as db:  # BEGIN IMMEDIATE: no other write until it commits
            for each in newest_checks(after):
                where, params = filter_sql(each.filter, now)
                newest = db.execute(
                    f"SELECT m.id, m.updated_at, m.created_at FROM memories m WHERE {where} "
                    "ORDER BY m.created_at DESC, m.rowid DESC LIMIT 1",
                    params,
                ).fetchone()
                check_newest(each, newest and (newest[0], from_epoch(newest[1])))
                # After the newest, as PostgreSQL does: this host's clock may have stepped
                # back since it was written (a review: turns numbered twice).
                created = from_epoch(newest[2]) if newest else None
                records = stamped_after(records, each.filter.scope, created, from_epoch(now))
            if unchanged:
                ids = json.dumps(list(unchanged))
                found = db.execute(
                    "SELECT id, hash FROM memories WHERE +tenant = ? AND id IN "
                    "(SELECT value FROM json_each(?)) AND valid_to IS NULL",
                    (tenant, ids),
                ).fetchall()
                check_unchanged(unchanged, found)
            for seen in repeats:  # BEGIN IMMEDIATE: no other process writes one meanwhile
                live = db.execute(
                    f"SELECT id FROM memories {_LIVE_BY_HASH}",
                    _by_hash_params(seen.scope, seen.hash, now),
                )
                check_repeats(seen, (row[0] for row in live))
            _insert_records(db, records, now, actor)
            self._close_in(_Update(db), closes, actor=actor)

    def restore(
        self, records: Sequence[MemoryRecord], *, actor: str = "import"
    ) -> builtins.dict[str, MemoryRecord | None]:
        if not records:
            return {}
        tenant = shared.one_tenant(records)
        now = time.time()
        with self._write() as db:  # BEGIN IMMEDIATE: no other write between look and insert
            found: dict[str, MemoryRecord | None] = {}
            for row in db.execute(  # ids are unique across tenants here
                f"SELECT {RECORD_COLUMNS} FROM memories "
                "WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps([r.id for r in records]),),
            ):
                stored = row_to_record(row)
                found[stored.id] = stored if stored.tenant == tenant else None
            _insert_records(db, [r for r in records if r.id not in found], now, actor)
        return found

    def get(self, tenant: str, memory_id: str) -> MemoryRecord | None:
        rows = self._read(
            f"SELECT {RECORD_COLUMNS} FROM memories WHERE tenant = ? AND id = ?",
            (tenant, memory_id),
        )
        return row_to_record(rows[0]) if rows else None

    def get_many(self, tenant: str, ids: Sequence[str]) -> builtins.list[MemoryRecord]:
        if not ids:
            return []
        found: dict[str, MemoryRecord] = {}
        chunks = list(shared.id_chunks(ids))
        # More than one statement: all in one read transaction, so the records are of
        # one moment (as PostgreSQL's one statement gives), not split by a commit.
        with self._snapshot() if len(chunks) > 1 else contextlib.nullcontext():
            for chunk in chunks:
                marks = ",".join("?" * len(chunk))
                for row in self._read(
                    # ``+tenant``: look the ids up in their unique index. Left to itself
                    # the planner walked the tenant's whole created_at index (100k rows:
                    # 70 ms).
                    f"SELECT {RECORD_COLUMNS} FROM memories WHERE +tenant = ? AND id IN ({marks})",
                    (tenant, *chunk),
                ):
                    rec = row_to_record(row)
                    found[rec.id] = rec
        return [found[i] for i in ids if i in found]

    def _patch_sets(self, patch: Patch) -> tuple[object, tuple[list[str], list[object]]]:
        now = time.time()
        return now, shared.patch_sets(patch, now, mark="?", time=opt_epoch, to_json=metadata_json)

    @contextmanager
    def _updating(self) -> Iterator[shared.RecordUpdate]:
        with self._write() as db:
            yield _Update(db)

    # An id holding NUL names nothing (no store keeps one), and SQLite's json_each ends
    # a text at NUL: "s1\x00" would act on the record "s1".
    @shared.nul_reads_as_absent(NotFound, "tenant", "memory_id")
    def delete(
        self, tenant: str, memory_id: str, *, actor: str = "api", purge: bool = False
    ) -> None:
        self._delete_many(tenant, [memory_id], actor=actor, purge=purge, needed=True)

    @shared.nul_reads_as_absent([], "tenant", "ids")
    def delete_many(
        self,
        tenant: str,
        ids: Sequence[str],
        *,
        actor: str = "api",
        purge: bool = False,
        derived: Collection[str] = (),
        based_on: Sequence[MemoryRecord] = (),
    ) -> builtins.list[str]:
        return self._delete_many(
            tenant,
            ids,
            actor=actor,
            purge=purge,
            needed=False,
            derived=derived,
            based_on=based_on,
        )

    def _delete_many(
        self,
        tenant: str,
        ids: Sequence[str],
        *,
        actor: str,
        purge: bool,
        needed: bool,
        derived: Collection[str] = (),
        based_on: Sequence[MemoryRecord] = (),
    ) -> builtins.list[str]:
        """``delete_many``; with ``needed``, nothing is written unless all of ``ids``
        exist (``delete``'s NotFound)."""
        now = time.time()
        with self._write() as db:
            for read in based_on:  # in the write transaction: no writer in between
                row = db.execute(
                    f"SELECT {RECORD_COLUMNS} FROM memories WHERE tenant = ? AND id = ?",
                    (tenant, read.id),
                ).fetchone()
                shared.check_unchanged(read, None if row is None else row_to_record(row))
            deleted = _delete_records(
                db, tenant, ids, purge=purge, now=now, actor=actor, derived=derived
            )
            if needed and len(deleted) != len(set(ids)):
                raise NotFound(f"no memory {sorted(set(ids) - set(deleted))[0]!r}")
            erased = purge and (_purge_remains(db, tenant, ids, deleted) or bool(deleted))
            if erased:
                _merge_fts_and_mark_erasure(db, now)
        try:
            if erased:
                self._erasure_pending = True
                self._truncate_wal(wait=True)
        except StoreError as exc:  # committed: said with what it erased
            vacuum = "(so does `contextos vacuum`)"
            raise ErasurePending(Erasure(len(deleted)), _unfinished(exc, retry=vacuum)) from exc
        finally:  # the rows are gone whatever the WAL holds: so are they from the indexes
            if deleted or erased:
                self._lexical_after_erasure()
                self._vectors_after_erasure()
        return deleted

    def find_by_hash(self, scope: Scope, content_hash: str) -> builtins.list[MemoryRecord]:
        rows = self._read(
            f"SELECT {RECORD_COLUMNS} FROM memories {_LIVE_BY_HASH} ORDER BY created_at, rowid",
            _by_hash_params(scope, content_hash, time.time()),
        )
        return [row_to_record(r) for r in rows]

    def list(
        self, flt: Filter, *, limit: int = 100, offset: int = 0, max_bytes: int | None = None
    ) -> builtins.list[MemoryRecord]:
        # The one listing: ``list_after``'s, without its keys.
        keyed = self.list_after(flt, limit=limit, offset=offset, max_bytes=max_bytes)
        return [record for record, _key in keyed]

    def list_after(
        self,
        flt: Filter,
        *,
        after: str | None = None,
        limit: int = 100,
        offset: int = 0,
        max_bytes: int | None = None,
        oldest_first: bool = False,
    ) -> builtins.list[tuple[MemoryRecord, str]]:
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
    ) -> Iterator[builtins.list[tuple[MemoryRecord, str]]]:
        # A connection of its own, in one read transaction (WAL: a snapshot that writers
        # never block), so the store's reads go on beside it. A store whose reads share
        # the writer's connection (read-only, ``:memory:``) cannot hold a snapshot beside
        # its writes: it reads each page in a ``_snapshot`` of its own, so no page is
        # yielded holding the store's locks (held between pages, they kept every other
        # thread's read and write waiting, failed this thread's writes, and were
        # released on another thread; a review). Not one snapshot (docs/api.md).
        if self._reader is self._db:

            def page(after: str | None) -> builtins.list[tuple[MemoryRecord, str]]:
                with self._snapshot() as db:
                    return self._list_after(
                        _reads_on(db, self._failed),
                        flt,
                        after=after,
                        limit=limit,
                        max_bytes=max_bytes,
                        oldest_first=True,
                    )

            yield from pages_after(page)
            return
        db = _open_reader(self._absolute_path, self._busy_timeout_ms)
        try:
            try:
                db.execute("BEGIN")
            except sqlite3.DatabaseError as exc:
                raise self._failed("read", exc) from exc
            with _ended(db, "read", self._failed):
                yield from self._pages(_reads_on(db, self._failed), flt, limit, max_bytes)
        finally:
            db.close()

    def _pages(
        self,
        read: Callable[[str, Sequence[object]], builtins.list[Any]],
        flt: Filter,
        limit: int,
        max_bytes: int | None,
    ) -> Iterator[builtins.list[tuple[MemoryRecord, str]]]:
        return pages_after(
            lambda after: self._list_after(
                read, flt, after=after, limit=limit, max_bytes=max_bytes, oldest_first=True
            )
        )

    def _list_after(
        self,
        read: Callable[[str, Sequence[object]], builtins.list[Any]],
        flt: Filter,
        *,
        after: str | None = None,
        limit: int = 100,
        offset: int = 0,
        max_bytes: int | None = None,
        oldest_first: bool = False,
    ) -> builtins.list[tuple[MemoryRecord, str]]:
        """:meth:`list_after`, its queries run by ``read``."""
        where, params = filter_sql(flt, time.time())
        if after is not None:
            # The time as stored (REAL): compared as the same float, not one made again
            # from a datetime, so a record sharing the key's time is told apart by rowid.
            at, row = shared.split_list_key(after)
            if not _EPOCH_TEXT.fullmatch(at) or not math.isfinite(float(at)):
                raise ValueError("not a key of this list (after)")
            where += f" AND (m.created_at, m.rowid) {'>' if oldest_first else '<'} (?, ?)"
            params = [*params, float(at), row]
        way = "ASC" if oldest_first else "DESC"
        order = f"ORDER BY m.created_at {way}, m.rowid {way}"
        columns = RECORD_COLUMNS.replace("rowid", "m.rowid")
        created = 1 + shared.RECORD_FIELDS.index("created_at")  # after the rowid
        listed = f"memories m {_listing_index(flt)}WHERE {where} {order}"
        if max_bytes is None:
            rows = read(
                f"SELECT {columns} FROM {listed} LIMIT ? OFFSET ?",
                (*params, limit, offset),
            )
        else:
            sized = read(
                "SELECT m.rowid, length(CAST(m.text AS BLOB)) + length(CAST(m.metadata AS BLOB)) "
                f"FROM {listed} LIMIT ? OFFSET ?",
                (*params, limit, offset),
            )
            rows = read(
                f"SELECT {columns} FROM memories m "
                f"WHERE m.rowid IN (SELECT value FROM json_each(?)) {order}",
                (json.dumps(shared.within_bytes(sized, max_bytes)),),
            )
        return [
            (row_to_record(r), shared.list_key(repr(float(r[created])), int(r[0]))) for r in rows
        ]

    # json_each reads "t1\u0000" as "t1": an id holding NUL named another record.
    @shared.nul_reads_as_absent([], "scope", "ids")
    def pointing_to(
        self, scope: Scope, key: str, ids: Sequence[str]
    ) -> builtins.list[MemoryRecord]:
        if not ids:
            return []
        where, params = filter_sql(Filter(scope=scope, include_invalid=True), time.time())
        pointing, more = pointing_clause(SQLITE, key, ids)
        columns = RECORD_COLUMNS.replace("rowid", "m.rowid")
        rows = self._read(
            f"SELECT {columns} FROM memories m WHERE {where} AND {pointing}", (*params, *more)
        )
        return [row_to_record(r) for r in rows]

    def count(self, flt: Filter) -> int:
        where, params = filter_sql(flt, time.time())
        return int(self._read(f"SELECT count(*) FROM memories m WHERE {where}", params)[0][0])

    def history(
        self, tenant: str, memory_id: str, *, offset: int = 0, limit: int | None = None
    ) -> builtins.list[HistoryEvent]:
        return shared.read_history(
            self._read, tenant, memory_id, mark="?", time=from_epoch, offset=offset, limit=limit
        )

    def forget(self, scope: Scope) -> Erasure:
        shared.erasure_target(scope)
        t = scope.tenant
        committed = shared.Committed()
        erased = Erasure(0)  # counted in the transaction, before its COMMIT
        try:
            with self._write(committed) as db:
                sessions = shared.erased_sessions(db, scope, mark="?")
                rows = shared.erased_rows(
                    db, scope, sessions, mark="?", any_of=_any_of, listed=_listed
                )
                doomed = db.execute(
                    f"SELECT id, text FROM memories WHERE {rows.records}", rows.record_args
                ).fetchall()
                turns = db.execute(
                    f"SELECT session_id, content FROM turns WHERE {rows.turns}", rows.turn_args
                ).fetchall()
                # The history goes too, and with it every text those memories had: a reply
                # quotes a turn as first said, so the texts an update replaced are scrubbed.
                history, history_args = rows.history([r[0] for r in doomed])
                earlier = db.execute(
                    f"SELECT old_text, new_text FROM history WHERE {history}", history_args
                )
                texts = {x for row in earlier.fetchall() for x in row if x}
                texts.update(r[1] for r in doomed)
                texts.update(r[1] for r in turns)
                # Deleted before the scrub, which then reads only the sessions' records that
                # stay (as PostgreSQL's does): scrubbing first rewrote every record the
                # DELETE then dropped, each tried against every erased text: forgetting a
                # session of 8,000 turns took 9.5 s (four times that per doubling), every
                # tenant's writes waiting (a review). (The user's records without a session,
                # where an older version quoted the message before in the same add, go
                # here too.)
                db.execute(f"DELETE FROM memories WHERE {rows.records}", rows.record_args)
                _scrub_contexts(db, t, Scrub(texts), sessions=sessions)
                db.execute(f"DELETE FROM history WHERE {history}", history_args)
                db.execute(f"DELETE FROM turns WHERE {rows.turns}", rows.turn_args)
                db.execute(f"DELETE FROM session_meta WHERE {rows.records}", rows.record_args)
                # A session that lost turns and lives on (another user's, shared): its
                # compaction state (the rolling summary quotes those turns) starts over.
                now = time.time()  # this store's clock (``clock``)
                shared.reset_session_meta(
                    db, t, json.dumps(sorted({r[0] for r in turns})), now, _META_SQL, now
                )
                _merge_fts_and_mark_erasure(db, time.time(), rebuild=True)
                emptied = shared.sessions_emptied(
                    db, t, (r[0] for r in turns), mark="?", any_of=_any_of, listed=_listed
                )
                erased = Erasure(len(doomed), sessions=emptied, turns=len(turns))
            try:
                self._after_erasure()
            except StoreError as exc:  # committed: said with what it erased
                raise ErasurePending(erased, _unfinished(exc)) from exc
        except KeyboardInterrupt as exc:
            # After the COMMIT (``committed``, from the transaction itself): the Ctrl-C
            # came while the file was rebuilt (in C, the signal waiting for it) or as
            # the transaction ended. What it removed is erased for good.
            if committed.done:
                raise ErasedThenInterrupted(erased) from exc
            raise
        return erased

    def forget_tenant(self, tenant: str) -> int:
        """Every row of ``tenant`` goes (records, and with them vectors, queue and
        quarantine rows; history, turns, session metadata); nothing to scrub, as no
        other tenant's record quotes this one's. The full-text index is rebuilt and the
        WAL truncated as for ``forget``, so no byte of it is left in the file.

        A tenant with no row left is not rebuilt for: nothing of it is in the file (the
        erasure that removed its rows rebuilt it). Why: ``forget --whole-tenant`` erases
        again twice for the writes servers still admitted, and each pass rebuilt the whole
        file for nothing, every tenant's writes waiting (about a second at 100,000
        memories; a review)."""
        with self._write() as db:
            (count,) = db.execute(
                "SELECT count(*) FROM memories WHERE tenant = ?", (tenant,)
            ).fetchone()
            removed = sum(
                db.execute(f"DELETE FROM {table} WHERE tenant = ?", (tenant,)).rowcount
                for table in ("memories", "history", "turns", "session_meta")
            )
            if removed:
                _merge_fts_and_mark_erasure(db, time.time(), rebuild=True)
        if removed:
            try:
                self._after_erasure()
            except StoreError as exc:  # committed: said with what it erased
                raise ErasurePending(Erasure(int(count)), _unfinished(exc)) from exc
        return int(count)

    def _after_erasure(self) -> None:
        """Finish an erasure that committed: rebuild the file if it is marked so and
        truncate the WAL (StoreError while a reader holds old pages), then drop the
        erased rows from the in-process keyword and vector indexes now, not at their
        next search. The rebuild is tried now whatever an earlier one found
        (:class:`_PutOff`); where it still finds no room, the WAL is truncated all the
        same and the StoreError says how much disk it needs."""
        self._erasure_pending = True
        self._put_off = None
        try:
            self._truncate_wal(wait=True)
        finally:  # the rows are gone whatever the WAL holds: so are they from the indexes
            self._lexical_after_erasure()
            self._vectors_after_erasure()
        if self._put_off is not None and self._put_off.truncated_for is not None:
            raise StoreError(self._put_off.error)

    def vacuum(self) -> tuple[str, ...]:
        """Rebuild the file (``VACUUM``) and truncate the WAL: frees the pages erased
        records left and shrinks the file; useful after large deletes. ``forget`` and
        ``forget_tenant`` end with one (:func:`_merge_fts_and_mark_erasure`).

        The WAL is truncated as an erasure's is (:meth:`_truncate_wal`): in bounded
        tries that let other writers go on in between, and a ``StoreError`` when an
        open reader kept the old pages past the busy timeout. It was one
        ``wal_checkpoint(TRUNCATE)`` under the whole timeout whose "busy" answer was
        ignored: behind a reader (a backup) every process's writes stalled 10 s, and
        the command then said "vacuumed" while the old pages, and any text an
        unfinished erasure left in them, were still in the file. The rebuilt file is
        marked as an erasure in progress, so until the WAL is truncated every later
        write or close of any process tries again."""
        with self._lock:
            self._check_same_file()
            try:
                self._db.execute("VACUUM")
                self._db.execute(
                    "INSERT OR REPLACE INTO erasure_pending (id, since) VALUES (1, ?)",
                    (time.time(),),
                )
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"vacuum failed: {exc}{self._room_needed(exc)}") from exc
            self._erasure_pending = True
            self._put_off = None  # the rebuild an erasure owed is made
        try:
            self._truncate_wal(wait=True)
        except StoreError as exc:
            raise StoreError(
                "vacuumed, but an open reader (a backup, a sqlite3 shell, a long listing) "
                "kept the old pages in the write-ahead log; the next write or close of any "
                "process removes them (retry to confirm)"
            ) from exc
        return ()

    def _truncate_wal(self, *, wait: bool, leave_fresh: bool = False) -> None:
        """Finish an erasure: checkpoint the WAL into the (secure-deleted) file and
        truncate it, so no old page with erased text survives in the -wal.

        An open read transaction (here or in another process) keeps the old pages;
        with ``wait`` this tries again until the busy timeout passes, then raises
        StoreError. The erasure stays marked in the file and every later write or
        close of any process retries, so success is never reported while the
        bytes remain. A checkpoint refused at once (another connection's
        checkpoint, a reader between two statements: 5% of purges under a dozen
        clients on two processes) is tried again until that timeout; a single
        try answered "busy, retry" for an erasure that had committed. A rebuild
        that cannot be made (no room on the disk) does not stop the truncation: it
        stays owed, put off (:class:`_PutOff`), and the WAL is truncated as it was
        before erasures rebuilt the file.

        Each try waits at most :data:`CHECKPOINT_TRY_MS` in SQLite's busy handler, and
        the store's lock is let go between tries: a TRUNCATE checkpoint that waits for a
        reader blocks every writer of the file meanwhile, so one purge behind a long
        read (a backup, a ``sqlite3`` shell) stopped every process's writes, and this
        one's other threads, for up to 10 s. Now writes go on between the tries (and
        the next try checkpoints their frames too). Not 0: a try must hold writers off
        long enough for the short readers of a busy file to finish, or under another
        process's steady reads and writes every try found a reader and the erasure
        never finished (each 20 ms reader starts on the WAL the last write grew).
        ``leave_fresh``: see :meth:`_rebuild_if_marked`.

        A reader that keeps one snapshot (the checkpoint copies up to the same frame try
        after try: :data:`PINNED_TRIES`) is not waited for in the busy handler: the tries
        then wait 0 ms, :data:`PINNED_PAUSE_S` apart, until it ends or the deadline
        passes. Why: each 100 ms try held every writer of the file off for nothing while
        such a reader stayed, and other writers' adds went from 1 ms to a p95 of 97 ms
        for the whole busy timeout (a review, s56).
        """
        deadline: float | None = None
        pause = 0.005
        copied: int | None = None  # frames the last try's checkpoint got to
        pinned = 0  # tries in a row that got no further
        while True:
            with self._lock:
                if not self._erasure_pending:
                    return
                if deadline is None:
                    timeout = self._db.execute("PRAGMA busy_timeout").fetchone()[0]
                    deadline = time.monotonic() + (timeout / 1000 if wait else 0)
                try:
                    held = pinned >= PINNED_TRIES
                    wait_ms = CHECKPOINT_TRY_MS if wait and not held else 0
                    busy, reached = self._checkpoint_once(wait_ms, leave_fresh=leave_fresh)
                    if not busy:
                        # Not a rebuild another process's erasure owes since the
                        # checkpoint: that one is still to do (its process does it).
                        self._db.execute("DELETE FROM erasure_pending WHERE since >= 0")
                        self._erasure_pending = False
                        self._rebuilt_since = None
                        if self._put_off is not None:
                            owed = self._db.execute("SELECT since FROM erasure_pending")
                            row = owed.fetchone()
                            self._put_off.truncated_for = None if row is None else row[0]
                        return
                except sqlite3.DatabaseError as exc:
                    raise StoreError(f"could not finish the erasure: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise StoreError(f"erased, but {WAL_HELD} {RETRY_TO_CONFIRM}")
            pinned = pinned + 1 if reached is not None and reached == copied else 0
            copied = reached
            if pinned >= PINNED_TRIES:
                time.sleep(min(PINNED_PAUSE_S, max(0.0, deadline - time.monotonic())))
                continue
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _checkpoint_once(
        self, wait_ms: int, *, leave_fresh: bool = False
    ) -> tuple[bool, int | None]:
        """One ``wal_checkpoint(TRUNCATE)``, after the ``VACUUM`` an erasure marked as
        needing one (:func:`_merge_fts_and_mark_erasure`), each waiting at most
        ``wait_ms`` (within the busy timeout) for readers and writers (see
        :meth:`_truncate_wal`; 0 for the retry after each write, which must not slow
        it): whether it was still busy, and the frames of the WAL it copied into the
        file (None when no checkpoint ran: the rebuild was busy). The lock held. A
        rebuild that failed for another reason than a lock (no room) is put off and the
        checkpoint made."""
        timeout = self._db.execute("PRAGMA busy_timeout").fetchone()[0]
        self._db.execute(f"PRAGMA busy_timeout = {min(int(timeout), wait_ms)}")
        try:
            if not self._rebuild_if_marked(leave_fresh=leave_fresh):
                return True, None
            busy, _frames, copied = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return bool(busy), int(copied)
        finally:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout)}")

    def _rebuild_if_marked(self, *, leave_fresh: bool = False) -> bool:
        """``VACUUM`` the file if the pending erasure asks for it (a negative ``since``),
        then mark it as waiting only for the WAL truncation; False if another process's
        write kept the lock (from either step: the caller tries again). The mark is
        committed with the erasure, so a process that dies before the rebuild leaves it
        to the next one (``erasure_pending``).

        Why the rebuild is remembered (``_rebuilt_since``): another process's write
        between the ``VACUUM`` and the mark's update held the lock past the try's
        100 ms; the update's "database is locked" failed the forget whose erasure had
        committed (HTTP 503, and ``forgotten: 0`` on retry), and the mark, still set,
        had the retry rewrite the whole file again (a review). The update flips only
        the mark it rebuilt for: an erasure another process committed in between set a
        newer one, which needs its own rebuild (the next try makes it, and
        :meth:`_truncate_wal` never clears such a mark).
        Should this process die between the two, the next one rebuilds once more,
        harmlessly.

        ``leave_fresh`` (the try after each write): a mark younger than the busy timeout
        is the erasing process's to rebuild for (False, as if busy), unless this one
        has. Why: another process's write got in between that process's ``VACUUM``
        and its update, and then rebuilt the whole file again itself (1 of 3 forgets
        at 100k memories beside a writer adding every 20 ms), holding every write
        for another 0.5-1 s. An older mark is one that process gave up on, or died
        with: any write (or the next process to open the file) makes it.

        A ``VACUUM`` that fails otherwise (a full disk: it writes a copy of the file,
        in the temporary folder and in the WAL) is put off (:class:`_PutOff`), and True
        is returned all the same: the WAL is then truncated into the secure-deleted
        file. Why: the truncation waited on the rebuild, so on a nearly full disk the
        erased text stayed in the -wal for good, and every commit of every process
        tried the whole-file copy again (0.2-1.4 s an add at 34 MB, a review)."""
        row = self._db.execute("SELECT since FROM erasure_pending").fetchone()
        if row is None or row[0] >= 0:
            return True
        since = float(row[0])
        put_off = self._put_off is not None and self._put_off.waiting()
        if put_off and self._rebuilt_since != since:
            return True
        fresh = time.time() + since < self._busy_timeout_ms / 1000
        if leave_fresh and fresh and self._rebuilt_since != since:
            return False
        try:
            if self._rebuilt_since != since:
                self._db.execute("VACUUM")
                self._rebuilt_since = since
                self._put_off = None
            flip = "UPDATE erasure_pending SET since = -since WHERE since = ?"
            flipped = self._db.execute(flip, (since,)).rowcount
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return False
            self._put_off = _PutOff(self._not_rebuilt(exc), time.monotonic() + REBUILD_RETRY_S)
            return True
        return flipped == 1  # else marked anew since it was read: the next try rebuilds

    def _not_rebuilt(self, exc: sqlite3.OperationalError) -> str:
        """The error of an erasure whose rebuild failed (``exc``) after its WAL was
        truncated: what is left undone, what it needs, and when it is tried again."""
        return (
            f"erased, and nothing erased is left in the write-ahead log, but the file "
            f"could not be rebuilt ({exc}){self._room_needed(exc)}. Until it is, old "
            "copies of erased text that page splits left may stay in the file: free the "
            "space and run vacuum (contextos vacuum); the next open or forget, or a write "
            f"of this process after {REBUILD_RETRY_S:.0f} s, tries again"
        )

    def _room_needed(self, exc: sqlite3.DatabaseError) -> str:
        """What a rebuild (``VACUUM``) that failed writing (``exc``: a full disk, a
        file-size limit or quota) needs free, to add to its error; "" for another
        failure."""
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code not in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
            return ""
        try:
            size = f"{max(1, round(os.path.getsize(self._absolute_path) / 1e6))} MB"
        except OSError:
            size = "the file's size"
        folder = os.path.dirname(self._absolute_path)
        return (
            f": a rebuild needs about {size} free on {folder} (the -wal grows to the "
            "file's size), and as much in the temporary folder (SQLITE_TMPDIR or TMPDIR)"
        )

    # -- search -------------------------------------------------------------
    def keyword_search(
        self, flt: Filter, query: str, *, limit: int, context_weight: float = 0.5
    ) -> builtins.list[Ranked]:
        """FTS5's BM25 ranking of the filter's records that hold any query word,
        computed by the in-process :class:`LexicalIndex` (see there for why), which
        ranks as ``bm25(memories_fts, 1.0, context_weight, 0.0)`` would: text counts
        fully, the context (speaker, date, captions, the turn replied to) less, the
        scope terms not at all. The index tests every part of the filter but metadata,
        as the vector index does; with a metadata filter the best hits are checked in
        SQL, fetching deeper should it drop some."""
        words = query_terms(query)
        if not words or limit <= 0:
            return []
        fetch = limit if not flt.metadata else limit * 4
        while True:
            hits = self._lexical_hits(flt, words, context_weight=context_weight, limit=fetch)
            if not flt.metadata:  # the index tested every other part of the filter
                return [Ranked(i, score) for i, score in hits]
            kept = self._still_matching(flt, hits)
            if len(kept) >= limit or len(hits) < fetch:
                return [Ranked(i, score) for i, score in kept[:limit]]
            fetch *= 4

    def _lexical_hits(
        self, flt: Filter, words: Sequence[str], *, context_weight: float, limit: int
    ) -> builtins.list[tuple[str, float]]:
        """The keyword index's best ``limit`` hits, the index brought up to date first.

        The index is one for every tenant of the file, and a search first applies every
        change committed since, whoever's. Should that fail, or the search (an error of
        the index's private SQLite connection, a row it cannot take), the index is
        dropped and the search tried once more on a new one, which reads only this
        search's users: a row that breaks the index then fails only its own user's
        searches, a ``StoreFault`` (kept, the change was tried again, and failed again,
        at every later search of every user and tenant the index held). A busy or
        unreadable file (``StoreError``) leaves the index as it was.

        When that second try fails too, the search's scope (tenant and user, or the
        whole tenant) is remembered as failing: its later searches raise the same
        ``StoreFault`` at once, without dropping the index again, until something in
        the scope changes (a record of it logged in ``index_log``, or a record deleted
        anywhere: a deleted one's scope is unknown) or ``LEXICAL_FAILING_S`` pass; then
        one search tries again. Without that, each failing search dropped the index,
        and every other user's next search read and tokenized all its rows again (a
        user of 20,000 records: 0.6 ms a search became 670 ms). An error that is not
        SQLite's is raised as it is the first time, and as a ``StoreFault`` while the
        scope is remembered."""
        key = (flt.scope.tenant, flt.scope.user_id)
        with self._lexical_lock:
            failing = self._lexical_failing.get(key)
            if failing is not None:
                if self._still_failing(key, failing):
                    raise StoreFault(failing.error)
                del self._lexical_failing[key]
        retried = False
        while True:
            with self._lexical_lock:
                try:
                    index = self._fresh_lexical(flt)
                    return index.search(
                        flt, words, context_weight=context_weight, limit=limit, now=time.time()
                    )
                except StoreError:
                    raise
                except Exception as exc:
                    self._drop_lexical()
                    if not retried:
                        retried = True
                        continue
                    internal = isinstance(exc, sqlite3.Error)  # the index's connection
                    error = f"keyword search failed: {exc if internal else repr(exc)}"
                    self._remember_failing(key, error)
                    if internal:
                        raise StoreFault(error) from exc
                    raise

    def _remember_failing(self, key: tuple[str, str | None], error: str) -> None:
        """Remember a scope whose search failed on a fresh index (the caller holds
        ``_lexical_lock``): the fresh index read the scope's rows at ``index_log``'s
        ``_lexical_log_seq``, so a change after that is one it did not see."""
        now = time.monotonic()
        with self._read_lock:
            version = (self._data_version(), self._writes)
        self._lexical_failing = {k: f for k, f in self._lexical_failing.items() if f.until > now}
        self._lexical_failing[key] = _Failing(
            error, max(self._lexical_log_seq, 0), version, now + LEXICAL_FAILING_S
        )

    def _still_failing(self, key: tuple[str, str | None], failing: _Failing) -> bool:
        """Whether a remembered scope's search would fail as before (the caller holds
        ``_lexical_lock``): its time is not up and no change of it was logged since. No
        read at all while nothing was committed to the file (``PRAGMA data_version``)."""
        if time.monotonic() >= failing.until:
            return False
        with self._read_lock:
            version = (self._data_version(), self._writes)
        if version == failing.version:
            return True
        tenant, user_id = key
        with self._snapshot() as db:
            if _log_pruned_after(db, failing.log_seq):
                return False
            (last,) = db.execute("SELECT coalesce(max(seq), 0) FROM index_log").fetchone()
            changed = db.execute(
                "SELECT 1 FROM index_log AS l LEFT JOIN memories AS m ON m.id = l.mem_id "
                "WHERE l.seq > ? AND (m.id IS NULL OR (m.tenant = ? "
                "AND (? IS NULL OR m.user_id IS ?))) LIMIT 1",
                (failing.log_seq, tenant, user_id, user_id),
            ).fetchone()
        if changed is not None:
            return False
        failing.log_seq, failing.version = last, version
        return True

    def vector_search(self, flt: Filter, vector: Vector, *, limit: int) -> builtins.list[Ranked]:
        index = self._fresh_index(len(vector))
        now = time.time()
        query = np.asarray(vector, dtype=np.float32)
        if not flt.metadata:
            # The index was brought up to date just now, and it tests everything else a
            # filter holds (tenant, user, agent, session, type, times, validity; a
            # record's scope never changes) as SQL would: re-checking each hit in SQL
            # cost a tenth of a search. A record deleted since is dropped by the
            # retriever's fetch, which re-checks every candidate against the filter.
            return [Ranked(i, score) for i, score in index.search(query, flt, limit=limit, now=now)]
        # Metadata is not in the index: hits are checked against the whole filter in
        # SQL, fetching deeper while the check drops some.
        fetch = limit * 4
        while True:
            hits = index.search(query, flt, limit=fetch, now=now)
            kept = self._still_matching(flt, hits)
            if len(kept) >= limit or len(hits) < fetch:
                return [Ranked(i, score) for i, score in kept[:limit]]
            fetch *= 4

    def without_vectors(
        self, tenant: str, ids: Sequence[str], *, dimensions: int
    ) -> builtins.set[str]:
        """Read from the in-memory vector index as the last vector search left it (no
        SQL: the retriever asks right after one); brought up to date first only when
        none of ``dimensions`` was built yet."""
        if self.closed:
            raise StoreError("read failed: the store is closed")
        if not ids:
            return set()
        with self._read_lock:
            index = self._index
            if index is None or index.dimensions != dimensions:
                index = self._fresh_index(dimensions)
            return index.missing(tenant, ids)

    def vector_scores(
        self, tenant: str, ids: Sequence[str], vector: Vector
    ) -> builtins.dict[str, float]:
        """From the in-memory vector index, brought up to date as a search brings it (no
        SQL when nothing was committed since the last search)."""
        if not ids:
            return {}
        query = np.asarray(vector, dtype=np.float32)
        return self._fresh_index(len(query)).scores(tenant, ids, query)

    def _still_matching(
        self, flt: Filter, hits: builtins.list[tuple[str, float]]
    ) -> builtins.list[tuple[str, float]]:
        if not hits:
            return []
        where, params = filter_sql(flt, time.time())
        ok: set[str] = set()
        for chunk in shared.id_chunks([h[0] for h in hits]):
            marks = ",".join("?" * len(chunk))
            ok.update(
                r[0]
                for r in self._read(
                    # Look the few ids up first: left to itself the planner walks the
                    # whole scope index (10k rows for one user) to test the id list.
                    f"WITH m AS MATERIALIZED (SELECT * FROM memories WHERE id IN ({marks})) "
                    f"SELECT m.id FROM m WHERE {where}",
                    (*chunk, *params),
                )
            )
        return [h for h in hits if h[0] in ok]

    # -- vectors -------------------------------------------------------------
    def _write_vectors(self, batch: shared.VectorWrite) -> None:
        ids, vecs = batch.ids, batch.vectors
        claimed, claim_params = _claimed_by(batch.owner)
        with self._write() as db:
            for chunk_start in range(0, len(ids), 500):
                chunk = ids[chunk_start : chunk_start + 500]
                marks = ",".join("?" * len(chunk))
                rowid_of = dict(
                    db.execute(
                        # ``+tenant``: by id, not a walk of the tenant (see get_many); it
                        # held the write lock for the walk, and adds waited behind it.
                        f"SELECT id, rowid FROM memories WHERE +tenant = ? AND id IN ({marks})"
                        + claimed,
                        (batch.tenant, *chunk, *claim_params),
                    ).fetchall()
                )
                db.executemany(
                    "INSERT OR REPLACE INTO vectors (mem_rowid, model, vec) VALUES (?,?,?)",
                    [
                        (rowid_of[i], batch.model, vecs[chunk_start + k].tobytes())
                        for k, i in enumerate(chunk)
                        if i in rowid_of
                    ],
                )

    def count_vectors(self) -> int:
        """How many records have a vector (diagnostics and benchmarks)."""
        return int(self._read("SELECT count(*) FROM vectors")[0][0])

    def requeue_stale_vectors(self, model: str, *, dimensions: int | None = None) -> int:
        stale, params = _stale_vectors(model, dimensions)
        failed = "SELECT mem_rowid FROM vector_quarantine WHERE model IS NOT ?"
        # Looked for first with a read: a write transaction on every open waited on
        # other processes' writes, and failed on a read-only file.
        if self.read_only or not self._read(
            f"{stale} UNION ALL {failed} LIMIT 1", (*params, model)
        ):
            return 0
        with self._write() as db:
            queued = db.execute(
                f"INSERT OR IGNORE INTO pending_vectors (mem_rowid) {stale} UNION {failed}",
                (*params, model),
            ).rowcount
            db.execute("DELETE FROM vector_quarantine WHERE model IS NOT ?", (model,))
            return int(queued)

    def pending_vectors(self, *, limit: int) -> builtins.list[MemoryRecord]:
        rows = self._read(
            f"SELECT {RECORD_COLUMNS.replace('rowid', 'm.rowid')} FROM pending_vectors p "
            "JOIN memories m ON m.rowid = p.mem_rowid ORDER BY p.mem_rowid LIMIT ?",
            (limit,),
        )
        return [row_to_record(r) for r in rows]

    @shared.nul_reads_as_absent([], "owner")  # no claim is held under it: nothing is claimed
    def claim_vectors(
        self, owner: str, *, limit: int, lease_s: float
    ) -> builtins.list[MemoryRecord]:
        now = time.time()
        # Only queue rows of records that exist (a row left by foreign SQL would be
        # claimed, return nothing and take a batch slot for good). A claim further ahead
        # than two leases (and ``_CLAIM_REACH_S``: the row does not keep its claimer's
        # lease, which may be longer than this one's) was stamped before the host's clock
        # stepped back: no live claimer (which renews one lease ahead) stands behind it (a
        # review: a dead worker's claim held its rows for the hour the clock stepped back,
        # and flush() returned False).
        claimable = (
            "SELECT p.mem_rowid FROM pending_vectors p JOIN memories m ON m.rowid = p.mem_rowid "
            "WHERE p.claimed_until < ? OR p.claimed_by = ? OR p.claimed_until > ? "
            "ORDER BY p.mem_rowid LIMIT ?"
        )
        beyond = now + max(LEASE_REACH * lease_s, _CLAIM_REACH_S)
        # A read first: with nothing to claim no write transaction is opened (an inline
        # flush() then neither waits on another process's write lock nor fails on a
        # read-only file, and flush()'s polling of other claims takes no lock).
        if self.read_only or not self._read(claimable, (now, owner, beyond, 1)):
            return []  # read-only: this process could not store the vectors either
        # One short write transaction: the claim and the read of the claimed records.
        # The embedding happens after it, outside any lock.
        with self._write() as db:
            claimed = db.execute(
                "UPDATE pending_vectors SET claimed_by = ?, claimed_until = ? "
                f"WHERE mem_rowid IN ({claimable}) RETURNING mem_rowid",
                (owner, now + lease_s, now, owner, beyond, limit),
            ).fetchall()
            if not claimed:
                return []
            rows = db.execute(
                f"SELECT {RECORD_COLUMNS} FROM memories WHERE rowid IN "
                "(SELECT value FROM json_each(?)) ORDER BY rowid",
                (json.dumps([r[0] for r in claimed]),),
            ).fetchall()
        return [row_to_record(r) for r in rows]

    def extend_claim(self, owner: str, *, lease_s: float) -> int:
        with self._write() as db:
            cur = db.execute(
                "UPDATE pending_vectors SET claimed_until = ? WHERE claimed_by = ?",
                (time.time() + lease_s, owner),
            )
            return int(cur.rowcount)

    @shared.nul_reads_as_absent(None, "tenant", "ids", "owner")
    def quarantine_vectors(
        self,
        tenant: str,
        ids: Sequence[str],
        error: str,
        *,
        owner: str | None = None,
        model: str | None = None,
    ) -> None:
        claimed, claim_params = _claimed_by(owner)
        with self._write() as db:
            rowids = db.execute(
                "SELECT rowid FROM memories WHERE +tenant = ? AND id IN "  # by id (get_many)
                "(SELECT value FROM json_each(?))" + claimed,
                (tenant, json.dumps(list(ids)), *claim_params),
            ).fetchall()
            db.executemany(
                "INSERT OR REPLACE INTO vector_quarantine (mem_rowid, error, at, model) "
                "VALUES (?,?,?,?)",
                [(r[0], error[:500], time.time(), model) for r in rowids],
            )
            db.executemany("DELETE FROM pending_vectors WHERE mem_rowid = ?", rowids)

    def embedding_status(self, tenant: str | None = None) -> EmbeddingStatus:
        where, params = ("WHERE m.tenant = ?", [tenant]) if tenant is not None else ("", [])
        pending = self._read(
            f"SELECT count(*) FROM pending_vectors p JOIN memories m ON m.rowid = p.mem_rowid "
            f"{where}",
            params,
        )[0][0]
        joined = f"FROM vector_quarantine q JOIN memories m ON m.rowid = q.mem_rowid {where}"
        total = self._read(f"SELECT count(*) {joined}", params)[0][0]
        rows = self._read(
            f"SELECT m.id, m.tenant, q.error, q.at {joined} ORDER BY q.at "
            f"LIMIT {QUARANTINED_SHOWN}",
            params,
        )
        return EmbeddingStatus(
            pending=int(pending),
            quarantined=tuple(Quarantined(r[0], r[1], r[2], from_epoch(r[3])) for r in rows),
            quarantined_total=int(total),
        )

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction on the reader, ended whatever is raised inside it (a
        transaction left open hides later commits from every read and holds the WAL).
        A store whose reads share the writer's connection (read-only, ``:memory:``)
        takes the writer's lock too, so a read never ends a write's transaction."""
        shared_connection = self._reader is self._db
        with self._read_lock, self._lock if shared_connection else contextlib.nullcontext():
            try:
                self._reader.execute("BEGIN")
            except sqlite3.ProgrammingError as exc:  # closed
                raise StoreError(f"read failed: {exc}") from exc
            with _ended(self._reader, "read", self._failed):
                yield self._reader

    def _data_version(self) -> int:
        """The reader's ``PRAGMA data_version`` (a StoreError once the store is closed,
        as every other read gives, not sqlite3's own error)."""
        try:
            (version,) = self._reader.execute("PRAGMA data_version").fetchone()
        except sqlite3.ProgrammingError as exc:
            raise StoreError(f"read failed: {exc}") from exc
        return int(version)

    def _fresh_index(self, dimensions: int) -> VectorIndex:
        """The in-memory index, brought up to date with every committed change.

        Commits of other connections (the writer's included) show in the reader's
        ``PRAGMA data_version``; ``self._writes`` covers a read-only or in-memory store,
        whose reads share the writer's connection. Changes are read in one snapshot:
        records deleted or changed since the last look (``index_log``) are dropped and
        re-read, then vectors written since (``vseq``) are added.
        """
        with self._read_lock:
            if self._index is None or self._index.dimensions != dimensions:
                self._index = VectorIndex(dimensions)
                self._index_vseq = self._index_log_seq = 0
                self._index_log_id = None
                self._seen_version = (-1, -1)
            data_version = self._data_version()
            version = (data_version, self._writes)
            if version != self._seen_version:
                with self._snapshot():
                    self._refresh_index(self._index)
                self._seen_version = version
            return self._index

    def _fresh_lexical(self, flt: Filter | None) -> LexicalIndex:
        """The keyword index holding the filter's users, up to date with every committed
        change (the caller holds ``_lexical_lock``).

        Nothing is read when nothing was committed since the last look (``PRAGMA
        data_version`` and ``_writes``, as for the vector index) and the users are held.
        Otherwise what is needed is read in one read transaction (:meth:`_read_lexical`:
        the records logged in ``index_log`` since the last look, the users not held yet)
        and applied after it ends: the tokenizing is most of the time (a user of 25,000
        records: seconds), and other reads, and an erasure's WAL truncation, must not
        wait for it. Users read beyond the index's bound (``lexical_users``) then push
        out the least recently searched, never this search's (``LexicalIndex.trim``).
        """
        index = self._lexical
        if index is None:
            index = self._lexical = LexicalIndex(self._lexical_users)
            self._lexical_log_seq = -1
        with self._read_lock:
            data_version = self._data_version()
        version = (data_version, self._writes)
        if version == self._lexical_version and (flt is None or index.holds(flt)):
            return index
        read = self._read_lexical(index, flt)
        if read is None:  # the log lost what it has not read: a new index, read as needed
            index.close()
            index = self._lexical = LexicalIndex(self._lexical_users)
            self._lexical_log_seq = -1
            read = self._read_lexical(index, flt)
            assert read is not None  # a new index has nothing to catch up with
        self._apply_lexical(index, read)
        self._lexical_version = version
        index.trim(flt)  # blocks were read: the least recently searched may go
        return index

    def _read_lexical(self, index: LexicalIndex, flt: Filter | None) -> _LexicalRead | None:
        """Everything the keyword index needs from one snapshot of the file; None when
        ``index_log`` no longer holds every change after what the index has read (pruned,
        or the file's history went back: :func:`_log_lost_after`); it must start over."""
        with self._snapshot() as db:
            last, last_id = _log_end(db)
            changed: builtins.list[str] = []
            if self._lexical_log_seq < 0:  # a new index: nothing to catch up with
                self._lexical_log_seq, self._lexical_log_id = last, last_id
            elif _log_lost_after(db, self._lexical_log_seq, self._lexical_log_id):
                return None  # changes it never read are gone: the caller starts over
            elif last > self._lexical_log_seq:
                changed = sorted(
                    {
                        r[0]
                        for r in db.execute(
                            "SELECT mem_id FROM index_log WHERE seq > ?", (self._lexical_log_seq,)
                        )
                    }
                )
            rows = self._lex_rows("id IN (SELECT value FROM json_each(?))", (json.dumps(changed),))
            users: dict[str | None, builtins.list[LexRow]] = {}
            if flt is not None and not index.holds(flt):
                tenant, user_id = flt.scope.tenant, flt.scope.user_id
                wanted = (
                    [user_id]
                    if flt.one_user()
                    else [
                        u
                        for (u,) in db.execute(
                            "SELECT DISTINCT user_id FROM memories WHERE tenant = ?", (tenant,)
                        )
                    ]
                )
                for user in wanted:
                    if not index.loaded(tenant, user):
                        users[user] = self._lex_rows("tenant = ? AND user_id IS ?", (tenant, user))
            whole = flt is not None and not flt.one_user() and not index.holds(flt)
            return _LexicalRead(
                last,
                changed,
                rows,
                users,
                tenant=flt.scope.tenant if flt is not None else "",
                whole_tenant=flt.scope.tenant if whole and flt is not None else None,
                log_id=last_id,
            )

    def _apply_lexical(self, index: LexicalIndex, read: _LexicalRead) -> None:
        """Apply what :meth:`_read_lexical` read: the logged changes (an erasure also
        drops the words the tokenizer cached), then the users read whole."""
        if read.changed and index.apply(read.changed, read.rows):
            index.tokenizer.forget_words()
        for user, rows in read.users.items():
            index.load(read.tenant, user, rows)
        if read.whole_tenant is not None:
            index.hold_tenant(read.whole_tenant)
        self._lexical_log_seq, self._lexical_log_id = read.log_seq, read.log_id

    def _lexical_after_erasure(self) -> None:
        """After this process erased records: the keyword index drops them (and re-reads
        records whose context quoted them) now, not at the next keyword search, and
        forgets the words it cached (a query can quote what was erased: reconciliation
        searches with a fact's own text). Erasures by other processes reach it at its
        next search, as they reach the vector index."""
        with self._lexical_lock:
            if self._lexical is None:
                return
            self._lexical.tokenizer.forget_words()
            try:
                self._fresh_lexical(None)
            except Exception:  # the erasure is done: a new index holds none of it
                self._drop_lexical()

    def _drop_lexical(self) -> None:
        """Close the keyword index after it failed while being updated or searched (the
        caller holds ``_lexical_lock``); the next search starts a new one, reading only
        the users it searches (see :meth:`_lexical_hits`)."""
        index, self._lexical = self._lexical, None
        self._lexical_version = (-1, -1)
        if index is not None:
            index.close()

    def _vectors_after_erasure(self) -> None:
        """After this process erased records: the vector index drops them now. A
        forgotten user's vectors stayed in memory until the next vector search, which
        in a server that only adds for a while can be long."""
        with self._read_lock:
            if self._index is not None:
                self._fresh_index(self._index.dimensions)

    def _lex_rows(self, where: str, params: Sequence[object]) -> builtins.list[LexRow]:
        return [
            LexRow(*r[:-1], updated_at=r[-1])
            for r in self._reader.execute(
                "SELECT id, tenant, user_id, agent_id, session_id, memory_type, created_at, "
                "event_time, valid_from, valid_to, rowid, text, context, scope_terms, updated_at "
                f"FROM memories WHERE {where} ORDER BY rowid",
                params,
            )
        ]

    def _refresh_index(self, index: VectorIndex) -> None:
        """Bring the vector index up to date in the reader's open snapshot: records
        logged since the last look are dropped and read again, then vectors written
        since (``vseq``) are added. It starts over, every vector read again, when the log
        lost changes it never read or the file's vectors went back (an online restore:
        :func:`_log_lost_after`, :func:`_vectors_rewound`)."""
        last_log, last_id = _log_end(self._reader)
        if self._index_vseq and (
            _log_lost_after(self._reader, self._index_log_seq, self._index_log_id)
            or _vectors_rewound(self._reader, self._index_vseq)
        ):
            self._index, self._index_vseq = VectorIndex(index.dimensions), 0
        elif self._index_vseq and last_log > self._index_log_seq:
            changed = [
                r[0]
                for r in self._reader.execute(
                    "SELECT DISTINCT mem_id FROM index_log WHERE seq > ?", (self._index_log_seq,)
                )
            ]
            # Only the records it holds: a new record's vector comes by its vseq below
            # (read here too, it was upserted twice, leaving a dead copy).
            changed = [i for i in changed if i in index]
            index.remove(changed)
            self._load_vectors("m.id IN (SELECT value FROM json_each(?))", (json.dumps(changed),))
        self._index_log_seq, self._index_log_id = last_log, last_id
        self._index_vseq = self._load_vectors("v.vseq > ?", (self._index_vseq,))

    def _load_vectors(self, where: str, params: Sequence[object]) -> int:
        """Upsert the vectors matching ``where``; returns the highest vseq seen."""
        assert self._index is not None
        cur = self._reader.execute(
            "SELECT v.vseq, v.vec, m.id, m.tenant, m.user_id, m.agent_id, m.session_id, "
            "m.memory_type, m.created_at, m.event_time, m.valid_from, m.valid_to, m.updated_at "
            f"FROM vectors v JOIN memories m ON m.rowid = v.mem_rowid WHERE {where} "
            "ORDER BY v.vseq",
            params,
        )
        dim = self._index.dimensions
        top = self._index_vseq
        while batch := cur.fetchmany(4096):
            good = [r for r in batch if len(r[1]) == dim * 4]
            vecs = np.frombuffer(b"".join(r[1] for r in good), dtype=np.float32)
            self._index.upsert(
                [IndexRow(*r[2:-1], updated_at=r[-1]) for r in good], vecs.reshape(-1, dim)
            )
            top = max(top, batch[-1][0])
        return int(top)

    # -- session logs ------------------------------------------------------------
    def append_turns(
        self,
        scope: Scope,
        messages: Sequence[Message],
        tokens: Sequence[int],
        *,
        after: Turn | None = None,
        newest: int | None = None,
    ) -> builtins.list[Turn]:
        shared.check_turns(scope, messages, tokens)
        with self._write() as db:
            rows = shared.append_turn_rows(
                db,
                scope,
                messages,
                tokens,
                time.time(),
                mark="?",
                row_of=turn_row,
                after=after,
                turn_of=turn_from_row,
                newest=newest,
            )
        return [turn_from_row(r) for r in rows]

    def turns(
        self,
        scope: Scope,
        *,
        after_seq: int = -1,
        limit: int | None = None,
        newest: bool = False,
        max_bytes: int | None = None,
        settled: bool = False,  # one writer at a time: a write's copies wait for it
    ) -> builtins.list[Turn]:
        if settled and max_bytes is not None:
            raise ValueError("a settled read of the log takes no max_bytes")
        where = "tenant = ? AND session_id = ? AND seq > ?"
        order = f"ORDER BY seq {'DESC' if newest else ''}"
        args = (scope.tenant, scope.session_id, after_seq, -1 if limit is None else limit)
        if max_bytes is None:
            rows = self._read(
                f"SELECT {TURN_COLUMNS} FROM turns WHERE {where} {order} LIMIT ?", args
            )
        else:
            sized = self._read(
                "SELECT seq, length(CAST(content AS BLOB)) + length(CAST(tool_calls AS BLOB)) "
                f"+ length(CAST(metadata AS BLOB)) FROM turns WHERE {where} {order} LIMIT ?",
                args,
            )
            rows = self._read(
                f"SELECT {TURN_COLUMNS} FROM turns WHERE tenant = ? AND session_id = ? "
                f"AND seq IN (SELECT value FROM json_each(?)) {order}",
                (scope.tenant, scope.session_id, json.dumps(shared.within_bytes(sized, max_bytes))),
            )
        turns = [turn_from_row(r) for r in rows]
        return turns[::-1] if newest else turns

    def turn_texts(
        self, scope: Scope, *, after_seq: int = -1, limit: int | None = None
    ) -> builtins.list[tuple[int, str, str]]:
        return self._read(
            "SELECT seq, role, content FROM turns WHERE tenant = ? AND session_id = ? "
            "AND seq > ? ORDER BY seq LIMIT ?",
            (scope.tenant, scope.session_id, after_seq, -1 if limit is None else limit),
        )

    def turns_since(
        self, scope: Scope, last: Turn, *, revision: str | None
    ) -> builtins.list[Turn] | None:
        return shared.turns_since(
            self._read, scope, last, revision, sql=_META_SQL, turn_of=turn_from_row
        )

    def set_session_meta(self, scope: Scope, meta: Mapping[str, Any]) -> None:
        shared.refuse_nul_in_scope(scope)
        body = shared.fresh_meta_json(meta)
        with self._write() as db:
            db.execute(
                "INSERT INTO session_meta (tenant, session_id, user_id, agent_id, meta, "
                "updated_at) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT (tenant, session_id) DO UPDATE SET "
                "meta = excluded.meta, updated_at = excluded.updated_at",
                (scope.tenant, scope.session_id, scope.user_id, scope.agent_id, body, time.time()),
            )

    def swap_session_meta(
        self, scope: Scope, meta: Mapping[str, Any], *, revision: str | None
    ) -> bool:
        with self._write() as db:
            return shared.swap_session_meta_row(
                db, scope, meta, time.time(), revision=revision, sql=_META_SQL
            )

    def session_meta(self, scope: Scope) -> dict[str, Any]:
        return self.session_meta_revision(scope)[0]

    def session_meta_revision(self, scope: Scope) -> tuple[dict[str, Any], str | None]:
        return shared.read_session_meta(self._read, scope, _META_SQL)

    def sessions(self, scope: Scope) -> builtins.list[str]:
        return shared.list_sessions(self._read, scope, mark="?")


def opens_read_only(file: Path) -> bool:
    """Whether this process opens the existing database ``file`` read-only: the file or
    its folder (where SQLite makes the -wal and -shm) is not writable by it."""
    return file.exists() and not (os.access(file.parent, os.W_OK) and os.access(file, os.W_OK))


def create_private(file: Path) -> None:
    """Create a missing database ``file`` empty, readable and writable by its owner alone.

    Why: SQLite made a new file ``0644 & ~umask``, so under the usual umask 022 every
    local account could copy a store of personal memories (a review). An empty file is
    a new database to SQLite, which then gives the -wal and -shm the main file's mode.
    Made here with ``os.open``, not under a changed umask: the umask is the whole
    process's, the host application's files too. A file that exists keeps its mode
    (the operator's choice, ``O_EXCL``); one that cannot be made is left for SQLite,
    whose error (with :func:`_denied`'s) says why.
    """
    with contextlib.suppress(OSError):
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def _denied(file: Path) -> str | None:
    """The permission that keeps this process from opening the database ``file``, or
    from making it (its folder, or the nearest folder above a missing one, not
    writable); None when none does.

    Why: SQLite says "unable to open database file" for a file it may not read and for
    a new one in a folder it may not write, and a default folder that could not be
    made (a read-only or missing home) read as "does not exist", none naming the
    cause (a review, s57)."""
    if file.exists():
        readable = os.access(file, os.R_OK)
        return None if readable else f"permission denied: this process may not read {str(file)!r}"
    folder = file.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    return f"permission denied: folder {str(folder)!r} is not writable by this process"


def _connect(
    path: str, busy_timeout_ms: int, synchronous: str
) -> tuple[sqlite3.Connection, _FileKey | None]:
    """Open (and migrate) the database file; read-only when its folder is not writable.
    Also the file's key in :data:`_HELD` (None: not counted), for the store's close to
    :func:`_release`.

    A missing folder is an error rather than created: a mistyped path used to
    leave a new empty database behind and answer "0 memories".
    """
    read_only = False
    if path != ":memory:":
        forks.check_not_inherited(path)
        file = Path(path)
        if file.is_dir():
            raise StoreError(f"cannot open database {path!r}: it is a directory")
        if not file.parent.is_dir():
            denied = _denied(file)
            raise StoreError(
                f"cannot open database {path!r}: folder {str(file.parent)!r} does not exist"
                + (f" ({denied})" if denied else "")
            )
        folder_writable = os.access(file.parent, os.W_OK)
        read_only = opens_read_only(file)
        create_private(file)  # a new file only: read_only is of one that exists
    held: _FileKey | None = None
    try:
        if read_only:
            return _open_read_only(path, folder_writable)
        db, held = _held_open(
            path,
            lambda: sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
            ),
        )
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA secure_delete = ON")
        migrate(db)
        return db, held
    except sqlite3.OperationalError as exc:
        _release(held)
        refused = _write_refused(None if path == ":memory:" else _Opened.now(path), exc)
        if isinstance(refused, StoreFault):  # a -wal or -shm left read-only
            raise refused from exc
        cant_open = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_CANTOPEN
        denied = _denied(Path(path)) if cant_open else None
        raise StoreError(
            f"cannot open database {path!r}: {exc}" + (f" ({denied})" if denied else "")
        ) from exc
    except sqlite3.DatabaseError as exc:
        _release(held)
        # "file is not a database" at open is most often a path to another file: said
        # as such. Damage found once open (the file was a database) is a fault.
        if _damaged(exc) and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_CORRUPT:
            raise StoreFault(damaged_message(Path(path), exc)) from exc
        raise StoreError(f"cannot open database {path!r}: {exc}") from exc
    except BaseException:
        _release(held)
        raise


def _open_read_only(path: str, folder_writable: bool) -> tuple[sqlite3.Connection, _FileKey | None]:
    """:func:`_connect` of a file this process may not write (or whose folder it may not).

    A WAL database is read through its -shm: where the folder can hold one, or holds
    the -wal and -shm a writer left (read-only ones too), the WAL's writes are read.
    Only a folder that holds neither and can hold none is read with immutable=1, the
    main file alone: with it always, the memories a crashed writer left in the WAL were
    not shown (a review)."""
    file = Path(path).resolve()
    side = [file.with_name(file.name + end) for end in ("-wal", "-shm")]
    uri = f"file:{quote(str(file))}?mode=ro"
    if not folder_writable and not all(p.exists() for p in side):
        uri += "&immutable=1"
    db, held = _held_open(
        path, lambda: sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    )
    try:
        db.execute("PRAGMA query_only = 1")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > len(MIGRATIONS):  # a rollback opening a migrated file
            raise newer_schema(version)
        if version < READABLE_FROM:
            raise StoreError(f"database {path!r} is read-only and needs a schema upgrade")
    except BaseException:
        _release(held)
        raise
    return db, held


#: A database file's (device, inode).
_FileKey = tuple[int, int]
#: The database files this process holds open through SQLite (a store's connections),
#: each with how many stores hold it. Guarded by :data:`_HOLDING`, which is held from a
#: check of the file (:func:`check_no_stray_wal`) to the count of the connection it
#: opens: a store opening the file on another thread meanwhile could lose its locks.
_HELD: dict[_FileKey, int] = {}
_HOLDING = threading.Lock()


def _new_holding_lock() -> None:
    """A forked child's own :data:`_HOLDING` (a thread of its parent may have held it
    at the fork, for good in the child)."""
    global _HOLDING
    _HOLDING = threading.Lock()


os.register_at_fork(after_in_child=_new_holding_lock)


def _held_open(
    path: str, connect: Callable[[], sqlite3.Connection]
) -> tuple[sqlite3.Connection, _FileKey | None]:
    """``connect()``, the file checked first for another file's ``-wal``
    (:func:`check_no_stray_wal`) unless a store of this process holds it open, and then
    counted as held (its key; None for a file that cannot be told)."""
    with _HOLDING:
        if path != ":memory:" and _file_id(path) not in _HELD:
            check_no_stray_wal(Path(path))
        db = connect()
        key = _file_id(path) if path != ":memory:" else None
        if not isinstance(key, tuple):
            return db, None
        _HELD[key] = _HELD.get(key, 0) + 1
        return db, key


def _release(key: _FileKey | None) -> None:
    """A store's connections to the file ``key`` are closed (or never opened)."""
    if key is None:
        return
    with _HOLDING:
        left = _HELD.get(key, 0) - 1
        if left > 0:
            _HELD[key] = left
        else:
            _HELD.pop(key, None)


def check_no_stray_wal(file: Path) -> None:
    """Refuse (a :class:`StoreFault`) a database file in rollback-journal mode with a
    ``-wal`` beside it that holds frames: that ``-wal`` is another file's.

    Why: a backup made with ``VACUUM INTO`` (or a copy of one) is in rollback mode
    (header bytes 18-19 are 1; a store contextos opened is in WAL mode, 2). Copied in
    where the replaced file was, it sits beside that file's ``-wal`` and ``-shm``; the
    next open switched it to WAL mode, and SQLite replayed the other file's frames onto
    it: the restored file was damaged ("malformed database schema"), and the old
    file's last acknowledged writes were in neither file (a review of restores). Told
    "the file is damaged: restore a backup", the operator who had just restored one had
    no way out. Nothing of the file or the ``-wal`` is changed here."""
    wal = file.with_name(file.name + "-wal")
    try:
        wal_size = wal.stat().st_size
    except OSError:  # no -wal, or unreadable: SQLite's open says what is wrong
        return
    if wal_size > 0 and _in_rollback_mode(str(file)):
        raise StoreFault(
            f"{wal} belongs to another database file: {file.absolute()} is in rollback "
            "mode (a backup, or a copy of one) and never wrote it, and opening it would "
            "replay that file's writes onto it and damage it. Stop every process that "
            f"had the replaced file open, then move {wal.name} and "
            f"{file.name}-shm aside (beside the file they belong to, e.g. old.db-wal "
            'and old.db-shm), and open it again (docs/server.md, "Backups and restores")'
        )


def _in_rollback_mode(path: str) -> bool:
    """Whether the file at ``path`` is a SQLite database in rollback-journal mode (its
    header's read and write versions, bytes 18-19, are 1; WAL mode's are 2): a backup
    made with ``VACUUM INTO``, or a copy of one. False when it cannot be read.

    Never while a connection of this process has the file open (the caller's to
    check, :func:`_held_open`): closing any descriptor of a file drops every
    POSIX lock the process holds on it, SQLite's included, and another process could
    then write under a connection that believes it holds a lock (a raw read of the
    header on every write made a long-running store miss another process's changes)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        header = os.pread(fd, 20, 0)
    except OSError:
        return False
    finally:
        os.close(fd)
    return header[:16] == b"SQLite format 3\x00" and header[18:20] == b"\x01\x01"


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file is damaged or not a database (no wait mends it)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def damaged_message(path: Path, exc: sqlite3.DatabaseError) -> str:
    """What to say of a damaged database file, and what to do about it."""
    return (
        f"the database file {path.absolute()} is damaged ({exc}); nothing more is written "
        "to it: stop every process that has it open, then restore a backup "
        '(docs/server.md, "Backups and restores")'
    )


class _Update(shared.RecordUpdate):
    """update()'s SQL on SQLite: rows by rowid; the write transaction is the lock."""

    mark = "?"

    def locked(self, tenant: str, memory_id: str) -> tuple[int, MemoryRecord] | None:
        row = self.cur.execute(
            f"SELECT {RECORD_COLUMNS} FROM memories WHERE tenant = ? AND id = ?",
            (tenant, memory_id),
        ).fetchone()
        return None if row is None else (row[0], row_to_record(row))

    def drop_vector(self, key: int) -> None:
        # Deleting the vector queues the record by trigger (pending_again), but a record
        # without one (quarantined, or still pending) changed by its metadata alone
        # reaches no trigger (quarantine_retry watches the text): so the quarantine
        # and the queue are set here, and a claimant embedding the old text loses its
        # claim (its set_vectors skips the record; the next claim embeds the new text).
        self.cur.execute("DELETE FROM vectors WHERE mem_rowid = ?", (key,))
        # A long-lived process's in-memory index drops a vector only for the records
        # ``index_log`` names, and its trigger watches text and times: a metadata change
        # (a speaker, a caption) that drops the vector must be logged here, or that
        # index keeps serving the old meaning until a new vector is written.
        self.cur.execute(
            "INSERT INTO index_log (mem_id) SELECT id FROM memories WHERE rowid = ?", (key,)
        )
        self.cur.execute("DELETE FROM vector_quarantine WHERE mem_rowid = ?", (key,))
        self.cur.execute(
            "INSERT INTO pending_vectors (mem_rowid) VALUES (?) ON CONFLICT (mem_rowid) "
            "DO UPDATE SET claimed_by = NULL, claimed_until = 0",
            (key,),
        )

    def write(self, key: int, sets: Sequence[str], params: Sequence[object]) -> MemoryRecord:
        self.cur.execute(f"UPDATE memories SET {', '.join(sets)} WHERE rowid = ?", (*params, key))
        row = self.cur.execute(f"SELECT {RECORD_COLUMNS} FROM memories WHERE rowid = ?", (key,))
        return row_to_record(row.fetchone())

    def remove(self, tenant: str, ids: Sequence[str], *, now: Any, actor: str) -> None:
        _delete_records(self.cur, tenant, ids, purge=False, now=now, actor=actor, derived=ids)

    def insert(self, records: Sequence[MemoryRecord], *, now: Any, actor: str) -> None:
        _insert_records(self.cur, records, now, actor)

    def quoting(
        self, tenant: str, session_id: str, probes: Sequence[str], seq: int | None
    ) -> builtins.list[tuple[int, MemoryRecord]]:
        # The write transaction holds every row. One pass over the session's rows
        # (``memories_session``): only the reply's (by its number) are read as records.
        numbered = (
            ""
            if seq is None
            else "AND (json_type(metadata, '$.seq') IS NOT 'integer' "
            "OR json_extract(metadata, '$.seq') = ?) "
        )
        rows = self.cur.execute(
            f"SELECT {RECORD_COLUMNS} FROM memories m WHERE tenant = ? AND session_id = ? "
            f"{numbered}AND EXISTS (SELECT 1 FROM json_each(?) p WHERE instr(m.context, p.value))",
            (tenant, session_id, *(() if seq is None else (seq,)), json.dumps(list(probes))),
        )
        return [(row[0], row_to_record(row)) for row in rows]

    def set_context(self, key: int, context: str) -> None:
        # The full-text index and ``index_log`` (for the keyword index) follow by trigger.
        self.cur.execute("UPDATE memories SET context = ? WHERE rowid = ?", (context, key))


def _insert_records(
    db: sqlite3.Connection, records: Sequence[MemoryRecord], now: float, actor: str
) -> None:
    """Insert ``records`` and their ADD events in the transaction open on ``db``."""
    try:
        db.executemany(_INSERT_RECORD, [record_row(r, now) for r in records])
    except sqlite3.IntegrityError as exc:
        raise ValueError(f"a record with this id already exists: {exc}") from None
    db.executemany(
        _INSERT_HISTORY,
        [shared.add_event(r, now, actor) for r in records],
    )


def _delete_records(
    db: sqlite3.Connection,
    tenant: str,
    ids: Sequence[str],
    *,
    purge: bool,
    now: float,
    actor: str,
    derived: Collection[str] = (),
) -> builtins.list[str]:
    """Delete those of ``ids`` that exist and log each deletion, in the transaction
    open on ``db``; returns the ids deleted. A purge also scrubs the copies of every
    text they had (history's, read before it is blanked) from the contexts of their
    sessions' records, and of the records without a session of their scopes (see
    ``store/erasure.py``); the caller rebuilds the full-text index. ``derived``:
    the ids of records made from another (a turn's facts, ``Derived.drop``), whose
    history is logged as a purge's: the record they were made from keeps the text, and
    a later purge of it must find no copy left."""
    rows = db.execute(
        "SELECT rowid, id, user_id, text, session_id, agent_id FROM memories "
        "WHERE +tenant = ? AND id IN (SELECT value FROM json_each(?))",  # by id (get_many)
        (tenant, json.dumps(list(dict.fromkeys(ids)))),
    ).fetchall()
    db.executemany("DELETE FROM memories WHERE rowid = ?", [(r[0],) for r in rows])
    if purge and rows:
        gone = [r[1] for r in rows]
        texts = {r[3] for r in rows} | set(shared.history_texts(db, tenant, gone, mark="?"))
        _scrub_contexts(
            db,
            tenant,
            Scrub(texts),
            sessions=sorted({r[4] for r in rows if r[4] is not None}),
            loose={(r[2], r[5]) for r in rows if r[4] is None},
        )
    shared.log_deletions(
        db,
        tenant,
        [shared.Deletion(r[1], r[2], r[3], r[4]) for r in rows],
        blank={r[1] for r in rows if purge or r[1] in derived},
        at=now,
        actor=actor,
        mark="?",
    )
    return [r[1] for r in rows]


def _purge_remains(
    db: sqlite3.Connection, tenant: str, ids: Sequence[str], deleted: Sequence[str]
) -> bool:
    """Purge what is left of those of ``ids`` deleted earlier without a purge
    (:func:`~contextos.store.records.purge_remains`): their history's texts, and the
    copies of them in any context of the tenant (history written before it named the
    memory's session names none). Whether there was any text to erase."""
    gone = set(deleted)
    remains = [i for i in dict.fromkeys(ids) if i not in gone]
    texts = shared.purge_remains(db, tenant, remains, mark="?") if remains else []
    _scrub_contexts(db, tenant, Scrub(texts), sessions=(), anywhere=True)
    return bool(texts)


def _claimed_by(owner: str | None) -> tuple[str, tuple[str, ...]]:
    """The condition (appended to a WHERE on ``memories``) that keeps only the records
    whose queue row ``owner`` still claims; none without an owner. A record whose text
    changed since the claim (``_Update.drop_vector`` ends it), or whose claim another
    worker took over, is skipped: the vector in hand describes text it may no longer have."""
    if owner is None:
        return "", ()
    return " AND rowid IN (SELECT mem_rowid FROM pending_vectors WHERE claimed_by = ?)", (owner,)


def _any_of(column: str) -> str:
    """SQLite's test that ``column`` is one of a list given as one JSON parameter."""
    return f"{column} IN (SELECT value FROM json_each(?))"


def _listed(values: Sequence[str]) -> str:
    """A list as the one parameter :func:`_any_of` reads."""
    return json.dumps(list(values))


def _scrub_contexts(
    db: sqlite3.Connection,
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
    rows: builtins.list[tuple[int, str]] = []
    if anywhere:
        # One read of the tenant's contexts for every probe, not a scan a probe (a purge
        # of 700 memories deleted earlier scanned the tenant 700 times).
        rows += [
            (rowid, ctx)
            for rowid, ctx in db.execute(
                "SELECT rowid, context FROM memories WHERE tenant = ? AND context != ''", (tenant,)
            )
            if any(probe in ctx for probe in scrub.probes)
        ]
    if sessions:
        rows += db.execute(
            "SELECT rowid, context FROM memories WHERE tenant = ? AND context != '' "
            "AND session_id IN (SELECT value FROM json_each(?))",
            (tenant, json.dumps(list(sessions))),
        ).fetchall()
    for user_id, agent_id in sorted(loose, key=repr):
        rows += db.execute(
            "SELECT rowid, context FROM memories WHERE tenant = ? AND user_id IS ? "
            "AND agent_id IS ? AND session_id IS NULL AND instr(context, ?) > 0",
            (tenant, user_id, agent_id, REPLY_MARK),
        ).fetchall()
    changed = [(new, rowid) for rowid, ctx in rows if (new := scrub(ctx)) != ctx]
    db.executemany("UPDATE memories SET context = ? WHERE rowid = ?", changed)


#: Why an erasure that committed left old bytes: an open reader held them.
WAL_HELD = (
    "an open reader (or other processes' steady reads and writes) kept the old pages in "
    "the write-ahead log; the next write or close of any process removes them"
)
RETRY_TO_CONFIRM = "(retry to confirm)"


def _unfinished(exc: StoreError, *, retry: str = RETRY_TO_CONFIRM) -> str:
    """Why an erasure that committed is unfinished (``ErasurePending.reason``): the
    store's message without its opening ("erased, but", "erased, and"), and ``retry``
    for what finishes it where a retry of the same call would not (a purge's id is
    gone: retried, it is not found)."""
    text = str(exc)
    for opening in ("erased, but ", "erased, "):
        if text.startswith(opening):
            text = text[len(opening) :]
            break
    return text.replace(RETRY_TO_CONFIRM, retry)


def _merge_fts_and_mark_erasure(
    db: sqlite3.Connection, now: float, *, rebuild: bool = False
) -> None:
    """Rebuild the full-text index from the remaining records (the erased text's terms
    leave the index pages; ``secure_delete`` zeroes the freed ones) and mark that the
    WAL must be truncated before the erasure is complete; with ``rebuild``, that the
    file must be rebuilt (``VACUUM``) first (``since`` negated: the table's columns
    are the schema's since V3).

    Why ``rebuild`` (``forget``, ``forget_tenant``): ``secure_delete`` zeroes a deleted
    cell and pages freed whole, but a b-tree page split or rebalance copies cells to
    other pages and leaves the old copies in the free space of pages still in use.
    With three users' thousands of rows interleaved, a forget left 1-4 of 1,500
    erased texts (with the memory's and user's ids) readable there (a review). Only
    rewriting every page clears them; ``VACUUM`` measured 0.1 s at 10k memories and
    0.3 s at 50k on the reference machine (the forget itself 0.17 s and 0.75 s), 0.5 s
    at 103k (118 MB; the whole forget about 1 s, whatever it erases), and the -wal
    grows to the file's size meanwhile (docs/api.md says so).
    Purges do not: one costs ~40 ms now, and a rebuild each would multiply that.

    Why ``rebuild`` and not ``optimize`` (a merge of the segments, cheaper): with
    SQLite 3.40.1 (the library this Python links), ``optimize`` after each of about a
    thousand purges corrupted the FTS5 index ("database disk image is malformed" on
    the next delete; tests/test_forget_bytes.py repeats that pattern, and plain
    sqlite3 statements reproduce it without contextos). ``rebuild`` costs about 0.6 s
    per erasure at 100k memories on the reference machine (``optimize`` 0.2 s)."""
    db.execute("INSERT INTO memories_fts (memories_fts) VALUES ('rebuild')")
    db.execute(  # a rebuild still owed by an earlier erasure stays owed
        "INSERT INTO erasure_pending (id, since) VALUES (1, ?) ON CONFLICT (id) DO UPDATE "
        "SET since = CASE WHEN since < 0 THEN -abs(excluded.since) ELSE excluded.since END",
        (-now if rebuild else now,),
    )


#: Bytes the write-ahead log is cut back to when it starts over after a checkpoint.
#: Without a limit SQLite reuses the file at its largest: a reader holding a snapshot
#: (a backup, a slow listing) while a few thousand adds commit grew it by ~90 KB an
#: add, and a server that never closes the store kept hundreds of MB of -wal for good.
#: Above the ~5 MB of steady load (1,000-page autocheckpoints), so that costs nothing.
WAL_SIZE_LIMIT = 16 * 1024 * 1024

#: ``index_log`` rows kept for the in-memory indexes of every process to catch up
#: from (about 45 bytes each). Older ones are pruned: the log gained a row per insert,
#: update and delete for good. An index further behind than this is read whole again.
INDEX_LOG_KEPT = 10_000

#: Writes of one connection between two prunes of ``index_log`` (in the write's own
#: transaction; a prune that finds nothing to delete is one index lookup).
PRUNE_INDEX_LOG_EVERY = 64


def _prune_index_log(db: sqlite3.Connection) -> None:
    db.execute(
        "DELETE FROM index_log WHERE seq <= (SELECT max(seq) FROM index_log) - ?",
        (INDEX_LOG_KEPT,),
    )


def _log_pruned_after(db: sqlite3.Connection, seen: int) -> bool:
    """Whether ``index_log`` rows after ``seen`` were pruned (seqs are never reused, and
    only the oldest rows are ever deleted)."""
    (oldest,) = db.execute("SELECT min(seq) FROM index_log").fetchone()
    return oldest is not None and oldest > seen + 1


def _log_end(db: sqlite3.Connection) -> tuple[int, str | None]:
    """``index_log``'s newest row: its seq (0 when the log is empty) and the record it
    names, which :func:`_log_lost_after` later looks for at that seq."""
    row = db.execute("SELECT seq, mem_id FROM index_log ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, None) if row is None else (int(row[0]), str(row[1]))


def _log_lost_after(db: sqlite3.Connection, seen: int, seen_id: str | None) -> bool:
    """Whether an index that read ``index_log`` up to row ``seen`` (naming ``seen_id``,
    :func:`_log_end`) can no longer catch up from it and must start over: rows after it
    were pruned, or the file's history went back.

    The second is an online restore of an older backup into the live file (``sqlite3
    memory.db ".restore backup.db"``, the backup API): the restored log ends below
    ``seen`` and the next writes reuse its seqs, so reading on from ``seen`` missed every
    record written after the restore, and kept the ones it removed, until the process
    restarted (a review). Row ``seen`` is then missing with no prune to explain it, or
    names another record (ids are UUIDs). One lookup by seq while the row is there."""
    if seen > 0:
        row = db.execute("SELECT mem_id FROM index_log WHERE seq = ?", (seen,)).fetchone()
        if row is not None:
            return bool(row[0] != seen_id)
    (oldest,) = db.execute("SELECT min(seq) FROM index_log").fetchone()
    if oldest is None:
        return seen > 0  # emptied: a prune keeps the newest row, so only a restore
    return bool(oldest != seen + 1)  # pruned past it, or the log now ends below it


def _vectors_rewound(db: sqlite3.Connection, seen_vseq: int) -> bool:
    """Whether the file hands out vseqs below ``seen_vseq`` again, the highest an index
    loaded: an online restore of a backup (see :func:`_log_lost_after`) older than vectors
    written since, whose next vectors reuse seqs the index would never load. Told by the
    AUTOINCREMENT high mark in ``sqlite_sequence``, not ``max(vseq)``: deleting the newest
    vector lowers that (a whole reload at each such delete), never the mark."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'vectors'").fetchone()
    return (0 if row is None else int(row[0])) < seen_vseq


@contextmanager
def _ended(
    db: sqlite3.Connection,
    what: str,
    failed: Callable[[str, sqlite3.DatabaseError], StoreError] | None = None,
    committed: shared.Committed | None = None,
) -> Iterator[None]:
    """End the transaction open on ``db``: COMMIT when the body returns, ROLLBACK on
    any error (a transaction left open hides later commits from the connection's reads
    and holds the WAL); a database error is ``failed(what, exc)`` (the store's
    :meth:`SQLiteStore._failed`), a StoreError naming ``what`` without it.

    The ROLLBACK only while a transaction is open: a Ctrl-C (or a benchmark's SIGTERM)
    landing just after the COMMIT made it fail with "cannot rollback - no transaction
    is active", which replaced the interrupt with a traceback (a review). For the same
    reason, no transaction open as an interrupt arrives means the COMMIT went through
    (the body runs inside the one ``BEGIN`` opened): ``committed`` is then marked done,
    as it is when the COMMIT returns."""
    try:
        yield
        db.execute("COMMIT")
        if committed is not None:
            committed.done = True
    except sqlite3.DatabaseError as exc:
        _roll_back(db)
        raise (failed or _plain_failure)(what, exc) from exc
    except BaseException:
        if committed is not None and not db.in_transaction:
            committed.done = True  # a signal raised just after the COMMIT returned
        _roll_back(db)
        raise


def _plain_failure(what: str, exc: sqlite3.DatabaseError) -> StoreError:
    return StoreError(f"{what} failed: {exc}")


def _roll_back(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


#: Seconds a scope whose keyword search failed on a fresh index fails fast while
#: nothing in it changes (``SQLiteStore._lexical_hits``): then one search tries again,
#: which, failing, drops the keyword index once more (others' next searches read their
#: rows again). An error that is not the scope's rows' (memory running out) heals then.
LEXICAL_FAILING_S = 60.0


@dataclass
class _PutOff:
    """A rebuild (``VACUUM``) that failed here for another reason than a lock, most
    often no room on the disk (``SQLiteStore._rebuild_if_marked``): ``error``, the
    StoreError's text the erasure reports; until ``retry_at`` (``time.monotonic``) this
    process's writes, purges and close leave it owed (the mark stays negative) and only
    truncate the WAL; ``truncated_for``: the mark they truncated it for since, after
    which they do nothing until it is due. Why: each try copies the whole file before
    it fails, and it was made after every commit of every process (a review); once a
    minute per process, and at each open, ``forget`` and ``vacuum()``, is enough."""

    error: str
    retry_at: float
    truncated_for: float | None = None

    def waiting(self) -> bool:
        """Whether it is still put off (``retry_at`` not reached)."""
        return time.monotonic() < self.retry_at


@dataclass
class _Failing:
    """A scope whose keyword search failed on a fresh index: ``error`` (the StoreFault's
    text), raised until ``until`` (``time.monotonic``) or a change of the scope logged
    in ``index_log`` after ``log_seq``; ``version``: the file's (``data_version``,
    writes) when the log was last read."""

    error: str
    log_seq: int
    version: tuple[int, int]
    until: float


@dataclass(frozen=True)
class _LexicalRead:
    """What one snapshot gave the keyword index (see ``SQLiteStore._read_lexical``)."""

    log_seq: int
    changed: builtins.list[str]  # records logged since the last look
    rows: builtins.list[LexRow]  # those of them that exist, as they are now
    users: dict[str | None, builtins.list[LexRow]]  # users read whole
    tenant: str = ""
    whole_tenant: str | None = None
    log_id: str | None = None  # the record index_log's row ``log_seq`` names


#: What a file is on its file system (``st_dev``, ``st_ino``); None: no file there.
_FileId = tuple[int, int] | None


def _file_id(path: str) -> _FileId | bool:
    """``path``'s :data:`_FileId`, or False when it cannot be told (the folder not
    searchable now): nothing to compare, so nothing is refused for it."""
    try:
        found = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return False
    return (found.st_dev, found.st_ino)


@dataclass(frozen=True)
class _Opened:
    """The files of a WAL database (the file, its -wal, its -shm) as a store opened
    them: their paths and what each named then (:func:`_file_id`).

    The -wal and -shm count too: removed while a process has them open, the next
    process makes new ones, and the two then write to different logs (a review: a
    CLI add acknowledged, missing after a restart). SQLite removes them itself only
    at the last connection's close, and a store's connections stay open until its
    own. SQLite names them after the file the path resolves to (symbolic links
    followed), so they are looked for there."""

    files: tuple[tuple[str, _FileId | bool], ...]

    @classmethod
    def now(cls, path: str | Path) -> _Opened:
        named = os.path.abspath(path)  # the process may change its directory later
        real = os.path.realpath(named)
        return cls(tuple((p, _file_id(p)) for p in (named, real + "-wal", real + "-shm")))

    def moved(self) -> str | None:
        """The first of the files that the path no longer names (removed or replaced)."""
        for path, opened in self.files:
            if opened and _file_id(path) not in (opened, False):
                return path
        return None

    def unwritable(self) -> builtins.list[str]:
        """Those of the files that exist and this process may not write."""
        return [p for p, _ in self.files if os.path.exists(p) and not os.access(p, os.W_OK)]


def _write_refused(opened: _Opened | None, exc: sqlite3.OperationalError) -> StoreError:
    """The error of a write SQLite would not begin (or of an open whose migration it
    would not write). "Read-only" while a file of the database is one this process may
    not write names that file and what to do: a -wal or -shm left read-only refused
    every write after the database was made writable again, and the message said "busy"
    and named neither (a review). SQLite gives a -wal and -shm it creates the mode of
    the database file, so a read-only open of a read-only file (in a writable folder)
    leaves them read-only."""
    unwritable = opened.unwritable() if opened is not None else []
    if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_READONLY or not unwritable:
        return StoreError(f"database is busy or unwritable: {exc}")
    one = len(unwritable) == 1
    fix = f"make {'it' if one else 'them'} writable again (chmod u+w)"
    shm = [p for p in unwritable if p.endswith("-shm")]
    if shm:
        fix += (
            f", or delete {shm[0]} while no process has the database open (SQLite "
            "makes it again; never delete a -wal: it may hold committed writes)"
        )
    if any(p.endswith(("-wal", "-shm")) for p in unwritable):
        fix += "; a read-only open of the database while its file was read-only leaves them so"
    return StoreFault(
        f"cannot write the database: {' and '.join(unwritable)} "
        f"{'is' if one else 'are'} read-only; {fix}"
    )


def _reads_on(
    db: sqlite3.Connection, failed: Callable[[str, sqlite3.DatabaseError], StoreError]
) -> Callable[[str, Sequence[object]], builtins.list[Any]]:
    """A ``read`` running each query on ``db`` (its errors ``failed``'s StoreError)."""

    def read(sql: str, params: Sequence[object] = ()) -> builtins.list[Any]:
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise failed("read", exc) from exc

    return read


def _open_reader(path: str, busy_timeout_ms: int) -> sqlite3.Connection:
    """A second connection to a file the writer has opened and migrated, for reads."""
    try:
        db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        db.execute("PRAGMA query_only = 1")
        return db
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open database {path!r}: {exc}") from exc


def _stale_vectors(model: str, dimensions: int | None) -> tuple[str, tuple[object, ...]]:
    """SQL selecting the ``mem_rowid`` of every vector another model wrote or, given
    ``dimensions``, of another size (``length(vec)``: 4 bytes a dimension), and its
    parameters. ``<`` / ``>`` rather than ``!=``: each part is a range of the index on
    (model, length(vec)) (schema V13), so a store whose vectors are all current answers
    without reading them."""
    stale = "SELECT mem_rowid FROM vectors WHERE model < ? OR model > ?"
    if dimensions is None:
        return stale, (model, model)
    size = 4 * dimensions
    same = "UNION ALL SELECT mem_rowid FROM vectors WHERE model = ? AND length(vec)"
    stale += f" {same} < ? {same} > ?"
    return stale, (model, model, model, size, model, size)
