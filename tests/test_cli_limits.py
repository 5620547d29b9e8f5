"""Integer options past what the store holds, and bad times, are one-line usage errors
naming the option; session commands take ``-u`` like the memory commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_support import run_cli
from contextos.cli.common import MAX_INT
from contextos.memory import Memory

TOO_BIG = "99999999999999999999"  # past 2**63-1: SQLite raised OverflowError (a traceback)


@pytest.mark.parametrize(
    "args",
    [
        ["session", "show", "s1", "--seq"],
        ["list", "-u", "bob", "--offset"],
        ["search", "hello", "-u", "bob", "--token-budget"],
        ["window", "--session", "s1", "-q", "hi", "--budget"],
        ["compact", "--session", "s1", "--budget"],
        ["bench", "litm", "--limit"],
        ["bench", "scale", "--n"],
        ["serve", "--keep-alive"],  # a number_option: capped there
    ],
)
def test_an_integer_past_the_stores_range_is_a_usage_error(tmp_path: Path, args: list[str]) -> None:
    db = tmp_path / "m.db"
    run_cli("session", "add", "s1", "hello", db=db)
    run_cli("add", "hello", "-u", "bob", db=db)
    out = run_cli(*args, TOO_BIG, db=db)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert f"Invalid value for '{args[-1]}'" in line and f"at most {MAX_INT}" in line


def test_an_integer_past_a_smaller_maximum_names_that_maximum(tmp_path: Path) -> None:
    """``list --limit`` takes 1 to 1,000: a number past 2**63-1 quoted that bound as the
    maximum, and the user who sent it next was told "1<=x<=1000" (a review)."""
    out = run_cli("list", "-u", "bob", "--limit", TOO_BIG, db=tmp_path / "m.db")
    assert out.returncode == 2
    assert "is too large (at most 1000)" in out.stderr and str(MAX_INT) not in out.stderr


def test_the_largest_integer_is_still_taken(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    run_cli("session", "add", "s1", "hello", db=db)
    run_cli("add", "hello", "-u", "bob", db=db)
    listed = run_cli("list", "-u", "bob", "--offset", str(MAX_INT), "--json", db=db)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    shown = run_cli("session", "show", "s1", "--seq", str(MAX_INT), db=db)
    assert shown.returncode == 1
    assert shown.stderr.strip() == f"error: session 's1' has no turn {MAX_INT}"


def test_sqlite_refuses_a_number_it_cannot_hold_with_a_value_error(tmp_path: Path) -> None:
    # What the CLI's caps keep out, from the library: a ValueError, not an OverflowError.
    memory = Memory(str(tmp_path / "m.db"), background_embedding=False)
    try:
        with pytest.raises(ValueError, match=r"too large for SQLite") as caught:
            memory.get_all(user_id="bob", offset=10**20)
        assert not isinstance(caught.value, OverflowError)
        assert "\n" not in str(caught.value)
    finally:
        memory.close()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["add", "hello", "-u", "bob", "--event-time", "yesterday"], "--event-time"),
        (["search", "hello", "-u", "bob", "--as-of", "yesterday"], "--as-of"),
    ],
)
def test_a_bad_time_names_its_option(tmp_path: Path, args: list[str], option: str) -> None:
    db = tmp_path / "m.db"
    out = run_cli(*args, db=db)
    assert out.returncode == 2, out.stdout
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"error: Invalid value for '{option}': 'yesterday' is not an ISO-8601")
    assert not db.exists()  # refused before the database was opened


def test_session_commands_take_u_for_the_user(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    added = run_cli("session", "add", "s1", "hello", "-u", "ana", "--json", db=db)
    assert added.returncode == 0, added.stderr
    assert [t["user_id"] for t in json.loads(added.stdout)] == ["ana"]
    shown = run_cli("session", "show", "s1", "-u", "ana", "--json", db=db)
    assert shown.returncode == 0, shown.stderr
    assert [t["user_id"] for t in json.loads(shown.stdout)["turns"]] == ["ana"]
    run_cli("add", "Ana is allergic to peanuts", "-u", "ana", db=db)
    window = run_cli("window", "--session", "s1", "-q", "allergies?", "-u", "ana", "--json", db=db)
    assert window.returncode == 0, window.stderr
    segments = json.loads(window.stdout)["segments"]
    assert next(s for s in segments if s["name"] == "memories")["items"] == 1  # ana's memory
    compact = run_cli("compact", "--session", "s1", "--budget", "100", "-u", "ana", db=db)
    assert compact.returncode == 0, compact.stderr
