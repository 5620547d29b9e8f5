"""The CLI's output in the shapes scripts and terminals give it (a review of session 33):
a narrow terminal pane, a reader that stops early, a stdout that cannot hold UTF-8 or is
closed, hostile characters in ``--json`` output, blank ids, a key captured with
``$(...)``. Each case runs the real ``contextos`` in its own process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import cli_env, exit_when_reader_stops, run_cli
from contextos.embed import make_embedder
from contextos.memory import Memory

IDS_AND_TEXTS = 3


def _filled(db: Path, n: int, text: str = "note {i} about the lisbon trams") -> list[str]:
    """``n`` memories of user ana in ``db``, stored with the CLI's (hash) embedder."""
    with Memory(db, embedder=make_embedder("hash"), background_embedding=False) as memory:
        return [memory.add(text.format(i=i), user_id="ana")[0].id for i in range(n)]


def _on_a_narrow_terminal(db: Path, columns: int, *args: str) -> str:
    """What ``contextos ARGS`` writes to a pseudo-terminal ``columns`` wide."""
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "contextos.cli", *args],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
            env={**cli_env(db), "COLUMNS": str(columns), "LINES": "50", "NO_COLOR": "1"},
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end closed: the command is done
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        proc.stderr.close()
        proc.wait(timeout=120)
    finally:
        os.close(leader)
    assert proc.returncode == 0, err
    shown = b"".join(chunks).decode("utf-8").replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;]*m", "", shown)  # styles (NO_COLOR keeps them)


@pytest.mark.parametrize("columns", [40, 60])
@pytest.mark.parametrize("command", ["list", "search", "get"])
def test_a_narrow_terminal_shows_whole_ids_and_the_text(
    tmp_path: Path, columns: int, command: str
) -> None:
    """Was: under ~44 columns rich cut the id (``search`` without a "…", so the id
    pasted into ``get`` was "no memory"); under ~56 the memory's text was squeezed to
    nothing. Too narrow for the table, each record is printed on lines of its own."""
    db = tmp_path / "n.db"
    ids = _filled(db, IDS_AND_TEXTS, "the trams of lisbon {i}")
    args = {
        "list": ("list", "-u", "ana"),
        "search": ("search", "lisbon trams", "-u", "ana"),
        "get": ("get", ids[0]),
    }[command]
    shown = _on_a_narrow_terminal(db, columns, *args)
    flat = " ".join(shown.split())
    for memory_id in ids if command != "get" else ids[:1]:
        assert memory_id in shown.split(), (memory_id, shown)  # whole, on one line
    assert "the trams of lisbon 0" in flat, shown


def test_a_wide_terminal_still_gets_the_table(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    ids = _filled(db, 2)
    shown = _on_a_narrow_terminal(db, 120, "list", "-u", "ana")
    assert any(line.startswith("│ " + ids[0]) for line in shown.splitlines()), shown


@pytest.mark.parametrize(
    "args",
    [
        ("list", "-u", "ana", "--limit", "300"),
        ("--json", "list", "-u", "ana", "--limit", "300"),
        ("search", "lisbon trams", "-u", "ana", "--limit", "100"),
    ],
)
def test_a_reader_that_stops_early_gets_exit_141(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Was: a table or JSON document larger than the pipe, whose reader stopped after
    its first bytes (``| head -1``), was written in one call that the pipe took in
    part; CPython returned without an error and the command exited 0, not 141."""
    db = tmp_path / "p.db"
    # Every output here is well over a pipe's 64 KiB: one that fits is written whole
    # before the reader stops, and exit 0 is then right.
    hills = " and the long hills of the old town" * 40
    _filled(db, 300, "note {i} about the lisbon trams" + hills)
    argv = [sys.executable, "-m", "contextos.cli", *args]
    status, err = exit_when_reader_stops(argv, cli_env(db))
    assert status == 141, err
    assert err == ""


def test_a_stdout_that_cannot_hold_utf8_gets_escapes_not_an_error(tmp_path: Path) -> None:
    """Was: under ``PYTHONIOENCODING=ascii`` (a Windows code page is the same) ``add``
    stored the memory, then failed to print its report: exit 2, "a usage error", no id."""
    db = tmp_path / "a.db"
    ascii_out = {"PYTHONIOENCODING": "ascii"}
    added = run_cli("add", "crème brûlée 日本", "-u", "ana", "--json", db=db, env=ascii_out)
    assert added.returncode == 0, added.stderr
    assert added.stdout.isascii()
    record = json.loads(added.stdout)[0]
    assert record["text"] == "crème brûlée 日本"
    listed = run_cli("list", "-u", "ana", db=db, env=ascii_out)
    assert listed.returncode == 0, listed.stderr
    assert record["id"] in listed.stdout and "cr\\xe8me" in listed.stdout
    updated = run_cli("update", record["id"], "--text", "crème 2", db=db, env=ascii_out)
    assert updated.returncode == 0, updated.stderr


def test_a_closed_stdout_is_no_traceback(tmp_path: Path) -> None:
    """Was: with fd 1 closed (``>&-``, a supervisor), ``add`` stored the memory and
    then crashed with a traceback, exit 1 (Python makes such a ``sys.stdout`` None)."""
    db = tmp_path / "c.db"
    plain, as_json = (
        ["add", "closed plain", "-u", "ana"],
        ["add", "closed json", "-u", "ana", "--json"],
    )
    for args in (plain, as_json):
        proc = subprocess.run(
            [sys.executable, "-m", "contextos.cli", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=cli_env(db),
            pass_fds=(),
            preexec_fn=lambda: os.close(1),  # noqa: PLW1509 - a child with fd 1 closed
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert b"Traceback" not in proc.stderr, proc.stderr
    listed = json.loads(run_cli("list", "-u", "ana", "--json", db=db).stdout)
    assert sorted(r["text"] for r in listed) == ["closed json", "closed plain"]


def test_json_output_escapes_one_byte_controls_and_bidi(tmp_path: Path) -> None:
    """Was: ``--json`` wrote U+009B (the one-byte CSI), U+009D (OSC) and U+202E raw,
    where the tables show them escaped. Escaped as ``\\u009b``, the JSON parses the
    same."""
    db = tmp_path / "j.db"
    hostile = "a\u009b31mred\u009d0;title\u009c \u202etxt.exe \U000e0041 é"
    _filled(db, 1, hostile)
    out = run_cli("list", "-u", "ana", "--json", db=db).stdout
    for char in ("\u009b", "\u009d", "\u009c", "\u202e", "\U000e0041"):
        assert char not in out
    assert "é" in out  # printable text stays as it is
    assert json.loads(out)[0]["text"] == hostile


@pytest.mark.parametrize(
    "args",
    [("get", " "), ("delete", " "), ("history", ""), ("update", " ", "--text", "x")],
)
def test_a_blank_memory_id_is_a_usage_error(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Was exit 1 with "no memory ' '", which reads as a memory gone."""
    db = tmp_path / "b.db"
    _filled(db, 1)
    out = run_cli(*args, db=db)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "MEMORY_ID" in out.stderr and "blank" in out.stderr


def test_a_blank_session_id_of_session_show_is_a_usage_error(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    _filled(db, 1)
    out = run_cli("session", "show", " ", db=db)
    assert out.returncode == 2, (out.stdout, out.stderr)


def test_keys_create_prints_the_key_alone_on_stdout(tmp_path: Path) -> None:
    """Was: the "store the secret now" note went to stdout too, so
    ``KEY=$(contextos keys create ...)`` captured two lines and ``contextos mcp``
    refused the key."""
    db = tmp_path / "k.db"
    out = run_cli("keys", "create", "--tenant", "acme", db=db)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1 and out.stdout.startswith("ctx_"), out.stdout
    assert "store the secret now" in out.stderr


def test_search_says_when_a_dead_process_still_holds_a_memory_s_vector(tmp_path: Path) -> None:
    """Was: a ``contextos add`` killed while computing its vector left its claim for
    30 s; a search then found that memory by its words only and said nothing (the
    note is promised), because this process had nothing of its own to embed."""
    from contextos.store.sqlite import SQLiteStore

    db = tmp_path / "held.db"
    with Memory(db, embedder=make_embedder("hash"), background_embedding=True) as memory:
        memory.store.claim_vectors("a-process-that-died", limit=100, lease_s=0.001)
        memory.add("the lisbon trams climb the hills", user_id="ana")
    store = SQLiteStore(db)
    try:
        assert store.claim_vectors("a-process-that-died", limit=100, lease_s=60)
    finally:
        store.close()
    out = run_cli("search", "trams", "-u", "ana", db=db)
    assert out.returncode == 0, out.stderr
    assert "the lisbon trams" in out.stdout
    assert "1 memory is still waiting for its vector (" in out.stderr, out.stderr
