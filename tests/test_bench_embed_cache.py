"""The benchmark's embedding cache: same vectors, nothing embedded twice, kept on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contextos.bench.embed_cache import CachedEmbedder
from contextos.testing.embedders import HashEmbedder


def test_vectors_are_the_inner_ones_and_are_embedded_once(tmp_path: Path) -> None:
    inner = HashEmbedder()
    cache = CachedEmbedder(inner, tmp_path / "v.sqlite")
    texts = ["I like tea", "my dog Rex", "I like tea"]
    first = cache.embed(texts)
    assert np.array_equal(first, inner.embed(texts))
    calls = inner.calls
    again = cache.embed_batch(list(reversed(texts)))
    assert inner.calls == calls  # all three from the cache
    assert np.array_equal(again, first[::-1])
    assert (cache.hits, cache.misses) == (3, 3)  # the repeated text was embedded twice
    assert cache.embed([]).shape == (0, inner.dimensions)
    cache.close()


def test_the_cache_survives_the_process_and_is_keyed_by_model(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite"
    CachedEmbedder(HashEmbedder(), path).embed(["I like tea"])
    inner = HashEmbedder()
    reopened = CachedEmbedder(inner, path)
    reopened.embed(["I like tea"])
    assert inner.calls == 0
    other = HashEmbedder(dimensions=32)
    other.model_id = "hash-bow-32"
    CachedEmbedder(other, path).embed(["I like tea"])
    assert other.calls == 1  # another model's vectors are never served
