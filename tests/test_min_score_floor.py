"""``search(min_score=...)`` never returns a hit whose cosine with the query is below it.

Why: once more memories passed the floor than the vector search returns
(``RetrievalConfig.candidates``, 100), every keyword hit ranked beyond that depth was
kept with ``relevance=None``, since its cosine was unknown: a mem0 port's
``threshold=0.4`` became ``min_score=0.4`` and "coffee invoice 8812 overdue" (cosine
0.27) came back third for "what coffee does Alex like to drink?" (a review). Such a
hit's cosine is now read from its stored vector: it is kept when it passes, with its
relevance, and dropped when it does not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contextos import Memory
from contextos.store.base import Ranked, Store, Vector
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter

FLOOR = 0.35
QUESTION = "what coffee does alex drink"
#: Share "alex" and "drink" with the question: cosine at least 2/sqrt(20) = 0.45 (hashed
#: words, 1024 buckets: no collision lowers one).
ABOVE = [f"alex drink latte note{i}" for i in range(130)]
#: Shares only "coffee", the question's rarest word: keyword rank 1, cosine 0.22.
UNRELATED = "coffee invoice 8812 overdue"
#: Shares "coffee" and "alex": a keyword hit whose cosine, 2/sqrt(25) = 0.4, passes the
#: floor but ranks below the 130 above, beyond the vector search's depth of 100.
RELATED = "coffee alex paid the bill"


def _cosine_of(embedder: HashEmbedder, query: str, text: str) -> float:
    vectors = embedder.embed([query, text])
    return float(np.dot(vectors[0], vectors[1]))


def _cosine(embedder: HashEmbedder, text: str) -> float:
    return _cosine_of(embedder, QUESTION, text)


def test_a_keyword_hit_beyond_the_vector_depth_is_held_to_the_floor(store: Store) -> None:
    embedder = HashEmbedder(1024)
    # What the test rests on: the hashed words give the cosines named above.
    lowest_above = min(_cosine(embedder, t) for t in ABOVE)
    assert _cosine(embedder, UNRELATED) < FLOOR < _cosine(embedder, RELATED) < lowest_above
    with Memory(store=store, embedder=embedder, background_embedding=False) as m:
        m.add([*ABOVE, UNRELATED, RELATED], user_id="alex")
        hits = m.search(QUESTION, user_id="alex", limit=100, min_score=FLOOR)
    texts = {h.record.text: h for h in hits}
    assert UNRELATED not in texts
    assert [h for h in hits if h.relevance is None or h.relevance < FLOOR] == []
    # Not dropped for want of a cosine: it passes, and says by how much.
    related = texts[RELATED]
    assert related.dense_rank is None and related.lexical_rank is not None
    assert related.relevance is not None
    assert abs(related.relevance - _cosine(embedder, RELATED)) < 1e-5


class ApproximateVectorSearch(SQLiteStore):
    """A store whose vector search misses its nearest hit, as an approximate index may:
    PostgreSQL's HNSW missed a user's best match (cosine 0.82) when another user had
    stored copies of that user's texts (a review; reproduced only at scale, so this
    store stands in for it here)."""

    def vector_search(self, flt: Filter, vector: Vector, *, limit: int) -> list[Ranked]:
        return super().vector_search(flt, vector, limit=limit + 1)[1:]


def test_a_keyword_hit_an_approximate_vector_search_missed_is_judged_by_its_vector(
    tmp_path: Path,
) -> None:
    embedder = HashEmbedder(1024)
    fact = "alex likes to drink coffee with oat milk"
    others = [f"note {i} about the weather" for i in range(20)]
    assert _cosine(embedder, fact) > FLOOR > max(_cosine(embedder, t) for t in others)
    store = ApproximateVectorSearch(tmp_path / "m.db")
    with Memory(store=store, embedder=embedder, background_embedding=False) as m:
        m.add([fact, *others], user_id="alex")
        missed = m.search(QUESTION, user_id="alex")
        # What the test rests on: the vector search did not return the fact.
        assert [(h.lexical_rank, h.dense_rank) for h in missed if h.record.text == fact] == [
            (1, None)
        ]
        hits = m.search(QUESTION, user_id="alex", min_score=FLOOR)
    assert [(h.record.text, round(h.relevance or 0, 5)) for h in hits] == [
        (fact, round(_cosine(embedder, fact), 5))
    ]
