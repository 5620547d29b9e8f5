"""Vectors written by another model or an older ``embedding_text`` are re-embedded.

Why: a store outlives the code that wrote it. When the embedder changes, or the text a
memory is embedded from changes (turns are now embedded with their facts), the old
vectors would otherwise stay beside new ones forever, on two different scales. Each
vector is stored with ``vector_model`` (model + text recipe); a process that embeds
queues again the vectors of any other, and re-embeds them like new ones.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from contextos import Memory
from contextos.embed import Vectors
from contextos.memory.embedding_worker import EmbeddingWorker
from contextos.memory.render import EMBEDDING_RECIPE, vector_model
from contextos.store.base import Store
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, Scope


class OtherEmbedder(HashEmbedder):
    """Another model: the same hashing, so searches still find things, another name."""

    model_id = "hash-bow-other"


def _vector_of(store: Store, text: str, embedder: HashEmbedder, user: str) -> str:
    flt = Filter(scope=Scope(tenant="default", user_id=user))
    (best,) = store.vector_search(flt, embedder.embed([text])[0], limit=1)
    return best.id


def test_a_store_reopened_with_another_model_is_re_embedded_in_the_background(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.db"
    with Memory(path, embedder=OtherEmbedder()) as m:
        ids = [r.id for r in m.add(["ana likes green tea", "ana walks her dog"], user_id="ana")]
        assert m.flush(10)
    with Memory(path, embedder=HashEmbedder()) as m:
        assert m.flush(10)
        assert m.store.embedding_status().pending == 0
        # Every vector is now the current model's: a second open queues nothing.
        assert m.store.requeue_stale_vectors(vector_model(HashEmbedder.model_id)) == 0
        assert m.store.requeue_stale_vectors(vector_model(OtherEmbedder.model_id)) == len(ids)


def test_inline_embedding_never_re_embeds_a_whole_store_before_answering(tmp_path: Path) -> None:
    # The CLI embeds inline and flushes before a search: re-embedding a store's old
    # vectors there would make the first command after an upgrade take minutes. It
    # answers with the old vectors; a process with a worker re-embeds them.
    path = tmp_path / "m.db"
    with Memory(path, embedder=OtherEmbedder()) as m:
        m.add(["ana likes green tea", "ana walks her dog"], user_id="ana")
        assert m.flush(10)
    with Memory(path, embedder=OtherEmbedder(), background_embedding=False) as m:
        old = m.store.requeue_stale_vectors(vector_model(HashEmbedder.model_id))
        assert old == 2  # the vectors really are another model's for HashEmbedder
    with Memory(path, embedder=OtherEmbedder()) as m:
        assert m.flush(10)  # (the requeue above is re-embedded by this worker)
    with Memory(path, embedder=HashEmbedder(), background_embedding=False) as m:
        assert m.flush(10)
        assert m.store.embedding_status().pending == 0
        assert [h.record.text for h in m.search("green tea", user_id="ana")][0] == (
            "ana likes green tea"
        )
        # nothing was re-embedded inline: the vectors are still the other model's
        assert m.store.requeue_stale_vectors(vector_model(HashEmbedder.model_id)) == 2


def test_vectors_of_an_older_recipe_are_queued_again_on_both_stores(store: Store) -> None:
    embedder = HashEmbedder()
    with Memory(store=store, embedder=embedder, background_embedding=False) as m:
        records = m.add(["ana likes green tea", "bo plays chess"], user_id="ana")
        m.flush()
        current = vector_model(embedder.model_id)
        assert current.endswith(EMBEDDING_RECIPE)
        assert store.requeue_stale_vectors(current) == 0
        # One vector as an older release wrote it: the bare model name, no recipe.
        vec = np.asarray(embedder.embed(["ana likes green tea"]), dtype=np.float32)
        store.set_vectors(records[0].tenant, [records[0].id], vec, embedder.model_id)
        assert store.requeue_stale_vectors(current) == 1
        assert store.requeue_stale_vectors(current) == 0  # already queued: idempotent
        assert store.embedding_status().pending == 1
        # Still searchable by meaning while it waits, then re-embedded like a new one.
        assert _vector_of(store, "ana likes green tea", embedder, "ana") == records[0].id
        m.flush()
        assert store.embedding_status().pending == 0
        assert store.requeue_stale_vectors(current) == 0


class SlowEmbedder(HashEmbedder):
    """A model slow enough that a backlog outlasts a short shutdown."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        time.sleep(0.2)
        return super().embed(texts)


def test_server_shutdown_waits_for_a_backlog_only_so_long(tmp_path: Path) -> None:
    # After an upgrade the worker re-embeds a whole store; stopping the server must not
    # wait for all of it. What is left stays pending, durable, for the next start.
    from contextos.server.tenants import TenantMemories

    tenants = TenantMemories.open(str(tmp_path / "m.db"), SlowEmbedder())
    memory = tenants.get("acme")
    memory.add([f"note {i} about tea" for i in range(400)], user_id="ana")
    start = time.monotonic()
    assert tenants.flush(0.5) is False
    assert time.monotonic() - start < 5
    assert tenants.store.embedding_status().pending > 0
    assert tenants.flush(None) is True  # without a limit it drains everything
    assert tenants.store.embedding_status().pending == 0
    tenants.close()


def _models(path: Path) -> set[str]:
    """The models the file's vectors are stored under, read by a connection of its own."""
    with closing(sqlite3.connect(path)) as raw:
        return {row[0] for row in raw.execute("SELECT DISTINCT model FROM vectors")}


def test_a_running_worker_takes_back_the_vectors_another_process_rewrote(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A CLI run with another embedder re-embedded a running server's store with its
    model; the server's worker re-queued other models' vectors only when it started, so
    it went on comparing its queries with the other model's vectors (the same size)
    until restarted (a review). A worker now looks again each time it is idle for a
    lease, takes them back and says once in the log why."""
    caplog.set_level(logging.WARNING, logger="contextos")
    path = tmp_path / "m.db"
    store = SQLiteStore(path)
    worker = EmbeddingWorker(store, HashEmbedder(), lease_s=0.3)
    mine, other = vector_model(HashEmbedder.model_id), vector_model(OtherEmbedder.model_id)
    with Memory(store=store, embedder=HashEmbedder(), worker=worker) as server:
        server.add(["ana likes green tea", "ana walks her dog"], user_id="ana")
        assert server.flush(10)
        assert _models(path) == {mine}
        with Memory(path, embedder=OtherEmbedder()) as cli:  # another process, its model
            assert cli.flush(10)
        assert _models(path) == {other}
        deadline = time.monotonic() + 10
        while _models(path) != {mine} and time.monotonic() < deadline:
            time.sleep(0.1)  # the server's worker, idle, looks once a lease
        assert _models(path) == {mine}
    said = [r.message for r in caplog.records if "wrote vectors of another embedder" in r.message]
    assert len(said) == 1, said
