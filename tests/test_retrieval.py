"""Retrieval steps: ``search(min_score=...)``, a relevance floor on one scale for every
query, and the speaker step.

Real SQLite stores in tmp_path, the shipped HashEmbedder (bag of hashed words,
so cosines are predictable from shared words), the CLI in a subprocess.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from contextos.embed import Vectors
from contextos.memory import Memory, RetrievalConfig
from contextos.memory.render import embedding_text
from contextos.memory.retrieval import (
    Candidate,
    above_floor,
    conversational_rerank,
    hit_order,
    named_speaker,
    speaker_rerank,
    temporal_rerank,
)
from contextos.testing.embedders import HashEmbedder
from contextos.text.temporal import question_time_cues
from contextos.types import Hit, MemoryRecord, Scope
from test_cli_memory import run

FACTS = (
    "I am allergic to peanuts and cashews",
    "My dog Rex loves the beach",
    "We moved to Lisbon in March",
    "Peanut butter is banned at home",
)


def memory_with_facts(path: Path, **kwargs: object) -> Memory:
    m = Memory(path, embedder=HashEmbedder(), background_embedding=False, **kwargs)  # type: ignore[arg-type]
    for fact in FACTS:
        m.add(fact, user_id="ana")
    m.flush()
    return m


def test_relevance_is_the_cosine_of_query_and_memory(tmp_path: Path) -> None:
    emb = HashEmbedder()
    with memory_with_facts(tmp_path / "m.db") as m:
        hits = m.search("allergic to peanuts", user_id="ana", limit=4)
        assert len(hits) == 4
        query = emb.embed(["allergic to peanuts"])[0]
        for h in hits:
            expected = float(np.dot(query, emb.embed([embedding_text(h.record)])[0]))
            assert h.relevance == pytest.approx(expected, abs=1e-5)


def test_an_unrelated_query_returns_nothing_above_the_floor(tmp_path: Path) -> None:
    with memory_with_facts(tmp_path / "m.db") as m:
        unfloored = m.search("quantum chromodynamics lattice", user_id="ana")
        assert unfloored  # dense retrieval always ranks something first
        assert m.search("quantum chromodynamics lattice", user_id="ana", min_score=0.3) == []
        kept = m.search("allergic to peanuts", user_id="ana", min_score=0.3)
        assert [h.record.text for h in kept] == [FACTS[0]]


def test_the_floor_only_removes_hits_below_it(tmp_path: Path) -> None:
    with memory_with_facts(tmp_path / "m.db") as m:
        every = m.search("peanuts at home", user_id="ana", limit=4)
        for floor in (-1.0, 0.0, 0.2, 0.4, 1.0):
            kept = m.search("peanuts at home", user_id="ana", limit=4, min_score=floor)
            expected = [
                h.record.id for h in every if h.relevance is not None and h.relevance >= floor
            ]
            assert [h.record.id for h in kept] == expected
            assert all(h.relevance is not None and h.relevance >= floor for h in kept)


def test_the_floor_keeps_only_candidates_with_a_known_cosine() -> None:
    fused = [
        Candidate("a", 1.0, 1, 1, 0.6),
        Candidate("c", 0.9, 2, None),
        Candidate("b", 0.5, None, 2, 0.4),
    ]
    # "c" has no cosine (search reads it from its stored vector when it could pass): out.
    assert [c.id for c in above_floor(fused, 0.3)] == ["a", "b"]
    assert [c.id for c in above_floor(fused, 0.5)] == ["a"]


@pytest.mark.parametrize(
    ("value", "error"),
    [(1.5, ValueError), (-1.01, ValueError), ("0.3", TypeError), (True, TypeError)],
)
def test_bad_floors_are_refused(tmp_path: Path, value: object, error: type[Exception]) -> None:
    with memory_with_facts(tmp_path / "m.db") as m, pytest.raises(error, match="min_score"):
        m.search("peanuts", user_id="ana", min_score=value)  # type: ignore[arg-type]


def test_bm25_only_retrieval_has_no_cosine_to_compare(tmp_path: Path) -> None:
    with (
        memory_with_facts(tmp_path / "m.db", retrieval=RetrievalConfig(mode="bm25")) as m,
        pytest.raises(ValueError, match="dense"),
    ):
        m.search("peanuts", user_id="ana", min_score=0.2)


def test_cli_min_score(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    run(db, "add", "I am allergic to peanuts", "-u", "ana")
    run(db, "add", "my kid loves blue", "-u", "ana")
    hits = json.loads(run(db, "--json", "search", "allergic peanuts", "-u", "ana").stdout)
    assert len(hits) == 2
    out = run(db, "--json", "search", "allergic peanuts", "-u", "ana", "--min-score", "0.5")
    assert [h["text"] for h in json.loads(out.stdout)] == ["I am allergic to peanuts"]
    bad = run(db, "search", "peanuts", "-u", "ana", "--min-score", "3")
    assert bad.returncode != 0 and "min-score" in bad.stderr


def test_the_speaker_a_question_names() -> None:
    def hit(speaker: str) -> Hit:
        record = MemoryRecord(
            id=speaker,
            text="hi",
            scope=Scope(tenant="t", user_id="u"),
            metadata={"speaker": speaker},
        )
        return Hit(record, 1.0)

    hits = [hit("Caroline"), hit("Melanie"), hit("Jon Smith")]
    assert named_speaker("What does melanie do to relax?", hits) == "Melanie"
    assert named_speaker("When did Jon open his studio?", hits) == "Jon Smith"
    assert named_speaker("Did Caroline meet Melanie?", hits) is None  # two names
    assert named_speaker("What is Carolines job?", hits) is None  # whole words only
    ranked = speaker_rerank([hit("Caroline"), hit("Melanie")], "Melanie's dog?", 3.0)
    assert [(h.record.id, h.score) for h in ranked] == [("Melanie", 4.0), ("Caroline", 1.0)]


class SlowEmbedder(HashEmbedder):
    """A HashEmbedder that takes 50 ms a call, as a forward pass on a busy host can:
    the search then reads the best keyword hits while the query's embedding runs."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        time.sleep(0.05)
        return super().embed(texts)


def test_a_search_that_reads_keyword_hits_early_still_reads_every_fused_hit(
    tmp_path: Path,
) -> None:
    """25 memories match the query's word, 5 share none: the dense list ranks all 30 (the
    store holds no more), so all 30 are fused. Those read while the slow embedding ran
    (the best 20 keyword hits) and the rest read after fusion make one answer: every
    memory, each with the ranks and cosine fusion gave it, scores from the reranks."""
    m = Memory(
        tmp_path / "m.db",
        embedder=SlowEmbedder(),
        background_embedding=False,
        retrieval=RetrievalConfig(neighbour_weight=0, session_weight=0, temporal_weight=0),
    )
    for i in range(25):
        m.add(f"alpha note number {i}", user_id="u")
    for i in range(5):
        m.add(f"unrelated words here {i}", user_id="u")
    m.flush()
    try:
        hits = m.search("alpha", user_id="u", limit=30)
    finally:
        m.close()
    assert sorted(h.record.text for h in hits) == sorted(
        [f"alpha note number {i}" for i in range(25)]
        + [f"unrelated words here {i}" for i in range(5)]
    )
    assert all(h.dense_rank is not None and h.relevance is not None for h in hits)
    assert [h.lexical_rank is not None for h in hits].count(True) == 25
    assert hits == sorted(hits, key=hit_order)


def test_the_reranks_change_a_hits_score_and_nothing_else() -> None:
    """Each rerank rescores hits (``_rescored``); the ranks, cosine and token count each
    hit came with must survive all three, or ``min_score`` and the window lose them."""
    day = datetime(2023, 5, 8, tzinfo=UTC)
    hits = [
        Hit(
            MemoryRecord(
                f"m{i}",
                f"Mel went hiking yesterday, take {i}",
                Scope("t", "u", session_id="s1"),
                metadata={"speaker": "Mel", "seq": i},
                created_at=day,
            ),
            score=1.0 / (i + 1),
            lexical_rank=i + 1,
            dense_rank=i + 2,
            tokens=7 + i,
            relevance=0.5 - i / 10,
        )
        for i in range(3)
    ]
    cue = question_time_cues("When did Mel go hiking?", day)
    assert cue is not None
    for reranked in (
        speaker_rerank(hits, "When did Mel go hiking?", 3.0),
        temporal_rerank(hits, cue, 1.0),
        conversational_rerank(hits, RetrievalConfig()),
    ):
        assert {h.record.id: h.score for h in reranked} != {h.record.id: h.score for h in hits}
        assert {
            (h.record.id, h.lexical_rank, h.dense_rank, h.tokens, h.relevance) for h in reranked
        } == {(h.record.id, h.lexical_rank, h.dense_rank, h.tokens, h.relevance) for h in hits}


def test_relevance_never_leaves_the_range_of_a_cosine(tmp_path: Path) -> None:
    """A memory searched by its own text: float32 unit vectors gave 1.0000003 (a review),
    past the [-1, 1] that ``min_score`` is checked against."""
    texts = [f"note {i} about {'peanuts ' * i}and cashews at {i * 7} pm" for i in range(1, 40)]
    m = Memory(tmp_path / "m.db", embedder=HashEmbedder(dimensions=384), background_embedding=False)
    try:
        for text in texts:
            m.add(text, user_id="u")
        m.flush()
        seen = [h.relevance for t in texts for h in m.search(t, user_id="u", limit=3)]
    finally:
        m.close()
    assert seen and all(r is not None and -1.0 <= r <= 1.0 for r in seen), max(seen)


def test_a_memory_outside_sessions_is_scored_as_a_turn_alone_in_its_session() -> None:
    """Session turns gain from their session's best turns and their neighbours; a memory
    outside any session (a fact an inferring client stored, a plain ``add``) gained
    nothing, so it ranked under turns that only shared a session with stronger ones: a
    memory's own unique word ranked it 6th behind turns sharing no word with the query
    (a soak review, s56). It now counts as a session of its own: scored as a turn alone
    in its session, and above the turns of a session whose only strength is itself."""

    def hit(mid: str, score: float, session: str | None, seq: int | None) -> Hit:
        meta = {} if seq is None else {"seq": seq}
        record = MemoryRecord(mid, mid, Scope("t", "u", session_id=session), metadata=meta)
        return Hit(record, score=score, lexical_rank=None, dense_rank=None)

    hits = [
        hit("outside", 0.10, None, None),
        hit("alone", 0.10, "solo", 0),
        hit("pair-a", 0.09, "pair", 0),
        hit("pair-b", 0.02, "pair", 1),
    ]
    scored = {h.record.id: h.score for h in conversational_rerank(hits, RetrievalConfig())}
    assert scored["outside"] == pytest.approx(scored["alone"])
    assert scored["outside"] > scored["pair-a"]
