"""The topic memory block: retrieved memory that sits inside the cached prefix.

Why: memories retrieved for each question change on every call, so when they
sit after the history (the ``offload`` layout) every call pays for them
uncached; when they sit before it, every change also invalidates the cached
history. Most consecutive messages of a chat stay on one topic, so the
memories worth showing change far less often than the question does.

:class:`TopicBlock` keeps the memories retrieved for the conversation's
current topic and swaps them only when

- the prefix changes anyway (``due``: at start, after each compaction, when
  the provider's cache has expired): a refresh then costs nothing extra, or
- the topic has measurably drifted: the best memories found for the new
  message fit it better than the block does, by more than ``margin``
  (hysteresis: a small, noisy gain never rewrites the cached prefix), or
- one of its memories was deleted, closed or changed since it was retrieved
  (:meth:`TopicBlock.drop_changed`, given the block's records as stored now).

Fit is cosine similarity between the message and the memories' embedding
texts (:func:`contextos.memory.render.embedding_text`), the mean of the
``top_k`` best; the vectors of block members are kept, so checking drift costs
one query embedding (which the search made already, if memoised).

Between refreshes the block is stale for some messages, so each call also
gets a small *delta* after the history (the window's ``memories`` segment):
the memories among the fresh top ``delta_top`` that the block does not hold.
Its size adapts by itself: empty when the block already holds the message's
best memories, up to ``delta_top`` when the message is off the block's topic.
A memory is never in both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from contextos.engine.session import Layout, novel_hits
from contextos.memory.render import embedding_text
from contextos.types import Hit, MemoryRecord

#: The topic layout's constants (shared by ``bench replay``'s ``topic`` strategy and
#: wrapped calls): the block's share of the budget (cached, before the history); the
#: per-call delta's ceiling (after the history; it only fills what the cached prefix
#: leaves); the fresh top-N the delta tops the block up to; the drift margin that
#: refreshes the block between due points; the history budget as a multiple of the
#: room the block leaves (1.4: the history at its 0.8 trigger uses ~1.1x that room, so
#: the delta shrinks while the history is near its trigger). Chosen
#: leave-one-conversation-out on the 5 dev conversations (docs/context-engine.md).
TOPIC_SHARE = 0.35
DELTA_SHARE = 0.10
DELTA_TOP = 6
TOPIC_MARGIN = 0.3
TOPIC_HISTORY_SHARE = 1.4
#: Extra searched per block so that memories the history already shows can be
#: dropped and the block still filled.
TOPIC_SEARCH_OVER = 2


class VectorEmbedder(Protocol):
    """Anything with ``embed(texts) -> array (n, dim)``."""

    def embed(self, texts: Sequence[str]) -> Any:
        """One vector per text."""
        ...


class TopicBlock:
    """Memories for the current topic, refreshed when due or on measured drift.

    See the module docstring. ``margin``: the drift (cosine units) that
    refreshes the block between due points; ``top_k``: how many best
    similarities make a fit; ``delta_top``: how many of the fresh best
    memories the per-call delta tops the block up to.
    """

    def __init__(
        self,
        embedder: VectorEmbedder,
        *,
        margin: float = 0.3,
        top_k: int = 3,
        delta_top: int = 6,
    ) -> None:
        if margin < 0:
            raise ValueError("margin must be >= 0")
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        if delta_top < 0:
            raise ValueError("delta_top must be >= 0")
        self.embedder = embedder
        self.margin = margin
        self.top_k = top_k
        self.delta_top = delta_top
        #: The memories in the block now, best first.
        self.hits: list[Hit] = []
        #: Refresh at the next update whatever the drift (start, compaction, cache expiry).
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

    def drop_changed(self, stored: Sequence[MemoryRecord]) -> bool:
        """Empty the block and make it due if one of its memories is no longer as it was
        retrieved: deleted, closed (``valid_to``, or its time passed) or changed (its
        text, or anything else an update stamps with ``updated_at``); True when it did.

        ``stored``: the block's memories as the store holds them now (those it lacks are
        deleted). Why: the block is kept between refreshes, so a memory the app erased or
        corrected was sent as retrieved until the block happened to be due. An unchanged
        block is left as it is (the cached prefix stays byte-identical). The vectors kept
        for changed memories go with them: a new text is embedded again.
        """
        now = {r.id: r for r in stored}
        at = datetime.now(UTC)
        changed = [
            h.record.id
            for h in self.hits
            if (r := now.get(h.record.id)) is None
            or (r.text, r.updated_at, r.valid_to)
            != (h.record.text, h.record.updated_at, h.record.valid_to)
            or (r.valid_to is not None and r.valid_to <= at)
        ]
        if not changed:
            return False
        for memory_id in changed:
            self._vectors.pop(memory_id, None)
        self.hits, self.due = [], True
        return True

    def update(
        self, message: str, fresh: Sequence[Hit], *, commit: bool = True
    ) -> tuple[list[Hit], list[Hit], bool]:
        """(block, delta, refreshed) for a window answering ``message``.

        ``fresh`` are the memories retrieved for ``message``, best first. The
        block becomes ``fresh`` when it is due or the topic drifted by more
        than ``margin``; the delta is what the block lacks of the fresh top
        ``delta_top``. ``commit=False`` answers the same without changing the
        block (a what-if, e.g. for scoring).
        """
        if not fresh:
            return list(self.hits), [], False
        refreshed = self.due or not self.hits or self.drift(message, fresh) > self.margin
        block = list(fresh) if refreshed else list(self.hits)
        held = {h.record.id for h in block}
        delta = [h for h in fresh[: self.delta_top] if h.record.id not in held]
        if refreshed and commit:
            self.hits, self.due = block, False
        if len(self._vectors) > 4 * len(self.hits) + 256:  # keep the block's, drop the rest
            keep = {h.record.id for h in self.hits}
            self._vectors = {k: v for k, v in self._vectors.items() if k in keep}
        return block, delta, refreshed


def topic_layout(
    budget: int,
    room: int,
    summary_share: float,
    *,
    block_tokens: int | None = None,
) -> tuple[int, Layout]:
    """The topic layout's history budget and :class:`Layout` for ``room`` tokens.

    The cached prefix is sized first and the per-call delta only fills what it
    leaves (its priority is below the summary's), so the delta's size never
    moves the prefix; the summary's ceiling fits the summary the history budget
    asks for, since a summary over its ceiling would be left out whole.

    ``block_tokens`` caps the block (and the delta) in tokens: in a large
    window ``TOPIC_SHARE`` of the budget would be tens of thousands of tokens
    of memories, so a wrapped call gives the block the tokens its memory
    segment would have had.
    """
    block = TOPIC_SHARE * budget
    delta = DELTA_SHARE * budget
    if block_tokens is not None:
        if block_tokens < 0:
            raise ValueError("block_tokens must be >= 0")
        block, delta = min(block, block_tokens), min(delta, block_tokens)
    history = int((room - block) * TOPIC_HISTORY_SHARE)
    layout = Layout(
        topic_ceiling=block / budget,
        memories_ceiling=delta / budget,
        memories_floor=0.0,
        memories_priority=25,
        # + 64: the summary's header and framing, beyond its lines' tokens.
        summary_ceiling=(summary_share * history + 64) / budget,
    )
    return history, layout


def topic_memories(
    block: TopicBlock,
    question: str,
    fresh: Sequence[Hit],
    shown: Callable[[Hit], bool],
    block_tokens: int,
    *,
    limit: int | None = None,
    commit: bool = True,
) -> tuple[list[Hit], list[Hit], bool]:
    """(block, delta, refreshed) for ``question`` from the memories ``fresh`` retrieved.

    ``fresh`` should be searched with ``TOPIC_SEARCH_OVER`` times
    ``block_tokens``: memories whose every source turn ``shown`` says the history
    shows (verbatim or summarised) are dropped first, then the
    rest is cut to ``block_tokens`` (and to ``limit`` memories, if given) and
    handed to :meth:`TopicBlock.update`.
    """
    novel = novel_hits(fresh, shown, block_tokens)
    return block.update(question, novel if limit is None else novel[:limit], commit=commit)


__all__ = [
    "DELTA_SHARE",
    "DELTA_TOP",
    "TOPIC_HISTORY_SHARE",
    "TOPIC_MARGIN",
    "TOPIC_SEARCH_OVER",
    "TOPIC_SHARE",
    "TopicBlock",
    "VectorEmbedder",
    "topic_layout",
    "topic_memories",
]
