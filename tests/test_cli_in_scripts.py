"""The CLI in shell scripts, cron, CI and containers (a review of session 36): a
PostgreSQL password in a key command's error, ``keys --db`` creating folders,
``keys list | head``, ``COLUMNS=0``, a closed stdin, ``count <(...)``, ``update --text
-``, ``chat --json`` and ``--help`` showing internals. Each case runs the real
``contextos`` in its own process, as a script would."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cli_support import cli_env, exit_when_reader_stops, run_cli
from contextos.cli.main import load_all_commands
from contextos.cli.session_cmds import SHOWN_CHARS

CLI = (sys.executable, "-m", "contextos")


def _shell(script: str, db: Path, *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``script`` run by bash with ``$C`` the ``contextos`` command (hash embedder, ``db``
    in CONTEXTOS_DB): for what only a shell does (``<&-``, ``<(...)``, pipes)."""
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={**cli_env(db), "C": " ".join(CLI)},
        cwd=cwd,
        timeout=180,
    )


def _one_error_line(out: subprocess.CompletedProcess[str], needle: str) -> None:
    assert "Traceback" not in out.stderr, out.stderr
    lines = [x for x in out.stderr.splitlines() if not x.startswith("database: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert needle in lines[0], out.stderr


# -- 1: a PostgreSQL password holding a raw "%" -----------------------------------------

SECRET_URL = "postgresql://app:s3c%ZZretpw@db.internal:5432/contextos"


@pytest.mark.parametrize(
    "args",
    [
        ("--db", SECRET_URL, "keys", "list"),
        ("keys", "list", "--db", SECRET_URL),
        ("--db", SECRET_URL, "keys", "create", "--tenant", "acme"),
        ("keys", "revoke", "abc", "--db", SECRET_URL),
        ("--db", SECRET_URL, "mcp", "--key", "ctx_000000000000_" + "x" * 30),
    ],
    ids=["keys-list", "keys-list-db-after", "keys-create", "keys-revoke", "mcp"],
)
def test_key_commands_never_print_a_password_libpq_cannot_read(args: tuple[str, ...]) -> None:
    """Was: ``error: cannot open the API key table: invalid percent-encoded token:
    "s3c%ZZretpw"``, the password in clear in a CI log, and exit 1 where ``list`` exits 2
    for the same URL. Now the memory store's words, which leave it out, and its code."""
    pytest.importorskip("psycopg")
    memory = run_cli("--db", SECRET_URL, "list", "-u", "x")
    out = run_cli(*args)
    assert "s3c" not in out.stderr + out.stdout, out.stderr
    _one_error_line(out, "not a PostgreSQL URL: invalid percent-encoded token")
    assert "'%' as '%25'" in out.stderr
    assert out.returncode == memory.returncode, (out.stderr, memory.stderr)


# -- 2: `keys ... --db` goes through the group's check ----------------------------------


@pytest.mark.parametrize("command", [("create", "--tenant", "acme"), ("list",)])
def test_keys_db_after_the_command_needs_its_directory(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Was: ``keys create --db typo/sub/k.db`` created ``typo/`` and ``typo/sub/`` and
    stored a key there (exit 0), where ``contextos --db typo/sub/k.db keys create`` and
    ``serve --db`` refused it; docs/cli.md says the directory must exist."""
    db = tmp_path / "typo" / "sub" / "k.db"
    after = run_cli("keys", *command, "--db", str(db))
    group = run_cli("--db", str(db), "keys", *command)
    _one_error_line(after, "no directory")
    assert after.returncode == group.returncode == 1, (after.stderr, group.stderr)
    assert not (tmp_path / "typo").exists()
    assert after.stdout == ""  # no secret of a key that was not stored


def test_keys_refuse_a_url_of_another_database(tmp_path: Path) -> None:
    """Was: ``keys list --db mysql://x`` read the URL as a path, created a folder
    ``mysql:`` holding an empty key table, and exited 0 with nothing listed."""
    out = _shell('$C keys list --db mysql://x; echo "rc=$?"', tmp_path / "unused.db", cwd=tmp_path)
    assert "rc=1" in out.stdout, out.stderr
    assert "unsupported database URL scheme 'mysql'" in out.stderr
    assert list(tmp_path.iterdir()) == []


# -- 3: `keys list | head -1` ------------------------------------------------------------


def test_keys_list_whose_reader_stops_early_exits_141(tmp_path: Path) -> None:
    """Was: exit 1 (an error of the store), silently, where every other command exits
    141: click.echo's own closed-pipe handling ran before the CLI's."""
    from contextos.server.keys import KeyStore

    db = tmp_path / "k.db"
    with KeyStore(str(db)) as keys:
        for i in range(400):  # 400 lines of ~250 bytes (names at most 200): over 64 KiB
            keys.create("acme", f"key {i} " + "n" * 180)
    status, err = exit_when_reader_stops([*CLI, "keys", "list"], cli_env(db))
    assert status == 141, err
    assert err == ""


# -- 5: COLUMNS=0 ------------------------------------------------------------------------


def test_columns_zero_still_prints_the_id_and_the_error(tmp_path: Path) -> None:
    """Was: rich took COLUMNS=0 as a width of 0 and printed nothing: ``ID=$(contextos
    add ...)`` was empty (the memory stored) and ``get nope`` exited 1 without a word."""
    db = tmp_path / "c.db"
    added = run_cli("add", "columns zero", "-u", "ana", db=db, env={"COLUMNS": "0"})
    assert added.returncode == 0, added.stderr
    assert re.fullmatch(r"added [0-9a-f-]{36}\n", added.stdout), added.stdout
    missing = run_cli("get", "nope", db=db, env={"COLUMNS": "0"})
    assert missing.returncode == 1
    _one_error_line(missing, "no memory 'nope'")


# -- 6: a closed stdin -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "code", "needle"),
    [
        ("add - -u ana", 2, "nothing to add"),
        ("session add s - -u ana", 2, "stdin is empty"),
        ("update 00000000-0000-0000-0000-000000000000 --text -", 2, "stdin is empty"),
        ("count -", 0, ""),
        ("chat -u ana", 0, ""),
        ("forget -u ana", 2, "pass --yes to confirm (stdin is not a terminal"),
    ],
)
def test_a_closed_stdin_is_an_empty_one(
    tmp_path: Path, command: str, code: int, needle: str
) -> None:
    """Was: ``contextos add - -u x <&-`` (a daemon's runner closes fd 0) ended in an
    AttributeError traceback. Now it reads as empty (as ``</dev/null``), and ``forget``
    without --yes refuses as it does without a terminal."""
    db = tmp_path / "s.db"
    out = _shell(f"$C {command} <&-", db)
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    if needle:
        _one_error_line(out, needle)


# -- 7: process substitution and named pipes ---------------------------------------------


@pytest.mark.parametrize("command", ["count", "extract"])
def test_a_file_argument_may_be_a_pipe(tmp_path: Path, command: str) -> None:
    """Was: ``count <(jq ...)`` and a named pipe were refused with "no such file",
    though they exist: only a regular file was read."""
    fifo = tmp_path / "fifo"
    # The writer holds none of the captured pipes, and is killed if the command never
    # opened the FIFO (it would wait for a reader for ever).
    out = _shell(
        f"mkfifo {fifo}; {{ printf 'Ana: I adopted a cat' > {fifo}; }} >/dev/null 2>&1 & "
        f"w=$!; $C {command} {fifo}; rc=$?; kill $w 2>/dev/null; [ $rc = 0 ] || exit $rc; "
        f"$C {command} <(printf 'Ana: I adopted a cat')",
        tmp_path / "unused.db",
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    if command == "count":
        assert out.stdout.count("tokens") == 2, out.stdout
    else:
        assert out.stdout.count("adopted a cat") == 2, out.stdout


@pytest.mark.parametrize(
    ("make", "needle"),
    [("dir", "is a directory"), ("missing", "no such file"), ("device", "a device")],
)
def test_a_file_argument_that_is_no_file_is_one_clear_line(
    tmp_path: Path, make: str, needle: str
) -> None:
    # A device: `count /dev/zero` read until memory ran out (a MemoryError traceback).
    path = Path("/dev/zero") if make == "device" else tmp_path / "x"
    if make == "dir":
        path.mkdir()
    out = run_cli("count", str(path))
    assert out.returncode == 2
    _one_error_line(out, needle)


# -- 8: `update ID --text -` -------------------------------------------------------------


def test_update_text_dash_reads_stdin_as_add_does(tmp_path: Path) -> None:
    """Was: the memory's text became the one character "-" (exit 0), the piped text
    ignored."""
    db = tmp_path / "u.db"
    added = run_cli("--json", "add", "old text", "-u", "ana", db=db)
    memory_id = json.loads(added.stdout)[0]["id"]
    out = run_cli("update", memory_id, "--text", "-", db=db, stdin="new text from a pipe\n")
    assert out.returncode == 0, out.stderr
    got = json.loads(run_cli("--json", "get", memory_id, db=db).stdout)
    assert got["text"] == "new text from a pipe"  # as `add -` stores it: stripped
    assert "- reads it from stdin" in run_cli("update", "--help").stdout


# -- 9: `chat --json` is JSON Lines ------------------------------------------------------


def test_chat_json_is_one_object_per_reply_and_line(tmp_path: Path) -> None:
    """Was: one indented document per reply, a stream that neither ``json.load`` nor a
    line-at-a-time reader could take."""
    out = run_cli("chat", "--json", db=tmp_path / "c.db", stdin="hi\nwhat do I like\n")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stdout
    assert all("reply" in json.loads(line) for line in lines)
    assert "JSON Lines" in run_cli("chat", "--help").stdout


# -- 10: --help shows what a user reads, not the code's notes ----------------------------

#: What a help text may hold that looks like a constant: arguments and metavars.
_ALLOWED_UPPER = {"PATH_OR_URL", "MEMORY_ID", "SESSION_ID", "KEY_ID"}


def _helps(group: click.Group, path: tuple[str, ...] = ()) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, command in group.commands.items():
        found[" ".join((*path, name))] = CliRunner().invoke(group, [name, "--help"]).output
        if isinstance(command, click.Group):
            found |= _helps(command, (*path, name))
    return found


def test_no_help_shows_constants_markup_or_review_notes() -> None:
    """Was: ``session show --help`` said "up to SHOWN_CHARS characters" and ``forget
    --help`` printed the docstring's history in reST (````--yes````, "JSON output used
    to skip the question")."""
    helps = _helps(load_all_commands())
    assert {"forget", "session show", "keys list", "bench serve"} <= set(helps)
    for name, text in helps.items():
        assert text.startswith("Usage:"), (name, text)
        for leak in ("``", ":func:", ":data:", ":class:", ":meth:", "a review", "used to"):
            assert leak not in text, (name, leak, text)
        constants = set(re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", text))
        constants = {c for c in constants if not c.startswith("CONTEXTOS_")} - _ALLOWED_UPPER
        assert not constants, (name, constants)


def test_session_show_and_forget_help_read_as_written_for_users() -> None:
    show = run_cli("session", "show", "--help")
    assert f"up to {SHOWN_CHARS:,} characters" in " ".join(show.stdout.split())
    forget = " ".join(run_cli("forget", "--help").stdout.split())
    assert "refuses without --yes" in forget and "``" not in forget and "unasked" not in forget
