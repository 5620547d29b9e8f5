"""Offboarding: ``contextos --tenant T forget --whole-tenant`` erases every row of T.

Why: the per-user and per-session erasures cannot reach memories that name only an
agent, nor list what a tenant holds, and a revoked key row keeps the tenant's name and
labels for good (review s37 tenantops, finding 2). Proved on disk as
tests/test_forget_bytes.py proves a user's erasure: SQLite, no byte of the tenant in
the file or its -wal/-shm; PostgreSQL, no row holding its text or its name.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli_support import run_cli
from contextos.bench.serve import running_server
from contextos.server.keys import KEY_CACHE_TTL, KeyStore
from pg_support import fresh_schema, pg_url, rows_mentioning


def _marker(tag: str) -> str:
    return f"{tag}{secrets.token_hex(10)}"


@contextmanager
def _two_tenants(db: str, label: str) -> Iterator[tuple[Any, Any]]:
    """A real server on ``db`` and a client for each of tenants zebracorp and tenb (zebracorp's
    key labelled ``label``, as an operator names a key after its customer)."""
    with KeyStore(db) as keys:
        a, b = keys.create("zebracorp", label).secret, keys.create("tenb", "other").secret
    headers = [{"Authorization": f"Bearer {k}"} for k in (a, b)]
    with (
        running_server(db) as (url, _proc),
        httpx.Client(base_url=url, timeout=30, headers=headers[0]) as ca,
        httpx.Client(base_url=url, timeout=30, headers=headers[1]) as cb,
    ):
        yield ca, cb


def _fill(a: Any, b: Any) -> tuple[list[str], list[str]]:
    """Tenant a's data in every form the per-user tools miss; tenant b's beside it."""
    gone = [_marker(t) for t in ("qa", "qb", "qc", "qd", "qe")]
    kept = [_marker("zz")]
    for body in (
        {"messages": f"agent only {gone[0]}", "agent_id": "bot"},
        {"messages": f"session only {gone[1]}", "session_id": "s9"},
        {"messages": f"ana has {gone[2]}", "user_id": "ana"},
    ):
        assert a.post("/v1/memories", json=body).status_code == 201
    doomed = a.post("/v1/memories", json={"messages": f"soon deleted {gone[3]}", "agent_id": "x"})
    assert a.delete(f"/v1/memories/{doomed.json()['results'][0]['id']}").status_code == 200
    turn = {"role": "user", "content": f"no user turn {gone[4]}"}
    assert a.post("/v1/sessions/s9/turns", json={"messages": [turn]}).status_code == 201
    assert (
        b.post("/v1/memories", json={"messages": f"b {kept[0]}", "agent_id": "bot"}).status_code
        == 201
    )
    return gone, kept


def _offboard(db: str) -> dict[str, Any]:
    for args, why in (
        (("forget", "--whole-tenant", "--yes"), "--tenant"),  # tenant from the environment
        (("--tenant", "zebracorp", "forget", "--whole-tenant"), "--yes"),
        (
            ("--tenant", "zebracorp", "forget", "--whole-tenant", "-u", "ana", "--yes"),
            "exactly one",
        ),
    ):
        refused = run_cli("--db", db, *args, env={"CONTEXTOS_TENANT": "zebracorp"})
        assert refused.returncode == 2 and why in refused.stderr, refused.stderr
    # --no-wait: this server writes nothing for the tenant once its keys are gone, and
    # the later passes' wait (21.5 s) has tests of its own below.
    done = run_cli(
        "--db",
        db,
        "--json",
        "--tenant",
        "zebracorp",
        "forget",
        "--whole-tenant",
        "--yes",
        "--no-wait",
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _refused_within_key_cache(client: Any) -> bool:
    """Whether the offboarded tenant's key is refused by the running server within its
    key cache's life (``KEY_CACHE_TTL``: the documented delay before a key deleted by
    another process, here the CLI, stops working). Why it waits: the offboard once took
    over a second, and the key's cached verification had expired by the first request;
    a faster erasure left it cached (the test, not the server, assumed the slowness)."""
    deadline = time.monotonic() + KEY_CACHE_TTL + 0.5
    while True:
        status = client.get("/v1/memories", params={"agent_id": "bot"}).status_code
        if status == 401 or time.monotonic() > deadline:
            return status == 401
        time.sleep(0.05)


def _raw_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def test_sqlite_whole_tenant_leaves_no_byte_of_it(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    label = _marker("label")
    with _two_tenants(str(db), label) as (a, b):
        gone, kept = _fill(a, b)
        assert all(g.encode() in _raw_bytes(db) for g in [*gone, label, "zebracorp"])
        assert _offboard(str(db)) == {"tenant": "zebracorp", "forgotten": 3, "keys_deleted": 1}
        blob = _raw_bytes(db)  # server still running
        assert [g for g in [*gone, label, "zebracorp"] if g.encode() in blob] == []
        assert all(k.encode() in blob for k in kept)
        assert _refused_within_key_cache(a)
        assert b.get("/v1/memories", params={"agent_id": "bot"}).json()["results"]
    with KeyStore(str(db)) as keys:
        assert [k.tenant for k in keys.list()] == ["tenb"]


@pytest.mark.postgres
def test_postgres_whole_tenant_leaves_no_row_of_it() -> None:
    label = _marker("label")
    with fresh_schema("ften") as (url, schema), _two_tenants(url, label) as (a, b):
        gone, kept = _fill(a, b)
        assert len(rows_mentioning(pg_url(), schema, gone)) >= len(gone)
        assert _offboard(url) == {"tenant": "zebracorp", "forgotten": 3, "keys_deleted": 1}
        assert rows_mentioning(pg_url(), schema, [*gone, label, '"zebracorp"']) == []
        assert rows_mentioning(pg_url(), schema, kept)


def test_offboarding_while_the_tenants_clients_write_leaves_none_of_their_writes(
    tmp_path: Path,
) -> None:
    """The tenant's integration keeps adding memories and session turns while it is
    offboarded. Servers keep a verified key for a second, so they admitted its writes
    after the keys went, and a review found 3 to 46 memories and their turns left in
    the store after the command had printed "forgot" (some answered 201 after it),
    readable by the next key made for the tenant's name. The command now erases again
    once those writes must have landed; when it returns, nothing of the tenant is left
    and the other tenant's data is whole."""
    import sqlite3
    import threading

    db = tmp_path / "busy.db"
    with _two_tenants(str(db), "busy label") as (a, b):
        assert b.post("/v1/memories", json={"messages": "b keeps", "user_id": "u"}).status_code
        stop = threading.Event()
        answers: list[int] = []

        def keep_writing(i: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                add = {"messages": f"secret {i}-{n}", "user_id": f"u{i}"}
                answers.append(a.post("/v1/memories", json=add).status_code)
                turn = {"messages": [{"role": "user", "content": f"turn {i}-{n}"}]}
                answers.append(a.post(f"/v1/sessions/s{i}/turns", json=turn).status_code)

        writers = [threading.Thread(target=keep_writing, args=(i,)) for i in range(4)]
        for w in writers:
            w.start()
        time.sleep(1.0)
        done = run_cli(
            "--db", str(db), "--tenant", "zebracorp", "forget", "--whole-tenant", "--yes"
        )
        stop.set()
        for w in writers:
            w.join(timeout=60)
        assert done.returncode == 0, done.stderr
        assert "erasing again" in done.stderr
        assert 201 in answers and 401 in answers, sorted(set(answers))
        with sqlite3.connect(db) as raw:
            left = {
                table: raw.execute(
                    f"SELECT count(*) FROM {table} WHERE tenant = 'zebracorp'"
                ).fetchone()[0]
                for table in ("memories", "history", "turns", "session_meta")
            }
        assert left == {"memories": 0, "history": 0, "turns": 0, "session_meta": 0}, left
        listed = b.get("/v1/memories", params={"user_id": "u"}).json()["results"]
        assert [r["text"] for r in listed] == ["b keeps"]


def test_ctrl_c_during_the_wait_reports_what_was_erased_and_what_was_not(
    tmp_path: Path,
) -> None:
    """A Ctrl-C (or a script's ``timeout``) during the wait for late writes printed only
    "aborted", though the keys and the tenant's rows were gone: the report now says what
    was erased and that the late writes were not, with exit 130."""
    import signal
    import subprocess
    import sys

    from cli_support import cli_env
    from contextos.memory import Memory
    from contextos.testing.embedders import HashEmbedder

    db = tmp_path / "int.db"
    with KeyStore(str(db)) as keys:
        keys.create("zebracorp")
    with Memory(str(db), tenant="zebracorp", embedder=HashEmbedder()) as m:
        m.add("one", user_id="ana")
    args = ["--db", str(db), "--json", "--tenant", "zebracorp", "forget", "--whole-tenant"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "contextos", *args, "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    assert proc.stderr is not None
    assert "erasing again" in proc.stderr.readline()  # the first pass is done
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert json.loads(out) == {
        "tenant": "zebracorp",
        "forgotten": 1,
        "keys_deleted": 1,
        "late_writes_erased": False,
    }
    assert "aborted" not in err
