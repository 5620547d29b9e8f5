"""What reaches a terminal and what an error says, for the CLI's remaining edges:
escapes in extracted and chat text, format characters, tabs in tables, lone
surrogates, file fields, early Ctrl-C, multi-line driver errors, content parts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import unicodedata
from pathlib import Path

import click
import pytest

from cli_support import run_cli
from contextos.cli.main import load_all_commands, main
from contextos.cli.text import shown
from contextos.llm.media_tokens import OPENAI_UNKNOWN_IMAGE_TOKENS

ROOT = Path(__file__).resolve().parents[1]
#: The ``contextos`` group with every command added (they load on first use).
cli = load_all_commands()
#: An OSC 8 link, a colour, a window title and a bell: what a file or memory may hold.
ESCAPES = "\x1b]8;;http://evil\x07link \x1b[31mred\x1b[0m \x1b]0;PWNED\x07"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _one_error_line(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    """stderr is one ``error: ...`` line (after the default-database note, if any)
    holding every needle, and no traceback."""
    lines = [x for x in out.stderr.splitlines() if not x.startswith("database: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert out.stderr.endswith("\n") and not out.stderr.endswith("\n\n"), repr(out.stderr)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# -- 1, 2: extract and chat print the text they show escaped -----------------------------


def test_extract_shows_escape_sequences_from_the_file_as_text(tmp_path: Path) -> None:
    file = tmp_path / "talk.txt"
    file.write_text(f"Ana: I live in Lisbon {ESCAPES} and my sister is Maria\n", "utf-8")
    out = run_cli("extract", str(file))
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout
    assert "\\x1b]8;;http://evil\\x07link" in out.stdout and "\\x1b]0;PWNED" in out.stdout


def test_chat_shows_the_window_with_stored_escapes_as_text(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    assert run_cli("add", f"My favourite wine is {ESCAPES} red", "-u", "me", db=db).returncode == 0
    out = run_cli("chat", "--user-id", "me", db=db, stdin="what is my favourite wine\n")
    assert out.returncode == 0, out.stderr
    window = out.stdout.split("assistant>")[0]
    assert "favourite wine" in window  # the window (shown by default) holds the memory
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout
    assert "\\x1b]0;PWNED\\x07" in window


# -- 3: a session_time in the file that cannot be read ---------------------------------


@pytest.mark.parametrize("value", [12, ["x"], {"at": 1}, "whenever"])
def test_an_unreadable_session_time_in_the_file_names_the_files_field(
    tmp_path: Path, value: object
) -> None:
    file = tmp_path / "talk.json"
    talk = {"messages": [{"role": "user", "content": "I live in Paris"}], "session_time": value}
    file.write_text(json.dumps(talk), "utf-8")
    out = run_cli("extract", str(file))
    assert out.returncode == 2
    _one_error_line(out, "FILE", '"session_time"', repr(value))
    assert "--session-time:" not in out.stderr and "Traceback" not in out.stderr


def test_an_unreadable_session_time_option_still_names_the_option(tmp_path: Path) -> None:
    file = tmp_path / "talk.json"
    file.write_text(json.dumps({"messages": [{"content": "hi"}], "session_time": 12}), "utf-8")
    out = run_cli("extract", str(file), "--session-time", "nope")
    assert out.returncode == 2
    _one_error_line(out, "--session-time", "'nope'")
    # and a good option overrides the file's unreadable field
    assert run_cli("extract", str(file), "--session-time", "2023-05-08").returncode == 0


# -- 4: Ctrl-C while the command imports the CLI -----------------------------------------


#: A Ctrl-C that lands while the CLI imports a module, made certain: importing the
#: module named first raises KeyboardInterrupt, as the signal would.
_EARLY_CTRL_C = """
import sys
interrupted = sys.argv.pop(1)  # the module whose import the Ctrl-C lands in
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == interrupted:
            raise KeyboardInterrupt
sys.meta_path.insert(0, CtrlC())
module, _, function = sys.argv.pop(1).partition(":")  # argv as the script's: [prog, *args]
import importlib
getattr(importlib.import_module(module), function)()
"""


@pytest.mark.parametrize(
    ("module", "said"),
    [
        # The CLI's own import, before click runs: nothing said.
        ("contextos.cli.common", ""),
        # The command's module, loaded when click looks the command up (the CLI loads
        # only that one): a Ctrl-C during the command, said as every such Ctrl-C is.
        ("contextos.cli.memory_cmds", "\naborted\n"),
    ],
)
def test_ctrl_c_while_the_cli_is_imported_exits_130_quietly(module: str, said: str) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]
    entry = scripts["contextos"]  # what the installed `contextos` script runs
    proc = subprocess.run(
        [sys.executable, "-c", _EARLY_CTRL_C, module, entry, "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == said and proc.stdout == ""


# -- 5: text that is not valid Unicode (lone surrogates) ---------------------------------


@pytest.mark.parametrize(
    ("args", "named", "where"),
    [
        (["search", "q \udcff", "-u", "bob"], "'QUERY'", "index 2"),
        (["add", "bad \udcff byte", "-u", "bob"], "'TEXT'", "index 4"),
        (["add", "hello", "-u", "b\udcffb"], "'--user-id'", "index 1"),
        (["add", "hello", "-u", "bob", "--metadata", '{"k": "\\ud800"}'], "--metadata", "['k']"),
        (["session", "add", "s1", "hi \udcff"], "'CONTENT'", "index 3"),
    ],
    ids=["search", "add-text", "add-user", "add-metadata", "session-add"],
)
def test_text_that_is_not_unicode_is_one_line_naming_the_argument(
    tmp_path: Path, args: list[str], named: str, where: str
) -> None:
    out = run_cli(*args, db=tmp_path / "m.db")  # \udcff reaches argv as the byte 0xff
    assert out.returncode == 2
    _one_error_line(out, named, "not valid Unicode text (lone surrogate", where)
    assert "codec" not in out.stderr and "TextEncodeInput" not in out.stderr


def test_a_lone_surrogate_in_an_extract_file_names_the_turn(tmp_path: Path) -> None:
    file = tmp_path / "talk.json"
    file.write_text('[{"role": "user", "content": "ok"}, {"content": "x \\ud800 y"}]', "utf-8")
    out = run_cli("extract", str(file))
    assert out.returncode == 2
    _one_error_line(out, "FILE", "turn 2 content", "lone surrogate '\\ud800' at index 2")
    assert "PYTHONIOENCODING" not in out.stderr + out.stdout


def test_a_database_path_that_is_not_utf8_is_still_a_path(tmp_path: Path) -> None:
    """File names may hold any bytes: ``--db`` is not refused as text."""
    db = str(tmp_path / "m\udcff.db")
    assert run_cli("--db", db, "add", "hello", "-u", "bob").returncode == 0
    assert b"m\xff.db" in os.listdir(bytes(tmp_path))
    out = run_cli("--db", db, "list", "-u", "bob")
    assert out.returncode == 0 and "hello" in out.stdout, out.stderr


# -- 6: format characters (bidi overrides, zero-width) -----------------------------------


def test_format_characters_are_shown_as_escapes(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    text = "invoice \u202etxt.exe\u202c paid\u200b now \u2066x\u2069 family 👩\u200d👩\u200d👧"
    assert run_cli("add", text, "-u", "ana", "--no-dedupe", db=db).returncode == 0
    for command in (["list", "-u", "ana"], ["search", "invoice", "-u", "ana"]):
        out = run_cli(*command, db=db)
        assert out.returncode == 0, out.stderr
        for char in ("\u202e", "\u202c", "\u200b", "\u2066", "\u2069"):
            assert char not in out.stdout, (command, char)
        assert "\\u202etxt.exe\\u202c paid\\u200b now \\u2066x\\u2069" in out.stdout
        assert "👩\u200d👩\u200d👧" in out.stdout  # an emoji sequence stays one emoji


def test_every_format_character_but_the_joiners_is_escaped() -> None:
    kept = {"\u200c", "\u200d"}  # ZWNJ, ZWJ: emoji sequences, Persian and Indic words
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.category(char) == "Cf":
            assert (shown(char) == char) == (char in kept), hex(code)
    assert shown("a\tb\nc é 漢字") == "a\tb\nc é 漢字"
    assert shown("\x1b\u202e\U000e0041") == "\\x1b\\u202e\\U000e0041"


# -- 7: a tab in a memory, in a table under a pipe ---------------------------------------


def test_a_tab_in_a_memory_keeps_its_table_row_whole(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    text = "col\tumn " + " ".join(f"w{i}" for i in range(30)) + "\tlast\tword\tend"
    assert run_cli("add", text, "-u", "ana", db=db).returncode == 0
    out = run_cli("list", "-u", "ana", db=db)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if re.search(UUID, line))
    assert "col" in row and "end" in row, out.stdout  # the whole memory on the id's line
    assert len([x for x in out.stdout.splitlines() if "│" in x]) == 1, out.stdout


# -- 8, 9: the docs say what the CLI does ------------------------------------------------


def test_the_inspector_doc_names_serves_default_port() -> None:
    serve = cli.commands["serve"]
    port = next(p for p in serve.params if p.name == "port").default
    doc = (ROOT / "docs" / "inspector.md").read_text("utf-8")
    assert re.findall(r"127\.0\.0\.1:(\d+)/ui", doc) == [str(port)]


def _leaf_commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found |= _leaf_commands(command, f"{prefix}{name} ")
        else:
            found[prefix + name] = command
    return found


def test_the_readme_says_which_commands_take_json_as_a_file() -> None:
    """``--json OUT`` of a benchmark takes a file; the README must not promise a flag."""
    takes_file = sorted(
        name
        for name, command in _leaf_commands(cli).items()
        if any("--json" in p.opts and not getattr(p, "is_flag", True) for p in command.params)
    )
    readme = " ".join((ROOT / "README.md").read_text("utf-8").split())
    assert "Every command accepts `--json`" not in readme
    sentence = readme[readme.index("`contextos --json COMMAND`") :].split(". ")[0]
    assert takes_file and all(f"`{name}`" in sentence for name in takes_file), takes_file


# -- 10: errors of several lines become one ----------------------------------------------


@pytest.mark.parametrize(
    ("db", "needle", "code"),
    [
        ("postgresql://u:p@127.0.0.1:1/db", "Connection refused", 1),
        ("postgresql://u:p@[bad/db", "not a PostgreSQL URL", 2),
        ("/dev/null", "/dev/null is not a database file", 1),
    ],
    ids=["pg-refused", "pg-bad-url", "dev-null"],
)
def test_a_database_that_cannot_be_opened_is_one_line(db: str, needle: str, code: int) -> None:
    out = run_cli("--db", db, "list", "-u", "x")
    assert out.returncode == code
    _one_error_line(out, needle)
    assert "rollback" not in out.stderr


@pytest.mark.parametrize(
    "db",
    [
        "postgresql://app:Pa%ss-SECRET@db.internal:5432/contextos",  # a generated password
        "postgresql://app:SECRET@[fe80::1/contextos",
        'postgresql://app:Xy"9%Q-SECRETpass@db.internal/prod',
    ],
    ids=["percent-in-password", "open-bracket", "quote-in-password"],
)
def test_a_url_libpq_cannot_read_is_never_printed_with_its_password(db: str) -> None:
    """libpq's message quotes what it could not read: the password, or the whole URL,
    went to the terminal, to ``serve``'s log and into ``Memory()``'s error (a review)."""
    pytest.importorskip("psycopg")
    from contextos import Memory

    out = run_cli("--db", db, "list", "-u", "x")
    assert out.returncode == 2
    _one_error_line(out, "not a PostgreSQL URL")
    assert "SECRET" not in out.stderr + out.stdout and "percent-encoded" in out.stderr
    with pytest.raises(ValueError, match="not a PostgreSQL URL") as caught:
        Memory(db)
    assert "SECRET" not in str(caught.value)


# -- 11: count reads content parts, refuses null ------------------------------------------


def _count(file: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["count", str(file), "--json"])
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out, out.err


def test_count_counts_the_text_of_content_parts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain, parts = tmp_path / "plain.json", tmp_path / "parts.json"
    plain.write_text(json.dumps([{"role": "user", "content": "hello there\nsee this"}]), "utf-8")
    parts.write_text(
        json.dumps(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hello there"},
                        {"type": "image_url", "image_url": {"url": "http://x/cat.png"}},
                        {"type": "text", "text": "see this"},
                    ],
                }
            ]
        ),
        "utf-8",
    )
    counted = [json.loads(_count(f, capsys)[1]) for f in (plain, parts)]
    assert counted[0]["kind"] == counted[1]["kind"] == "messages"
    # The text parts count as the plain text does, and the image by its price: an image
    # at a URL (its size unread) costs the most OpenAI's rule gives (session 39: it was
    # counted as 0 tokens, and the total was too low).
    assert counted[1]["tokens"] == counted[0]["tokens"] + OPENAI_UNKNOWN_IMAGE_TOKENS
    assert counted[1]["estimate"] is True


@pytest.mark.parametrize("content", [None, 12, [{"type": "text", "text": None}]])
def test_count_refuses_a_message_without_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object
) -> None:
    file = tmp_path / "m.json"
    file.write_text(json.dumps([{"content": "ok"}, {"role": "user", "content": content}]), "utf-8")
    code, out, err = _count(file, capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: Invalid value for FILE: message 2 has ") and err.count("\n") == 1
