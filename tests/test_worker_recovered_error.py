"""A store failure the embedding worker got past is not raised by a later ``flush()``.

The worker keeps a failure of the store (another process holding the write lock past
``busy_timeout``) for ``flush()`` to raise, and retries after ``RETRY_S``. It never
cleared it: once the retry had embedded everything, every later flush still raised
"database is locked" for work that was done. A real SQLite file, a real second
connection holding the lock, the real worker thread.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from contextos.errors import StoreError
from contextos.memory import Memory
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import MemoryRecord, Scope, content_hash


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_flush_does_not_raise_a_store_failure_the_worker_recovered_from(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="contextos.memory.embedding_worker")
    path = tmp_path / "m.db"
    writer = SQLiteStore(path)  # a record left pending (no vector), as a crash leaves it
    writer.put(
        [
            MemoryRecord(
                id="n1",
                text="second note",
                scope=Scope(user_id="u"),
                hash=content_hash("second note"),
            )
        ]
    )
    writer.close()

    other = sqlite3.connect(path, isolation_level=None)  # another process's long write
    other.execute("BEGIN IMMEDIATE")
    memory = Memory(store=SQLiteStore(path, busy_timeout_ms=100), embedder=HashEmbedder())
    try:
        # The worker's first pass (woken by the constructor) cannot take the lock.
        wait_for(lambda: "background embedding failed" in caplog.text)
        other.execute("COMMIT")
        # Its retry, a second later, embeds the record: nothing is wrong any more.
        wait_for(lambda: memory.embedding_status().pending == 0)
        assert memory.flush(5) is True
        assert memory.flush(5) is True
    finally:
        other.close()
        memory.close()


def test_flush_still_raises_a_store_failure_not_yet_got_past(tmp_path: Path) -> None:
    # The failure is kept for a flush that waits while the store is still failing.
    path = tmp_path / "m.db"
    memory = Memory(store=SQLiteStore(path, busy_timeout_ms=100), embedder=HashEmbedder())
    other = sqlite3.connect(path, isolation_level=None)
    try:
        memory.add("first note", user_id="u")
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked|busy"):
            memory.flush(10)
        other.execute("COMMIT")
        wait_for(lambda: memory.embedding_status().pending == 0)
        assert memory.flush(5) is True
    finally:
        other.close()
        memory.close()
