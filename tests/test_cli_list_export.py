"""``contextos list`` as an export tool: every stored fact, every page, once each.

Why (a review, answering a data-access request with ``list -u ana --json``):
superseded facts stay stored (``forget`` erases them) but ``list`` never showed them;
``--json`` printed a bare array and nothing said more pages followed (the table form
did, on stderr); and paged by ``--offset`` while the app kept adding for the user, an
export saw 35 memories twice. ``list`` now takes ``--validity all`` (the inspector's
name), says on stderr which ``--offset`` and ``--after`` key show the next page, with
``--json`` too, and pages by ``--after`` as the HTTP API's ``after`` does.

Each test runs the real command in a subprocess over a real SQLite file.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_support import run_cli
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder

AFTER = re.compile(r"--after (\S+)")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or a PostgreSQL schema (whose list keys are
    ISO times, not epoch seconds) when the test PostgreSQL runs."""
    if request.param == "sqlite":
        yield str(tmp_path / "m.db")
        return
    from pg_support import fresh_schema

    with fresh_schema("cli_list") as (url, _schema):
        yield url


def run(db: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("--db", str(db), "--tenant", "acme", *args)


def add_plain(db: Path | str, texts: list[str]) -> None:
    """Store ``texts`` for user ana, oldest first (the app's writes)."""
    with Memory(str(db), tenant="acme", embedder=HashEmbedder()) as memory:
        for text in texts:
            memory.add(text, user_id="ana", infer=False)


def page(db: Path | str, *args: str) -> tuple[list[dict[str, Any]], str]:
    """One ``list -u ana --json`` page: its records (stdout must be a bare array) and
    its stderr."""
    proc = run(db, "list", "-u", "ana", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert isinstance(records, list)
    return records, proc.stderr


def next_key(stderr: str) -> str | None:
    """The ``--after`` key the 'more follow' line names, if any."""
    found = AFTER.search(stderr)
    return found.group(1) if found and "more follow" in stderr else None


def test_json_pages_say_on_stderr_that_more_follow_and_where(store_db: str) -> None:
    db = store_db
    add_plain(db, [f"fact {i}" for i in range(5)])
    first, err = page(db, "--limit", "2")
    assert [r["text"] for r in first] == ["fact 4", "fact 3"]
    assert "more follow: --offset 2 shows the next page" in err
    seen, key = [r["text"] for r in first], next_key(err)
    for _ in range(3):  # bounded: a key that led nowhere must fail, not loop
        if key is None:
            break
        more, err = page(db, "--limit", "2", "--after", key)
        seen += [r["text"] for r in more]
        key = next_key(err)
    assert seen == [f"fact {i}" for i in reversed(range(5))] and key is None
    # A page that ends exactly at the last memory says nothing more follows.
    last, err = page(db, "--limit", "1", "--offset", "4")
    assert [r["text"] for r in last] == ["fact 0"] and "more follow" not in err


def test_after_pages_stay_put_while_the_app_keeps_adding(store_db: str) -> None:
    db = store_db
    initial = [f"fact {i}" for i in range(6)]
    add_plain(db, initial)
    first, err = page(db, "--limit", "3")
    key = next_key(err)
    assert key is not None
    add_plain(db, ["added meanwhile 1", "added meanwhile 2"])  # newer: listed first now
    by_key, _ = page(db, "--limit", "3", "--after", key)
    by_offset, _ = page(db, "--limit", "3", "--offset", "3")
    exported = [r["text"] for r in first + by_key]
    assert sorted(exported) == sorted(initial)  # each once, none missing
    # What --offset alone did: the writes moved the rest down, so it repeats.
    assert {r["text"] for r in by_offset} & {r["text"] for r in first}


def test_validity_all_lists_superseded_facts(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    for text in ("I live in Porto", "I moved to Lisbon, I no longer live in Porto"):
        assert run(db, "add", text, "-u", "ana", "--infer").returncode == 0
    with sqlite3.connect(db) as conn:
        closed = {
            text
            for (text,) in conn.execute(
                "SELECT text FROM memories WHERE user_id = 'ana' AND valid_to IS NOT NULL"
            )
        }
    assert closed, "the second add should have superseded the first fact"
    current, _ = page(db)
    everything, _ = page(db, "--validity", "all")
    assert not closed & {r["text"] for r in current}
    assert closed <= {r["text"] for r in everything if r["valid_to"] is not None}
    assert {r["text"] for r in current} <= {r["text"] for r in everything}


def test_a_key_the_store_did_not_make_is_a_usage_error(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    add_plain(db, ["fact"])
    proc = run(db, "list", "-u", "ana", "--after", "not-a-key")
    assert proc.returncode == 2 and "--after" in proc.stderr, proc.stderr
