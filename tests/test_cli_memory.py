"""The CLI mirrors the Memory API: same results, --json everywhere, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder


def run(db: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTEXTOS_EMBEDDER": "hash", "CONTEXTOS_DB": str(db), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "contextos.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_add_search_get_list_update_history_delete(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    added = json.loads(run(db, "add", "I am allergic to peanuts", "-u", "ana", "--json").stdout)
    mid = added[0]["id"]
    run(db, "add", "my kid loves blue", "-u", "ana")
    hits = json.loads(run(db, "--json", "search", "peanuts", "-u", "ana").stdout)
    assert hits[0]["id"] == mid and hits[0]["tokens"] > 0
    # the CLI gives what the Python API gives
    with Memory(db, embedder=HashEmbedder()) as m:
        api = [h.record.id for h in m.search("peanuts", user_id="ana")]
    assert [h["id"] for h in hits] == api
    assert json.loads(run(db, "get", mid, "--json").stdout)["text"] == "I am allergic to peanuts"
    assert len(json.loads(run(db, "list", "-u", "ana", "--json").stdout)) == 2
    run(db, "update", mid, "--text", "allergic to peanuts and cashews")
    events = json.loads(run(db, "history", mid, "--json").stdout)
    assert [e["event"] for e in events] == ["ADD", "UPDATE"]
    assert run(db, "delete", mid).returncode == 0
    missing = run(db, "get", mid)
    assert missing.returncode == 1 and "no memory" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_forget_and_human_output(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    run(db, "add", "bob's secret", "-u", "bob")
    out = run(db, "search", "secret", "-u", "bob")
    assert out.returncode == 0 and "bob's secret" in out.stdout
    forgot = json.loads(run(db, "forget", "-u", "bob", "--json").stdout)
    assert forgot == {"user_id": "bob", "forgotten": 1}


@pytest.mark.parametrize(
    "args, needle",
    [
        (("search", "x"), "needs a user_id"),
        (("add", "", "-u", "a"), "nothing to add"),
        (("add", "x", "-u", "a", "--metadata", "{oops"), "not valid JSON"),
        (("add", "x", "-u", "a", "--metadata", "[1]"), "JSON object"),
        (("add", "x", "-u", "a", "--event-time", "yesterday-ish"), "ISO-8601"),
        (("search", "x", "-u", "a", "--limit", "0"), "0"),
        (("count", "/no/such/file"), "no such file"),
        (("count", "-", "--model", "gpt-99"), "unknown model"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    out = run(tmp_path / "cli.db", *args, stdin="")
    assert out.returncode != 0
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_corrupt_database_is_one_clear_line(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    db.write_bytes(b"garbage" * 1000)
    out = run(db, "list", "-u", "a")
    assert out.returncode == 1 and "cannot open database" in out.stderr
    assert "Traceback" not in out.stderr


def test_count_reports_tokens_share_and_cost(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("hello world")
    data = json.loads(
        run(tmp_path / "x.db", "count", str(f), "--model", "gpt-4.1", "--json").stdout
    )
    assert data["tokens"] == 2 and data["context_window"] == 1_047_576
    assert data["input_cost_usd"] == pytest.approx(2 * 2.0 / 1e6)
    msgs = tmp_path / "m.json"
    msgs.write_text(json.dumps([{"role": "user", "content": "hello world"}]))
    assert (
        json.loads(run(tmp_path / "x.db", "count", str(msgs), "--json").stdout)["kind"]
        == "messages"
    )


def test_every_command_has_help() -> None:
    from contextos.cli.main import cli

    def walk(group, prefix=()):  # type: ignore[no-untyped-def]
        for name, cmd in group.commands.items():
            yield (*prefix, name), cmd
            if hasattr(cmd, "commands"):
                yield from walk(cmd, (*prefix, name))

    for path, cmd in walk(cli):
        assert cmd.help or cmd.short_help, f"contextos {' '.join(path)} has no help"
