"""``contextos bench serve``: the load test's report of the background embedding backlog."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from contextos.bench.serve import drain_time
from contextos.memory.embedding_worker import embed_pending
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
