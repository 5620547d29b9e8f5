"""A deterministic, dependency-free Embedder for tests."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from ..embed import Vectors, normalize

_WORD = re.compile(r"\w+")


class HashEmbedder:
    """Bag of hashed words (feature hashing): texts sharing words get similar vectors.

    Deterministic across processes and machines, so tests can assert on ranks.
    """

    model_id = "hash-bow"

    def __init__(self, dimensions: int = 64) -> None:
        self.dimensions = dimensions
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dimensions
                sign = 1.0 if digest[4] & 1 else -1.0
                out[row, bucket] += sign
        return normalize(out)


class FailingEmbedder(HashEmbedder):
    """A HashEmbedder that raises for any batch holding a text with ``poison`` in it:
    stands in for an embedder that chokes on one input (tests that one bad record
    cannot stall embedding for everyone else)."""

    model_id = "hash-bow-failing"

    def __init__(self, poison: str, dimensions: int = 64) -> None:
        super().__init__(dimensions)
        self.poison = poison

    def embed(self, texts: Sequence[str]) -> Vectors:
        if any(self.poison in t for t in texts):
            raise ValueError(f"cannot embed a text containing {self.poison!r}")
        return super().embed(texts)
