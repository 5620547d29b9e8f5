"""The topic memory block: retrieved memory that sits inside the cached prefix.

Why: memories retrieved for each question change on every call, so when they
sit after the history (the ``offload`` layout) every call pays for them
uncached; when they sit before it, every change also invalidates the cached
history. Most consecutive messages of a chat stay on one topic, so the
memories worth showing change far less often than the question does.

:class:`TopicBlock` keeps the memories retrieved for the conversation's
current topic and swaps them only when

- the topic has measurably drifted: the best memories found for the new
  message fit it better than the block does, by more than ``margin``
  (hysteresis: a small, noisy gain never rewrites the cached prefix), or
- the prefix changes anyway (``due``: at start, and after each compaction).

Fit is cosine similarity between the message and the memories' embedding
texts (:func:`contextos.memory.render.embedding_text`), the mean of the
``top_k`` best; the vectors of block members are kept, so checking drift costs
one query embedding (which the search made already, if memoised).

What the block does not hold but fits the message better than the block
does goes after the history as a small per-call *delta* (the window's
``memories`` segment); a memory is never in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from contextos.memory.render import embedding_text
from contextos.types import Hit


class VectorEmbedder(Protocol):
    """Anything with ``embed(texts) -> array (n, dim)``."""

    def embed(self, texts: Sequence[str]) -> Any:
        """One vector per text."""
        ...


class TopicBlock:
    """Memories for the current topic, refreshed on measured drift (see the module docstring)."""

    def __init__(
        self,
        embedder: VectorEmbedder,
        *,
        margin: float = 0.1,
        top_k: int = 3,
        measure: str = "cosine",
    ) -> None:
        if margin < 0:
            raise ValueError("margin must be >= 0")
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        self.embedder = embedder
        self.margin = margin
        self.top_k = top_k
        self.measure = measure
        self.gate = 0.0
        #: The memories in the block now, best first.
        self.hits: list[Hit] = []
        #: Refresh at the next update whatever the drift (start, after a compaction).
        self.due = True
        self._vectors: dict[str, Any] = {}

    def _vector(self, texts: Sequence[str]) -> Any:
        import numpy as np

        vecs = np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.maximum(norms, 1e-12)

    def _sims(self, query: Any, hits: Sequence[Hit]) -> list[float]:
        """Cosine of each of ``hits`` to ``query`` (block members' vectors are kept)."""
        todo = [h for h in hits if h.record.id not in self._vectors]
        if todo:
            vecs = self._vector([embedding_text(h.record) for h in todo])
            self._vectors.update(zip((h.record.id for h in todo), vecs, strict=True))
        return [float(self._vectors[h.record.id] @ query) for h in hits]

    def _fit(self, sims: Sequence[float]) -> float:
        """Mean of the ``top_k`` best similarities (-1 for none)."""
        best = sorted(sims, reverse=True)[: self.top_k]
        return sum(best) / len(best) if best else -1.0

    def drift(self, message: str, fresh: Sequence[Hit]) -> float:
        """How much better ``fresh`` fits ``message`` than the block does (cosine units)."""
        query = self._vector([message])[0]
        return self._fit(self._sims(query, fresh)) - self._fit(self._sims(query, self.hits))

    def update(
        self, message: str, fresh: Sequence[Hit], *, commit: bool = True
    ) -> tuple[list[Hit], list[Hit], bool]:
        """(block, delta, refreshed) for a window answering ``message``.

        ``fresh`` are the memories retrieved for ``message``, best first. The
        block becomes ``fresh`` when it is due or the topic drifted; the delta
        is ``fresh`` less what the block holds. ``commit=False`` answers the
        same without changing the block (a what-if, e.g. for scoring).
        """
        if not fresh:
            return list(self.hits), [], False
        if self.measure == "overlap":
            return self._update_overlap(fresh, commit)
        query = self._vector([message])[0]
        fresh_sims = self._sims(query, fresh)
        block_fit = self._fit(self._sims(query, self.hits))
        drift = self._fit(fresh_sims) - block_fit
        refreshed = self.due or not self.hits or drift > self.margin
        block = list(fresh) if refreshed else list(self.hits)
        if refreshed:
            block_fit = self._fit(fresh_sims)
        held = {h.record.id for h in block}
        # The delta: what fits this message better than the block does, best first.
        delta = [
            h
            for h, sim in zip(fresh, fresh_sims, strict=True)
            if h.record.id not in held and sim >= block_fit + self.gate
        ]
        if refreshed and commit:
            self.hits, self.due = block, False
        if len(self._vectors) > 4 * len(held) + 256:  # keep the block's, drop the rest
            keep = {h.record.id for h in self.hits}
            self._vectors = {k: v for k, v in self._vectors.items() if k in keep}
        return block, delta, refreshed

    def _update_overlap(
        self, fresh: Sequence[Hit], commit: bool
    ) -> tuple[list[Hit], list[Hit], bool]:
        top = list(fresh[: self.top_k])
        held = {h.record.id for h in self.hits}
        missing = [h for h in top if h.record.id not in held]
        refreshed = self.due or not self.hits or len(missing) / len(top) > self.margin
        if refreshed:
            if commit:
                self.hits, self.due = list(fresh), False
            return list(fresh), [], True
        return list(self.hits), missing, False


__all__ = ["TopicBlock", "VectorEmbedder"]
