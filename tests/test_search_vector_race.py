"""A search while another process's embedding worker stores vectors.

A search ranks keyword hits that have no vector yet as if the dense retriever agreed
with BM25 (``fuse``); it asked which hits had no vector after its vector search. On
PostgreSQL each read sees the table as it is then: a memory updated through the server,
whose new vector the server's worker stored between those two reads, was in neither
group (never judged by the dense search, and "with a vector"). It kept its keyword term
alone and a search for its exact new text, in the app's process, missed it (the review
of session 17 saw it in soaks: `/work/notes/s17/review-cli/conc.py`).

Real SQLite files and PostgreSQL schemas; the store is the seam where the other
process's worker is made to land, once, right after the vector search.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from contextos.memory import Memory
from contextos.memory.embedding_worker import embed_pending
from contextos.store.base import Patch
from contextos.testing.embedders import HashEmbedder
from pg_support import two_stores

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
]


class WorkerLandsAfterTheVectorSearch:
    """A store whose next vector search, once ``armed``, is followed at once by another
    process's embedding worker storing the vectors it has pending (through ``other``, a
    second handle on the same storage): what a server's worker does in the milliseconds
    a search of the app takes."""

    def __init__(self, store: Any, other: Any) -> None:
        self._store, self._other = store, other
        self.armed = False
        self.landed = 0

    def vector_search(self, *args: Any, **kwargs: Any) -> Any:
        found = self._store.vector_search(*args, **kwargs)
        if self.armed:
            self.armed = False
            self.landed += embed_pending(self._other, HashEmbedder())
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_memory_updated_elsewhere_is_found_by_its_new_text_while_its_vector_lands(
    kind: str, tmp_path: Path
) -> None:
    rng = random.Random(7)
    with two_stores(kind, tmp_path) as (store, server):
        seam = WorkerLandsAfterTheVectorSearch(store, server)
        app = Memory(store=seam, embedder=HashEmbedder(), background_embedding=False)
        texts = [
            f"{' '.join(rng.sample(WORDS, 3))} note{n}z{rng.randrange(10**6)}" for n in range(40)
        ]
        ids = [app.add(text, user_id="u1")[0].id for text in texts]
        missed = []
        for n in range(8):
            memory_id = ids[n * 5]
            text = f"{' '.join(rng.sample(WORDS, 3))} fresh{n}z{rng.randrange(10**6)}"
            server.update(app.tenant, memory_id, Patch(text=text))  # its vector now pending
            seam.armed = True
            hits = app.search(text, user_id="u1", limit=5)
            if not any(h.record.id == memory_id and h.record.text == text for h in hits):
                missed.append(n)
        assert seam.landed == 8  # the worker stored each new vector mid-search
        app.close()
    assert missed == []
