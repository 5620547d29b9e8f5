"""``bench locomo --cv``: leave-one-conversation-out over real LoCoMo conversations.

Two dev conversations in a real SQLite memory with the shipped HashEmbedder (the
protocol is under test here, not the embedder); each fold's choice and the pooled
held-out figure are recomputed independently from per-configuration rows.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from contextos.bench.locomo import cross_validate, cv_candidates, evaluate, ingest, recall_of
from contextos.bench.locomo_data import load_locomo
from contextos.memory import Memory, RetrievalConfig
from contextos.testing.embedders import HashEmbedder


def test_each_conversation_is_scored_with_constants_chosen_on_the_others(
    locomo_path: Path, tmp_path: Path
) -> None:
    convs = load_locomo(locomo_path)[:2]
    # With the HashEmbedder conv-26 prefers ``base`` and conv-30 a dense weight of 0.3,
    # so a fold that chose on its own conversation would pick differently. (``base``
    # is pinned: the protocol is under test, not today's defaults.)
    base = RetrievalConfig(rrf_k=20.0, dense_weight=0.6)
    candidates = {
        "default": base,
        "dense_weight=0.3": replace(base, dense_weight=0.3),
        "no context": replace(base, context_weight=0.0),
    }
    with Memory(tmp_path / "cv.db", embedder=HashEmbedder(), background_embedding=False) as m:
        for conv in convs:
            ingest(m, conv, [])
        report = cross_validate(m, convs, base, candidates=candidates)
        rows = {label: evaluate(m, convs, cfg) for label, cfg in candidates.items()}

    def recall(label: str, sample_id: str) -> float:
        return recall_of([r for r in rows[label] if r[0] == sample_id])

    for held, other in ((convs[0], convs[1]), (convs[1], convs[0])):
        best = max(candidates, key=lambda lb: recall(lb, other.sample_id))
        assert report["chosen"][held.sample_id] == best
    assert len(set(report["chosen"].values())) == 2  # the folds disagree: the test can tell
    pooled = [r for c in convs for r in rows[report["chosen"][c.sample_id]] if r[0] == c.sample_id]
    assert report["overall"]["recall@10"] == round(recall_of(pooled), 4)
    assert report["overall"]["n"] == len([r for r in pooled if r[1] in (1, 2, 3, 4)])
    assert report["candidates"] == {
        label: round(recall_of(r), 4) for label, r in sorted(rows.items())
    }


def test_the_grid_varies_one_constant_at_a_time() -> None:
    base = RetrievalConfig()
    grid = cv_candidates(base)
    assert grid["default"] == base
    for label, cfg in grid.items():
        changed = [k for k in base.__dataclass_fields__ if getattr(cfg, k) != getattr(base, k)]
        assert len(changed) == (0 if label == "default" else 1)
        if changed:
            assert label.startswith(changed[0] + "=")
