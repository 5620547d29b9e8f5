"""A revoked key sent with its right secret is a 401 that does not feed the
failed-authentication throttle.

Why (a review): the throttle counts failed authentications per client address (20 at
once, then one a second) and then answers every request from that address 429 before
its key is checked. A tenant's worker that missed a key rotation kept sending its
revoked key about five times a second, so every other tenant on its host, and the
admin, got 429 on 60% of their requests for as long as it ran. A revoked key whose
secret matches proves possession, not guessing: it is answered 401 saying so, and
charges nothing. Wrong secrets (for an unknown id or a revoked one) are throttled as
before and get one answer that says nothing about the id.

Each test runs a real server (``contextos serve`` or ``contextos mcp``) on loopback
over a real SQLite file, with the default throttle.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cli_support import cli_env, reaped
from contextos.server.keys import KeyStore
from server_support import assert_rpc_refusal

httpx = pytest.importorskip("httpx")

from contextos.bench.serve import free_port, running_server  # noqa: E402

ADMIN = "rotation-admin-key-0123456789"
#: More requests than the throttle's burst (20), sent faster than it refills (1/s).
STALE_REQUESTS = 40
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def keys_of(db: str, *tenants: str) -> list[str]:
    """A new key for each of ``tenants`` (what ``contextos keys create`` does)."""
    with KeyStore(db) as store:
        return [store.create(tenant).secret for tenant in tenants]


def key_id(secret: str) -> str:
    return secret.split("_")[1]


def wrong_secret_of(secret: str) -> str:
    """The same public id with another secret: what a guesser who knows the id sends."""
    return f"ctx_{key_id(secret)}_{'x' * 43}"


def error_of(resp: Any) -> tuple[int, str, str]:
    """(status, error type, message) of an error answer."""
    error = resp.json()["error"]
    return resp.status_code, str(error["type"]), str(error["message"])


def read(http: Any, key: str) -> Any:
    return http.get("/v1/memories", params={"user_id": "u"}, headers=bearer(key))


def test_a_stale_worker_with_a_revoked_key_locks_nobody_out(tmp_path: Path) -> None:
    db = str(tmp_path / "rotation.db")
    old_a, key_b = keys_of(db, "tena", "tenb")
    server = running_server(db, "--embedder", "hash", "--admin-key", ADMIN)
    with server as (url, _proc), httpx.Client(base_url=url, timeout=30) as http:
        revoked = http.delete(f"/v1/keys/{key_id(old_a)}", headers=bearer(ADMIN))
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]

        # Tenant A's worker that missed the rotation: 401 each time, saying why.
        answers = {error_of(read(http, old_a)) for _ in range(STALE_REQUESTS)}
        assert len(answers) == 1, answers
        status, kind, message = answers.pop()
        assert (status, kind) == (401, "Unauthenticated")
        assert "revoked" in message and key_id(old_a) in message
        assert "another key of its tenant" in message and "deleted" not in message, message

        # Tenant B and the admin, on the same host, are served throughout.
        assert read(http, key_b).status_code == 200
        assert http.get("/v1/keys", headers=bearer(ADMIN)).status_code == 200
        assert http.get("/ui/api/whoami", headers=bearer(old_a)).status_code == 401


def test_wrong_secrets_are_throttled_as_before_and_reveal_no_revocation(tmp_path: Path) -> None:
    db = str(tmp_path / "guesses.db")
    old_a, key_b = keys_of(db, "tena", "tenb")
    with KeyStore(db) as store:
        store.revoke(key_id(old_a))  # as `contextos keys revoke` does
    server = running_server(db, "--embedder", "hash")
    with server as (url, _proc), httpx.Client(base_url=url, timeout=30) as http:
        # A guess at the revoked key's id and a guess at an id nobody has get the
        # same answer: the revocation shows only to whoever holds the whole secret.
        on_revoked_id = error_of(read(http, wrong_secret_of(old_a)))
        on_unknown_id = error_of(read(http, wrong_secret_of("ctx_0123456789ab_x")))
        assert on_revoked_id == on_unknown_id
        assert on_revoked_id[0] == 401 and "revoked" not in on_revoked_id[2]

        # Guesses still use up the address's attempts, then lock it out.
        codes = [read(http, wrong_secret_of(old_a)).status_code for _ in range(25)]
        assert codes.count(429) >= 3, codes
        assert read(http, key_b).status_code == 429
        assert read(http, old_a).status_code == 429  # checked after the throttle


@contextmanager
def mcp_over_http(db: str, log: Path) -> Iterator[str]:
    """``contextos mcp --transport streamable-http`` on a free loopback port: its URL.
    Its key table has no cache, so every request's key is read from the table."""
    port = free_port()
    argv = [sys.executable, "-m", "contextos", "mcp", "--db", db, "--embedder", "hash"]
    argv += ["--transport", "streamable-http", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=cli_env(), stdout=out, stderr=subprocess.STDOUT)
    with reaped(proc):
        url = f"http://127.0.0.1:{port}"
        _wait_answering(url, proc)
        yield url


def _wait_answering(url: str, proc: subprocess.Popen[Any]) -> None:
    """Until the MCP endpoint answers a request (any status)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "contextos mcp exited before answering"
        try:
            httpx.post(f"{url}/mcp", json=PING, headers=MCP_ACCEPT, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"contextos mcp did not answer on {url}")


def test_a_revoked_key_read_from_the_table_each_time_charges_no_attempt(tmp_path: Path) -> None:
    """The MCP endpoint verifies every request against the key table (no cache), so
    this covers the path a server takes for a key it has not seen within a second."""
    db = str(tmp_path / "mcp.db")
    old_a, key_b = keys_of(db, "tena", "tenb")
    with KeyStore(db) as store:
        store.revoke(key_id(old_a))
    with mcp_over_http(db, tmp_path / "mcp.log") as url, httpx.Client(timeout=30) as http:

        def ping(key: str) -> Any:
            return http.post(f"{url}/mcp", json=PING, headers={**MCP_ACCEPT, **bearer(key)})

        answers = {
            assert_rpc_refusal(ping(old_a), 401, "Unauthenticated") for _ in range(STALE_REQUESTS)
        }
        assert len(answers) == 1
        assert ping(key_b).status_code == 200


def test_the_key_store_tells_a_revoked_key_from_a_wrong_secret(tmp_path: Path) -> None:
    db = str(tmp_path / "k.db")
    with KeyStore(db, cache_ttl=60.0) as server, KeyStore(db) as cli:
        issued = cli.create("acme")
        cli.revoke(issued.key.id)
        found = server.check(issued.secret)
        assert found is not None and found.id == issued.key.id and not found.active
        assert server.verify(issued.secret) is None  # verify's contract: active keys only
        assert server.check(wrong_secret_of(issued.secret)) is None
        # Remembered, so a stale client's next request reads no table; never as active.
        checked = server.checked(issued.secret)
        assert checked is not None and not checked.active
        assert server.cached(issued.secret) is None
