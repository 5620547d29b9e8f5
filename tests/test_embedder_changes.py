"""A store outlives its embedder's settings, and a user's embedder may break its protocol.

Why each (a review of the embedder over the life of a store):

- An embedder whose size is a setting (a remote API's ``dimensions``,
  ``HashEmbedder(n)``) keeps its ``model_id`` when the size changes. Only the model was
  compared, so the vectors of the old size were never re-embedded, ``status`` said
  nothing was pending, and vector search skipped them for good.
- An embedder that answers with the wrong shape or with NaN has a fault in its code,
  not an outage: it was retried as one for good, and ``flush()`` never returned. Its
  records are now set aside (quarantined, with an error naming the embedder), and a
  query vector it gets wrong raises instead of ranking garbage.
- A cached ONNX graph damaged in place loaded without complaint and gave other vectors
  under the same model id; it is now checked against the SHA-256 written beside it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from contextos import Memory
from contextos.embed import EmbedderOutputError, Vectors
from contextos.embed.minilm import model_dir
from contextos.embed.onnx_graph import ensure_graph
from contextos.errors import ConfigError
from contextos.memory.embedding_worker import requeue_stale
from contextos.memory.render import vector_model
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder

TEXTS = ["carol plays the violin", "alice likes green tea", "bob owns a red bicycle"]


def test_vectors_of_another_size_are_re_embedded(store: Store) -> None:
    # (Not closed: closing a Memory closes its store, which the second one uses.)
    Memory(store=store, embedder=HashEmbedder(64), background_embedding=False).add(
        TEXTS, user_id="u"
    )
    bigger = HashEmbedder(128)  # the same model_id, "hash-bow"
    assert requeue_stale(store, bigger) == len(TEXTS)
    assert store.embedding_status().pending == len(TEXTS)  # what `contextos status` says
    with Memory(store=store, embedder=bigger) as m:  # its worker embeds them again
        assert m.flush(10)
        for text in TEXTS:
            (best,) = m.search(text, user_id="u", limit=1, min_score=0.9)
            assert best.record.text == text and best.dense_rank == 1
        model = vector_model(bigger.model_id)
        assert store.requeue_stale_vectors(model, dimensions=128) == 0
        assert store.requeue_stale_vectors(model, dimensions=64) == len(TEXTS)


class BrokenEmbedder:
    """A user's embedder (the documented protocol) that, once ``mode`` is set, breaks it
    on every call: the wrong dimensions, an extra row, one flat vector, or NaN."""

    model_id = "broken"
    dimensions = 32

    def __init__(self, mode: str | None = None) -> None:
        self.mode = mode
        self._hash = HashEmbedder(32)

    def embed(self, texts: Sequence[str]) -> Vectors:
        v = self._hash.embed(texts)
        replies = {
            None: v,
            "wrong_dims": v[:, :16],
            "extra_row": np.vstack([v, v[:1]]),
            "flat": v[0],
            "nan": np.full_like(v, np.nan),
        }
        return replies[self.mode]


BROKEN = ["wrong_dims", "extra_row", "flat", "nan"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", BROKEN)
def test_records_an_embedder_cannot_embed_are_set_aside_and_flush_returns(
    mode: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Memory(tmp_path / "m.db", embedder=BrokenEmbedder(mode)) as m:
        added = m.add(TEXTS, user_id="u")
        assert m.flush() is True  # no timeout: it waited for good, as for an outage
        status = m.embedding_status()
        assert status.pending == 0
        assert sorted(q.id for q in status.quarantined) == sorted(r.id for r in added)
        for q in status.quarantined:
            assert q.error.startswith("EmbedderOutputError: embedder 'broken' returned")
    said = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert said and all("broke its protocol" in r.getMessage() for r in said)


@pytest.mark.parametrize("mode", BROKEN)
def test_a_query_vector_that_breaks_the_protocol_is_not_searched(
    mode: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without ``min_score`` the search ranks by keywords alone and logs why; with it,
    no cosine can be had, and it raises."""
    embedder = BrokenEmbedder()
    with Memory(tmp_path / "m.db", embedder=embedder, background_embedding=False) as m:
        m.add(TEXTS, user_id="u")
        embedder.mode = mode
        hits = m.search("violin", user_id="u")
        assert [h.record.text for h in hits] == [TEXTS[0]]
        assert hits[0].dense_rank is None and hits[0].relevance is None
        assert "keyword hits only" in caplog.text and "embedder 'broken' returned" in caplog.text
        with pytest.raises(ConfigError, match="embedder 'broken' returned"):
            m.search("violin", user_id="u", min_score=0.1)


class BagOfWords:
    """A user's embedder that normalises with ``v / norm`` and no guard for zero: a text
    with none of its words embeds as 0/0, NaN."""

    model_id = "bag-of-words"
    words = ("tea", "violin", "bicycle")
    dimensions = len(words)

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.array([[float(w in t.split()) for w in self.words] for t in texts], np.float32)
        with np.errstate(invalid="ignore"):
            normalised: Vectors = out / np.linalg.norm(out, axis=1, keepdims=True)
        return normalised


def test_a_nan_query_vector_ranks_no_arbitrary_memory(tmp_path: Path) -> None:
    """A query of no word the embedder knows embeds as NaN: the keyword hit is still
    found (a review: the search raised, and the server answered 400), and no memory is
    ranked by a NaN cosine."""
    with Memory(tmp_path / "m.db", embedder=BagOfWords(), background_embedding=False) as m:
        m.add(TEXTS, user_id="u")
        assert m.embedding_status().pending == 0
        assert m.search("who is frank", user_id="u") == []  # no word of any memory
        word = TEXTS[1].split()[0]  # a word of a memory the embedder does not know
        hits = m.search(word, user_id="u")
        assert [h.record.text for h in hits] == [TEXTS[1]] and hits[0].relevance is None
        with pytest.raises(EmbedderOutputError, match="NaN"):
            m.search("who is frank", user_id="u", min_score=0.2)
        assert [h.record.text for h in m.search("violin", user_id="u", limit=1)] == [TEXTS[0]]


@pytest.mark.slow
def test_a_cached_graph_damaged_in_place_is_built_again(tmp_path: Path) -> None:
    weights = model_dir() / "model.safetensors"
    graph = ensure_graph(weights, tmp_path, int8=True)
    whole = graph.read_bytes()
    # Bytes flipped in the middle of a weight tensor, the size unchanged: onnxruntime
    # loads such a file without complaint (the review's cosines 0.987-1.0).
    damaged = bytearray(whole)
    middle = len(damaged) // 2
    damaged[middle : middle + 4096] = bytes(b ^ 0xFF for b in damaged[middle : middle + 4096])
    graph.write_bytes(bytes(damaged))
    assert ensure_graph(weights, tmp_path, int8=True) == graph
    assert graph.read_bytes() == whole
    # An intact graph is used as it is, and so is one an older contextos cached, which
    # kept no SHA-256 beside it: its own is kept from then on.
    before = graph.stat()
    (checksum,) = tmp_path.glob(f"sha256-{graph.name}.txt")
    checksum.unlink()
    ensure_graph(weights, tmp_path, int8=True)
    assert (graph.stat().st_ino, graph.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert checksum.read_text() == hashlib.sha256(whole).hexdigest()


def test_the_server_blames_itself_for_its_embedders_output() -> None:
    """A 400 told the client its request was wrong; the server's embedder is at fault."""
    from contextos.server.errors import status_for

    assert status_for(EmbedderOutputError("embedder 'x' returned NaN")) == 500
