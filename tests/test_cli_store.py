"""``contextos status``, ``vacuum`` and ``delete --purge`` mirror the Memory API."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cli_support import run_cli
from contextos.memory import Memory
from contextos.testing.embedders import FailingEmbedder


def run(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, db=db, env={"COLUMNS": "200"})


def test_status_lists_quarantined_records_and_vacuum_runs(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Memory(db, embedder=FailingEmbedder("POISON")) as m:
        [bad] = m.add("a POISON text", user_id="ana")
        m.add("a fine text", user_id="ana")
        m.flush()
    report = json.loads(run(db, "--json", "status").stdout)
    assert report["pending"] == 0
    assert [q["id"] for q in report["quarantined"]] == [bad.id]
    assert "POISON" in report["quarantined"][0]["error"]
    human = run(db, "status")
    assert "quarantined (embedding failed): 1" in human.stdout
    assert run(db, "vacuum").returncode == 0


def test_status_counts_every_quarantined_record_and_prints_whole_ids(tmp_path: Path) -> None:
    """It listed the oldest 100 and said "quarantined: 100" for 150; and at 80
    columns the ids were cut with an ellipsis, so none could be given to `update`."""
    db = tmp_path / "m.db"
    with Memory(db, embedder=FailingEmbedder("POISON")) as m:
        bad = m.add([f"a POISON text {n}" for n in range(150)], user_id="ana")
        m.flush()
    report = json.loads(run(db, "--json", "status").stdout)
    assert report["quarantined_total"] == 150
    assert len(report["quarantined"]) == 100
    narrow = run_cli("status", db=db, env={"COLUMNS": "80"})
    assert narrow.returncode == 0, narrow.stderr
    assert "quarantined (embedding failed): 150 (the oldest 100 listed)" in narrow.stdout
    listed = [r.id for r in bad if r.id in narrow.stdout]
    assert len(listed) == 100, narrow.stdout[:2000]


def test_delete_purge_removes_the_text_from_history(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    mid = json.loads(run(db, "add", "qzcliprivate note", "-u", "ana", "--json").stdout)[0]["id"]
    out = json.loads(run(db, "delete", mid, "--purge", "--json").stdout)
    assert out == {"deleted": mid, "purged": True}
    history = json.loads(run(db, "history", mid, "--json").stdout)
    assert [e["event"] for e in history] == ["ADD", "DELETE"]
    assert all(e["old_text"] is None and e["new_text"] is None for e in history)
    assert b"qzcliprivate" not in db.read_bytes()
