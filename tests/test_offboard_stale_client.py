"""An offboarded tenant's client that keeps running locks nobody out.

Why (review s41 bigstore, finding 4): ``forget --whole-tenant`` deleted the tenant's key
rows, hash included, so the integration it left running sent a secret that matched no
row: a guess to the server. Each request used one of its address's failed attempts, and
after 20 every tenant on that host got 429. ``keys revoke`` did not have this (a revoked
key with its right secret charges nothing: tests/test_revoked_key_throttle.py). The
offboarding now leaves each key as a tombstone: its id, hash and revocation time, with
no tenant and no label, answered as a revoked key is. What names the tenant is still
gone (tests/test_forget_tenant.py scans the file and PostgreSQL's rows for it).

The server test runs ``contextos serve`` on loopback over a real SQLite file with the
default throttle, and the real CLI for the offboarding.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cli_support import run_cli
from contextos.errors import NotFound
from contextos.server.keys import KEY_CACHE_TTL, KeyStore
from pg_support import fresh_schema

httpx = pytest.importorskip("httpx")

from contextos.bench.serve import running_server  # noqa: E402

#: More requests than the failed-authentication throttle's burst (20).
STALE_REQUESTS = 40


def _tenant() -> str:
    return f"offb{secrets.token_hex(8)}"


def _key_id(secret: str) -> str:
    return secret.split("_")[1]


def _read(client: Any) -> Any:
    return client.get("/v1/memories", params={"user_id": "u"})


def _raw_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def _until_refused(client: Any) -> Any:
    """The first answer that is not a 200, waiting out the server's key cache (the
    documented second before a key changed by another process, the CLI, is seen)."""
    deadline = time.monotonic() + KEY_CACHE_TTL + 2.0
    while True:
        resp = _read(client)
        if resp.status_code != 200 or time.monotonic() > deadline:
            return resp
        time.sleep(0.05)


def test_an_offboarded_tenants_stale_client_locks_nobody_out(tmp_path: Path) -> None:
    db = tmp_path / "offboard.db"
    gone, label = _tenant(), f"label{secrets.token_hex(8)}"
    with KeyStore(str(db)) as keys:
        old, other = keys.create(gone, label).secret, keys.create("tenb").secret
    with (
        running_server(str(db), "--embedder", "hash") as (url, _proc),
        httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {old}"}) as a,
        httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {other}"}) as b,
    ):
        assert a.post("/v1/memories", json={"messages": "tea", "user_id": "u"}).status_code == 201
        # --no-wait: the later passes' wait (21.5 s) is tested in test_forget_tenant.
        offboard = ("--tenant", gone, "forget", "--whole-tenant", "--yes", "--no-wait")
        done = run_cli("--db", str(db), "--json", *offboard)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["keys_deleted"] == 1

        # The integration left running: refused as a revoked key, never throttled.
        first = _until_refused(a)
        answers = [first, *(_read(a) for _ in range(STALE_REQUESTS))]
        assert {r.status_code for r in answers} == {401}, [r.status_code for r in answers]
        message = answers[-1].json()["error"]["message"]
        assert "revoked" in message and _key_id(old) in message
        assert "tenant was deleted" in message and "replaced it" not in message, message

        # Another tenant on the same host is served throughout.
        assert _read(b).status_code == 200

        # Nothing names the offboarded tenant: not the file, not the key listings.
        blob = _raw_bytes(db)
        assert gone.encode() not in blob and label.encode() not in blob
    listed = run_cli("--db", str(db), "--json", "keys", "list", "--all-tenants")
    assert [k["tenant"] for k in json.loads(listed.stdout)] == ["tenb"]
    revoke = run_cli("--db", str(db), "keys", "revoke", _key_id(old))
    assert revoke.returncode != 0 and "no API key" in revoke.stderr, revoke.stderr


@contextmanager
def _key_table(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield str(tmp_path / "k.db")
        return
    with fresh_schema("tomb") as (url, _schema):
        yield url


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_tombstone_is_a_revoked_key_of_no_tenant(kind: str, tmp_path: Path) -> None:
    if kind == "postgres":
        pytest.importorskip("psycopg")
    gone = _tenant()
    with _key_table(kind, tmp_path) as db, KeyStore(db) as keys:
        live = keys.create(gone, "customer host")
        earlier = keys.create(gone, "rotated")
        revoked_at = keys.revoke(earlier.key.id).revoked_at
        kept = keys.create("tenb", "other")
        assert keys.delete_tenant(gone) == 2

        for issued in (live, earlier):
            found = keys.check(issued.secret)
            assert found is not None and found.id == issued.key.id and not found.active
            assert (found.tenant, found.name) == ("", "")
            assert found.created_at == found.revoked_at  # its creation time is gone too
            assert keys.verify(issued.secret) is None
            with pytest.raises(NotFound):
                keys.get(issued.key.id)
            with pytest.raises(NotFound):
                keys.revoke(issued.key.id)
        assert keys.check(earlier.secret).revoked_at == revoked_at  # type: ignore[union-attr]
        wrong = f"ctx_{live.key.id}_{'x' * 43}"
        assert keys.check(wrong) is None  # a guess at its id is still a guess

        assert [k.id for k in keys.list()] == [kept.key.id]
        assert keys.list(gone) == []
        assert keys.verify(kept.secret) is not None
        assert keys.delete_tenant(gone) == 0
