"""Plain reads of a SQLite store run on a few reader connections of their own.

Why: the server's request threads searched through one reader connection behind one
lock, so at most one SQLite query ran at a time although SQLite runs it without the
GIL; profiling showed a quarter of the request threads' samples waiting on that lock.
These tests hold what the pool must keep: many threads reading while another writes
all see correct rows, and closing the store closes every connection it opened.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from contextos.errors import StoreError
from contextos.store.sqlite import SQLiteStore
from contextos.types import Filter, MemoryRecord, Scope

SCOPE = Scope(tenant="t", user_id="u")


def _records(start: int, n: int) -> list[MemoryRecord]:
    return [
        MemoryRecord(id=f"m{i}", text=f"note {i} about hiking and tea", scope=SCOPE)
        for i in range(start, start + n)
    ]


def _open_files(path: Path) -> int:
    """How many of this process's file descriptors are open on ``path``."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            if os.readlink(fd) == str(path.resolve()):
                count += 1
        except OSError:
            continue
    return count


def test_threads_read_while_another_writes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "m.db")
    store.put(_records(0, 50))
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for i in range(60):
                (got,) = store.get_many("t", [f"m{i % 50}"])
                assert got.text == f"note {i % 50} about hiking and tea"
                hits = store.keyword_search(Filter(scope=SCOPE), "hiking", limit=5)
                assert len(hits) == 5
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def writer() -> None:
        try:
            for k in range(10):
                store.put(_records(50 + 10 * k, 10))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert errors == []
        assert store.count(Filter(scope=SCOPE)) == 150  # every write is seen by a read
    finally:
        store.close()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
def test_closing_the_store_closes_every_reader_connection(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    before = _open_files(path)
    store = SQLiteStore(path)
    store.put(_records(0, 20))
    barrier = threading.Barrier(6)

    def reader() -> None:
        barrier.wait()
        for i in range(30):
            store.get_many("t", [f"m{i % 20}"])

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert _open_files(path) > before
    store.close()
    assert _open_files(path) == before
    with pytest.raises(StoreError):
        store.get_many("t", ["m1"])
