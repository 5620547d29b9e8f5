"""bench locomo and bench scale produce reports of the documented shape (small runs)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from contextos.bench.locomo import run_locomo, score_question
from contextos.bench.locomo_data import LocomoQA, normalise_evidence
from contextos.bench.scale import measure_locomo_embed_rate, run_scale
from contextos.cli.bench_cmds import KEYS as TABLE_KEYS
from contextos.cli.main import cli
from contextos.embed import Vectors
from contextos.testing.embedders import HashEmbedder
from contextos.types import Hit, MemoryRecord

#: What the report must carry: every column `contextos bench locomo` prints.
KEYS = set(TABLE_KEYS)


def test_evidence_ids_are_normalised() -> None:
    assert normalise_evidence(["D8:6; D9:17", "D:11:26", "D", "D30:05"]) == [
        "D8:6",
        "D9:17",
        "D11:26",
        "D30:5",
    ]


def _hit(dia: str, tokens: int) -> Hit:
    return Hit(MemoryRecord(id=dia, text=dia, provenance=(dia,)), 1.0, tokens=tokens)


def test_score_question_counts_recall_by_rank_and_tokens() -> None:
    qa = LocomoQA("q", "a", ("D1:1", "D1:5"), 1)
    hits = [
        _hit("D1:2", 300),
        _hit("D1:1", 300),
        *[_hit(f"D2:{i}", 10) for i in range(20)],
        _hit("D1:5", 10),
    ]
    scores = score_question(qa, hits)
    assert scores["recall@5"] == 0.5 and scores["recall@25"] == 1.0
    assert (
        scores["recall@500t"] == 0.0
    )  # D1:1 does not fit after D1:2; the small ones fill the rest
    assert scores["recall@1000t"] == 1.0
    assert scores["tokens@10"] == 300 + 300 + 8 * 10


def test_answer_words_count_what_the_packed_renderings_say() -> None:
    """Answer words are read from the rendered hits inside each budget: a hit that
    stands for the evidence but does not say the answer does not count, and one
    past the budget does not either."""
    when = datetime(2023, 5, 8, tzinfo=UTC)

    def hit(dia: str, text: str, tokens: int) -> Hit:
        record = MemoryRecord(id=dia, text=text, provenance=(dia,), event_time=when)
        return Hit(record, 1.0, tokens=tokens)

    qa = LocomoQA("Where did Ann go?", "the Louvre in Paris", ("D1:1",), 4)
    scores = score_question(
        qa, [hit("D1:1", "Ann went to a museum", 400), hit("D1:9", "The Louvre, lovely", 400)]
    )
    assert scores["recall@500t"] == 1.0
    assert scores["answer_words@500t"] == 0.0  # the evidence hit does not name the place
    assert scores["answer_words@1000t"] == 0.5  # "louvre" from the second hit, no "paris"
    # The rendered date "[2023-05-08]" says "8 May 2023", as LoCoMo writes its answers.
    dated = LocomoQA("When?", "8 May 2023", ("D1:1",), 2)
    assert score_question(dated, [hit("D1:1", "x", 10)])["answer_words@500t"] == 1.0
    # Every word of a long memory counts (query_terms stops at 64 for a search).
    long = " ".join(f"filler{i}" for i in range(70)) + " and then Paris"
    assert score_question(qa, [hit("D1:1", long, 10)])["answer_words@500t"] == 0.5


def test_locomo_report_shape(locomo_path: Path, tmp_path: Path) -> None:
    report = run_locomo(locomo_path, embedder=HashEmbedder(), conversations=1, workdir=tmp_path)
    assert set(report["overall"]) >= KEYS and report["overall"]["n"] > 100
    assert set(report["by_category"]) == {"1", "2", "3", "4", "5"}
    assert set(report["baselines"]) == {"bm25", "dense"}
    assert {"search_p50", "search_p95", "ingest_per_turn"} <= set(report["latency_ms"])
    assert report["peak_rss_mb"] > 0
    # retrieval is far from random even with the hash embedder: BM25 carries it
    assert report["overall"]["recall@25"] > 0.5


def test_scale_report_shape(tmp_path: Path) -> None:
    report = run_scale(
        300, checkpoints=(100,), queries=5, workdir=tmp_path, embedder=HashEmbedder()
    )
    rows = report["results"]
    assert [r["n"] for r in rows] == [100, 300]
    for r in rows:
        assert {
            "n",
            "add_p95_ms",
            "embed_per_s",
            "search_p50_ms",
            "search_p95_ms",
            "first_search_max_ms",
            "db_mb",
        } <= set(r)
        # every record has exactly one vector, real or stand-in, counted once
        assert r["real_vectors"] + r["stand_in_vectors"] == r["records"] >= r["n"]
        assert r["real_vectors"] >= 0 and r["stand_in_vectors"] >= 0
        assert 0 < r["search_cpu_p50_ms"] <= r["search_cpu_p95_ms"]
    assert rows[1]["db_mb"] >= rows[0]["db_mb"]
    for key in ("query_embed_ms", "query_embed_cpu_ms", "embed_per_s", "embed_per_cpu_s"):
        assert report[key] > 0 and rows[0][key] == report[key], key


def test_scale_times_no_question_twice(tmp_path: Path) -> None:
    """The retriever keeps the vectors of the queries it embedded (MiniLM's
    ``query_cache``), so a question searched again would be timed without its forward
    pass: every timed search, the users' first searches too, asks a new one."""
    embedder = _Recording()
    run_scale(300, checkpoints=(100,), queries=40, workdir=tmp_path, embedder=embedder)
    questions = [t for t in embedder.texts if t.startswith("When did ") and t.endswith("?")]
    assert len(questions) == 1 + 200 + 2 * 40  # model load, query timings, two checkpoints
    warm_ups = [t for t in embedder.texts if t.startswith("warm up the indexes")]
    assert len(warm_ups) == 2 * 10  # each user's first search at each checkpoint
    assert len(set(questions + warm_ups)) == len(questions) + len(warm_ups)


@pytest.mark.parametrize("missing", ["/no/such/locomo.json"])
def test_missing_data_is_a_clear_error(missing: str) -> None:
    with pytest.raises(FileNotFoundError, match="--data"):
        run_locomo(missing, embedder=HashEmbedder())


class _Recording(HashEmbedder):
    """The deterministic test embedder, keeping every text it was asked to embed."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.texts.extend(texts)
        return super().embed(texts)


def _locomo_file(tmp_path: Path) -> Path:
    """A two-session conversation in LoCoMo's JSON format (written here, not copied)."""

    def turns(session: int, lines: list[tuple[str, str]]) -> list[dict[str, str]]:
        return [
            {"speaker": who, "dia_id": f"D{session}:{k + 1}", "text": text}
            for k, (who, text) in enumerate(lines)
        ]

    conversation = {
        "speaker_a": "Ann",
        "speaker_b": "Bob",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": turns(1, [("Ann", "I adopted a puppy named Rex yesterday!"), ("Bob", "Wow!")]),
        "session_2_date_time": "10:00 am on 20 May, 2023",
        "session_2": turns(2, [("Bob", "I ran my first marathon last Sunday.")]),
    }
    path = tmp_path / "tiny-locomo.json"
    path.write_text(json.dumps([{"sample_id": "c1", "conversation": conversation, "qa": []}]))
    return path


def test_embedding_rate_on_locomo_turns_embeds_them_as_stored(tmp_path: Path) -> None:
    embedder = _Recording()
    rate = measure_locomo_embed_rate(embedder, _locomo_file(tmp_path), batch=2)
    assert rate["locomo_embed_per_s"] > 0 and rate["locomo_embed_per_cpu_s"] > 0
    # Each turn is embedded through the worker's path: with its speaker, and a turn
    # that states a fact also gets that fact's own vector (more texts than turns).
    turns = [t for t in embedder.texts if "puppy" in t or "marathon" in t]
    assert any("Ann" in t for t in turns) and any("Bob" in t for t in turns)
    assert len(embedder.texts) > 3 + 2  # three turns (the first batch twice) and facts


def test_embedding_rate_on_locomo_turns_is_skipped_without_the_file(tmp_path: Path) -> None:
    rate = measure_locomo_embed_rate(HashEmbedder(), tmp_path / "absent.json")
    assert set(rate) == {"locomo_embed_skipped"}
    assert "--data" in rate["locomo_embed_skipped"]


def test_bench_scale_cli_reports_the_locomo_rate(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    args = ["bench", "scale", "--n", "100", "--queries", "2", "--embedder", "hash"]
    result = CliRunner().invoke(
        cli, [*args, "--data", str(_locomo_file(tmp_path)), "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "LoCoMo turns" in result.output
    assert json.loads(out.read_text())["locomo_embed_per_s"] > 0


def test_the_locomo_rate_samples_every_conversation(tmp_path: Path) -> None:
    """The turns timed are spread over the whole file: with more turns than are
    timed, the last conversation is sampled too (it was once cut off)."""
    path = _locomo_file(tmp_path)
    data = json.loads(path.read_text())
    second = json.loads(json.dumps(data[0]))
    second["sample_id"] = "c2"
    second["conversation"]["session_2"][0]["text"] = "Bob baked bread on Sunday."
    path.write_text(json.dumps([data[0], second]))
    embedder = _Recording()
    measure_locomo_embed_rate(embedder, path, texts=4, batch=2)
    assert any("bread" in t for t in embedder.texts)
