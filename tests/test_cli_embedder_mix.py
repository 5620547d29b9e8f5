"""A CLI command on a store that another embedder fills leaves that embedder's vectors alone.

An application embeds its store with its own model (bge-small, a paid API: any model of
the CLI's size). One ``contextos search`` run to look at the data started a background
worker whose first pass queued again every vector of another model, in every tenant, and
re-embedded them with the CLI's embedder. The application's searches then compared its
queries with another model's vectors and found nothing for 30 s; then it re-embedded
every memory with its own model (paid for again), and ``contextos status`` counted
thousands of valid vectors as "waiting for a vector" (a review). A command embeds what
is pending (its own writes, a dead process's leftovers) and nothing else, off its own
thread, so it still reports first and waits at most ``VECTOR_WAIT_S``. The real CLI in
subprocesses, on a real SQLite file (and PostgreSQL).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from cli_support import run_cli
from contextos import Memory
from contextos.cli.common import VECTOR_WAIT_S
from contextos.embed import Vectors
from contextos.memory.embedding_worker import EmbeddingWorker
from contextos.memory.render import vector_model
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import MemoryRecord, Scope, content_hash
from server_support import database


class AppEmbedder(HashEmbedder):
    """An application's own model, of the size of the CLI's (``hash``, 64): the same
    words land in other dimensions, so its vectors differ from the CLI's."""

    model_id = "app-hash"

    def embed(self, texts: Sequence[str]) -> Vectors:
        return np.roll(super().embed(texts), 1, axis=1)


def _vectors(db: str) -> dict[str, tuple[str, str]]:
    """Each memory's vector: the model that wrote it and its value (as text)."""
    if "://" in db:
        import psycopg

        with psycopg.connect(db) as pg:
            rows = pg.execute("SELECT memory_id, model, vec::text FROM vectors").fetchall()
        return {mid: (model, vec) for mid, model, vec in rows}
    with contextlib.closing(sqlite3.connect(db)) as con:
        rows = con.execute(
            "SELECT m.id, v.model, v.vec FROM vectors v JOIN memories m ON m.rowid = v.mem_rowid"
        ).fetchall()
    return {mid: (model, bytes(vec).hex()) for mid, model, vec in rows}


def _pending(db: str) -> int:
    if "://" in db:
        import psycopg

        with psycopg.connect(db) as pg:
            row = pg.execute("SELECT count(*) FROM pending_vectors").fetchone()
    else:
        with contextlib.closing(sqlite3.connect(db)) as con:
            row = con.execute("SELECT count(*) FROM pending_vectors").fetchone()
    assert row is not None
    return int(row[0])


def _ok(*args: str, db: str) -> str:
    """``contextos --db DB ARGS`` (the hash embedder), which must succeed: its stdout."""
    done = run_cli("--db", db, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_search_add_and_update_leave_another_models_vectors_alone(
    tmp_path: Path, kind: str
) -> None:
    with database(kind, tmp_path) as db:
        _search_add_and_update_leave_another_models_vectors_alone(db)


def _search_add_and_update_leave_another_models_vectors_alone(db: str) -> None:
    for tenant in ("default", "acme"):  # the worker queued every tenant's
        with Memory(db, tenant=tenant, embedder=AppEmbedder(), background_embedding=False) as m:
            m.add([f"ana's note {i} about green tea" for i in range(40)], user_id="ana")
    before = _vectors(db)
    assert len(before) == 80 and {model for model, _ in before.values()} == {
        vector_model(AppEmbedder.model_id)
    }
    hits = json.loads(_ok("search", "green tea", "-u", "ana", "--json", db=db))
    assert len(hits) == 10
    [added] = json.loads(
        _ok("add", "my daughter is allergic to peanuts", "-u", "ana", "--json", db=db)
    )
    edited = hits[0]["id"]
    _ok("update", edited, "--text", "ana walks her dog at dawn", db=db)

    after = _vectors(db)
    cli_model = vector_model(HashEmbedder.model_id)
    # The command's own writes have the CLI's vectors; every other one is as it was.
    assert after.pop(added["id"])[0] == cli_model
    assert after.pop(edited)[0] == cli_model
    assert after == {mid: v for mid, v in before.items() if mid != edited}
    assert _pending(db) == 0
    status = json.loads(_ok("--json", "status", db=db))
    assert status["pending"] == 0 and status["all_tenants"]["pending"] == 0, status
    # The add is found by meaning (a vector hit), as the command ended.
    found = json.loads(_ok("search", "daughter peanuts", "-u", "ana", "--json", db=db))
    assert found[0]["id"] == added["id"] and found[0]["dense_rank"] == 1, found


def test_an_offload_compaction_leaves_another_models_vectors_alone(tmp_path: Path) -> None:
    # `compact --strategy offload` archives turns into memories on the same store: its
    # Memory embeds them, and nothing else.
    db = str(tmp_path / "app.db")
    with Memory(db, embedder=AppEmbedder(), background_embedding=False) as m:
        m.add([f"ana's note {i} about green tea" for i in range(20)], user_id="ana")
    before = _vectors(db)
    for i in range(10):
        _ok("session", "add", "s1", f"Turn {i}: Maria moved to Lisbon in {2000 + i}.", db=db)
    args = ("compact", "--session", "s1", "--budget", "100", "--force", "--strategy", "offload")
    assert json.loads(_ok(*args, "--json", db=db))["archived"] == 8
    after = _vectors(db)
    archived = {mid: v for mid, v in after.items() if mid not in before}
    assert len(archived) == 8
    assert {model for model, _ in archived.values()} == {vector_model(HashEmbedder.model_id)}
    assert {mid: v for mid, v in after.items() if mid in before} == before
    assert _pending(db) == 0


def test_an_offline_chat_leaves_another_models_vectors_alone(tmp_path: Path) -> None:
    # `contextos chat` holds a Memory for the whole conversation: its worker re-queued
    # the application's vectors as the one-shot commands' did.
    db = str(tmp_path / "chat.db")
    with Memory(db, embedder=AppEmbedder(), background_embedding=False) as m:
        m.add([f"ana's note {i} about green tea" for i in range(20)], user_id="ana")
    before = _vectors(db)
    chatted = run_cli("--db", db, "chat", "-u", "ana", stdin="I like green tea\n/quit\n")
    assert chatted.returncode == 0, chatted.stderr
    after = _vectors(db)
    assert {mid: v for mid, v in after.items() if mid in before} == before
    assert len(after) > len(before)  # what the chat remembered has the chat's vectors
    assert _pending(db) == 0


def test_a_dead_processes_pending_records_get_their_vectors_from_the_next_command(
    tmp_path: Path,
) -> None:
    # What a process that died left pending, of any tenant: unclaimed, or claimed under
    # a lease that has run out, is embedded by the next command that embeds.
    db = str(tmp_path / "m.db")
    store = SQLiteStore(db)
    try:
        for mid, text in (("claimed", "black coffee at dawn"), ("left", "green tea at noon")):
            rec = MemoryRecord(
                id=mid, text=text, scope=Scope("acme", "zed"), hash=content_hash(text)
            )
            store.put([rec])
            if mid == "claimed":
                assert len(store.claim_vectors("a-dead-process", limit=1, lease_s=0.2)) == 1
    finally:
        store.close()
    time.sleep(0.5)  # the dead process's lease runs out
    assert _pending(db) == 2
    _ok("search", "coffee", "-u", "bob", db=db)
    assert _pending(db) == 0
    assert {model for model, _ in _vectors(db).values()} == {vector_model(HashEmbedder.model_id)}


@pytest.mark.slow
@pytest.mark.serial
def test_an_add_over_a_backlog_reports_and_ends_within_its_wait(tmp_path: Path) -> None:
    """Embedding inline instead (no thread: ``Memory(background_embedding=False)``)
    made ``add`` embed the whole queue before it returned and reported: 27 s over
    another tenant's 20,000 pending memories with the default embedder, where the doc
    says it waits at most ``VECTOR_WAIT_S``. The real default embedder."""
    db = tmp_path / "m.db"
    store = SQLiteStore(db)
    try:
        texts = [f"note {i} the importer wrote about topic {i % 89}" for i in range(20_000)]
        store.put(
            [
                MemoryRecord(id=f"b{i}", text=t, scope=Scope("acme", "zed"), hash=content_hash(t))
                for i, t in enumerate(texts)
            ]
        )
    finally:
        store.close()
    env = {"CONTEXTOS_EMBEDDER": "minilm-int8"}
    started = time.monotonic()
    done = run_cli("add", "I drink black coffee", "-u", "bob", db=db, env=env)
    took = time.monotonic() - started
    assert done.returncode == 0 and done.stdout.startswith("added "), done.stderr
    # Its wait, the model's load and the batch in progress at the end; not the backlog.
    assert took < VECTOR_WAIT_S + 5, took


def test_the_clis_worker_never_queues_another_models_vectors_again(tmp_path: Path) -> None:
    # Neither on its first pass nor at its look once a lease (a short one here: five
    # looks fall due), where a long-running process's worker takes them back.
    db = str(tmp_path / "m.db")
    with Memory(db, embedder=AppEmbedder(), background_embedding=False) as m:
        m.add(["ana likes green tea", "ana walks her dog"], user_id="ana")
    before = _vectors(db)
    store = SQLiteStore(db)
    worker = EmbeddingWorker(store, HashEmbedder(), lease_s=0.2, requeue_stale=False)
    try:
        worker.notify()
        assert worker.flush(5)
        time.sleep(1.0)
        assert worker.flush(5)
        assert store.embedding_status().pending == 0
    finally:
        worker.close()
        store.close()
    assert _vectors(db) == before
