"""``contextos bench online``: a LoCoMo slice streamed through a real server on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contextos.bench.locomo import score_question
from contextos.bench.locomo_data import LocomoQA, load_locomo
from contextos.bench.online import OnlineBenchConfig, hits_of, plan
from contextos.cli.main import main
from contextos.memory.render import render
from pg_support import connect, fresh_schema, pg_url

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


def test_questions_are_released_after_the_session_of_their_latest_evidence(
    locomo_path: Path,
) -> None:
    conv = load_locomo(locomo_path)[0]
    limit = 40
    turns = conv.turns[:limit]
    ((planned_conv, questions),) = plan([conv], limit)
    assert planned_conv is conv
    position = {t.dia_id: i for i, t in enumerate(turns)}
    in_slice = [
        qa
        for qa in conv.qa
        if qa.category in (1, 2, 3, 4) and qa.evidence and all(e in position for e in qa.evidence)
    ]
    assert [q.qa for q in questions] == in_slice and len(in_slice) > 5
    for q in questions:
        session = turns[max(position[e] for e in q.qa.evidence)].session
        assert turns[q.release].session == session  # inside that session ...
        assert q.release + 1 == len(turns) or turns[q.release + 1].session != session  # its end


def test_hits_are_scored_by_the_dia_id_the_server_returns_in_metadata() -> None:
    def result(dia: str, tokens: int) -> dict[str, object]:
        memory = {"id": dia, "text": "t", "metadata": {"dia_id": dia}, "provenance": []}
        return {
            "memory": memory,
            "score": 1.0,
            "lexical_rank": 1,
            "dense_rank": None,
            "tokens": tokens,
        }

    qa = LocomoQA("q", "a", ("D1:1", "D1:3"), 1)
    hits = hits_of([result("D1:1", 600), result("D1:2", 10), result("D1:3", 600)])
    scores = score_question(qa, hits)
    assert scores["recall@10"] == 1.0
    assert scores["recall@1000t"] == 0.5  # D1:3 does not fit after D1:1


def test_online_hits_render_as_the_library_renders_them() -> None:
    """The answer words of a served hit are read from its rendering, date and speaker
    included, as for an in-process hit."""
    memory = {
        "id": "m1",
        "text": "I went to Paris",
        "metadata": {"dia_id": "D1:1", "speaker": "Ann"},
        "provenance": [],
        "event_time": "2023-05-08T10:00:00+00:00",
    }
    (hit,) = hits_of(
        [{"memory": memory, "score": 1.0, "lexical_rank": 1, "dense_rank": 1, "tokens": 9}]
    )
    assert render(hit.record) == "[2023-05-08] Ann: I went to Paris"
    qa = LocomoQA("Where did Ann go, and when?", "Paris, 2023", ("D1:1",), 4)
    assert score_question(qa, [hit])["answer_words@500t"] == 1.0


def _run_slice(locomo_path: Path, out: Path, *extra: str) -> dict[str, Any]:
    """``bench online`` on the first 25 turns of one conversation (HashEmbedder server)."""
    main(
        [
            "bench",
            "online",
            "--data",
            str(locomo_path),
            "--conversations",
            "1",
            "--limit",
            "25",
            "--embedder",
            "hash",
            "--rate",
            "0",
            "--lag-every",
            "3",
            "--lag-timeout",
            "3",
            "--json",
            str(out),
            *extra,
        ]
    )
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def _check_report(report: dict[str, Any], locomo_path: Path) -> None:
    """The documented keys, and recall scored from the hits the server returned: with 25
    turns every record of the user is among the top 25 once embedded, so batch
    recall@25 is exactly 1."""
    for phase in ("online", "batch", "batch_same_turns"):
        assert {"recall@10", "recall@1000t"} <= set(report[phase])
        assert all(0.0 <= report[phase][k] <= 1.0 for k in ("recall@10", "recall@1000t"))
    assert {"p50", "p95"} <= set(report["vector_lag_ms"])
    assert {"add_p95", "search_p95"} <= set(report["latency_ms"])
    asked = len(plan(load_locomo(locomo_path)[:1], 25)[0][1])
    assert report["online"]["n"] == report["batch"]["n"] == report["questions"] == asked > 0
    assert report["batch_same_turns"]["n"] == asked
    assert report["turns"] == 25
    assert report["batch"]["recall@25"] == 1.0
    assert report["batch_same_turns"]["recall@25"] == 1.0  # the evidence is in its turns
    lag = report["vector_lag_ms"]
    assert lag["probed"] >= 1 and 0 <= lag["unseen"] <= lag["probed"]
    assert 0 < lag["p50"] <= lag["p95"] <= lag["timeout_ms"]
    assert 0 < report["latency_ms"]["add_p50"] <= report["latency_ms"]["add_p95"]
    assert 0 < report["latency_ms"]["search_p50"] <= report["latency_ms"]["search_p95"]


def test_bench_online_end_to_end_on_a_slice(locomo_path: Path, tmp_path: Path) -> None:
    _check_report(_run_slice(locomo_path, tmp_path / "online.json"), locomo_path)


@pytest.fixture
def pg_db() -> Iterator[tuple[str, str]]:
    with fresh_schema("online") as url_and_schema:
        yield url_and_schema


@pytest.mark.postgres
def test_bench_online_on_postgresql_leaves_no_memories(
    locomo_path: Path, tmp_path: Path, pg_db: tuple[str, str]
) -> None:
    url, schema = pg_db
    report = _run_slice(locomo_path, tmp_path / "online.json", "--store", url)
    _check_report(report, locomo_path)
    assert "***" in report["store"]  # the password never lands in the report
    with connect(pg_url(), schema) as conn:  # the caller's store: the run forgot its users
        assert conn.execute("SELECT count(*) FROM memories").fetchone() == (0,)


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="rate"):
        OnlineBenchConfig(rate=-1)
    with pytest.raises(ValueError, match="limit"):
        OnlineBenchConfig(limit=0)
    with pytest.raises(ValueError, match="store"):
        OnlineBenchConfig(store="")
