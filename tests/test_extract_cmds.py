"""`contextos extract FILE` and `contextos bench extract`, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import LOCOMO, tiny_locomo
from contextos.cli.main import cli


def test_extract_plain_lines(tmp_path: Path) -> None:
    chat = tmp_path / "chat.txt"
    chat.write_text(
        "Caroline: Hey Mel! I went to a support group yesterday.\nMelanie: Wow, that's great!\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        cli, ["extract", str(chat), "--session-time", "1:56 pm on 8 May, 2023"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        "[episodic 2023-05-07] Caroline went to a support group on 7 May 2023.  (1)"
    )


def test_extract_json_messages_as_json(tmp_path: Path) -> None:
    chat = tmp_path / "chat.json"
    chat.write_text(
        json.dumps(
            {
                "session_time": "2023-05-08T13:56:00",
                "messages": [
                    {
                        "role": "user",
                        "name": "Ann",
                        "content": "I moved to Berlin last month.",
                        "metadata": {"dia_id": "D1:1"},
                    },
                    {
                        "role": "user",
                        "name": "Bob",
                        "content": "Thanks!",
                        "metadata": {"dia_id": "D1:2"},
                    },
                ],
            }
        ),
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["extract", str(chat), "--json"])
    assert result.exit_code == 0, result.output
    [cand] = json.loads(result.output)
    assert cand["text"] == "Ann moved to Berlin in April 2023."
    assert cand["provenance"] == ["D1:1"]
    assert cand["event_time"] == "2023-04-01T00:00:00"


def test_extract_rejects_a_missing_file_and_a_bad_time(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["extract", str(tmp_path / "nope.txt")]).exit_code == 2
    chat = tmp_path / "c.txt"
    chat.write_text("Ann: I ran yesterday.", encoding="utf-8")
    bad = runner.invoke(cli, ["extract", str(chat), "--session-time", "someday"])
    assert bad.exit_code == 2 and "cannot read the time" in bad.output


def test_bench_extract_on_a_small_locomo_format_file(tmp_path: Path) -> None:
    path = tiny_locomo(tmp_path)
    result = CliRunner().invoke(
        cli, ["bench", "extract", "--data", str(path), "--repeat", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["turns"], out["sessions"], out["candidates"]) == (3, 1, 2)
    assert out["turns_per_second"] > 0
    assert 0 < out["memory_tokens"] < out["raw_tokens"]
    assert out["by_type"] == {"episodic": 2}
    assert out["turns_with_memory"] == pytest.approx(1 / 3, abs=1e-3)
    assert out["evidence_coverage"] == pytest.approx(1 / 3, abs=1e-3)


def test_bench_extract_rejects_a_file_that_is_not_locomo(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"hello": 1}', encoding="utf-8")
    result = CliRunner().invoke(cli, ["bench", "extract", "--data", str(path)])
    assert result.exit_code == 1 and "is not a LoCoMo file" in result.output


@pytest.mark.skipif(not LOCOMO.is_file(), reason="LoCoMo dev split not present")
def test_bench_extract_default_path_human_output() -> None:
    result = CliRunner().invoke(cli, ["bench", "extract", "--limit", "2", "--repeat", "1"])
    assert result.exit_code == 0, result.output
    assert "turns/s" in result.output and "tokens vs raw" in result.output


def test_bench_extract_reports_progress(tmp_path: Path) -> None:
    """A rich progress bar on a terminal: every turn of every pass is counted."""
    from contextos.bench.extract_speed import load_locomo_sessions, run_extract_bench

    sessions = load_locomo_sessions(str(tiny_locomo(tmp_path)))
    seen: list[int] = []
    run_extract_bench(sessions, repeat=2, progress=seen.append)
    assert sum(seen) == 2 * 3 and len(seen) == 2 * len(sessions)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")},
        "FORCE_COLOR": "1",
        "COLUMNS": "120",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "contextos.cli", "bench", "extract"]
        + ["--data", str(tmp_path / "tiny.json"), "--repeat", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "extract (2 passes)" in proc.stderr and "6/6" in proc.stderr
