"""``contextos vacuum`` against what holds PostgreSQL's cleanup horizon from outside the
database's own sessions: a logical replication slot, ``vacuum_defer_cleanup_age``, a
transaction begun while vacuum runs, a hot standby's feedback (a review, session 57,
items 4 and 5). Each runs on a cluster of the test's own (tests/pg_private.py): a slot
or a standby holds every database of its cluster, and ``wal_level = logical`` needs a
restart the shared test server must not get.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from contextos.errors import StoreError
from pg_private import Cluster, private_cluster, standby_of
from pg_support import connect

pytest.importorskip("psycopg")
# Serial: they measure how long vacuum waits (tests/conftest.py, SERIAL_MODULES).
pytestmark = [pytest.mark.postgres, pytest.mark.serial]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with private_cluster(
        wal_level="logical",
        max_replication_slots=4,
        max_wal_senders=4,
        wal_receiver_status_interval="1s",
    ) as running:
        yield running


def _memory(cluster: Cluster, user: str) -> Any:
    """A Memory in a fresh schema of ``ctx`` whose planner statistics quote ``user``
    (the most frequent one; its first vacuum ran the ANALYZEs)."""
    from contextos.memory import Memory
    from contextos.store.postgres import PostgresStore
    from contextos.testing.embedders import HashEmbedder

    store = PostgresStore(cluster.url("ctx"), schema=f"v_{uuid.uuid4().hex[:10]}")
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    for i in range(30):
        memory.add(f"note {i} of the frequent one", user_id=user)
        memory.add(f"note {i} of bob", user_id="bob")
    for i in range(20):
        memory.add(f"a note of user {i}", user_id=f"other{i}")
    assert memory.vacuum() == ()
    with connect(cluster.url("ctx")) as conn:
        (quoted,) = conn.execute(
            "SELECT count(*) FROM pg_stats WHERE schemaname = %s AND tablename = 'history' "
            "AND most_common_vals::text LIKE %s",
            (store.schema, f"%{user}%"),
        ).fetchone()
    assert quoted > 0  # the statistics of history quote the user
    return memory


@contextlib.contextmanager
def _closing(memory: Any) -> Iterator[Any]:
    try:
        yield memory
    finally:
        memory.close()
        memory.store.close()  # passed in: the caller's to close


def _statistic_holds(cluster: Cluster, needle: str) -> bool:
    """Whether pg_statistic's files (heap and TOAST) in ``ctx`` hold ``needle``, after
    a checkpoint wrote what is in shared buffers."""
    with connect(cluster.url("ctx")) as conn:
        conn.execute("CHECKPOINT")
        paths = [
            r[0]
            for r in conn.execute(
                "SELECT pg_relation_filepath(oid) FROM pg_class WHERE oid IN "
                "('pg_catalog.pg_statistic'::regclass, (SELECT reltoastrelid FROM pg_class "
                "WHERE oid = 'pg_catalog.pg_statistic'::regclass))"
            )
        ]
    return any(needle.encode() in (cluster.data / p).read_bytes() for p in paths)


def _schema_holds(cluster: Cluster, schema: str, needle: str) -> list[str]:
    """The relations of ``schema`` whose files hold ``needle`` (after a checkpoint)."""
    with connect(cluster.url("ctx")) as conn:
        conn.execute("CHECKPOINT")
        rows = conn.execute(
            "SELECT c.relname, pg_relation_filepath(c.oid) FROM pg_class c JOIN pg_namespace "
            "n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND pg_relation_filepath(c.oid) IS NOT NULL",
            (schema,),
        ).fetchall()
    found = []
    for name, path in rows:
        file = cluster.data / path
        if any(
            needle.encode() in f.read_bytes() for f in [file, *file.parent.glob(f"{file.name}.*")]
        ):
            found.append(name)
    return found


def test_a_logical_slot_keeps_replaced_statistics_and_vacuum_names_it(cluster: Cluster) -> None:
    """A logical slot's ``catalog_xmin`` holds every catalog's dead rows, pg_statistic's
    among them: the statistics that quoted a forgotten user stayed in its file while
    vacuum said "vacuumed" (it looked at slots' ``xmin`` only, NULL for a logical one).
    An inactive slot's horizon cannot move: vacuum waits for it no longer than for an
    open transaction, then names it; dropped, vacuum succeeds and nothing is left."""
    from contextos.store.postgres import LOCK_TIMEOUT_S

    user = "qzslotuser7"
    slot = f"cdc_{uuid.uuid4().hex[:8]}"
    with _closing(_memory(cluster, user)) as memory:
        with connect(cluster.url("ctx")) as conn:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (slot,))
        try:
            memory.forget(user)
            started = time.monotonic()
            with pytest.raises(StoreError) as err:
                memory.vacuum()
            waited = time.monotonic() - started
            message = str(err.value)
            assert f"inactive replication slot '{slot}'" in message, message
            assert "pg_drop_replication_slot" in message
            assert waited < LOCK_TIMEOUT_S + 4, waited
            assert _statistic_holds(cluster, user)  # the bytes the slot keeps are real
        finally:
            with connect(cluster.url("ctx")) as conn:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        assert memory.vacuum() == ()
        assert not _statistic_holds(cluster, user)


def test_vacuum_steps_past_vacuum_defer_cleanup_age(cluster: Cluster) -> None:
    """``vacuum_defer_cleanup_age`` (PostgreSQL 15 and older) keeps the rows deleted by
    the latest N transactions: on a quiet database VACUUM FULL copied a forgotten user's
    rows into its new files and vacuum said "vacuumed". vacuum now starts N transactions
    itself first (up to ``DEFER_STEPPED_MAX``), and names a larger setting instead."""
    from contextos.store.postgres.vacuum import DEFER_STEPPED_MAX

    with connect(cluster.url()) as conn:
        known = conn.execute(
            "SELECT 1 FROM pg_settings WHERE name = 'vacuum_defer_cleanup_age'"
        ).fetchone()
    if known is None:
        pytest.skip("this PostgreSQL (16 or later) has no vacuum_defer_cleanup_age")
    secret = "qzdeferreduser8"
    with _closing(_memory(cluster, "frequentdefer")) as memory:
        try:
            cluster.set(vacuum_defer_cleanup_age=200)
            memory.add(f"my code word is {secret}", user_id="ana")
            memory.forget("ana")
            assert memory.vacuum() == ()
            assert _schema_holds(cluster, memory.store.schema, secret) == []
            cluster.set(vacuum_defer_cleanup_age=DEFER_STEPPED_MAX + 1)
            with pytest.raises(
                StoreError, match=f"vacuum_defer_cleanup_age {DEFER_STEPPED_MAX + 1}"
            ):
                memory.vacuum()
        finally:
            cluster.set(vacuum_defer_cleanup_age=0)


def test_a_transaction_begun_while_vacuum_runs_keeps_no_replaced_statistics(
    cluster: Cluster,
) -> None:
    """The statistics rows ANALYZE replaces die during the vacuum. With ``VACUUM (FULL,
    ANALYZE)`` per table and the holders checked once at the start, a transaction that
    began after that start, while a later table's ANALYZE had yet to run (here: while
    vacuum waits for history's lock), kept them, and ``VACUUM FULL pg_statistic``
    copied them: "vacuumed", with the forgotten user's id in pg_statistic's file.
    vacuum now runs every ANALYZE before its start point."""
    user = "qzduringvacuum9"
    with _closing(_memory(cluster, user)) as memory:
        schema = memory.store.schema
        memory.forget(user)
        locker = connect(cluster.url("ctx"))
        reader = connect(cluster.url("ctx"))
        outcome: list[object] = []

        def run() -> None:
            try:
                outcome.append(memory.vacuum())
            except Exception as exc:  # shown by the assertion below
                outcome.append(exc)

        try:
            # A reader's lock: no snapshot kept (READ COMMITTED, idle), so no holder.
            locker.execute("BEGIN")
            locker.execute(f"LOCK TABLE {schema}.history IN ACCESS SHARE MODE")
            vacuuming = threading.Thread(target=run)
            vacuuming.start()
            _until_waiting_for_lock(reader, "history")  # reader: not yet in a transaction
            reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            reader.execute("SELECT 1").fetchall()  # its snapshot, from now on
            locker.execute("COMMIT")
            vacuuming.join(timeout=60)
            assert outcome == [()], outcome
            assert not _statistic_holds(cluster, user)
        finally:
            reader.close()
            locker.close()


def _until_waiting_for_lock(conn: Any, table: str, timeout_s: float = 10.0) -> None:
    """Until vacuum waits for ``table``'s lock; ``conn`` is in no transaction (one
    sees pg_stat_activity as it was at its first look)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        waiting = conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE %s",
            (f"VACUUM%{table}%",),
        ).fetchone()
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError(f"vacuum never waited for {table}'s lock")


def test_vacuum_names_a_standby_query_and_waits_for_an_idle_standbys_feedback(
    cluster: Cluster,
) -> None:
    """A hot standby with ``hot_standby_feedback``: its query holds the primary's rows
    through its walsender's ``backend_xmin``, and vacuum names that walsender. Idle, it
    still reports its horizon only once per ``wal_receiver_status_interval``: vacuum
    waited 5 s, so with the interval past that, ``forget && vacuum`` failed ("End
    them") though nothing ran on the standby. vacuum now waits up to two intervals (as
    set on the primary) plus 2 s for such holders."""
    secret = "qzstandbyuser10"
    with (
        _closing(_memory(cluster, "frequentstandby")) as memory,
        standby_of(
            cluster, hot_standby_feedback="on", wal_receiver_status_interval="7s"
        ) as standby,
    ):
        schema = memory.store.schema
        primary = connect(cluster.url("ctx"))
        try:
            memory.add(f"my code word is {secret}", user_id="ana")
            _until_fed_back(primary, first=True)  # from now on before the forget below
            with connect(standby.url("ctx")) as reader:
                reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                reader.execute(f"SELECT count(*) FROM {schema}.memories").fetchall()
                memory.forget("ana")
                # The primary's interval (1 s) sets vacuum's wait: 5 s, as before.
                with pytest.raises(StoreError, match="walsender pid") as err:
                    memory.vacuum()
                assert "wal_receiver_status_interval (1 s" in str(err.value)
                reader.execute("ROLLBACK")
            # Idle now, its feedback every 7 s (set so on the primary too): past 5 s.
            cluster.set(wal_receiver_status_interval="7s")
            _until_fed_back(primary)
            memory.forget("bob")
            started = time.monotonic()
            assert memory.vacuum() == ()
            assert time.monotonic() - started > 3  # it did wait for the feedback
            assert _schema_holds(cluster, schema, secret) == []
        finally:
            primary.close()
            cluster.set(wal_receiver_status_interval="1s")


def _until_fed_back(conn: Any, *, first: bool = False, timeout_s: float = 20.0) -> None:
    """Until the standby's feedback (its walsender's ``backend_xmin``) is past a
    transaction committed now: right after a feedback arrived. ``first``: until any
    feedback arrived (the one a standby sends as it connects)."""
    (xid,) = conn.execute("SELECT txid_current() % 4294967296").fetchone()
    past = "backend_xmin IS NOT NULL" if first else "age(backend_xmin) < age(%s::text::xid)"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = conn.execute(
            f"SELECT 1 FROM pg_stat_replication WHERE {past}", () if first else (xid,)
        ).fetchone()
        if row:
            return
        time.sleep(0.02)
    raise AssertionError("the standby sent no feedback past the primary's latest transaction")
