"""Listing session logs: ``Memory.sessions`` and ``contextos session list``, which the
server's ``GET /v1/sessions`` pages through too (tests/test_server.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_support import run_cli
from contextos.engine.session import Session
from contextos.errors import ScopeError
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message


def _memory(path: Path, tenant: str = "default") -> Memory:
    return Memory(path, embedder=HashEmbedder(), background_embedding=False, tenant=tenant)


def _say(memory: Memory, session_id: str, **owner: str) -> None:
    Session(memory, session_id, **owner).add(Message("user", f"hello from {session_id}"))


def test_sessions_are_listed_by_last_activity_and_narrowed_to_an_owner(tmp_path: Path) -> None:
    with _memory(tmp_path / "m.db") as memory:
        _say(memory, "a1", user_id="ana")
        _say(memory, "b1", user_id="bob")
        _say(memory, "a2", user_id="ana", agent_id="helper")
        _say(memory, "a1", user_id="ana")  # a1 is now the most recently active
        assert memory.sessions() == ["b1", "a2", "a1"]
        assert memory.sessions(order="newest") == ["a1", "a2", "b1"]
        assert memory.sessions(user_id="ana") == ["a2", "a1"]
        assert memory.sessions(agent_id="helper") == ["a2"]
        assert memory.sessions(user_id="bob", agent_id="helper") == []
        # pages: the newest first, then on from the offset
        assert memory.sessions(order="newest", limit=2) == ["a1", "a2"]
        assert memory.sessions(order="newest", limit=2, offset=2) == ["b1"]


def test_another_tenants_sessions_are_not_listed(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with _memory(db, tenant="acme") as acme, _memory(db, tenant="globex") as globex:
        _say(acme, "acme-chat", user_id="ana")
        _say(globex, "globex-chat", user_id="ana")
        assert acme.sessions() == ["acme-chat"]
        assert globex.sessions(user_id="ana") == ["globex-chat"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"order": "latest"}, ValueError, "order must be 'oldest' or 'newest'"),
        ({"limit": 0}, ValueError, "limit must be an integer between 1 and 1000"),
        ({"limit": True}, ValueError, "limit must be an integer"),
        ({"offset": -1}, ValueError, "offset must be a non-negative integer"),
        ({"user_id": ""}, ScopeError, "user_id"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_error(
    tmp_path: Path, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with _memory(tmp_path / "m.db") as memory, pytest.raises(error, match=match):
        memory.sessions(**kwargs)  # type: ignore[arg-type]


def test_the_cli_lists_one_page_and_says_on_stderr_that_more_follow(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    for session_id in ("s1", "s2", "s3"):
        run_cli("session", "add", session_id, "hi", "-u", "ana", db=db)
    run_cli("session", "add", "other", "hi", "-u", "bob", db=db)

    page = run_cli("session", "list", "-u", "ana", "--newest", "--limit", "2", db=db)
    assert page.returncode == 0, page.stderr
    assert page.stdout.split() == ["s3", "s2"]
    assert "--offset 2 shows the next page" in page.stderr

    last = run_cli("session", "list", "-u", "ana", "--newest", "--offset", "2", "--json", db=db)
    assert json.loads(last.stdout) == ["s1"] and "more follow" not in last.stderr
    whole = run_cli("session", "list", "-u", "ana", "--limit", "3", db=db)
    assert whole.stdout.split() == ["s1", "s2", "s3"] and "more follow" not in whole.stderr


def test_a_session_id_is_printed_as_text_never_as_markup(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    run_cli("session", "add", "[bold]x[/bold]", "hi", db=db)
    out = run_cli("session", "list", db=db)
    assert out.stdout.strip() == "[bold]x[/bold]"


def test_the_cli_on_a_missing_database_lists_nothing_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "typo.db"
    out = run_cli("session", "list", db=db)
    assert out.returncode == 0 and out.stdout == ""
    assert "no database at" in out.stderr and not db.exists()
