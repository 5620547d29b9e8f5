"""``contextos compact`` from the shell: its exit status says whether anything was done,
and an unknown session is an error, not "nothing to do"."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from cli_support import reaped, run_cli


def _session_of_ten_turns(db: Path) -> None:
    for i in range(10):
        out = run_cli(
            "session", "add", "s1", f"Turn {i}: Maria moved to Lisbon in {2000 + i}.", db=db
        )
        assert out.returncode == 0, out.stderr


def test_a_compaction_that_did_its_work_succeeds_with_json(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    _session_of_ten_turns(db)
    out = run_cli("compact", "--session", "s1", "--budget", "100", "--force", "--json", db=db)
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["compacted"] is True and payload["raced"] is False


def test_compacting_an_unknown_session_is_an_error(tmp_path: Path) -> None:
    # It said "under the trigger threshold: nothing to do (use --force)" and exited 0,
    # even with --force, as if the session existed.
    db = tmp_path / "m.db"
    run_cli("session", "add", "s1", "hello", db=db)
    for extra in ([], ["--force"], ["--json"]):
        out = run_cli("compact", "--session", "nosuch", "--budget", "100", *extra, db=db)
        assert out.returncode == 1, out.stdout
        assert out.stdout == ""
        assert out.stderr.strip() == "error: no session 'nosuch' (or it has no turns yet)"


def test_forcing_a_compaction_with_nothing_to_compact_says_so(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    run_cli("session", "add", "s1", "hello", db=db)
    forced = run_cli("compact", "--session", "s1", "--budget", "100", "--force", db=db)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.strip() == "nothing can be compacted (only recent or pinned turns left)"
    plain = run_cli("compact", "--session", "s1", "--budget", "100", db=db)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == "under the trigger threshold: nothing to do (use --force)"


def test_a_budget_too_small_for_a_summary_names_what_it_needs_and_what_it_has(
    tmp_path: Path,
) -> None:
    """Was "(requested 5 tokens, available 1)" for ``--budget 1``: the user's 1 read as
    what was available and 5 as what they asked for (a review)."""
    db = tmp_path / "c.db"
    _session_of_ten_turns(db)
    out = run_cli(
        "compact", "--session", "s1", "--budget", "1", "--force", "--strategy", "summarize", db=db
    )
    assert out.returncode == 1, out.stderr
    assert "(needs 5 tokens, has 1)" in out.stderr, out.stderr


def test_a_ctrl_c_while_an_offload_waits_for_vectors_reports_the_compaction(
    tmp_path: Path,
) -> None:
    """After an offload has committed, ``compact`` waits for its archive's vectors (about
    a second while the model loads, ~3 s for a long session). A Ctrl-C there said
    "aborted", exit 130, with no report, though the turns were archived and the session
    compacted (a review). As ``add``: the report, then that the vectors come later,
    exit 0. A real SIGINT, sent once the report is printed, with the real default
    embedder (whose load is the wait)."""
    db = tmp_path / "m.db"
    _session_of_ten_turns(db)
    env = {k: v for k, v in os.environ.items() if k not in ("CONTEXTOS_EMBEDDER", "COLUMNS")}
    offload = ["compact", "--session", "s1", "--budget", "100", "--force", "--strategy", "offload"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "contextos", "--db", str(db), *offload],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    with reaped(proc):
        report = proc.stdout.readline()  # printed, and flushed, once the offload committed
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert "aborted" not in err and "Traceback" not in err, err
    assert "interrupted while computing vectors: what was written is stored" in err, err
    assert proc.returncode == 0, (report, out, err)
    assert report.startswith("offload: ") and "rotated" in report, (report, err)
    assert out == ""
    with closing(sqlite3.connect(db)) as con:
        [(archived,)] = con.execute("SELECT count(*) FROM memories").fetchall()
    assert archived > 0
