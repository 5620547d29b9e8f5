"""``PostgresStore.vacuum``: rewrite contextos's tables so erased rows leave no bytes,
and say so only when nothing kept them (docs/postgres.md, *Erasure*).

The steps, in this order, and why:

1. ``ANALYZE`` each table. It replaces the planner statistics that quote erased values
   (most common user ids, words of the text); the replaced rows stay in
   ``pg_statistic``'s file as dead tuples until step 4 rewrites it. It runs first so
   that the start point of step 2 comes after those rows died: a transaction begun
   during the rewrite then cannot keep them. Why: with ``VACUUM (FULL, ANALYZE)`` per
   table and the holders checked once at the start, a transaction that began after the
   start but while a table's ANALYZE ran (a report of another app, a ``pg_dump`` of
   another schema) kept the replaced statistics and vacuum said "vacuumed".
2. Wait for what holds the database's cleanup horizon from before that point
   (:data:`_HOLDERS`): PostgreSQL keeps the rows such a holder may still read, and
   VACUUM FULL copies them into its new files.
3. ``VACUUM FULL`` each table: new files holding live rows only, every index rebuilt.
4. ``VACUUM FULL pg_catalog.pg_statistic`` (its owner, the database's owner or a
   superuser may; other roles get a note).
5. ``CHECKPOINT``, so old WAL segments may be recycled (a note where refused).

A holder left after the wait makes vacuum end with a StoreError naming it, after
rewriting everything (the bytes it keeps may be in the new files); the notes gathered
on the way are in that error's text too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from contextos.errors import StoreError

#: contextos's tables, rewritten by ``vacuum``.
TABLES = (
    "memories",
    "vectors",
    "pending_vectors",
    "vector_quarantine",
    "history",
    "turns",
    "session_meta",
)

#: Kinds of holder whose horizon moves only when a standby or a logical slot's consumer
#: reports (see :func:`_feedback_wait_s`); an inactive slot's does not move at all.
_FED_BACK = frozenset({"walsender pid", "replication slot"})

#: The largest ``vacuum_defer_cleanup_age`` vacuum steps past itself (:func:`_step_past`).
DEFER_STEPPED_MAX = 10_000

#: The longest vacuum waits for a standby's or a slot's feedback, whatever
#: ``wal_receiver_status_interval`` is set to.
FEEDBACK_WAIT_MAX_S = 60.0

#: What holds this database's cleanup horizon from before a point (a 32-bit xid, the
#: snapshot's xmax: compared by age, so wraparound is no matter), as (kind, name) rows:
#: - its client transactions;
#: - walsenders with a ``backend_xmin`` (a standby's ``hot_standby_feedback``: such a
#:   horizon holds every database, and a physical walsender has no ``datname``);
#: - replication slots' ``xmin`` (a physical slot of a standby with feedback: every
#:   database's rows) and ``catalog_xmin`` (a logical slot: every database's catalog
#:   rows, ``pg_statistic`` among them). Why the latter: a lagging or inactive logical
#:   slot (a subscription, a CDC tool) kept the replaced statistics quoting a forgotten
#:   user, and vacuum said "vacuumed";
#:   A slot no standby or consumer is connected to is named an inactive one: its
#:   horizon cannot move, so it is not waited for as long (:func:`wait_for_holders`);
#: - transactions of this database prepared for two-phase commit;
#: - ``vacuum_defer_cleanup_age`` (PostgreSQL 15 and older): it holds the horizon that
#:   many transactions back, so the point is moved forward by it (``%(point)s``) and
#:   the setting itself is a holder until as many transactions have started
#:   (:func:`_step_past`).
#: Why: vacuum said "vacuumed" while a standby's query kept a forgotten user's text in
#: the primary's new files; it looked at client backends only.
_HOLDERS = (
    "SELECT 'pid', pid::text FROM pg_stat_activity WHERE datname = current_database() "
    "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
    "AND (age(backend_xmin) > age(%(point)s::text::xid) "
    "OR age(backend_xid) > age(%(point)s::text::xid)) "
    "UNION ALL SELECT 'walsender pid', pid::text FROM pg_stat_activity "
    "WHERE backend_type = 'walsender' AND age(backend_xmin) > age(%(point)s::text::xid) "
    "UNION ALL SELECT CASE WHEN active THEN 'replication slot' "
    "ELSE 'inactive replication slot' END, quote_literal(slot_name) FROM pg_replication_slots "
    "WHERE age(xmin) > age(%(point)s::text::xid) "
    "OR age(catalog_xmin) > age(%(point)s::text::xid) "
    "UNION ALL SELECT 'prepared transaction', quote_literal(gid) FROM pg_prepared_xacts "
    "WHERE database = current_database() AND age(transaction) > age(%(point)s::text::xid) "
    "UNION ALL SELECT 'vacuum_defer_cleanup_age', %(defer)s::text WHERE %(defer)s > 0 AND "
    "age((txid_snapshot_xmax(txid_current_snapshot()) %% 4294967296)::text::xid) "
    "> age(%(point)s::text::xid) "
    "ORDER BY 1, 2"
)

#: The start point, the feedback interval and the deferral, read at once.
_START = (
    "SELECT txid_snapshot_xmax(txid_current_snapshot()) % 4294967296, "
    "(SELECT setting::int FROM pg_settings WHERE name = 'wal_receiver_status_interval'), "
    "COALESCE((SELECT setting::int FROM pg_settings "
    "WHERE name = 'vacuum_defer_cleanup_age'), 0)"
)

_STATISTIC_FILE = "SELECT pg_relation_filenode('pg_catalog.pg_statistic')"

#: vacuum's note when its role may not rewrite pg_statistic.
STATISTIC_SKIPPED = (
    "every table was rewritten, but this role may not rewrite pg_catalog.pg_statistic "
    "(the database's owner or a superuser may), so the planner statistics that vacuum's "
    "ANALYZE replaced keep quoting erased values in its file until a VACUUM FULL "
    "pg_catalog.pg_statistic by such a role"
)

#: vacuum's note when its role may not run CHECKPOINT.
CHECKPOINT_REFUSED = (
    "every table was rewritten, but this role may not run CHECKPOINT (it needs superuser "
    "or, on PostgreSQL 15 and later, the pg_checkpoint role), so the old write-ahead "
    "log keeps the erased bytes until the next automatic checkpoint (checkpoint_timeout, "
    "5 min by default) lets its segments be reused; GRANT pg_checkpoint TO this role and "
    "vacuum forces that checkpoint itself"
)


class Held(NamedTuple):
    """What :func:`wait_for_holders` found left: the holders as (kind, name) pairs, the
    ``wal_receiver_status_interval`` set on this server (s) and how long it waited (s)."""

    holders: list[tuple[str, str]]
    interval_s: int
    waited_s: float


def vacuum(conn: Any, psycopg: Any, lock_timeout_s: float) -> tuple[str, ...]:
    """Run the steps of the module's docstring on ``conn`` (a pooled connection, given
    back with its ``lock_timeout`` reset); ``psycopg`` is the driver module. The notes on
    steps the role or server may not take; a StoreError when a lock wait passed
    ``lock_timeout_s`` (or the session's shorter ``lock_timeout``) or a holder is left."""
    done: list[str] = []
    notes: list[str] = []
    conn.autocommit = True
    (session_ms,) = conn.execute(
        "SELECT setting::bigint FROM pg_settings WHERE name = 'lock_timeout'"
    ).fetchone()
    limit_ms = min(int(session_ms), _ms(lock_timeout_s)) or _ms(lock_timeout_s)
    conn.execute(f"SET lock_timeout = {limit_ms}")

    def step(sql: str, table: str) -> None:
        try:
            conn.execute(sql)
        except psycopg.errors.LockNotAvailable as exc:
            raise StoreError(_blocked(table, limit_ms, done)) from exc

    try:
        for table in TABLES:
            step(f"ANALYZE {table}", table)
        held = wait_for_holders(conn, lock_timeout_s)
        for table in TABLES:
            step(f"VACUUM FULL {table}", table)
            done.append(table)
        (node,) = conn.execute(_STATISTIC_FILE).fetchone()
        try:
            step("VACUUM FULL pg_catalog.pg_statistic", "pg_catalog.pg_statistic")
        except psycopg.errors.InsufficientPrivilege:
            node = None
        # A role that may not is skipped with a WARNING, seen as its file left as it was.
        if node is None or conn.execute(_STATISTIC_FILE).fetchone()[0] == node:
            notes.append(STATISTIC_SKIPPED)
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            notes.append(CHECKPOINT_REFUSED)
        except psycopg.errors.FeatureNotSupported as exc:
            # A managed PostgreSQL that offers no CHECKPOINT: the tables are rewritten
            # all the same, and its own checkpoints recycle the WAL (a review, s57).
            notes.append(_checkpoint_unsupported(exc))
        if held.holders:
            raise StoreError(seen_by(held, notes))
    finally:
        # The pool's connection goes back as it came (RESET: to the value its session
        # started with); a broken one is dropped by the pool anyway.
        with contextlib.suppress(psycopg.Error):
            conn.execute("RESET lock_timeout")
    return tuple(notes)


def _feedback_wait_s(interval_s: int, lock_timeout_s: float) -> float:
    """How long vacuum waits for a walsender's or a slot's horizon to pass its start.

    A standby sends its ``hot_standby_feedback`` at most once per
    ``wal_receiver_status_interval`` (10 s by default), even when idle, so its walsender
    (or slot) shows a horizon from before vacuum's start until the first feedback after
    the standby replayed that far; a logical slot's ``catalog_xmin`` moves once its
    consumer confirms past a running-transactions record. Two intervals (as set on this
    server: a standby's own is usually a copy), plus 2 s, and never less than
    ``lock_timeout_s`` nor more than :data:`FEEDBACK_WAIT_MAX_S`. Why: vacuum waited 5 s,
    so with an idle standby a nightly ``forget && vacuum`` failed about half the time.
    """
    return min(max(lock_timeout_s, 2.0 * interval_s + 2.0), FEEDBACK_WAIT_MAX_S)


def wait_for_holders(conn: Any, lock_timeout_s: float) -> Held:
    """Wait until nothing holds the database's cleanup horizon from before now (see
    :data:`_HOLDERS`). A client transaction, a prepared one or the deferral is waited
    for at most ``lock_timeout_s``; a walsender or a slot, as long as
    :func:`_feedback_wait_s` says when only such holders are left."""
    start, interval_s, defer = conn.execute(_START).fetchone()
    if 0 < defer <= DEFER_STEPPED_MAX:
        _step_past(conn, int(defer))
    point = (int(start) + int(defer)) % 4294967296
    point = point if point >= 3 else point + 3  # 0-2 are no transaction's id
    feedback_s = _feedback_wait_s(int(interval_s), lock_timeout_s)
    began = time.monotonic()
    while True:
        rows = conn.execute(_HOLDERS, {"point": point, "defer": int(defer)}).fetchall()
        holders = [(str(kind), str(name)) for kind, name in rows]
        waited = time.monotonic() - began
        others = any(kind not in _FED_BACK for kind, _ in holders)
        if not holders or waited >= feedback_s or (others and waited >= lock_timeout_s):
            return Held(holders, int(interval_s), waited)
        time.sleep(0.1)


def _step_past(conn: Any, count: int) -> None:
    """Start and commit ``count`` transactions that each take an id (one round trip),
    so that ``vacuum_defer_cleanup_age`` = ``count`` no longer reaches back to before
    vacuum's start. Why: that setting keeps the rows deleted by the latest ``count``
    transactions, whoever runs; on a quiet database no other transaction moves it, so
    vacuum copied a forgotten user's rows, and counting it alone would have made every
    vacuum after a ``forget`` fail. Asynchronous commits: they write nothing to wait for."""
    conn.execute("SET synchronous_commit = off")
    try:
        conn.execute(
            f"DO $$ BEGIN FOR i IN 1..{count} LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$"
        )
    finally:
        conn.execute("RESET synchronous_commit")


def seen_by(held: Held, notes: Sequence[str] = ()) -> str:
    """The StoreError text when holders are left: who, where to look, what to do; the
    standby's feedback and the deferral explained where they are among them; then the
    notes, which the operator would otherwise learn only on the next run."""
    holders = held.holders
    shown = ", ".join(f"{kind} {name}" for kind, name in holders[:10])
    shown += ", ..." if len(holders) > 10 else ""
    text = (
        f"vacuum rewrote every table, but {len(holders)} transaction(s) that began before "
        f"it are still open ({shown}: see pg_stat_activity, pg_replication_slots and "
        "pg_prepared_xacts), and PostgreSQL keeps the bytes of erased rows such a "
        "transaction may still read. End them or wait for them (a prepared transaction: "
        "COMMIT PREPARED or ROLLBACK PREPARED), then run vacuum again"
    )
    kinds = {kind for kind, _ in holders}
    if kinds & _FED_BACK:
        text += (
            ". A walsender or a replication slot holds what a standby's query may read "
            "(hot_standby_feedback) or, for a logical slot, the catalog rows its consumer "
            "has not confirmed (pg_statistic's replaced statistics among them). A standby "
            "refreshes that feedback every wal_receiver_status_interval "
            f"({held.interval_s} s as set on this server), and vacuum waited "
            f"{held.waited_s:.0f} s for it: if no query runs long on the standby and the "
            "slot's consumer keeps up, run vacuum again"
        )
    if "inactive replication slot" in kinds:
        text += (
            ". An inactive replication slot (no standby or consumer connected) holds them "
            "until one connects and catches up, or until the slot is dropped "
            "(pg_drop_replication_slot)"
        )
    if "vacuum_defer_cleanup_age" in kinds:
        text += (
            ". vacuum_defer_cleanup_age keeps the rows deleted by that many of the latest "
            f"transactions, more than the {DEFER_STEPPED_MAX:,} empty ones vacuum starts "
            "itself to step past it: set it lower (it is gone in PostgreSQL 16), then run "
            "vacuum again"
        )
    if notes:
        text += ". Also: " + " ".join(f"{note}." for note in notes)
    return text


def _checkpoint_unsupported(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"every table was rewritten, but this server does not offer CHECKPOINT ({first}), "
        "so the old write-ahead log keeps the erased bytes until the server's own "
        "checkpoints let its segments be reused"
    )


def _blocked(table: str, limit_ms: int, done: Sequence[str]) -> str:
    vacuumed = ", ".join(done) if done else "none"
    return (
        f"vacuum waited more than {limit_ms / 1000:g} s for a lock on table {table} that "
        "another session holds (a long query, a pg_dump, a transaction left open: see "
        f"pg_stat_activity) and stopped; tables vacuumed before it: {vacuumed}. End that "
        "session or wait for it, then run vacuum again"
    )


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
