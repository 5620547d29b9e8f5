"""Read-your-writes by keyword while a memory's vector is still being computed.

``Memory.add`` returns before the background worker embeds what it wrote, and promises
the memory is searchable by keyword at once. In a long-lived Memory of facts
(``FACT_RETRIEVAL``: dense weight 1.5, k=20) a fact just added, the only match of its
word, scored its BM25 term alone (1/21) and ranked below the first eleven embedded facts
the dense side ranked (each at least 1.5/31): every add after the tenth missed its own
keyword until the worker caught up. The retriever now gives a keyword hit with no vector
the dense term of its lexical rank (``retrieval.fuse``); a hit that has a vector but
ranks beyond the dense list's depth gets nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contextos.embed import Vectors, normalize
from contextos.memory import Memory
from contextos.memory.retrieval import FACT_RETRIEVAL, RetrievalConfig
from contextos.memory.turn_vectors import embed_records
from contextos.testing.embedders import FailingEmbedder, HashEmbedder
from pg_support import memory_on

BOTH = pytest.mark.parametrize("kind", ["sqlite", "postgres"])


class HeldBatches(HashEmbedder):
    """Answers queries (``embed``) at once; the background worker's batches
    (``embed_batch``) wait while ``held``: a slow embedding API behind the adds."""

    def __init__(self) -> None:
        super().__init__()
        self._open = threading.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        self._open.wait(timeout=60)
        return self.embed(texts)


@contextmanager
def open_memory(kind: str, tmp_path: Path, **kwargs: Any) -> Iterator[Memory]:
    """A long-lived Memory (background worker) on a SQLite file or a fresh PG schema."""
    with memory_on(kind, tmp_path, **kwargs) as m:
        yield m


def _adopted(n: int) -> dict[str, str]:
    return {"role": "user", "name": "Ana", "content": f"I adopted a zebra{n}x named Rex{n}."}


@BOTH
def test_a_fact_just_added_is_the_first_hit_for_its_word_before_it_is_embedded(
    kind: str, tmp_path: Path
) -> None:
    embedder = HeldBatches()
    with open_memory(kind, tmp_path, embedder=embedder, retrieval=FACT_RETRIEVAL) as m:
        for n in range(12):
            m.add(_adopted(n), user_id="ana", infer=True)
        assert m.flush(timeout=30)
        embedder.hold()
        try:
            new = m.add(_adopted(99), user_id="ana", infer=True)
            assert [r.text for r in new] == ["Ana adopted a zebra99x named Rex99."]
            assert m.embedding_status().pending == 1  # its vector is still being made
            hits = m.search("zebra99x", user_id="ana")
            assert hits[0].record.id == new[0].id, [h.record.text for h in hits]
            assert (hits[0].lexical_rank, hits[0].dense_rank) == (1, None)
        finally:
            embedder.release()
        assert m.flush(timeout=30)
        hits = m.search("zebra99x", user_id="ana")
        assert hits[0].record.id == new[0].id
        assert hits[0].dense_rank is not None  # ranked by its own vector now


@BOTH
def test_a_quarantined_memory_is_still_the_first_hit_for_its_word(
    kind: str, tmp_path: Path
) -> None:
    embedder = FailingEmbedder(poison="Rex99")  # the query embeds
    with open_memory(kind, tmp_path, embedder=embedder, retrieval=FACT_RETRIEVAL) as m:
        for n in range(12):
            m.add(_adopted(n), user_id="ana", infer=True)
        new = m.add(_adopted(99), user_id="ana", infer=True)
        assert m.flush(timeout=30)
        assert [q.id for q in m.embedding_status().quarantined] == [new[0].id]
        hits = m.search("zebra99x", user_id="ana")
        assert hits[0].record.id == new[0].id, [h.record.text for h in hits]


def _same_vector_words(word: str, n: int) -> list[str]:
    """``n`` words the HashEmbedder gives exactly ``word``'s vector (one hashed bucket,
    same sign): memories of one such word are as near a query of ``word`` as can be."""
    embedder = HashEmbedder()
    target = embedder.embed([word])[0]
    found: list[str] = []
    i = 0
    while len(found) < n:
        candidate = f"w{i}"
        if np.array_equal(embedder.embed([candidate])[0], target):
            found.append(candidate)
        i += 1
    return found


@BOTH
def test_an_embedded_keyword_hit_beyond_the_dense_depth_gets_no_dense_term(
    kind: str, tmp_path: Path
) -> None:
    """A hit with a vector that the dense side ranked below its depth was judged by it:
    it keeps its keyword term alone (only a hit with no vector is given one). The query
    names a rare word, not an identifier: a hit holding an identifier the query names
    ("zebra99x" reads as one) keeps the dense term of its keyword rank, because an
    embedding model cannot tell codes apart (tests/test_search_identifiers.py)."""
    cfg = RetrievalConfig(candidates=3)  # the dense list holds the 3 nearest
    with open_memory(kind, tmp_path, embedder=HashEmbedder(), retrieval=cfg) as m:
        nearer = _same_vector_words("zebraqx", 6)
        for word in nearer:
            m.add(word, user_id="ana")
        far = m.add(
            "the ledger lists zebraqx among invoices receipts payroll audits and taxes",
            user_id="ana",
        )[0]
        assert m.flush(timeout=30)
        assert m.embedding_status().pending == 0
        hits = {h.record.text: h for h in m.search("zebraqx", user_id="ana", limit=3)}
        assert sorted(h.dense_rank or 0 for t, h in hits.items() if t in nearer) == [1, 2]
        hit = hits[far.text]
        assert (hit.lexical_rank, hit.dense_rank) == (1, None)
        # Its keyword term alone, as a memory outside any session counts it (a session of
        # its own: conversational_rerank).
        keyword_term = cfg.lexical_weight / (cfg.rrf_k + 1)
        assert hit.score == pytest.approx(keyword_term * (1 + cfg.session_weight))


@BOTH
def test_a_floor_judges_a_memory_not_yet_embedded_by_the_vector_it_will_get(
    kind: str, tmp_path: Path
) -> None:
    """``search(min_score=...)`` compares cosines, and a memory whose vector was still
    being made had none: a fact added a moment before was dropped by any floor. Its
    cosine now comes from the vector the worker will store, so it passes or fails the
    floor as it will once embedded."""
    embedder = HeldBatches()
    with open_memory(kind, tmp_path, embedder=embedder) as m:
        for n in range(12):
            m.add(_adopted(n), user_id="ana")
        assert m.flush(timeout=30)
        embedder.hold()
        try:
            near = m.add("zebra99x", user_id="ana")[0]
            far = m.add(
                "the ledger lists zebra99x among invoices receipts payroll audits and taxes",
                user_id="ana",
            )[0]
            assert m.embedding_status().pending == 2
            pending = {h.record.id: h for h in m.search("zebra99x", user_id="ana", min_score=0.5)}
        finally:
            embedder.release()
        assert m.flush(timeout=30)
        embedded = {h.record.id: h for h in m.search("zebra99x", user_id="ana")}
        assert embedded[near.id].relevance == pytest.approx(1.0, abs=1e-5)
        assert embedded[far.id].relevance is not None and embedded[far.id].relevance < 0.5
        assert list(pending) == [near.id]
        assert pending[near.id].relevance == pytest.approx(embedded[near.id].relevance, abs=1e-5)


class PoisonHeld(HeldBatches):
    """``HeldBatches`` that also refuses any batch holding "kaboom" (queries too)."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        if any("kaboom" in t for t in texts):
            raise ValueError("cannot embed kaboom")
        return super().embed(texts)


@BOTH
def test_a_record_the_embedder_refuses_costs_no_other_its_floor_cosine(
    kind: str, tmp_path: Path
) -> None:
    """The floor's cosines of the keyword hits without a vector were computed in one
    batch: a quarantined record among them failed it, and the memory just added was
    dropped by the floor again. Each is now embedded alone when the batch fails."""
    embedder = PoisonHeld()
    with open_memory(kind, tmp_path, embedder=embedder) as m:
        for n in range(12):
            m.add(_adopted(n), user_id="ana")
        refused = m.add("kaboom zebra99x", user_id="ana")[0]
        assert m.flush(timeout=30)
        assert [q.id for q in m.embedding_status().quarantined] == [refused.id]
        embedder.hold()
        try:
            near = m.add("zebra99x", user_id="ana")[0]
            hits = m.search("zebra99x", user_id="ana", min_score=0.5)
        finally:
            embedder.release()
        assert near.id in [h.record.id for h in hits]
        assert refused.id not in [h.record.id for h in hits]  # no cosine: dropped by the floor


def _floor_cosine(m: Memory, embedder: HashEmbedder, record_id: str, query: str) -> float:
    """The query's cosine with the vector the worker stores for the memory as it is now."""
    record = m.get(record_id)
    assert record is not None
    vector = normalize(embed_records(embedder.embed, [record]))[0]
    return float(vector @ embedder.embed([query])[0])


@BOTH
def test_a_vector_a_floor_search_made_is_not_used_once_its_memory_changes(
    kind: str, tmp_path: Path
) -> None:
    """A floor search keeps the vector it made for a memory still waiting for its own
    (``turn_vectors.KEPT``), found again by the memory as stored, not by its extracted
    facts (review s41: that extraction cost seconds per search). An edit of its text,
    then of its speaker, while it still waits: each later search, and the worker, use
    the vector of the memory as edited, never the one kept before."""
    embedder = HeldBatches()
    with open_memory(kind, tmp_path, embedder=embedder) as m:
        embedder.hold()
        try:
            turn = m.add(
                {"role": "user", "name": "Ana", "content": "zebra99x"},
                user_id="ana",
                session_id="s1",
            )[0]

            def judged() -> list[tuple[str, float | None]]:
                hits = m.search("zebra99x", user_id="ana", min_score=-1.0)
                return [(h.record.id, h.relevance) for h in hits]

            first = judged()  # made and kept
            again = judged()  # found kept
            m.update(turn.id, "the ledger lists zebra99x among invoices receipts and taxes")
            edited, edited_cosine = judged(), _floor_cosine(m, embedder, turn.id, "zebra99x")
            renamed_meta = {**(m.get(turn.id) or turn).metadata, "speaker": "Zebra99x"}
            m.update(turn.id, metadata=renamed_meta)
            renamed, renamed_cosine = judged(), _floor_cosine(m, embedder, turn.id, "zebra99x")
            assert m.embedding_status().pending == 1
        finally:
            embedder.release()
        assert m.flush(timeout=30)
        stored = judged()
    assert first == again and first[0][1] == pytest.approx(1 / 2**0.5, abs=1e-5)
    assert edited_cosine < 0.5 < renamed_cosine  # each edit moved the vector
    assert [hit for hit, _ in edited + renamed + stored] == [turn.id] * 3
    assert edited[0][1] == pytest.approx(edited_cosine, abs=1e-5)
    assert renamed[0][1] == pytest.approx(renamed_cosine, abs=1e-5)
    assert stored[0][1] == pytest.approx(renamed_cosine, abs=1e-5)
