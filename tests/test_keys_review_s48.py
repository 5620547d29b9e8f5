"""API keys in a running server (review s48): revocation reaches a request whose body
is still arriving; ``keys list`` is one line a key; a key in the URL path is not
logged; ``--rate``/``--burst`` say they are per process.

Real servers (``contextos serve``, ``contextos mcp --transport streamable-http``) on
loopback over a real SQLite file, raw sockets and httpx clients, the real CLI.

Why the first: the gate checks a key from the request's headers, and the route runs
once its body is in. A client trickling its body (the body-rate rule lets a 1 MB body
take an hour) was served long after its key was revoked: a write landed 300 s after
the revocation, and one after ``forget --whole-tenant`` had made its last pass.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cli_support import logged_server, run_cli
from contextos.server.keys import KeyStore
from mcp_support import MCP_HEADERS, mcp_over_http

pytestmark = pytest.mark.timeout(120)

ADMIN = "review-s48-admin-key-0123456789"
#: Longer than the server's key cache lifetime (1 s), so the key is checked again.
PAST_THE_CACHE_S = 1.3
#: Time the server is given to admit a request from its headers before its key is
#: revoked (a loaded machine took 0.4 s; a key revoked first is refused at the gate).
ADMITTED_S = 0.8


def new_key(db: str, tenant: str = "acme") -> tuple[str, str]:
    """A new key of ``tenant``: (secret, id)."""
    with KeyStore(db) as keys:
        issued = keys.create(tenant)
    return issued.secret, issued.key.id


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def trickled(
    url: str, path: str, secret: str, body: bytes, meanwhile: Callable[[], None]
) -> tuple[int, str]:
    """POST ``body`` to ``path`` on a raw socket: the headers and 10 bytes of the body,
    then, once the server has had time to admit the request, ``meanwhile()`` (the
    revocation), then the rest once the key cache's lifetime has passed since the
    revocation; the answer's status and body."""
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {secret}\r\n"
        f"Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + body[:10])
        time.sleep(ADMITTED_S)
        meanwhile()
        time.sleep(PAST_THE_CACHE_S)
        sock.sendall(body[10:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.decode("utf-8", "replace").partition("\r\n")
    return int(status_line.split()[1]), rest.partition("\r\n\r\n")[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """``contextos serve --log-level info --admin-key ...``: (url, db, log)."""
    tmp = tmp_path_factory.mktemp("s48")
    db, log = str(tmp / "keys.db"), tmp / "serve.log"
    new_key(db)  # the file and its key table exist before the server starts
    with logged_server(db, log, "--log-level", "info", "--admin-key", ADMIN) as (url, _):
        yield url, db, log


def revoke_by_cli(db: str, key_id: str) -> Callable[[], None]:
    def revoke() -> None:
        done = run_cli("keys", "revoke", key_id, "--db", db)
        assert done.returncode == 0, done.stderr

    return revoke


def revoke_by_admin(url: str, key_id: str) -> Callable[[], None]:
    def revoke() -> None:
        answer = httpx.delete(f"{url}/v1/keys/{key_id}", headers=bearer(ADMIN), timeout=30)
        assert answer.status_code == 200, answer.text

    return revoke


@pytest.mark.parametrize("by", ["cli", "admin"])
def test_a_key_revoked_while_its_body_arrives_is_refused(
    served: tuple[str, str, Path], by: str
) -> None:
    url, db, _log = served
    secret, key_id = new_key(db)
    other, _ = new_key(db)  # the tenant's key that stays
    user = f"trickle-{by}"
    marker = f"LANDED AFTER REVOCATION {by}"
    body = json.dumps({"messages": marker, "user_id": user}).encode()
    revoke = revoke_by_cli(db, key_id) if by == "cli" else revoke_by_admin(url, key_id)
    assert httpx.get(f"{url}/v1/memories", params={"user_id": user}, headers=bearer(secret))

    status, text = trickled(url, "/v1/memories", secret, body, revoke)

    assert status == 401, text
    error = json.loads(text)["error"]
    assert error["type"] == "Unauthenticated"
    assert f"API key {key_id} was revoked" in error["message"], error
    # As a fresh request with the key is answered.
    fresh = httpx.get(f"{url}/v1/memories", params={"user_id": user}, headers=bearer(secret))
    assert fresh.status_code == 401 and fresh.json()["error"] == error
    listed = httpx.get(f"{url}/v1/memories", params={"user_id": user}, headers=bearer(other))
    assert listed.status_code == 200 and marker not in listed.text, listed.text
    assert listed.json()["results"] == []


def test_a_body_sent_in_time_by_a_valid_key_is_served(served: tuple[str, str, Path]) -> None:
    """The check once the body is in refuses nothing a valid key sends slowly."""
    url, db, _log = served
    secret, _ = new_key(db)
    body = json.dumps({"messages": "slow but valid", "user_id": "slow"}).encode()
    status, text = trickled(url, "/v1/memories", secret, body, lambda: None)
    assert status == 201, text
    listed = httpx.get(f"{url}/v1/memories", params={"user_id": "slow"}, headers=bearer(secret))
    assert [m["text"] for m in listed.json()["results"]] == ["slow but valid"]


def test_a_key_revoked_while_an_mcp_body_arrives_is_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "mcp.db")
    secret, key_id = new_key(db)
    other, _ = new_key(db)
    marker = "MCP WRITE AFTER REVOCATION"
    call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call"}
    arguments = {"messages": marker, "user_id": "mcp-trickle"}
    body = json.dumps({**call, "params": {"name": "add_memory", "arguments": arguments}})
    listing = {"name": "list_memories", "arguments": {"user_id": "mcp-trickle"}}

    def listed(url: str, secret: str) -> str:
        answer = httpx.post(
            f"{url}/mcp",
            headers={**MCP_HEADERS, **bearer(secret)},
            json={**call, "params": listing},
            timeout=30,
        )
        assert answer.status_code == 200 and '"isError":false' in answer.text.replace(" ", "")
        return answer.text

    with mcp_over_http(Path(db)) as url:
        listed(url, secret)  # the server warm, the key valid
        status, text = trickled(url, "/mcp", secret, body.encode(), revoke_by_cli(db, key_id))
        assert status == 401, text
        refusal = json.loads(text)
        assert refusal["error"]["code"] == -32000, refusal
        assert refusal["error"]["message"].startswith(f"Unauthenticated: API key {key_id} was")
        assert marker not in listed(url, other)
    with sqlite3.connect(db) as conn:
        found = conn.execute("SELECT count(*) FROM memories WHERE text LIKE '%REVOCATION%'")
        assert found.fetchone() == (0,)


def test_keys_list_shows_one_line_a_key(tmp_path: Path) -> None:
    db = str(tmp_path / "names.db")
    forged = "evil\x1b[2J\nfake-row  beta  active\tx"
    made = run_cli("keys", "create", "--db", db, "--tenant", "acme", "--name", forged)
    assert made.returncode == 0, made.stderr
    listed = run_cli("keys", "list", "--db", db)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 1, lines
    assert "evil\\x1b[2J\\nfake-row  beta  active\\tx" in lines[0], lines
    as_json = json.loads(run_cli("keys", "list", "--db", db, "--json").stdout)
    assert [k["name"] for k in as_json] == [forged]  # exact in --json


def test_the_cli_refuses_a_key_name_http_refuses(tmp_path: Path) -> None:
    db = str(tmp_path / "names.db")
    too_long = run_cli("keys", "create", "--db", db, "--tenant", "acme", "--name", "n" * 201)
    assert too_long.returncode == 2, too_long.stderr
    assert "String should have at most 200 characters" in too_long.stderr
    assert "--name" in too_long.stderr
    longest = run_cli("keys", "create", "--db", db, "--tenant", "acme", "--name", "n" * 200)
    assert longest.returncode == 0, longest.stderr
    assert [
        len(k["name"]) for k in json.loads(run_cli("keys", "list", "--db", db, "--json").stdout)
    ] == [200]


def test_a_key_in_the_url_path_is_not_logged(served: tuple[str, str, Path]) -> None:
    url, db, log = served
    secret, key_id = new_key(db)
    in_path = httpx.get(f"{url}/v1/sessions/{secret}/turns", headers=bearer(secret))
    assert in_path.status_code == 200, in_path.text
    escaped = secret.replace("_", "%5F")
    in_path = httpx.get(f"{url}/v1/sessions/{escaped}/turns", headers=bearer(secret))
    assert in_path.status_code == 200, in_path.text
    httpx.get(f"{url}/v1/keys/{ADMIN}", headers=bearer(ADMIN))
    deadline = time.monotonic() + 10
    while "/v1/keys/<admin key>" not in log.read_text("utf-8") and time.monotonic() < deadline:
        time.sleep(0.1)  # the line is written once the request is over
    written = log.read_text("utf-8")
    secret_part = secret.split("_", 2)[2]
    assert secret_part not in written and secret_part.replace("_", "%5F") not in written
    assert ADMIN not in written
    lines = [ln for ln in written.splitlines() if "/v1/sessions/ctx_" in ln]
    assert len(lines) == 2, lines
    for line in lines:
        assert f"/v1/sessions/ctx_{key_id}_<redacted>/turns" in line, line
        assert f"tenant=acme key={key_id}" in line, line
    assert "/v1/keys/<admin key>" in written


@pytest.mark.parametrize("command", ["serve", "mcp"])
def test_rate_and_burst_help_say_per_process(command: str) -> None:
    shown = run_cli(command, "--help")
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())  # the help's wrapped lines as one
    rate = text[text.index("--rate ") : text.index("--burst ")]
    burst = text[text.index("--burst ") : text.index("--max-body-bytes ")]
    assert "per key per server process" in rate and "allow N times" in rate, rate
    assert "per server process" in burst, burst
