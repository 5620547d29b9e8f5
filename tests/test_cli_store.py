"""``contextos status``, ``vacuum`` and ``delete --purge`` mirror the Memory API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cli_support import run_cli
from contextos.memory import Memory
from contextos.testing.embedders import FailingEmbedder

#: Adds three memories of tenant acme and ends before any is embedded.
STOPPED_WRITER = """
import os, sys
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
m = Memory(sys.argv[1], tenant="acme", embedder=HashEmbedder())
m.add(["one", "two", "three"], user_id="ana")
os._exit(0)
"""


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


def test_vacuum_refuses_a_database_that_does_not_exist(tmp_path: Path) -> None:
    """On a mistyped path it noted "no database", then said "vacuumed" and exited 0
    (``{"vacuumed": true}`` with --json): a script vacuuming after its purges was told
    the bytes were gone (a review). One error line, exit 1, as ``get`` on that path."""
    missing = tmp_path / "mistyped.db"
    for extra in ([], ["--json"]):
        out = run(missing, *extra, "vacuum")
        assert out.returncode == 1, (out.stdout, out.stderr)
        assert out.stdout == ""
        assert out.stderr == (
            f"error: nothing vacuumed: no database at {missing} (check --db or CONTEXTOS_DB)\n"
        )
    assert list(tmp_path.iterdir()) == []


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


def test_status_names_its_tenant_and_counts_the_whole_store_beside_it(tmp_path: Path) -> None:
    # A server's memories are of its keys' tenants; `status` without --tenant counted
    # tenant "default" alone and printed "waiting for a vector: 0" over a backlog of 156.
    db = tmp_path / "m.db"
    # A server of tenant acme that stopped before its worker embedded what it added.
    subprocess.run([sys.executable, "-c", STOPPED_WRITER, str(db)], check=True, timeout=120)
    human = run(db, "status")
    assert "tenant 'default': waiting for a vector: 0" in human.stdout, human.stdout
    assert "every tenant of this database: 3 waiting for a vector" in human.stdout
    report = json.loads(run(db, "--json", "status").stdout)
    assert report["tenant"] == "default" and report["pending"] == 0
    assert report["all_tenants"] == {"pending": 3, "quarantined_total": 0}
    acme = run_cli("--tenant", "acme", "status", db=db, env={"COLUMNS": "200"})
    assert "tenant 'acme': waiting for a vector: 3" in acme.stdout
    assert "every tenant" not in acme.stdout  # the same counts: said once
