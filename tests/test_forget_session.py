"""forget by session: a session's log and every memory of it, whoever they name.

Why: a support bot that logs a conversation with only an agent id (or no scope) wrote
turns no ``forget(user)`` could reach (review s37 tenantops, finding 1). Proved on disk
as tests/test_forget_bytes.py proves a user's erasure: SQLite, no byte of the session
in the file or its -wal/-shm; PostgreSQL, no row of any table holding its text.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cli_support import keyed_client, run_cli
from contextos.errors import ScopeError
from contextos.memory import Memory
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder
from contextos.types import Scope
from pg_support import connect, fresh_schema, pg_url, rows_mentioning


def _marker(tag: str) -> str:
    # Distinct leading letters per marker, so FTS prefix compression cannot split one.
    return f"{tag}{secrets.token_hex(10)}"


def _raw_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def _found(blob: bytes, markers: list[str]) -> list[str]:
    """Markers present in ``blob``, whole or by their tail (what prefix compression keeps)."""
    return [m for m in markers if m.encode() in blob or m[-12:].encode() in blob]


def _fill(http: Any) -> tuple[list[str], list[str]]:
    """Session s1 written the ways a support bot writes it (turns with only an agent,
    turns with no scope, memories of a user, of an agent only, an edited one), and
    what must stay: ana's memory outside s1, bob's session s2."""
    gone = [_marker(t) for t in ("qa", "qb", "qc", "qd", "qe", "qf")]
    kept = [_marker(t) for t in ("za", "zb")]
    turns = "/v1/sessions/s1/turns"
    one = {"role": "user", "content": f"my iban is {gone[0]}"}
    assert http.post(turns, json={"messages": [one], "agent_id": "bot"}).status_code == 201
    two = {"role": "user", "content": f"card {gone[1]}"}
    assert http.post(turns, json={"messages": [two]}).status_code == 201
    added = http.post(
        "/v1/memories",
        json={"messages": f"ana lives at {gone[2]}", "user_id": "ana", "session_id": "s1"},
    )
    assert added.status_code == 201, added.text
    first = added.json()["results"][0]["id"]
    patched = http.patch(f"/v1/memories/{first}", json={"text": f"ana moved to {gone[3]}"})
    assert patched.status_code == 200, patched.text
    for body in (
        {"messages": f"bot noted {gone[4]}", "agent_id": "bot", "session_id": "s1"},
        {"messages": f"bare note {gone[5]}", "session_id": "s1"},
        {"messages": f"ana elsewhere {kept[0]}", "user_id": "ana"},
        {"messages": f"bob says {kept[1]}", "user_id": "bob", "session_id": "s2"},
    ):
        assert http.post("/v1/memories", json=body).status_code == 201
    return gone, kept


def _forget_s1(http: Any) -> None:
    for bad in ({}, {"user_id": "ana", "session_id": "s1"}, {"agent_id": "bot"}):
        assert http.post("/v1/memories/forget", json=bad).status_code == 422, bad
    resp = http.post("/v1/memories/forget", json={"session_id": "s1"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "session_id": "s1",
        "forgotten": 3,
        "sessions_forgotten": 1,
        "turns_forgotten": 2,
    }
    assert http.get("/v1/sessions/s1/turns").json()["results"] == []
    assert http.get("/v1/memories", params={"session_id": "s1"}).json()["results"] == []
    left = http.get("/v1/memories", params={"user_id": "ana"}).json()["results"]
    assert [r["text"].split()[:2] for r in left] == [["ana", "elsewhere"]]


def test_sqlite_forget_session_leaves_no_byte_of_it(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with keyed_client(str(db)) as http:
        gone, kept = _fill(http)
        assert _found(_raw_bytes(db), gone) == gone  # the scan does see them before
        _forget_s1(http)
        blob = _raw_bytes(db)  # server still running: file, -wal and -shm as they are
        assert _found(blob, gone) == []
        assert _found(blob, kept) == kept
        with sqlite3.connect(db) as conn:
            (vectors,) = conn.execute(
                "SELECT count(*) FROM vectors v LEFT JOIN memories m "
                "ON m.rowid = v.mem_rowid WHERE m.rowid IS NULL"
            ).fetchone()
            sessions = conn.execute("SELECT session_id FROM session_meta").fetchall()
        assert vectors == 0 and ("s1",) not in sessions


@pytest.mark.postgres
def test_postgres_forget_session_leaves_no_row_of_it() -> None:
    with fresh_schema("fsess") as (url, schema), keyed_client(url) as http:
        gone, kept = _fill(http)
        assert len(rows_mentioning(pg_url(), schema, gone)) >= len(gone)
        _forget_s1(http)
        assert rows_mentioning(pg_url(), schema, [*gone, '"s1"']) == []
        assert len(rows_mentioning(pg_url(), schema, kept)) >= len(kept)
        with connect(pg_url()) as conn:
            for table in ("memories", "turns", "session_meta"):
                (n,) = conn.execute(
                    f"SELECT count(*) FROM {schema}.{table} WHERE session_id = 's1'"
                ).fetchone()
                assert n == 0, table


def test_memory_forget_takes_exactly_one_target(store: Store) -> None:
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as m:
        m.add("ana in s1 likes tea", user_id="ana", session_id="s1")
        m.add("bot in s1 noted coffee", agent_id="bot", session_id="s1")
        m.add("ana in s2 likes cake", user_id="ana", session_id="s2")
        for call in (
            lambda: m.forget(),
            lambda: m.forget("ana", session_id="s1"),
            lambda: m.forget(session_id=" "),
        ):
            with pytest.raises(ScopeError):
                call()
        with pytest.raises(ValueError):  # the store refuses it too, not as a whole tenant
            store.forget(Scope(tenant=m.tenant, agent_id="bot"))
        assert m.search("coffee", agent_id="bot")  # the indexes hold it before
        assert m.forget(session_id="s1") == 2
        assert m.search("coffee", agent_id="bot") == []
        assert [h.record.text for h in m.search("tea", user_id="ana")] == ["ana in s2 likes cake"]
        assert [r.text for r in m.get_all(user_id="ana")] == ["ana in s2 likes cake"]
        assert m.forget("ana") == 1  # positional user id, as before


def test_cli_forget_by_session(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    assert run_cli("add", "-s", "s1", "-a", "bot", "bot noted coffee", db=db).returncode == 0
    assert run_cli("add", "-u", "ana", "ana likes tea", db=db).returncode == 0
    refused = run_cli("forget", "-s", "s1", db=db)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    both = run_cli("forget", "-s", "s1", "-u", "ana", "--yes", db=db)
    assert both.returncode == 2 and "exactly one" in both.stderr
    done = run_cli("--json", "forget", "-s", "s1", "--yes", db=db)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "session_id": "s1",
        "forgotten": 1,
        "sessions_forgotten": 0,  # it held a memory, no log
        "turns_forgotten": 0,
    }
    listed = run_cli("--json", "list", "-a", "bot", db=db)
    assert json.loads(listed.stdout) == []
    assert "tea" in run_cli("list", "-u", "ana", db=db).stdout
