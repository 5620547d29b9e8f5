"""The session and store commands in shell scripts and pipelines (review s43, clipipes):
one id a line, ``session show --json`` paging, stdout that cannot be written, the
``status`` table under a pipe, and ``session add ID -``'s final newline."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import cli_env, run_cli
from contextos.cli.text import id_is_escaped, shown_id
from contextos.memory import Memory
from contextos.testing.embedders import FailingEmbedder

# -- F1: one id, one line ----------------------------------------------------------------


def test_shown_id_writes_each_control_character_as_an_escape() -> None:
    assert shown_id("chat\nsecret") == "chat\\nsecret"
    assert shown_id("tab\there\r") == "tab\\there\\r"
    assert shown_id("esc\x1b[2J\u202e") == "esc\\x1b[2J\\u202e"
    assert shown_id("C:\\plain id") == "C:\\plain id"  # nothing to escape: as given
    assert [id_is_escaped(v) for v in ("a\nb", "a\\nb", "plain")] == [True, False, False]


def test_session_list_prints_one_id_a_line_that_no_other_session_answers_to(
    tmp_path: Path,
) -> None:
    """Was: ana's session ``chat<LF>secret`` printed as the lines ``chat`` and
    ``secret``, so ``session list -u ana | while read id; do forget -s "$id"`` erased
    bob's session ``chat``; a tab came out as spaces."""
    db = tmp_path / "ids.db"
    ana = ["chat\nsecret", "tab\there", "cr\rx\x1b[2J"]
    for session_id in ana:
        added = run_cli("session", "add", session_id, "hello", "-u", "ana", db=db)
        assert added.returncode == 0, added.stderr
        [line] = added.stdout.splitlines()  # the report is one line too
        assert re.fullmatch(rf"{re.escape(shown_id(session_id))} #0: \d+ tokens", line), line
    assert run_cli("session", "add", "chat", "hello", "-u", "bob", db=db).returncode == 0

    listed = run_cli("session", "list", "-u", "ana", db=db)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["chat\\nsecret", "tab\\there", "cr\\rx\\x1b[2J"]
    assert "chat" not in listed.stdout.splitlines()
    assert "note: 3 ids printed with control characters escaped" in listed.stderr
    assert "--json gives every id exactly" in listed.stderr
    exact = run_cli("--json", "session", "list", "-u", "ana", db=db)
    assert json.loads(exact.stdout) == ana  # JSON stays exact
    plain = run_cli("session", "list", "-u", "bob", db=db)
    assert (plain.stdout, plain.stderr) == ("chat\n", "")  # nothing escaped, no note


# -- F3: `session show --limit N --json` says more follow ---------------------------------


def test_session_show_json_names_the_next_page_until_the_last(tmp_path: Path) -> None:
    """Was: the JSON held ``turns`` and ``state`` only and stderr was empty, so a script
    paging with --after-seq could not tell the last page."""
    db = tmp_path / "show.db"
    for n in range(5):
        assert run_cli("session", "add", "s1", f"message {n}", "-u", "ana", db=db).returncode == 0
    seen: list[int] = []
    after = -1
    pages = 0
    while True:
        out = run_cli(
            "session", "show", "s1", "--limit", "2", "--after-seq", str(after), "--json", db=db
        )
        assert out.returncode == 0, out.stderr
        page = json.loads(out.stdout)
        seen += [t["seq"] for t in page["turns"]]
        pages += 1
        if page["next_after_seq"] is None:
            assert out.stderr == ""
            break
        assert page["next_after_seq"] == page["turns"][-1]["seq"]
        after = page["next_after_seq"]
        assert out.stderr == f"more follow: --after-seq {after} shows the next page\n"
    assert (seen, pages) == ([0, 1, 2, 3, 4], 3)
    whole = json.loads(run_cli("session", "show", "s1", "--json", db=db).stdout)
    assert whole["next_after_seq"] is None and len(whole["turns"]) == 5


# -- F4: stdout that cannot be written ----------------------------------------------------


def _to_full_disk(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``contextos ARGS > /dev/full``: every write to stdout fails with ENOSPC."""
    with open("/dev/full", "w", encoding="utf-8") as full:
        return subprocess.run(
            [sys.executable, "-m", "contextos", *args],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(db=db),
            timeout=180,
        )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("as_json", [False, True])
def test_a_report_that_cannot_be_written_exits_1_saying_the_write_is_done(
    tmp_path: Path, as_json: bool
) -> None:
    """Was: exit 2 (a usage error) with ``error: [Errno 28] No space left on device``
    alone, so a script that retried logged the turn (stored the memory) twice."""
    db = tmp_path / "full.db"
    flag = ("--json",) if as_json else ()
    logged = _to_full_disk(db, *flag, "session", "add", "s1", "logged once", "-u", "ana")
    assert logged.returncode == 1
    assert logged.stderr == (
        "error: logged as #0 of session 's1', but its report could not be written to "
        "stdout: [Errno 28] No space left on device\n"
    )
    stored = _to_full_disk(db, *flag, "add", "stored once", "-u", "ana")
    assert stored.returncode == 1
    assert stored.stderr.splitlines() == [
        "error: the command ran, but its output could not be written: [Errno 28] No space "
        "left on device (what it did, a write included, is done)"
    ]
    read = _to_full_disk(db, *flag, "session", "list")
    assert read.returncode == 1 and "its output could not be written" in read.stderr
    turns = json.loads(run_cli("session", "show", "s1", "--json", db=db).stdout)["turns"]
    assert [t["message"]["content"] for t in turns] == ["logged once"]
    memories = json.loads(run_cli("list", "-u", "ana", "--json", db=db).stdout)
    assert [m["text"] for m in memories] == ["stored once"]


# -- F5: `status` under a pipe ------------------------------------------------------------


def test_status_prints_its_failed_embeddings_whole_under_a_pipe(tmp_path: Path) -> None:
    """Was: the table was printed at 80 columns off a terminal, its error and time cut
    with "…" (what an operator greps a cron log for)."""
    db = tmp_path / "q.db"
    poison = "POISON-" + "x" * 120
    with Memory(db, embedder=FailingEmbedder(poison)) as m:
        [bad] = m.add(f"a text with {poison} in it", user_id="ana")
        m.flush()
    out = run_cli("status", db=db)
    assert out.returncode == 0, out.stderr
    assert "…" not in out.stdout
    [row] = [line for line in out.stdout.splitlines() if bad.id in line]
    assert poison in row  # the whole error, on the id's line
    at = json.loads(run_cli("--json", "status", db=db).stdout)["quarantined"][0]["at"]
    assert at[:19] in row  # the time to the second


# -- F6: `session add ID -` and stdin's final newline --------------------------------------


@pytest.mark.parametrize(
    ("piped", "logged"),
    [
        ("Plan a cake for Saturday\n", "Plan a cake for Saturday"),  # echo "$msg" |
        ("Plan a cake\r\n", "Plan a cake"),
        ("  indented\n\n", "  indented\n"),  # one newline only: the rest verbatim
        ("no newline", "no newline"),
    ],
)
def test_session_add_from_stdin_drops_one_final_newline(
    tmp_path: Path, piped: str, logged: str
) -> None:
    """Was: ``echo "$msg" | session add s1 -`` logged the text with its newline (one
    token more), where ``session add s1 "$msg"`` and ``add -`` did not."""
    db = tmp_path / "nl.db"
    out = run_cli("--json", "session", "add", "s1", "-", "-u", "ana", db=db, stdin=piped)
    assert out.returncode == 0, out.stderr
    [turn] = json.loads(out.stdout)
    assert turn["message"]["content"] == logged


def test_session_add_of_a_lone_newline_is_an_empty_stdin(tmp_path: Path) -> None:
    out = run_cli("session", "add", "s1", "-", db=tmp_path / "e.db", stdin="\n")
    assert out.returncode == 2 and "stdin is empty" in out.stderr
