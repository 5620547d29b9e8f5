"""The HTTP server as a contract a generated client relies on (a review, session 38).

A body sent to a route that takes none was dropped, preconditions included, so a
``DELETE`` with its ``expected_updated_at`` in a JSON body deleted a memory changed
meanwhile; the connection layer's refusals were ``text/plain`` where every error is
the one JSON shape; the spec left out the 500 and ``POST /v1/memories``'s 409; a 405
named one method in ``Allow`` and ``HEAD /healthz`` was a 405; and malformed input was
a 400 ``ValueError`` on two routes. Each is checked here as a client meets it: the
real app over HTTP, and a real ``contextos serve`` over raw sockets for what only the
connection layer answers.
"""

from __future__ import annotations

import json
import resource
import select
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from cli_support import reaped, run_cli
from contextos.bench.serve import free_port
from mcp_support import CLI, results, stdio_call
from server_support import ADMIN_KEY, Tenant, app_client, assert_error, auth, issue_key
from test_serve_headlimit import TIMEOUT, closed_within, serving


@pytest.fixture
def tenant(tmp_path: Path) -> Any:
    with app_client(tmp_path / "contract.db") as client:
        yield client, auth(issue_key(client, "acme"))


def _add(tenant: Tenant, text: str = "door code 1234") -> dict[str, Any]:
    c, key = tenant
    resp = c.post("/v1/memories", json={"messages": text, "user_id": "ana"}, headers=key)
    assert resp.status_code == 201, resp.text
    return dict(resp.json()["results"][0])


# -- 1. a body on a route that takes none --------------------------------------------


def test_a_delete_with_its_preconditions_in_a_body_is_refused_and_deletes_nothing(
    tenant: Tenant,
) -> None:
    c, key = tenant
    memory = _add(tenant)
    path = f"/v1/memories/{memory['id']}"
    # Changed by someone else after this client read it.
    changed = c.patch(path, json={"text": "door code 9876"}, headers=key)
    assert changed.status_code == 200, changed.text
    stale = {"expected_updated_at": memory["updated_at"]}  # as axios.delete(url, {data}) sends
    error = assert_error(c.request("DELETE", path, json=stale, headers=key), 422, "InvalidRequest")
    assert error["message"] == (
        "body: this route takes no body; send purge, expected_text, expected_updated_at "
        "in the query"
    )
    for body in ({"tenant": "beta", "bogus": 1}, {}):
        assert_error(c.request("DELETE", path, json=body, headers=key), 422, "InvalidRequest")
    assert c.get(path, headers=key).json()["text"] == "door code 9876"  # nothing deleted
    # In the query, where it belongs, the precondition is checked: 409.
    assert_error(c.delete(path, params=stale, headers=key), 409, "Conflict")
    # An empty body is no body.
    gone = c.request("DELETE", path, content=b"", headers=key)
    assert gone.status_code == 200 and gone.json() == {"deleted": memory["id"], "purged": False}


def test_get_routes_refuse_a_body_too(tenant: Tenant) -> None:
    c, key = tenant
    memory = _add(tenant)
    listed = c.request("GET", "/v1/memories", params={"user_id": "ana"}, json={}, headers=key)
    assert "send user_id, agent_id" in assert_error(listed, 422, "InvalidRequest")["message"]
    one = c.request("GET", f"/v1/memories/{memory['id']}", content=b"x", headers=key)
    assert assert_error(one, 422)["message"] == "body: this route takes no body"
    revoke = c.request("DELETE", "/v1/keys/abc", json={"x": 1}, headers=auth(ADMIN_KEY))
    assert assert_error(revoke, 422)["message"] == "body: this route takes no body"
    # Without a body all of them are served as before.
    assert c.get(f"/v1/memories/{memory['id']}", headers=key).status_code == 200
    assert c.get("/v1/memories", params={"user_id": "ana"}, headers=key).status_code == 200


# -- 3. the statuses the spec declares -------------------------------------------------


def test_the_spec_declares_500_on_every_route_and_409_on_add(tenant: Tenant) -> None:
    c, _ = tenant
    spec = c.get("/openapi.json").json()
    operations = [
        (method, path, op)
        for path, item in spec["paths"].items()
        if path.startswith("/v1")
        for method, op in item.items()
    ]
    assert len(operations) >= 15
    for method, path, op in operations:
        declared = op["responses"].get("500")
        assert declared is not None, (method, path)
        schema = declared["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path)
    assert "409" in spec["paths"]["/v1/memories"]["post"]["responses"]


# -- 4. Allow and HEAD ---------------------------------------------------------------


def test_a_405_names_every_method_of_the_path_and_head_answers_get_routes(
    tenant: Tenant,
) -> None:
    c, key = tenant
    memory = _add(tenant)
    for path, allowed in (
        ("/v1/memories", "GET, HEAD, POST"),
        ("/v1/memories/abc", "GET, HEAD, PATCH, DELETE"),
        ("/v1/sessions/s1/turns", "GET, HEAD, POST"),
        ("/v1/sessions/team/chat/turns", "GET, HEAD, POST"),
        ("/healthz", "GET, HEAD"),
    ):
        resp = c.put(path, json={}, headers=key)
        assert_error(resp, 405)
        assert resp.headers["allow"] == allowed, path
    for path, params in (("/healthz", {}), (f"/v1/memories/{memory['id']}", {})):
        got, head = c.get(path, headers=key), c.head(path, params=params, headers=key)
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-length"] == got.headers["content-length"]
        assert head.headers["content-type"] == got.headers["content-type"]
    listed = c.head("/v1/memories", params={"user_id": "ana"}, headers=key)
    assert listed.status_code == 200 and listed.content == b""
    assert c.head("/v1/memories", params={"user_id": "ana"}).status_code == 401  # still gated
    post_only = c.head("/v1/sessions/s1/window", headers=key)
    assert post_only.status_code == 405 and post_only.headers["allow"] == "POST"


# -- 5. malformed input is a 422, a library error stays a 400 -------------------------


def test_a_bad_list_key_and_an_empty_patch_are_422_invalid_request(tenant: Tenant) -> None:
    c, key = tenant
    memory = _add(tenant)
    _add(tenant, "second")
    page = c.get("/v1/memories", params={"user_id": "ana", "limit": 1}, headers=key).json()
    edited = page["next_after"].replace(",", ";")  # a cursor edited by hand
    for bad in ("garbage", edited):
        resp = c.get("/v1/memories", params={"user_id": "ana", "after": bad}, headers=key)
        error = assert_error(resp, 422, "InvalidRequest")
        assert error["message"].startswith("query.after: not a key of this list"), bad
    path = f"/v1/memories/{memory['id']}"
    for body in ({}, {"text": None}, {"metadata": None, "expected_text": "door code 1234"}):
        error = assert_error(c.patch(path, json=body, headers=key), 422, "InvalidRequest")
        assert error["message"] == "body: update needs text or metadata"
    assert c.get(path, headers=key).json()["updated_at"] == memory["updated_at"]
    # A library error is still a 400: an unscoped list.
    assert_error(c.get("/v1/memories", headers=key), 400, "ScopeError")


def test_mcp_update_memory_without_a_change_names_it_as_before(tmp_path: Path) -> None:
    db = tmp_path / "mcp.db"
    key = run_cli("keys", "create", "--tenant", "acme", db=db).stdout.split()[0]

    async def scenario(s: Any) -> Any:
        added = await s.call_tool("add_memory", {"messages": "x", "user_id": "u"})
        memory_id = results(added)[0]["id"]
        return await s.call_tool("update_memory", {"memory_id": memory_id})

    result = anyio.run(stdio_call, db, key, scenario)
    assert result.is_error
    assert result.content[0].text.endswith("ValueError: update needs text or metadata")


# -- 2. the connection layer's refusals, over a real server ----------------------------


def _last_answer(raw: bytes) -> tuple[bytes, dict[str, str], Any]:
    """The status line, headers and JSON body of the last response in ``raw``."""
    last = b"HTTP/1.1 " + raw.rsplit(b"HTTP/1.1 ", 1)[1]
    head, _, body = last.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    assert headers["content-type"] == "application/json", headers
    assert len(body) == int(headers["content-length"])
    return status.encode(), headers, json.loads(body)


def _assert_shape(error: Any, kind: str) -> str:
    assert set(error) == {"error"} and set(error["error"]) == {"type", "message"}
    assert error["error"]["type"] == kind
    return str(error["error"]["message"])


def test_connection_refusals_are_json_in_the_one_error_shape(tmp_path: Path) -> None:
    with serving(tmp_path) as (host, port, key, _pid):
        with socket.create_connection((host, port), timeout=10) as sock:  # says nothing
            closed, sent = closed_within(sock, 10 * TIMEOUT)
        status, _, error = _last_answer(sent)
        assert closed and status == b"HTTP/1.1 408 Request Timeout"
        assert "headers not received in time" in _assert_shape(error, "RequestTimeout")

        with socket.create_connection((host, port), timeout=10) as sock:  # a 70 KB URL
            sock.sendall(b"DELETE /v1/memories/x?expected_text=" + b"a" * 70_000)
            sock.sendall(b" HTTP/1.1\r\nHost: x\r\n\r\n")
            closed, sent = closed_within(sock, 5)
        status, _, error = _last_answer(sent)
        assert closed and status == b"HTTP/1.1 431 Request Header Fields Too Large"
        assert "over 65536 bytes" in _assert_shape(error, "HeadTooLarge")

        with socket.create_connection((host, port), timeout=10) as sock:  # 100 pipelined
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 100)
            closed, sent = closed_within(sock, 10)
        status, headers, error = _last_answer(sent)
        assert closed and status == b"HTTP/1.1 429 Too Many Requests"
        assert headers["retry-after"] == "1"
        assert "pipelined" in _assert_shape(error, "TooManyPipelined")

        # HEAD over uvicorn: GET's head, no body, and the connection goes on.
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            _, sent = closed_within(sock, 10)
        head, _, rest = sent.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"content-length: 15" in head.lower()
        assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b'{"status":"ok"}'), rest


#: Open files the server below may hold (as tests/test_fd_limit.py): its cap is 100.
LIMIT = 200


def _low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def test_a_connection_over_the_cap_gets_a_json_503_with_retry_after(tmp_path: Path) -> None:
    db = tmp_path / "cap.db"
    port = free_port()
    cmd = [*CLI, "serve", "--db", str(db), "--embedder", "hash", "--port", str(port)]
    log = tmp_path / "server.log"
    with (
        log.open("wb") as out,
        reaped(subprocess.Popen(cmd, stdout=out, stderr=out, preexec_fn=_low_limit)) as proc,
    ):
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        held: list[socket.socket] = []
        try:  # each connection closed whatever happens (one left open warns in a later test)
            for _ in range(110):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            time.sleep(2)
            answered, _, _ = select.select(held, [], [], 1.0)
            assert answered, log.read_text()[-2000:]
            for conn in answered:
                _, sent = closed_within(conn, 5)
                status, headers, error = _last_answer(sent)
                assert status == b"HTTP/1.1 503 Service Unavailable"
                assert headers["retry-after"] == "1"
                assert "retry" in _assert_shape(error, "TooManyConnections")
        finally:
            for conn in held:
                conn.close()
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
