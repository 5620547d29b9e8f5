"""An embedding worker whose store is closed under it stops, once, instead of retrying.

Why: a worker shared by many ``Memory`` objects (the server's) or one a caller forgot
to close outlived its store, and since store errors no longer quarantine records
it logged "background embedding failed, retrying in 1 s: Cannot operate on a closed
database" every second until the process exited.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from contextos.embed import Vectors
from contextos.memory.embedding_worker import EmbeddingWorker
from contextos.store import Store, open_store
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import MemoryRecord, Scope
from server_support import database

WORKER_LOG = "contextos.memory.embedding_worker"


class ClosingEmbedder(HashEmbedder):
    """Closes ``store`` in the middle of a batch, as an owner closing the store while
    its worker embeds; then answers normally, so the worker's vector write fails."""

    def __init__(self) -> None:
        super().__init__()
        self.store: Store | None = None

    def embed(self, texts: Sequence[str]) -> Vectors:
        if self.store is not None:
            self.store.close()
        return super().embed(texts)


def _put(store: Store, n: int) -> None:
    store.put(
        [
            MemoryRecord(id=f"m{i}", text=f"record {i}", scope=Scope(tenant="t", user_id="u"))
            for i in range(n)
        ]
    )


def _wait_stopped(worker: EmbeddingWorker, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while worker.running and time.monotonic() < deadline:
        time.sleep(0.05)
    return not worker.running


def _worker_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == WORKER_LOG]


def test_a_store_closed_while_a_batch_is_embedded_stops_the_worker_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=WORKER_LOG)
    store = SQLiteStore(tmp_path / "m.db")
    embedder = ClosingEmbedder()
    worker = EmbeddingWorker(store, embedder, linger=0.0)
    try:
        assert worker.flush(timeout=10)  # an empty store: idle, nothing embedded
        embedder.store = store
        _put(store, 3)
        worker.notify()
        assert _wait_stopped(worker, timeout=10), "the worker kept running on a closed store"
        time.sleep(2.5)  # the old worker retried once a second: it would have logged again
        assert _worker_warnings(caplog) == ["background embedding stopped: its store was closed"]
        # flush() answers at once: what is pending stays pending for the next process
        start = time.monotonic()
        with pytest.raises(Exception, match="closed"):
            worker.flush(timeout=30)
        assert worker.flush(timeout=30) is False
        assert time.monotonic() - start < 5
    finally:
        worker.close()
    reopened = SQLiteStore(tmp_path / "m.db")
    try:
        assert reopened.embedding_status().pending == 3  # durable, embedded by the next worker
    finally:
        reopened.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_an_idle_worker_whose_store_was_closed_stops_when_woken(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with database(kind, tmp_path) as db:
        _idle_worker_stops(db, caplog)


def _idle_worker_stops(db: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=WORKER_LOG)
    store = open_store(db)
    worker = EmbeddingWorker(store, HashEmbedder(), linger=0.0)
    try:
        assert worker.flush(timeout=10)
        store.close()  # the owner closed the store, not the worker
        assert store.closed
        worker.notify()  # e.g. a late add on another handle, or the lease's idle look
        assert _wait_stopped(worker, timeout=10)
        assert worker.flush(timeout=30) is False  # nothing will embed: no wait
        assert _worker_warnings(caplog) == ["background embedding stopped: its store was closed"]
    finally:
        worker.close()


def test_closing_the_worker_first_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The normal order (``Memory.close``, the server's shutdown): no warning at all."""
    caplog.set_level(logging.WARNING, logger=WORKER_LOG)
    store = SQLiteStore(tmp_path / "m.db")
    worker = EmbeddingWorker(store, HashEmbedder(), linger=0.0)
    _put(store, 5)
    assert worker.flush(timeout=10)
    worker.close()
    store.close()
    assert not worker.running
    assert _worker_warnings(caplog) == []


def test_a_connection_closed_without_close_stops_the_worker_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The leak the whole suite showed: ``test_online_correctness`` simulates a crash by
    closing the store's connection itself (no ``close()``), and the worker of that
    never-closed Memory retried on it once a second until the interpreter exited."""
    caplog.set_level(logging.WARNING, logger=WORKER_LOG)
    store = SQLiteStore(tmp_path / "m.db")
    worker = EmbeddingWorker(store, HashEmbedder(), linger=0.0)
    try:
        assert worker.flush(timeout=10)
        _put(store, 2)
        store._db.close()  # as the crash simulation does
        assert store.closed
        worker.notify()
        assert _wait_stopped(worker, timeout=10)
        assert _worker_warnings(caplog) == ["background embedding stopped: its store was closed"]
    finally:
        worker.close()
        store.close()


def test_the_first_flush_after_the_store_was_closed_says_false(tmp_path: Path) -> None:
    """An idle worker, records pending (written by another handle), the store closed:
    the very next flush() wakes the worker, which stops; "idle" then is not "done"."""
    store = SQLiteStore(tmp_path / "m.db")
    worker = EmbeddingWorker(store, HashEmbedder(), linger=0.0)
    try:
        assert worker.flush(timeout=10)
        other = SQLiteStore(tmp_path / "m.db")
        _put(other, 3)
        other.close()
        store.close()
        assert worker.flush(timeout=10) is False
    finally:
        worker.close()
    reopened = SQLiteStore(tmp_path / "m.db")
    try:
        assert reopened.embedding_status().pending == 3
    finally:
        reopened.close()


class SlowEmbedder(HashEmbedder):
    """Takes a while per batch, so a flush() is still waiting when the worker closes."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        time.sleep(0.3)
        return super().embed(texts)


def test_a_flush_without_timeout_returns_when_the_worker_is_closed_meanwhile(
    tmp_path: Path,
) -> None:
    """``Memory.flush()`` (no timeout) on a request thread while shutdown closes the
    Memory: the flush answers False instead of waiting forever."""
    store = SQLiteStore(tmp_path / "m.db")
    worker = EmbeddingWorker(store, SlowEmbedder(), batch_size=2, linger=0.0)
    _put(store, 40)
    answers: list[bool] = []
    flusher = threading.Thread(target=lambda: answers.append(worker.flush()), daemon=True)
    try:
        flusher.start()
        time.sleep(0.5)  # the flush waits; the worker is mid-way through the batches
        worker.close()
        flusher.join(timeout=10)
        assert not flusher.is_alive(), "flush() kept waiting on a closed worker"
        assert answers == [False]
    finally:
        worker.close()
        store.close()
