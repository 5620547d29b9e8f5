"""Compaction over HTTP: ``POST /v1/sessions/{id}/compact``.

Nothing over HTTP compacted a session, so a long session's windows cost in proportion
to its log for ever. A real server on loopback, a real SQLite file, the turns logged,
compacted, windowed and searched through the HTTP API as a client in another language
would; the CLI's ``compact --json`` on the same file for the shape of the answer.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from cli_support import run_cli
from contextos.engine.compaction import STRATEGIES
from contextos.engine.session import Session
from contextos.server.schemas import CompactStrategy
from contextos.store import open_store
from ui_support import LiveServer, auth, live_server

#: A long chat: each turn about 40 tokens, the first holding a fact only it says.
FACT = "the zeppelin hangar code is 4417"


def _chat(n: int) -> list[dict[str, str]]:
    said = [
        {
            "role": ("user", "assistant")[i % 2],
            "content": f"turn {i}: we talked about the garden, the weather and the dog Rex "
            f"again and again, nothing new in turn {i}",
        }
        for i in range(n)
    ]
    said[0]["content"] = f"remember this: {FACT}"
    return said


def _post(server: LiveServer, path: str, key: str, body: Any) -> httpx.Response:
    return server.http.post(path, json=body, headers=auth(key))


def _window(server: LiveServer, key: str, sid: str, **body: Any) -> dict[str, Any]:
    body = {"question": "what about Rex?", "token_budget": 20_000, **body}
    answer: dict[str, Any] = server.call("POST", f"/v1/sessions/{sid}/window", key, body)
    return answer


def test_a_compaction_makes_the_next_window_smaller_and_it_holds_the_summary(
    tmp_path: Path,
) -> None:
    with live_server(tmp_path / "s.db") as server:
        key = server.issue_key("acme")
        server.turns(key, "long", _chat(300), user_id="ana")
        # Two kept Sessions of the log (server.live_sessions): one is compacted through,
        # the other must see the compaction as well.
        before = _window(server, key, "long")
        before_ana = _window(server, key, "long", user_id="ana")
        assert not any(b["segment"] == "summary" for b in before["blocks"])

        resp = _post(server, "/v1/sessions/long/compact", key, {"budget": 2000})
        assert resp.status_code == 200, resp.text
        done = resp.json()
        assert set(done) == {"compacted", "plan", "state", "archived", "raced", "reason"}
        assert done["compacted"] is True and done["raced"] is False and done["archived"] == 0
        assert done["reason"] is None
        assert done["plan"]["strategy"] == "summarize" and done["plan"]["rotate"]
        assert done["state"]["compactions"] == 1 and done["state"]["summary"]

        for after, was in (
            (_window(server, key, "long"), before),
            (
                _window(server, key, "long", user_id="ana"),
                before_ana,
            ),
        ):
            assert after["tokens"] < was["tokens"] // 2, (after["tokens"], was["tokens"])
            summary = [b for b in after["blocks"] if b["segment"] == "summary"]
            assert len(summary) == 1
            assert summary[0]["text"].startswith("Summary of the earlier conversation:")
            turns = [b for b in after["blocks"] if b["segment"] == "turns"]
            assert turns and "turn 299" in turns[-1]["text"]  # the newest turns stay

        # Under the trigger now (80% of the budget): nothing to do, unless forced.
        budget = done["plan"]["after_tokens"] * 10 // 7
        again = _post(server, "/v1/sessions/long/compact", key, {"budget": budget}).json()
        assert again["compacted"] is False and again["plan"] is None
        assert again["state"]["compactions"] == 1
        forced = _post(server, "/v1/sessions/long/compact", key, {"budget": budget, "force": True})
        assert forced.json()["compacted"] is True
        assert forced.json()["state"]["compactions"] == 2


def test_the_answer_is_the_clis_compact_json(tmp_path: Path) -> None:
    """The same log compacted by HTTP and by ``contextos compact --json`` answers alike
    (one helper builds both: ``CompactionResult.to_json``)."""
    with live_server(tmp_path / "s.db") as server:
        key = server.issue_key("acme")
        for sid in ("by-http", "by-cli"):
            server.turns(key, sid, _chat(120))
        body = {"budget": 1500, "strategy": "truncate", "force": True}
        over_http = _post(server, "/v1/sessions/by-http/compact", key, body).json()
    args = ["compact", "--session", "by-cli", "--budget", "1500", "--strategy", "truncate"]
    out = run_cli(
        *args, "--force", "--json", db=tmp_path / "s.db", env={"CONTEXTOS_TENANT": "acme"}
    )
    assert out.returncode == 0, out.stderr
    by_cli = json.loads(out.stdout)
    assert set(by_cli) == set(over_http)
    assert by_cli["plan"] == over_http["plan"]
    state = ("start_seq", "cleared", "compactions", "summary")
    assert {k: by_cli["state"][k] for k in state} == {k: over_http["state"][k] for k in state}


def test_offload_archives_into_the_callers_tenant_only(tmp_path: Path) -> None:
    with live_server(tmp_path / "s.db") as server:
        acme, other = server.issue_key("acme"), server.issue_key("other")
        server.turns(acme, "s-off", _chat(200), user_id="ana")
        body = {"budget": 1500, "strategy": "offload", "user_id": "ana"}
        resp = _post(server, "/v1/sessions/s-off/compact", acme, body)
        assert resp.status_code == 200, resp.text
        assert resp.json()["archived"] > 0
        assert 0 in resp.json()["plan"]["rotate"]  # the turn with the fact went out

        query = {"query": "zeppelin hangar code", "limit": 5}
        for scope in ({"session_id": "s-off"}, {"user_id": "ana"}):
            hits = server.call("POST", "/v1/memories/search", acme, {**query, **scope})
            assert any(FACT in h["memory"]["text"] for h in hits["results"]), scope
            theirs = server.call("POST", "/v1/memories/search", other, {**query, **scope})
            assert theirs["results"] == [], scope
        window = _window(server, acme, "s-off", user_id="ana", question="the hangar code?")
        assert FACT not in "".join(b["text"] for b in window["blocks"] if b["segment"] == "turns")
        assert FACT in "".join(b["text"] for b in window["blocks"] if b["segment"] == "memories")


@pytest.mark.parametrize("value", ["Type a message...", True])
def test_offload_archives_a_turn_whose_own_metadata_says_placeholder(
    tmp_path: Path, value: object
) -> None:
    """The adapters mark a turn of only images ``placeholder: True`` and offload stores no
    memory of it; an app's own key of that name (a chat UI's input hint, or ``true``)
    made offload drop a turn of real text from every window and search (reviews s57,
    s58): the mark counts only on a turn of nothing but ``[image]`` and the like."""
    said = _chat(200)
    said[0] = {**said[0], "metadata": {"placeholder": value}}
    with live_server(tmp_path / "s.db") as server:
        acme = server.issue_key("acme")
        server.turns(acme, "s-ph", said, user_id="ana")
        body = {"budget": 1500, "strategy": "offload", "user_id": "ana"}
        resp = _post(server, "/v1/sessions/s-ph/compact", acme, body)
        assert resp.status_code == 200, resp.text
        assert 0 in resp.json()["plan"]["rotate"]
        query = {"query": "zeppelin hangar code", "limit": 5, "session_id": "s-ph"}
        hits = server.call("POST", "/v1/memories/search", acme, query)
        assert any(FACT in h["memory"]["text"] for h in hits["results"])


def _with_dia_ids(said: list[dict[str, str]], ids: list[str]) -> list[dict[str, Any]]:
    return [{**turn, "metadata": {"dia_id": id_}} for turn, id_ in zip(said, ids, strict=True)]


def _memories_text(window: dict[str, Any]) -> str:
    return "".join(b["text"] for b in window["blocks"] if b["segment"] == "memories")


def test_a_client_that_copies_one_dia_id_onto_every_turn_gets_offloaded_turns_back(
    tmp_path: Path,
) -> None:
    """An archived turn's memory was left out while the window showed a turn of the same
    ``dia_id``: with one id on every turn (a client that copies message metadata), no
    archived turn ever came back (review s57). A turn is now known by its ``seq``."""
    said = _with_dia_ids(_chat(200), ["conv-77"] * 200)
    with live_server(tmp_path / "s.db") as server:
        acme = server.issue_key("acme")
        server.turns(acme, "s-copied", said, user_id="ana")
        body = {"budget": 1500, "strategy": "offload", "user_id": "ana"}
        assert (
            0 in _post(server, "/v1/sessions/s-copied/compact", acme, body).json()["plan"]["rotate"]
        )
        window = _window(server, acme, "s-copied", user_id="ana", question="the hangar code?")
        assert FACT in _memories_text(window)


def test_a_memory_of_another_session_is_placed_though_a_turn_here_has_its_dia_id(
    tmp_path: Path,
) -> None:
    """An app that numbers message ids per conversation: a fact offloaded from session A
    (``dia_id`` "0") was never placed in session B's window while B showed its own turn
    "0", nor was a note outside any session with ``source_id`` "1" (review s57)."""
    with live_server(tmp_path / "s.db") as server:
        acme = server.issue_key("acme")
        server.turns(
            acme, "s-a", _with_dia_ids(_chat(200), [str(i) for i in range(200)]), user_id="ana"
        )
        body = {"budget": 1500, "strategy": "offload", "user_id": "ana"}
        assert 0 in _post(server, "/v1/sessions/s-a/compact", acme, body).json()["plan"]["rotate"]
        note = {
            "role": "user",
            "content": "Ana's loyalty card is LC-55120.",
            "metadata": {"source_id": "1"},
        }
        server.call("POST", "/v1/memories", acme, {"messages": [note], "user_id": "ana"})
        hello = [{"role": "user", "content": "hello again"}, {"role": "assistant", "content": "hi"}]
        server.turns(acme, "s-b", _with_dia_ids(hello, ["0", "1"]), user_id="ana")
        window = _window(server, acme, "s-b", user_id="ana", question="the hangar code?")
        assert FACT in _memories_text(window)
        window = _window(server, acme, "s-b", user_id="ana", question="my loyalty card?")
        assert "LC-55120" in _memories_text(window)


def test_another_tenants_key_cannot_compact_a_session(tmp_path: Path) -> None:
    with live_server(tmp_path / "s.db") as server:
        acme, other = server.issue_key("acme"), server.issue_key("other")
        server.turns(acme, "mine", _chat(200))
        for strategy in STRATEGIES:
            body = {"budget": 100, "strategy": strategy, "force": True}
            resp = _post(server, "/v1/sessions/mine/compact", other, body)
            assert resp.status_code == 404, resp.text
            assert resp.json()["error"]["type"] == "NotFound"
        unknown = _post(server, "/v1/sessions/nobody/compact", acme, {"budget": 100})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["message"] == "no session 'nobody' (or it has no turns yet)"
        # acme's session is as it was: no summary in its window.
        window = _window(server, acme, "mine")
        assert not any(b["segment"] == "summary" for b in window["blocks"])


def test_a_bad_strategy_or_budget_is_a_422_naming_the_field(tmp_path: Path) -> None:
    with live_server(tmp_path / "s.db") as server:
        key = server.issue_key("acme")
        server.turns(key, "s", _chat(10))
        for body, field in (
            ({"budget": 100, "strategy": "zip"}, "body.strategy"),
            ({"budget": 0}, "body.budget"),
            ({"budget": -5}, "body.budget"),
            ({"budget": 10**9}, "body.budget"),
            ({"budget": 2**70}, "body.budget"),
            ({"budget": "lots"}, "body.budget"),
            ({}, "body.budget"),
            ({"budget": 100, "force": "maybe"}, "body.force"),
            ({"budget": 100, "user_id": " "}, "body.user_id"),
            ({"budget": 100, "tenant": "other"}, "body.tenant"),
        ):
            resp = _post(server, "/v1/sessions/s/compact", key, body)
            assert resp.status_code == 422, (body, resp.text)
            assert resp.json()["error"]["message"].startswith(field), (body, resp.text)
        blank = _post(server, "/v1/sessions/%20/compact", key, {"budget": 100})
        assert blank.status_code == 422


def test_the_schemas_strategies_are_the_engines() -> None:
    assert get_args(CompactStrategy) == STRATEGIES


def test_a_compaction_that_loses_a_race_is_a_409_and_changes_nothing(tmp_path: Path) -> None:
    """Another writer (here a library Session pinning and unpinning turns, as an agent
    would, in a loop) saves the state while the server compacts: the server's save is
    refused (compare-and-set), nothing is written, and the client is told to retry.
    The pins slide (turn k pinned, then k - 1 unpinned), so the state never comes back
    to one the server read: a state read again unchanged is no race (``Session._save``)."""
    with live_server(tmp_path / "s.db") as server:
        key = server.issue_key("acme")
        for _ in range(5):
            server.turns(key, "race", _chat(1000))
        stop = threading.Event()
        store = open_store(tmp_path / "s.db")

        def pin_and_unpin() -> None:
            other = Session(store, "race", tenant="acme")
            seq = 1
            other.pin(seq)
            while not stop.is_set() and seq < 4000:  # the log holds 5,000 turns
                other.pin(seq + 1)
                other.pin(seq, False)
                seq += 1
            other.pin(seq, False)

        writer = threading.Thread(target=pin_and_unpin)
        writer.start()
        try:
            raced = _post(server, "/v1/sessions/race/compact", key, {"budget": 2000})
        finally:
            stop.set()
            writer.join()
            store.close()
        assert raced.status_code == 409, raced.text
        assert raced.json()["error"]["type"] == "Conflict"
        window = _window(server, key, "race")
        assert not any(b["segment"] == "summary" for b in window["blocks"])
        again = _post(server, "/v1/sessions/race/compact", key, {"budget": 2000})
        assert again.status_code == 200 and again.json()["compacted"] is True
