"""``Store.owner_turn``: one inferring add of a user's facts at a time among the handles
(processes) on one store, through an advisory lock held on a connection of the store's
own on PostgreSQL (``store.postgres.owner_turns``), a lock in a file beside the database
on SQLite (``store.sqlite.owner_turns``).

Each store here stands for a process (a replica, a worker, a notebook); a turn is asked
for as ``Memory._infer`` asks, with ``owner_turn_wait_s=0`` where a test asks whether
the turn is free now (False: another handle holds it).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from contextos.types import Scope
from tcp_proxy import proxied

ANA = Scope(tenant="default", user_id="ana")


@contextmanager
def stores(
    n: int, *, url: str | None = None, waits: tuple[float, ...] = (), **kwargs: Any
) -> Iterator[list[Any]]:
    """``n`` stores (as ``n`` processes) on one fresh schema, closed afterwards; with
    ``waits``, each store's ``owner_turn_wait_s``."""
    from contextos.store.postgres import PostgresStore
    from pg_support import fresh_schema

    with fresh_schema("turns") as (schema_url, _), ExitStack() as stack:
        out = []
        for i in range(n):
            each = {"owner_turn_wait_s": waits[i]} if waits else {}
            store = PostgresStore(url or schema_url, **kwargs, **each)
            stack.callback(store.close)
            out.append(store)
        yield out


def free_now(store: Any, owner: Scope) -> bool:
    """Whether ``owner``'s turn is free for ``store`` (made with ``owner_turn_wait_s=0``)."""
    with store.owner_turn(owner) as had:
        return bool(had)


def test_a_turn_is_one_users_in_one_schema_and_one_sessions_without_a_user() -> None:
    # Adds that name only a session shared one turn for the whole tenant: replicas ran
    # every such add of the tenant one after another, each waiting for the one before.
    from contextos.store.postgres import PostgresStore
    from pg_support import fresh_schema

    session = Scope(tenant="default", session_id="s1")
    with stores(2, owner_turn_wait_s=0) as (holder, other):
        with holder.owner_turn(ANA) as had:
            assert had
            assert not free_now(other, ANA)  # the same user's, held elsewhere
            assert free_now(other, Scope(tenant="default", user_id="bob"))
            assert free_now(other, Scope(tenant="t2", user_id="ana"))
            with fresh_schema("turns2") as (url2, _):  # another app in the same database
                elsewhere = PostgresStore(url2, owner_turn_wait_s=0)
                try:
                    assert free_now(elsewhere, ANA)
                finally:
                    elsewhere.close()
        with holder.owner_turn(session):
            assert not free_now(other, session)
            assert free_now(other, Scope(tenant="default", session_id="s2"))
        assert free_now(other, ANA) and free_now(other, session)  # released


def test_a_turn_waits_for_the_holder_then_is_had() -> None:
    with stores(2, owner_turn_wait_s=30) as (holder, waiter):
        released = threading.Event()
        with holder.owner_turn(ANA):
            threading.Timer(0.5, released.set).start()

            def wait() -> tuple[bool, bool]:
                with waiter.owner_turn(ANA) as had:
                    return bool(had), released.is_set()

            result: list[tuple[bool, bool]] = []
            thread = threading.Thread(target=lambda: result.append(wait()))
            thread.start()
            released.wait(5)
        thread.join(10)
        assert result == [(True, True)]  # had, and only after the holder's add ended


def test_an_idle_session_timeout_does_not_end_a_turn_while_a_model_thinks() -> None:
    # Managed servers set idle_session_timeout: it ended the lock connection, and the
    # turn with it, while the holder's model thought; the next add went on at once.
    from pg_support import fresh_schema, pg_url, with_options

    with fresh_schema("turns_idle", "-c idle_session_timeout=500") as (idle, schema):
        url = with_options(pg_url(), f"-c search_path={schema},public")
        with (
            stores(1, url=idle, owner_turn_wait_s=0) as (holder,),
            stores(1, url=url, owner_turn_wait_s=0) as (other,),
            holder.owner_turn(ANA) as had,
        ):
            assert had
            time.sleep(1.2)  # the model thinks past the timeout
            assert not free_now(other, ANA)


def test_a_fork_while_a_thread_waits_for_a_turn_does_not_hang_the_child() -> None:
    # The child's at-fork hook took the lock of the shared connection, which the
    # parent's polling thread held at the fork in about 1 of 20 forks: the child hung
    # in os.fork() for ever.
    with stores(2, owner_turn_wait_s=30) as (holder, waiter):
        with holder.owner_turn(ANA):

            def wait() -> None:
                with waiter.owner_turn(ANA):
                    pass

            thread = threading.Thread(target=wait)
            thread.start()
            time.sleep(0.2)  # polling now
            assert thread.is_alive()  # waiting for its turn
            hung = sum(not _child_exits(within_s=2) for _ in range(100))
        thread.join(30)
        assert hung == 0


def _child_exits(within_s: float) -> bool:
    """Fork a child that exits at once; whether it did within ``within_s``."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return True
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return False


def test_a_ctrl_c_while_a_turn_is_taken_leaves_no_turn_held() -> None:
    # A remote database (a proxy delays each reply): Ctrl-C landed while the lock's
    # statement was on the wire, after the server granted it. The turn stayed held by
    # the open connection, and every other process's add of the user waited its whole
    # wait, until the interrupted process closed its store.
    from pg_support import fresh_schema

    with (
        fresh_schema("turns_int") as (url, _),
        proxied(url) as (slow, proxy),
        stores(1, url=slow) as (notebook,),
        stores(1, url=url, owner_turn_wait_s=0) as (replica,),
    ):
        with notebook.owner_turn(Scope(tenant="default", user_id="bob")):
            pass  # the lock connection is open
        proxy.delay_s = 0.3
        threading.Timer(0.15, os.kill, (os.getpid(), signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt), notebook.owner_turn(ANA):
            time.sleep(5)  # not reached: the Ctrl-C comes first
        time.sleep(0.4)  # the granted lock's reply has arrived
        proxy.delay_s = 0.0
        assert free_now(replica, ANA)


# -- SQLite: a lock in <db>-turns ------------------------------------------------------------
HOLDER = """
import sys
from contextos.store.sqlite import SQLiteStore
from contextos.types import Scope
store = SQLiteStore(sys.argv[1])
with store.owner_turn(Scope(tenant="default", user_id="ana")) as had:
    print(had, flush=True)
    sys.stdin.readline()
"""


def test_on_sqlite_another_process_holding_a_users_turn_is_waited_for_until_it_dies(
    tmp_path: Path,
) -> None:
    # Replicas (`serve --workers 2`) on the default store: adds of one user met only as
    # refused writes, each decided again (another model call each).
    from contextos.store.sqlite import SQLiteStore

    db = str(tmp_path / "m.db")
    SQLiteStore(db).close()  # the schema first
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None and child.stdout.readline().strip() == "True"
        here, other = SQLiteStore(db, owner_turn_wait_s=0), SQLiteStore(db, owner_turn_wait_s=0)
        try:
            assert not free_now(here, ANA)  # held by the other process
            assert free_now(here, Scope(tenant="default", user_id="bob"))
            with here.owner_turn(Scope(tenant="default", session_id="s1")):
                assert not free_now(other, Scope(tenant="default", session_id="s1"))
                assert free_now(other, Scope(tenant="default", session_id="s2"))
            child.kill()  # a crash frees its turns
            child.wait(10)
            assert free_now(here, ANA)
        finally:
            here.close()
            other.close()
            child.kill()


FORKING_HOLDER = """
import os, sys, time
from contextos.store.sqlite import SQLiteStore
from contextos.types import Scope
store = SQLiteStore(sys.argv[1])
with store.owner_turn(Scope(tenant="default", user_id="ana")) as had:
    forked, ready = os.pipe()
    child = os.fork()
    if child == 0:  # a worker forked while the turn was held, alive after its parent
        os.write(ready, b"x")  # the fork's hooks have run: what it keeps, it keeps now
        time.sleep(60)
        os._exit(0)
    os.read(forked, 1)  # a crash before the child ran at all is not this test's case
    print(had, child, flush=True)
    sys.stdin.readline()
"""


def test_on_sqlite_a_crashed_holder_s_forked_child_does_not_keep_its_turn(
    tmp_path: Path,
) -> None:
    from contextos.store.sqlite import SQLiteStore

    db = str(tmp_path / "m.db")
    SQLiteStore(db).close()
    with subprocess.Popen(
        [sys.executable, "-c", FORKING_HOLDER, db],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        had, child = holder.stdout.readline().split()
        try:
            here = SQLiteStore(db, owner_turn_wait_s=0)
            try:
                assert had == "True" and not free_now(here, ANA)
                holder.kill()  # the parent crashes; its child lives on
                holder.wait(10)
                assert free_now(here, ANA)
            finally:
                here.close()
        finally:
            os.kill(int(child), signal.SIGKILL)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_holders_on_one_store_take_turns_and_neither_ends_the_others(
    kind: str, tmp_path: Path
) -> None:
    # Two Memory objects sharing a store (the server's tenant cache building one twice):
    # on SQLite both had the file's lock, and the first to end ended the other's turn.
    from contextos.store.sqlite import SQLiteStore

    with ExitStack() as stack:
        if kind == "sqlite":
            db = tmp_path / "m.db"
            shared, other = SQLiteStore(db), SQLiteStore(db, owner_turn_wait_s=0)
            stack.callback(shared.close)
            stack.callback(other.close)
        else:
            shared, other = stack.enter_context(stores(2, waits=(30, 0)))
        second_in = threading.Event()
        release_second = threading.Event()

        def second() -> None:
            with shared.owner_turn(ANA):
                second_in.set()
                release_second.wait(10)

        with shared.owner_turn(ANA):
            thread = threading.Thread(target=second)
            thread.start()
            assert not second_in.wait(0.3)  # waits for the first holder
        assert second_in.wait(5)
        assert not free_now(other, ANA)  # the first one's end left the second's turn
        release_second.set()
        thread.join(10)
        assert free_now(other, ANA)


def test_on_sqlite_a_database_named_through_a_link_shares_its_turns(tmp_path: Path) -> None:
    from contextos.store.sqlite import SQLiteStore

    db = tmp_path / "m.db"
    SQLiteStore(db).close()
    (tmp_path / "link.db").symlink_to(db)
    os.chmod(db, 0o660)  # a database shared by a group: so is its lock file
    with ExitStack() as stack:
        real = SQLiteStore(db, owner_turn_wait_s=0)
        linked = SQLiteStore(tmp_path / "link.db", owner_turn_wait_s=0)
        stack.callback(real.close)
        stack.callback(linked.close)
        with real.owner_turn(ANA) as had:
            assert had and not free_now(linked, ANA)
    assert sorted(p.name for p in tmp_path.glob("*-turns")) == ["m.db-turns"]
    assert (tmp_path / "m.db-turns").stat().st_mode & 0o777 == 0o660


def test_a_process_adding_back_to_back_lets_another_process_s_add_in(tmp_path: Path) -> None:
    # A busy server worker: three request threads add one user's facts back to back,
    # each holding the turn 20 ms. It handed the turn from thread to thread as it came
    # free, and a CLI add of the same user waited 0.5-5 s for a 20 ms turn (up to the
    # whole wait behind a model's). The giving way is the stores' one polling loop; on
    # PostgreSQL the round trips leave gaps, and the wait without it (0.15-0.4 s) is
    # too near what it is with it to tell apart here.
    from contextos.store.sqlite import SQLiteStore

    with ExitStack() as stack:
        busy, cli = SQLiteStore(tmp_path / "m.db"), SQLiteStore(tmp_path / "m.db")
        stack.callback(busy.close)
        stack.callback(cli.close)
        stop = time.monotonic() + 60
        done = threading.Event()
        requests = threading.Lock()  # the worker's Memory: one of its threads at a time

        def request_thread() -> None:
            while not done.is_set() and time.monotonic() < stop:
                with requests, busy.owner_turn(ANA):
                    time.sleep(0.02)

        threads = [threading.Thread(target=request_thread) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.3)
            waits = []
            for _ in range(5):
                time.sleep(0.1)
                start = time.monotonic()
                with cli.owner_turn(ANA) as had:
                    waits.append(time.monotonic() - start)
                    assert had
        finally:
            done.set()
            for thread in threads:
                thread.join(10)
        assert statistics.median(waits) < 0.25, waits


def test_on_sqlite_a_ctrl_c_as_a_lock_is_set_leaves_no_lock_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A notebook cell interrupted during an add: the signal's KeyboardInterrupt is
    # raised once the lock call has returned (the OS call itself is not interrupted),
    # here by the OS seam. The turn, or the giving-way probe's lock, stayed held until
    # the store closed: every other process's add of the user waited its whole wait, or
    # gave way on every add.
    import fcntl

    from contextos.store.sqlite import SQLiteStore

    db = tmp_path / "m.db"
    with ExitStack() as stack:
        notebook, other = SQLiteStore(db), SQLiteStore(db, owner_turn_wait_s=0)
        stack.callback(notebook.close)
        stack.callback(other.close)
        real = fcntl.fcntl
        for nth in (1, 2):  # the giving-way probe's lock, then the turn's
            calls: list[int] = []

            def interrupted(
                fd: int, cmd: int, arg: bytes, nth: int = nth, calls: list[int] = calls
            ) -> Any:
                calls.append(1)
                got = real(fd, cmd, arg)
                if len(calls) == nth:
                    raise KeyboardInterrupt
                return got

            monkeypatch.setattr(fcntl, "fcntl", interrupted)
            with pytest.raises(KeyboardInterrupt), notebook.owner_turn(ANA):
                pass
            monkeypatch.setattr(fcntl, "fcntl", real)
            started = time.monotonic()
            assert free_now(other, ANA)
            assert time.monotonic() - started < 0.015  # no giving way to a stale probe
