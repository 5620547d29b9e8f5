"""``contextos bench serve``: the load test's report of the background embedding backlog
and of where the server's CPU goes, thread by thread."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contextos.bench.serve import cpu_by_thread_group, drain_time, process_tree_cpu, thread_cpu
from contextos.memory.embedding_worker import EmbeddingWorker, embed_pending
from contextos.os_threads import BACKGROUND_EMBEDDING, QUERY_EMBEDDING, name_this_thread
from contextos.server.batching import BatchingEmbedder
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import MemoryRecord, Scope, content_hash


def _record(i: int, tenant: str) -> MemoryRecord:
    text = f"note {i} about tea"
    return MemoryRecord(
        id=f"{tenant}-{i}",
        text=text,
        scope=Scope(tenant=tenant, user_id="u"),
        hash=content_hash(text),
        created_at=datetime.now(UTC),
    )


def test_drain_time_reports_the_backlog_and_how_long_it_took_to_embed(tmp_path: Path) -> None:
    """Adds answer before their vectors exist; the report says how many of the tenant's
    still waited when the load stopped, and how long the server took to embed them."""
    db = str(tmp_path / "drain.db")
    store = SQLiteStore(db)
    store.put([_record(i, "t1") for i in range(3)] + [_record(0, "t2")])
    # Nobody embeds: the backlog is reported, and it does not drain within the limit.
    assert drain_time(db, "t1", limit=0.3) == (3, None)
    # Another process embeds them 0.5 s from now: the drain is timed.
    timer = threading.Timer(0.5, lambda: embed_pending(store, HashEmbedder()))
    timer.start()
    start = time.monotonic()
    pending, seconds = drain_time(db, "t1", limit=30)
    timer.join()
    assert pending == 3
    assert seconds is not None and 0.4 <= seconds <= time.monotonic() - start
    assert drain_time(db, "t1")[0] == 0
    store.close()


def _named(name: str) -> int:
    """How many threads of this process carry ``name`` in the OS."""
    count = 0
    for comm in Path("/proc/self/task").glob("*/comm"):
        try:
            count += comm.read_text().strip() == name
        except OSError:  # the thread ended meanwhile
            continue
    return count


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_the_embedding_threads_carry_their_names_in_the_os(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "names.db")
    before = (_named(BACKGROUND_EMBEDDING), _named(QUERY_EMBEDDING))
    worker = EmbeddingWorker(store, HashEmbedder(), linger=0.0)
    batching = BatchingEmbedder(HashEmbedder())
    try:
        assert worker.flush(timeout=10)
        batching.embed(["wake the batching thread"])
        assert (_named(BACKGROUND_EMBEDDING), _named(QUERY_EMBEDDING)) == (
            before[0] + 1,
            before[1] + 1,
        )
    finally:
        batching.close()
        worker.close()
        store.close()
    assert (_named(BACKGROUND_EMBEDDING), _named(QUERY_EMBEDDING)) == before


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_cpu_is_attributed_to_the_thread_group_that_used_it() -> None:
    """A thread named as the query-embedding thread burns CPU; the split puts it there,
    not on the main thread, and the groups add up to the process's CPU."""
    pid = os.getpid()
    before, total_before = thread_cpu(pid), process_tree_cpu(pid)
    burnt, release = threading.Event(), threading.Event()

    def burn() -> None:
        name_this_thread(QUERY_EMBEDDING)
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
        burnt.set()
        release.wait(30)  # alive at the snapshot: an ended thread is only in the total

    burner = threading.Thread(target=burn)
    burner.start()
    try:
        assert burnt.wait(30)
        after, total_after = thread_cpu(pid), process_tree_cpu(pid)
    finally:
        release.set()
        burner.join()
    assert total_before is not None and total_after is not None
    groups = cpu_by_thread_group(before, after, total_after - total_before)
    assert groups["query_embedding"] >= 0.25
    assert groups["main"] < groups["query_embedding"]
    assert sum(groups.values()) == pytest.approx(total_after - total_before, abs=0.05)
