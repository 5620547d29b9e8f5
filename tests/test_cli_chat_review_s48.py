"""The conversation commands from the shell (a review, session 48): chat under a strict
locale and with a line too long for the window, compact's reason, window on a missing
database, and what an error looks like under --json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cli_support import run_cli

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def _strict_stdin_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a process whose stdin decodes UTF-8 strictly, as under
    ``en_US.UTF-8`` (most desktops and servers; this box and CI run C.UTF-8, whose
    stdin uses surrogateescape): that locale built in ``tmp_path`` where ``localedef``
    can, else ``PYTHONIOENCODING=utf-8:strict`` (strict stdin as well)."""
    fallback = {"PYTHONIOENCODING": "utf-8:strict"}
    env = fallback
    localedef = shutil.which("localedef")
    if localedef is not None:
        built = subprocess.run(
            [localedef, "-i", "en_US", "-f", "UTF-8", str(tmp_path / "loc" / "en_US.UTF-8")],
            capture_output=True,
            timeout=60,
        )
        if built.returncode == 0:
            env = {"LOCPATH": str(tmp_path / "loc"), "LC_ALL": "en_US.UTF-8"}
    errors = _stdin_errors(env)
    if errors != "strict":  # the locale did not take: the variable does it everywhere
        env = fallback
        errors = _stdin_errors(env)
    assert errors == "strict", errors
    return env


def _stdin_errors(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import sys; print(sys.stdin.errors)"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    return out.stdout.strip()


def _user_lines(db: Path, session: str) -> list[str]:
    log = json.loads(run_cli("session", "show", session, "--json", db=db).stdout)
    return [t["message"]["content"] for t in log["turns"] if t["message"]["role"] == "user"]


def test_a_chat_line_that_is_not_utf8_is_skipped_under_a_strict_locale(tmp_path: Path) -> None:
    """Under en_US.UTF-8 Python's stdin decodes strictly: one byte that is not UTF-8
    ended the chat (exit 2, a codec's error), and the valid lines decoded with it in one
    chunk were lost as well (a review)."""
    db = tmp_path / "m.db"
    env = _strict_stdin_env(tmp_path)
    said = b"good one\nbad \xff\xfe line\nafter bad\n"
    chat = ("chat", "--session", "U", "--no-show-window", "--json")
    out = run_cli(*chat, db=db, stdin=said, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "stdin line 2 is not UTF-8 text: skipped"
    assert len(out.stdout.splitlines()) == 2  # a reply to each valid line
    assert _user_lines(db, "U") == ["good one", "after bad"]


def test_a_chat_line_too_long_for_the_window_is_skipped_with_a_note(tmp_path: Path) -> None:
    """A line that did not fit beside the instructions ended the chat (exit 1), the
    lines after it unread and the line unnamed, with advice to give a --budget that chat
    has not (a review)."""
    db = tmp_path / "m.db"
    said = "my name is Zed\n" + "word " * 10_000 + "\nwhat is my name?\n"
    out = run_cli("chat", "-m", "gpt-4", "--session", "O", "--json", db=db, stdin=said)
    assert out.returncode == 0, out.stderr
    [note] = out.stderr.strip().splitlines()
    assert note.startswith("stdin line 2 does not fit the model's window"), note
    assert "(needs 10004 tokens, has " in note and note.count(": skipped") == 1
    assert "budget" not in note
    replies = [json.loads(line)["reply"] for line in out.stdout.splitlines()]
    assert len(replies) == 2 and "Zed" in replies[1]
    assert _user_lines(db, "O") == ["my name is Zed", "what is my name?"]


def _compact_json(db: Path, budget: str) -> dict[str, object]:
    out = run_cli("compact", "--session", "P", "--budget", budget, "--json", db=db)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert isinstance(doc, dict)
    return doc


def test_compact_says_why_it_compacted_nothing(tmp_path: Path) -> None:
    """Over the trigger with only the recent turns left, ``compact`` said "under the
    trigger threshold", and ``--json`` gave no reason at all (a review)."""
    db = tmp_path / "m.db"
    long = "word " * 400
    run_cli("session", "add", "P", long, db=db)
    run_cli("session", "add", "P", long, "--role", "assistant", db=db)
    over = run_cli("compact", "--session", "P", "--budget", "500", db=db)
    assert over.returncode == 0, over.stderr
    assert "under the trigger" not in over.stdout
    assert over.stdout.strip() == "nothing can be compacted (only recent or pinned turns left)"
    doc = _compact_json(db, "500")
    assert doc["compacted"] is False and doc["reason"] == "only_recent_or_pinned"
    under = run_cli("compact", "--session", "P", "--budget", "5000", db=db)
    assert under.stdout.strip() == "under the trigger threshold: nothing to do (use --force)"
    doc = _compact_json(db, "5000")
    assert doc["reason"] == "under_trigger"
    for _ in range(2):
        run_cli("session", "add", "P", "short", db=db)
    done = _compact_json(db, "500")
    assert done["compacted"] is True and done["reason"] is None


def test_window_on_a_missing_database_says_so(tmp_path: Path) -> None:
    """``window`` on a mistyped --db said only that the session had no turns, which read
    as the session gone; docs/cli.md lists it among the commands that say there is no
    database there (a review)."""
    db = tmp_path / "missing.db"
    for extra in ((), ("--json",), ("-u", "bob")):
        out = run_cli("window", "--session", "X", "-q", "hi", *extra, db=db)
        assert out.returncode == 0, out.stderr
        assert out.stderr.splitlines() == [
            "note: session 'X' has no turns: the window holds the question and memories only",
            f"note: no database at {db}: nothing has been stored there (check --db or "
            "CONTEXTOS_DB); none was created",
        ], out.stderr
        assert out.stdout
    assert not db.exists()


def test_an_error_under_json_is_one_text_line_on_stderr_as_documented(tmp_path: Path) -> None:
    """docs/cli.md said nothing of the errors' form under --json (a review): it says
    now that they stay one text line on stderr, stdout empty."""
    docs = " ".join(DOCS.read_text(encoding="utf-8").split())
    assert "An error, with or without `--json`, is one text line on stderr" in docs
    db = tmp_path / "m.db"
    run_cli("session", "add", "s", "hello", db=db)
    for args, code in (
        (("--json", "compact", "--session", "nope", "--budget", "100"), 1),
        (("compact", "--session", "s", "--budget", "100", "--strategy", "bogus", "--json"), 2),
    ):
        out = run_cli(*args, db=db)
        assert out.returncode == code, (args, out.stderr)
        assert out.stdout == ""
        [line] = out.stderr.splitlines()
        assert line.startswith("error: ")
