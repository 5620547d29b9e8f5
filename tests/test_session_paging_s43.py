"""Paging through a user's sessions while the app logs visits each once (a review, s43).

Sessions are listed by last activity, so a turn moves its session to the end: paging by
``offset`` while the app wrote skipped as many sessions as moved and listed those twice
(10 of 250 never listed). ``after`` pages in id order, which no write moves: in Python,
over HTTP (``next_after``) and in the CLI (``--after``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cli_support import keyed_server, run_cli
from contextos import Memory, Message, Session
from contextos.testing.embedders import HashEmbedder

IDS = [f"s{n:03d}" for n in range(250)]


def _log(memory: Memory, session_id: str) -> None:
    Session(memory, session_id, user_id="ana").add(Message("user", f"hello from {session_id}"))


def _walk(
    memory: Memory, next_page: Callable[[str | None], tuple[list[str], str | None]]
) -> list[str]:
    """Every page, the app logging a turn in ten listed and ten unlisted sessions
    between two pages (by offset, those moved past the next page's start)."""
    seen: list[str] = []
    key: str | None = None
    while True:
        page, key = next_page(key)
        seen += page
        for session_id in [*seen[-10:], *(i for i in IDS if i not in seen)][:20]:
            _log(memory, session_id)
        if key is None:
            return seen


@pytest.fixture
def memory(tmp_path: Path) -> Memory:
    memory = Memory(tmp_path / "p.db", embedder=HashEmbedder(), background_embedding=False)
    for session_id in IDS:
        _log(memory, session_id)
    return memory


def test_paging_by_after_lists_every_session_once_while_the_app_logs(memory: Memory) -> None:
    def page(key: str | None) -> tuple[list[str], str | None]:
        ids = memory.sessions(user_id="ana", order="id", limit=100, after=key)
        more = len(ids) == 100 and memory.sessions(user_id="ana", limit=1, after=ids[-1])
        return ids, ids[-1] if more else None

    seen = _walk(memory, page)
    assert sorted(seen) == IDS and len(seen) == len(IDS)
    with pytest.raises(ValueError, match="after pages in id order"):
        memory.sessions(user_id="ana", after="s001", offset=5)
    by_activity = memory.sessions(user_id="ana", limit=250)  # the walk moved sessions
    assert sorted(by_activity) == IDS and by_activity != IDS
    memory.close()


def test_over_http_and_the_cli_too(memory: Memory, tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with keyed_server(str(db), "--embedder", "hash") as (c, _key):
        # the server's key is tenant acme's: the app logs there
        acme = Memory(db, tenant="acme", embedder=HashEmbedder(), background_embedding=False)
        for session_id in IDS:
            _log(acme, session_id)

        def http_page(key: str | None) -> tuple[list[str], str | None]:
            query = {
                "user_id": "ana",
                "limit": 100,
                "order": "id",
                **({"after": key} if key else {}),
            }
            answer = c.get("/v1/sessions", params=query)
            assert answer.status_code == 200, answer.text
            return answer.json()["results"], answer.json()["next_after"]

        seen = _walk(acme, http_page)
        assert sorted(seen) == IDS and len(seen) == len(IDS)
        refused = c.get("/v1/sessions", params={"after": "s001", "order": "newest"})
        assert refused.status_code == 400, refused.text
        acme.close()

    def cli_page(key: str | None) -> tuple[list[str], str | None]:
        args = ["--json", "session", "list", "-u", "ana", "--limit", "100", "--by-id"]
        listed = run_cli(*args, *(["--after", key] if key else []), db=db)
        assert listed.returncode == 0, listed.stderr
        ids = json.loads(listed.stdout)
        more = "more follow: --after" in listed.stderr
        return ids, ids[-1] if more else None

    seen = _walk(memory, cli_page)
    assert sorted(seen) == IDS and len(seen) == len(IDS)
    memory.close()


def test_the_cli_hint_never_names_an_escaped_id_as_the_key(tmp_path: Path) -> None:
    """The hint named ``--after 'chat\\nsecret'`` (the id as shown, escaped), and paging
    with it skipped 4 of 9 sessions: an id shown escaped is not the key."""
    db = tmp_path / "e.db"
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
        for session_id in ("chat", "chat\tx", "chat\nsecret", "chatA", "zz"):
            _log(memory, session_id)
    listed = run_cli("session", "list", "-u", "ana", "--by-id", "--limit", "3", db=db)
    assert listed.returncode == 0, listed.stderr
    assert "more follow: --after with the last id of --json's list" in listed.stderr
    whole = run_cli("--json", "session", "list", "-u", "ana", "--by-id", "--limit", "3", db=db)
    last = json.loads(whole.stdout)[-1]
    assert last == "chat\nsecret"
    rest = run_cli("--json", "session", "list", "-u", "ana", "--after", last, db=db)
    assert json.loads(rest.stdout) == ["chatA", "zz"]
    plain = run_cli("session", "list", "-u", "ana", "--by-id", "--limit", "4", db=db)
    assert "more follow: --after chatA shows the next page" in plain.stderr
