"""The lost-in-the-middle placement benchmark (skipped when the data is absent)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import LITM_DIR
from contextos.bench.litm import bm25_ranks, nq_examples, place, run_litm
from contextos.llm.tokens import CharEstimateTokenizer

pytestmark = pytest.mark.skipif(not LITM_DIR.exists(), reason=f"LITM data not at {LITM_DIR}")


def test_gold_ranked_first_or_second_always_lands_at_an_edge():
    rep = run_litm(LITM_DIR, limit=25)
    assert set(rep["datasets"]) >= {"kv-retrieval-140_keys", "nq-oracle-haystack-20"}
    for name, r in rep["datasets"].items():
        assert r["rank_le2_always_at_edge"], name
        assert r["gold_dropped"] == 0
        assert sum(r["slot_histogram"]) == r["examples"] == 25
        assert sum(r["rank_histogram"]) == 25
    assert rep["datasets"]["kv-retrieval-140_keys"]["edge_share"] >= 0.9
    assert "Lost in the Middle" in rep["why"]


def test_haystack_is_gold_among_other_gold_passages():
    examples = nq_examples(LITM_DIR / "nq-open-oracle.jsonl.gz", limit=3)
    for i, ex in enumerate(examples):
        assert len(ex.items) == 20 and ex.gold == i % 20
        assert len(set(ex.items)) == 20


def test_placement_of_a_weak_gold_is_in_the_middle():
    from contextos.bench.litm import Example

    items = tuple(f"passage about topic {i} and more words" for i in range(10))
    query = "topic 7"
    ranking = bm25_ranks(query, items)
    assert ranking[0] == 7
    weak = Example("nothing matches zzz", items, 4)
    rank, slot, placed = place(weak, CharEstimateTokenizer(), 100_000)
    assert placed == 10 and 1 <= slot <= 10


def test_cli_prints_reason_and_writes_plots(tmp_path):
    from contextos.cli.main import cli

    out = tmp_path / "litm.json"
    r = CliRunner().invoke(
        cli, ["bench", "litm", "--data", str(LITM_DIR), "--limit", "10", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "edge share" in r.output and "Lost in the Middle" in r.output
    data = json.loads(out.read_text())
    for name in data["datasets"]:
        assert (tmp_path / f"litm-{name}.png").exists()
