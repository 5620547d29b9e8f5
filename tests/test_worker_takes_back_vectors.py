"""A busy process takes back, within a lease, the vectors another embedder wrote.

Why: the embedding worker looked for other models' vectors only after a lease without a
wake-up, so a server that adds at least once a lease never looked. When a one-off
process with another ``CONTEXTOS_EMBEDDER`` re-embedded the store, the server searched
that model's vectors with its own queries until it was restarted, and said nothing,
although docs/architecture.md promises they are taken back within a lease (a review).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from contextos import Memory
from contextos.memory.embedding_worker import EmbeddingWorker
from contextos.memory.render import vector_model
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder

LEASE_S = 0.5
TEXTS = ["carol plays the violin", "alice likes green tea", "bob owns a red bicycle"]


class OtherModel(HashEmbedder):
    """Another process's embedder: the same hashing under another name."""

    model_id = "hash-bow-other"


def _models(path: Path) -> dict[str, int]:
    with closing(sqlite3.connect(path)) as con:
        return dict(con.execute("SELECT model, count(*) FROM vectors GROUP BY model"))


@pytest.mark.serial
def test_a_process_adding_every_tenth_of_a_lease_takes_back_another_model_s_vectors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "m.db"
    store = SQLiteStore(path)
    worker = EmbeddingWorker(store, HashEmbedder(), lease_s=LEASE_S)
    app = Memory(store=store, embedder=HashEmbedder(), worker=worker)
    try:
        records = app.add(TEXTS, user_id="u")
        assert app.flush(10)
        # Another process with another embedder writes its vectors over these.
        with closing(SQLiteStore(path)) as other:
            vectors = OtherModel().embed(TEXTS)
            model = vector_model(OtherModel.model_id)
            other.set_vectors("default", [r.id for r in records], vectors, model)
        assert _models(path)[model] == len(TEXTS)
        # This process keeps adding, ten times a lease, for up to eight leases.
        deadline = time.monotonic() + 8 * LEASE_S
        while model in _models(path) and time.monotonic() < deadline:
            app.add(f"a note written at {time.monotonic()}", user_id="u")
            time.sleep(LEASE_S / 10)
        assert app.flush(10)
        assert list(_models(path)) == [vector_model(HashEmbedder.model_id)]
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert sum("another process wrote vectors of another embedder" in m for m in said) == 1
    finally:
        worker.close()
        app.close()


@pytest.mark.serial
def test_a_worker_closed_after_a_lease_leaves_another_model_s_vectors_alone(
    tmp_path: Path,
) -> None:
    # Closing wakes the worker: it must not look for such vectors then. It did when a
    # lease had gone by since its last look, and queued vectors just written by another
    # process for no one to embed (a quality test's store, re-embedded in bulk, lost them).
    path = tmp_path / "m.db"
    store = SQLiteStore(path)
    start = time.monotonic()
    worker = EmbeddingWorker(store, HashEmbedder(), lease_s=2 * LEASE_S)
    app = Memory(store=store, embedder=HashEmbedder(), worker=worker)
    try:
        time.sleep(1.4 * LEASE_S)  # woken by the add below before its wait runs out
        records = app.add(TEXTS, user_id="u")
        assert app.flush(10)
        with closing(SQLiteStore(path)) as other:
            vectors = OtherModel().embed(TEXTS)
            other.set_vectors("default", [r.id for r in records], vectors, "another/model")
        time.sleep(max(0.0, start + 2.2 * LEASE_S - time.monotonic()))  # past its look
        worker.close()
        assert store.embedding_status().pending == 0
    finally:
        worker.close()
        app.close()
