"""A Memory dropped without ``close()`` is closed once collected, with a ResourceWarning.

An app that opened a Memory per request and let it go out of scope kept, for each, its
embedding thread, its SQLite connections and its indexes for the life of the process (a
review: 200 requests, 204 threads, 807 file descriptors, 239 MB). Now nothing running
refers to the Memory, and a finalizer hands what it owned (worker, the store it opened)
to a closer thread: the worker embeds what is pending, stops and closes the store.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path

from contextos.embed import Vectors
from contextos.memory import Memory
from contextos.memory.embedding_worker import EmbeddingWorker
from contextos.store.base import Store
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _settle(threads: int, fds: int, timeout: float = 15.0) -> tuple[int, int]:
    """Threads and descriptors once back at ``threads`` and ``fds`` (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        now = (_os_threads(), _fds())
        if now[0] <= threads and now[1] <= fds or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def _no_worker_left(timeout: float = 15.0, but: int = 0) -> None:
    """Wait until no embedding thread runs (but ``but``)."""
    deadline = time.monotonic() + timeout
    while sum(t.name == "contextos-embed" for t in threading.enumerate()) > but:
        assert time.monotonic() < deadline, "an embedding thread is still running"
        gc.collect()
        time.sleep(0.05)


def _pending(path: Path) -> int:
    store = SQLiteStore(path)
    try:
        return store.embedding_status().pending
    finally:
        store.close()


def _request(path: Path, i: int) -> tuple[weakref.ref[Memory], Store]:
    """What a request handler does: open, write, read, return without closing (and,
    for the test, the Memory's store: it must be closed, not just let go)."""
    memory = Memory(path, embedder=HashEmbedder())
    memory.add(f"note {i} about green tea", user_id=f"u{i % 3}")
    assert memory.search("green tea", user_id=f"u{i % 3}")
    return weakref.ref(memory), memory.store


def test_dropped_memories_leave_no_thread_or_descriptor_and_warn(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # the process's own threads, started once: the closer, the claim renewer, the
        # pool that embeds queries
        _request(path, -1)
        _no_worker_left()
        threads, fds = _os_threads(), _fds()
        refs, stores = zip(*(_request(path, i) for i in range(40)), strict=True)
        gc.collect()
        assert [r() for r in refs] == [None] * 40  # nothing running keeps one alive
        assert _settle(threads, fds) <= (threads, fds)
        assert all(s.closed for s in stores)
    warned = [w for w in caught if issubclass(w.category, ResourceWarning)]
    # Only the Memories: garbage an earlier test left (a socket) may be collected here.
    dropped = [w for w in warned if str(w.message).startswith("unclosed Memory(")]
    assert len(dropped) == 41
    assert not [w for w in warned if w not in dropped and str(path) in str(w.message)]
    assert "unclosed Memory(" in str(dropped[0].message) and "m.db" in str(dropped[0].message)
    _no_worker_left(timeout=0)
    assert _pending(path) == 0  # each worker embedded its adds before it stopped


def test_a_memory_owning_nothing_or_closed_is_not_warned_about(tmp_path: Path) -> None:
    """The server's Memories share one store and one worker: dropping them is normal."""
    store = SQLiteStore(tmp_path / "m.db")
    worker = EmbeddingWorker(store, HashEmbedder(), linger=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(5):
            shared = Memory(store=store, worker=worker, embedder=HashEmbedder())
            shared.add(f"note {i}", user_id="u")
            del shared
        closed = Memory(tmp_path / "other.db", embedder=HashEmbedder())
        closed.close()
        del closed
        crashed = Memory(tmp_path / "crashed.db", embedder=HashEmbedder())
        assert crashed.flush()  # its worker idle, for a lease (30 s) between looks
        crashed.store.close()  # by hand, not close(): its worker is only told to stop
        del crashed
        gc.collect()
        _no_worker_left(timeout=5, but=1)
    assert worker.running and not store.closed  # not the dropped Memories' to close
    worker.close()
    store.close()


class _CollectingEmbedder(HashEmbedder):
    """Runs the garbage collector inside each background batch: a Memory left in a
    reference cycle is then finalized on its own worker's thread."""

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        gc.collect()
        return self.embed(texts)


def test_a_memory_collected_on_its_own_workers_thread_closes_without_deadlock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.db"
    Memory(path, embedder=HashEmbedder()).close()
    threads, fds = _settle(_os_threads(), _fds(), timeout=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        memory = Memory(path, embedder=_CollectingEmbedder())
        memory.add("a note in a cycle", user_id="u")
        cycle: list[object] = [memory]
        cycle.append(cycle)
        ref = weakref.ref(memory)
        del memory, cycle  # garbage only the collector finds: the worker runs it
        assert _settle(threads, fds) <= (threads, fds)
        assert ref() is None
    assert [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert _pending(path) == 0


class _DownEmbedder(HashEmbedder):
    """An embedder whose service is down (the worker sees ``EmbedderUnavailable``)."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        raise ConnectionError("connection refused")


def test_a_dropped_memorys_pending_records_wait_for_the_next_open(tmp_path: Path) -> None:
    """Its worker does not wait out an outage for nobody: the thread ends, and the
    records stay pending, embedded by the next Memory opened on the file."""
    path = tmp_path / "m.db"
    Memory(path, embedder=HashEmbedder()).close()
    threads, fds = _settle(_os_threads(), _fds(), timeout=0)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        memory = Memory(path, embedder=_DownEmbedder())
        memory.add(["one", "two", "three"], user_id="u")
        del memory
        assert _settle(threads, fds) <= (threads, fds)
    assert _pending(path) == 3
    with Memory(path, embedder=HashEmbedder()) as later:
        assert later.flush(timeout=10)
        assert later.embedding_status().pending == 0


def test_a_process_exits_at_once_with_memories_never_closed(tmp_path: Path) -> None:
    """Alive at exit, or in a cycle the collector never reached: the process ends
    without hanging or a warning, and what it left pending is embedded at the next open."""
    path = tmp_path / "m.db"
    script = textwrap.dedent(
        f"""
        from contextos.memory import Memory
        from contextos.testing.embedders import HashEmbedder
        kept = Memory({str(path)!r}, embedder=HashEmbedder())
        kept.add(["one", "two"], user_id="u")
        lost = Memory({str(path)!r}, embedder=HashEmbedder())
        lost.add("three", user_id="u")
        cycle = [lost, kept]
        cycle.append(cycle)
        del lost, cycle
        """
    )
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert time.monotonic() - start < 30
    with Memory(path, embedder=HashEmbedder()) as later:
        assert later.flush(timeout=10)
        assert later.embedding_status().pending == 0
        assert len(later.get_all(user_id="u")) == 3
