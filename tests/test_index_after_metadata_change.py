"""A vector dropped by a metadata change leaves a long-lived process's index at once.

A turn's vector embeds its speaker and image caption (``memory.render.embedding_text``),
so ``update(metadata=...)`` that changes them drops the vector and queues the turn
again. SQLite's in-process index learns what to drop from ``index_log``, whose trigger
watches text and times only: the process that had searched before kept serving the
old vector (the old speaker's name found the turn) for as long as the embedder was
down, while a fresh process, or PostgreSQL, found nothing. Both backends, one rule.
"""

from __future__ import annotations

from collections.abc import Sequence

from contextos.embed import Vectors
from contextos.memory import Memory
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder


class DownForBatches(HashEmbedder):
    """Answers queries (``embed``) but, once ``down``, not the background batches
    (``embed_batch``): a remote embedding API failing between a store's writes."""

    down = False

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        if self.down:
            raise ConnectionError("503 from the embedding API")
        return self.embed(texts)


def vector_hits(memory: Memory, query: str) -> list[str | None]:
    """The speakers of the hits whose vector is near ``query``'s."""
    hits = memory.search(query, user_id="u", min_score=0.3)
    return [h.record.metadata.get("speaker") for h in hits if h.dense_rank is not None]


def test_a_speaker_change_drops_the_old_vector_from_a_searching_process(store: Store) -> None:
    embedder = DownForBatches()
    memory = Memory(store=store, embedder=embedder, background_embedding=False)
    message = {"role": "user", "content": "I keep bees on the roof", "name": "Zorblatt"}
    turn = memory.add(message, user_id="u", session_id="s")[0]
    assert vector_hits(memory, "Zorblatt") == ["Zorblatt"]  # the index is loaded now

    embedder.down = True
    memory.update(turn.id, metadata={"speaker": "Quentin"})
    assert memory.embedding_status().pending == 1  # no new vector while it is down
    assert vector_hits(memory, "Zorblatt") == []

    embedder.down = False
    assert memory.flush()
    assert vector_hits(memory, "Quentin") == ["Quentin"]
    assert vector_hits(memory, "Zorblatt") == []
