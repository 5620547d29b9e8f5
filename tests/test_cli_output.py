"""What the CLI prints: user text verbatim (never markup), whole tables off a terminal,
one-line errors, hints that keep their brackets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import run_cli
from conftest import tiny_locomo
from contextos.cli.main import main

HOSTILE = (
    "pip install 'contextos[server]' and [bold]x[/bold] then "
    "[link=http://evil.example]click[/link] [red]alert[/red]"
)
#: OSC 8, the escape sequence that opens a terminal hyperlink.
OSC8 = "\x1b]8;"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _plain(text: str) -> str:
    """Terminal output without colour codes or line folding, to look for a string."""
    return re.sub(r"\s*[│┃]\s*", " ", ANSI.sub("", text))


def _stored_and_shown(
    db: Path, text: str, query: str, terminal: bool
) -> dict[str, subprocess.CompletedProcess[str]]:
    """``text`` stored as a memory (then edited) and a session turn, and what each
    command that shows stored text printed, by command."""
    mid = json.loads(run_cli("add", text, "-u", "ana", "--json", db=db).stdout)[0]["id"]
    run_cli("update", mid, "--text", text + " v2", db=db)
    run_cli("session", "add", "s1", text, db=db)
    # A terminal (forced colour) is where a link or a style would do harm.
    env = {"FORCE_COLOR": "1", "COLUMNS": "400"} if terminal else {}
    return {
        "list": run_cli("list", "-u", "ana", db=db, env=env),
        "search": run_cli("search", query, "-u", "ana", db=db, env=env),
        "get": run_cli("get", mid, db=db, env=env),
        "history": run_cli("history", mid, db=db, env=env),
        "session show": run_cli("session", "show", "s1", db=db, env=env),
    }


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
def test_stored_text_is_printed_verbatim_never_as_markup(tmp_path: Path, terminal: bool) -> None:
    outputs = _stored_and_shown(tmp_path / "m.db", HOSTILE, "contextos server bold", terminal)
    for name, out in outputs.items():
        assert out.returncode == 0, (name, out.stderr)
        assert OSC8 not in out.stdout, f"{name} printed a live hyperlink"
        assert HOSTILE in _plain(out.stdout), f"{name} did not print the text verbatim"
    if terminal:  # and the text carries no style of its own: no red from [red]
        line = next(x for x in outputs["session show"].stdout.splitlines() if "alert" in x)
        assert "\x1b[31m" not in line


#: Raw terminal escape sequences a tenant could store through /v1, MCP or the CLI: an
#: OSC 8 hyperlink, a colour, a window title, a cleared screen, an 8-bit CSI.
RAW_ESCAPES = (
    "evil \x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\ "
    "\x1b[31mRED\x1b[0m \x1b]0;pwned\x07 \x1b[2J \x9b31m end"
)


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
def test_stored_escape_sequences_reach_no_terminal(tmp_path: Path, terminal: bool) -> None:
    outputs = _stored_and_shown(tmp_path / "m.db", RAW_ESCAPES, "evil click", terminal)
    for name, out in outputs.items():
        assert out.returncode == 0, (name, out.stderr)
        # Only rich's own colour codes may reach the terminal; the stored ones are shown.
        raw = ANSI.sub("", out.stdout)
        assert "\x1b" not in raw and "\x9b" not in raw and "\x07" not in raw, name
        assert "\\x1b]8;;http://evil.example" in raw, f"{name} did not show the text"


def test_errors_quoting_user_text_keep_it_verbatim(tmp_path: Path) -> None:
    out = run_cli("get", "[red]no[/red]", db=tmp_path / "m.db", env={"FORCE_COLOR": "1"})
    assert out.returncode == 1
    assert "[red]no[/red]" in ANSI.sub("", out.stderr)


def test_missing_extra_hint_keeps_the_extra_name(tmp_path: Path) -> None:
    """The hint must say contextos[server]: rich once swallowed [server] as a tag."""
    code = (
        "import sys; sys.modules['uvicorn'] = None\n"  # as if the extra were not installed
        "from contextos.cli.main import main\n"
        f"main(['serve', '--db', {str(tmp_path / 'm.db')!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "pip install 'contextos[server]'" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_usage_errors_are_one_line_with_a_help_pointer(tmp_path: Path) -> None:
    out = run_cli("compact", "--session", "s", "--budget", "0", db=tmp_path / "m.db")
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
    assert "'contextos compact --help'" in out.stderr


def test_tables_under_a_pipe_are_printed_whole(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    long_text = " ".join(f"word{i}" for i in range(60))  # ~420 characters
    mid = json.loads(run_cli("add", long_text, "-u", "ana", "--json", db=db).stdout)[0]["id"]
    out = run_cli("list", "-u", "ana", db=db)  # stdout is a pipe, COLUMNS unset
    assert out.returncode == 0
    assert "…" not in out.stdout
    assert long_text in out.stdout and mid in out.stdout  # one row, nothing folded or cut
    assert max(len(line) for line in out.stdout.splitlines()) > 400


def test_ids_in_tables_are_whole_and_usable(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    run_cli("add", "I live in Lisbon", "-u", "ana", db=db)
    shown = run_cli("list", "-u", "ana", db=db).stdout
    ids = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", shown)
    assert len(ids) == 1
    for command in ("get", "history"):
        assert run_cli(command, ids[0], db=db).returncode == 0, command
    assert run_cli("delete", ids[0], db=db).returncode == 0


def test_counts_agree_with_their_nouns(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    run_cli("add", "one thing", "-u", "ana", db=db)
    listed = run_cli("list", "-u", "ana", db=db).stdout
    assert "1 memory" in listed and "1 memories" not in listed
    found = run_cli("search", "thing", "-u", "ana", db=db).stdout
    assert "1 result " in found
    forgot = run_cli("forget", "-u", "ana", "--yes", db=db).stdout
    assert "forgot 1 memory of ana" in forgot


@pytest.mark.parametrize("bench", ["locomo", "online", "extract", "replay"])
def test_a_missing_locomo_file_is_one_clean_line(
    bench: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every benchmark over LoCoMo says where it looked and how to point it elsewhere."""
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", bench, "--data", str(tmp_path / "missing.json")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: LoCoMo data not found at") and "--data PATH" in err
    assert "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["serve"], "TCP port. [default: 8080; 0<=x<=65535]"),
        (["serve"], "[default: 1000000; x>=1024]"),
        (["mcp"], "HTTP: larger request bodies get 413. [default: 1000000; x>=1024]"),
        (["bench", "wrap"], "Which SDK client to wrap. [default: both]"),
        (["bench", "online"], "[default: 10.0; x>=0]"),
    ],
)
def test_numbers_and_choices_show_their_default_and_range(command: list[str], shown: str) -> None:
    """Every bounded or choice option says in --help what it takes and what it defaults to."""
    from click.testing import CliRunner

    from contextos.cli.main import cli

    result = CliRunner().invoke(cli, [*command, "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert shown in " ".join(result.output.split())


def _help(*command: str) -> str:
    """``contextos COMMAND --help``, its whitespace folded, to look for a sentence."""
    from click.testing import CliRunner

    from contextos.cli.main import cli

    result = CliRunner().invoke(cli, [*command, "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize(
    ("command", "said", "not_said"),
    [
        (
            "update",
            "Write only while the memory's updated_at is still this one (ISO-8601, as "
            "`get --json` shows it; else exit 3, nothing written).",
            "as `get` shows it",
        ),
        (
            "delete",
            "Delete only while the memory's updated_at is still this one (ISO-8601, as "
            "`get --json` shows it; else exit 3, nothing deleted).",
            "nothing written",
        ),
        (
            "delete",
            "Delete only while the memory's text is still this one (else exit 3, nothing deleted).",
            "Write only while",
        ),
        ("mcp", "env CONTEXTOS_EMBEDDER.", "(default minilm-int8; hash for tests)"),
        ("serve", "env CONTEXTOS_EMBEDDER.", "(default minilm-int8; hash for tests)"),
    ],
)
def test_help_says_what_an_option_reads_in_the_commands_words(
    command: str, said: str, not_said: str
) -> None:
    """s41 docs review: ``--expected-updated-at`` pointed at ``get``, whose table shows no
    ``updated_at`` (its ``when`` given there is exit 3), and ``delete``'s said "Write ...
    nothing written"; ``mcp --embedder`` did not say the setting is read, as it is."""
    shown = _help(command)
    assert said in shown and not_said not in shown


def test_a_benchmark_names_no_database_it_does_not_use(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``bench locomo`` printed "database: <the default file> (the default; ...)": it
    read the embedder setting through the group's settings, which resolve a database
    the benchmark never opens (it builds its own in a temporary directory)."""
    monkeypatch.delenv("CONTEXTOS_DB", raising=False)
    monkeypatch.setenv("CONTEXTOS_EMBEDDER", "hash")  # the setting, not --embedder
    monkeypatch.setenv("HOME", str(tmp_path))
    main(["bench", "locomo", "--data", str(tiny_locomo(tmp_path)), "--conversations", "1"])
    err = capsys.readouterr().err
    assert "database:" not in err and "the default" not in err, err


@pytest.mark.parametrize("as_json", [False, True])
def test_a_reader_that_stops_early_ends_the_command_as_sigpipe_would(
    tmp_path: Path, as_json: bool
) -> None:
    """``contextos list | head -1``: the reader closes the pipe with most of the output
    unwritten. rich exited 1 there (an error of the library or the store, by the
    documented codes), silently, in 10 of 10 runs of ``session show | head -1`` (a
    review). It exits 141, as a Unix tool killed by SIGPIPE does, and says nothing."""
    from cli_support import cli_env
    from contextos.memory import Memory
    from contextos.testing.embedders import HashEmbedder

    db = tmp_path / "pipe.db"
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        m.add([f"note {i}: " + "words to fill the pipe " * 8 for i in range(1000)], user_id="ana")
    flags = ["--json"] if as_json else []
    cmd = [sys.executable, "-m", "contextos.cli", *flags, "list", "-u", "ana", "--limit", "1000"]
    # Buffered, as a user's shell runs it: unbuffered (PYTHONUNBUFFERED=1), the
    # interpreter takes the pipe's short write for a whole one and raises nothing.
    env = {k: v for k, v in cli_env(db=db).items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(64)  # the first line or so, as ``head -1`` reads
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""
