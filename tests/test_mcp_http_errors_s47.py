"""MCP over streamable HTTP answers its refusals in a shape an MCP client reads.

* The gate's 401 and 429 and the body limit's 413 answered ``/mcp`` with the HTTP API's
  ``{"error": {"type", "message"}}``. At a non-2xx status the official ``mcp`` client
  reads the body only when it is a JSON-RPC error, so every one of them surfaced as
  ``-32603`` "Server returned an error response": an invalid key, a body over the
  limit and a rate limit read the same (a review, s47 F1). They are JSON-RPC errors
  now, with the status, ``Retry-After`` and ``WWW-Authenticate`` kept; the HTTP API's
  shape is unchanged.
* JSON that is not a JSON-RPC message got the SDK's ``-32602``, id null and pydantic's
  dump of a thousand characters over HTTP, where stdio answers ``-32600`` with the
  request's id (s47 F6). HTTP answers as stdio does now.

A real ``contextos mcp`` driven by the official client (and raw httpx where the client
cannot send what is tested)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402

from contextos.errors import RateLimited  # noqa: E402
from contextos.server.auth import Unauthenticated  # noqa: E402
from contextos.server.bodylimit import BodyLimitMiddleware  # noqa: E402
from contextos.server.gate import error_messages  # noqa: E402
from contextos.server.keys import KeyStore  # noqa: E402
from mcp_support import CLI, MCP_HEADERS, RAW_INITIALIZE, SRC, mcp_over_http  # noqa: E402

#: The rate every key gets here: its burst of 4 requests, then one every 100 s, so the
#: fifth request is refused however slowly the test runs.
RATE = ("--rate", "0.01", "--burst", "4", "--max-body-bytes", "20000")


def _keys(db: Path, *tenants: str) -> list[str]:
    with KeyStore(str(db)) as store:
        return [store.create(t).secret for t in tenants]


def _innermost(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _said(exc: BaseException) -> tuple[int | None, str]:
    """The JSON-RPC code and message of the client's error (an MCPError)."""
    error = getattr(exc, "error", None)
    return getattr(error, "code", None), str(getattr(error, "message", exc))


async def _client_errors(url: str, bad_key: str, key: str) -> dict[str, Any]:
    """What the official client reports for a bad key, a body over the limit and a
    burst over the rate."""
    httpx2 = pytest.importorskip("httpx2")
    from mcp.client.streamable_http import streamable_http_client

    out: dict[str, Any] = {}
    try:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {bad_key}"}) as http,
            streamable_http_client(url, http_client=http) as (read, write, *_),
            ClientSession(read, write) as s,
        ):
            await s.initialize()
        out["bad key"] = (None, "no error")
    except Exception as exc:  # noqa: BLE001 - the client's error is what is tested
        out["bad key"] = _said(_innermost(exc))
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as s,
    ):
        await s.initialize()
        try:
            await s.call_tool("add_memory", {"messages": "x" * 30_000, "user_id": "ana"})
            out["too large"] = (None, "no error")
        except Exception as exc:  # noqa: BLE001
            out["too large"] = _said(_innermost(exc))
        answered = 0
        out["rate limited"] = (None, "no error")
        for _ in range(8):
            try:
                await s.call_tool("list_memories", {"user_id": "ana"})
                answered += 1
            except Exception as exc:  # noqa: BLE001
                out["rate limited"] = _said(_innermost(exc))
                break
        out["answered"] = answered
    return out


def test_the_official_client_reads_which_refusal_it_got(tmp_path: Path) -> None:
    db = tmp_path / "mcp.db"
    key, other, third = _keys(db, "acme", "beta", "gamma")
    with mcp_over_http(db, *RATE, stderr=tmp_path / "stderr.txt") as base:
        url = f"{base}/mcp"

        async def scenario() -> dict[str, Any]:
            with anyio.fail_after(120):
                return await _client_errors(url, key[:-2] + "xx", key)

        out = anyio.run(scenario)
        with httpx.Client(timeout=30) as http:
            head = {**MCP_HEADERS, "Authorization": f"Bearer {other}"}
            ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
            wrong = http.post(url, json=ping, headers={**MCP_HEADERS, "X-API-Key": "ctx_wrong"})
            big = {**ping, "params": {"pad": "y" * 30_000}}
            large = http.post(url, json=big, headers=head)
            # Streamed (no Content-Length): counted as it comes, cut off past the limit.
            raw = json.dumps(big).encode()
            chunks = iter([raw[at : at + 4096] for at in range(0, len(raw), 4096)])
            streamed = http.post(url, content=chunks, headers=head)
            # A key of its own: the streamed body above was charged (its length unknown
            # until read, it passed the gate first).
            third_head = {**MCP_HEADERS, "Authorization": f"Bearer {third}"}
            pings = [http.post(url, json=ping, headers=third_head) for _ in range(5)]
    assert out["bad key"] == (-32000, "Unauthenticated: invalid API key"), out
    assert out["too large"] == (
        -32000,
        "PayloadTooLarge: request body is larger than 20000 bytes",
    ), out
    code, message = out["rate limited"]
    assert code == -32000 and message.startswith("RateLimited: rate limit exceeded"), out
    assert message.endswith("; retry after 100 s") and out["answered"] >= 1, out

    def rpc_error(answer: httpx.Response, status: int) -> str:
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert set(body) == {"jsonrpc", "id", "error"} and body["id"] is None, body
        assert set(body["error"]) == {"code", "message"} and body["error"]["code"] == -32000
        return str(body["error"]["message"])

    assert rpc_error(wrong, 401) == "Unauthenticated: invalid API key"
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert rpc_error(large, 413).startswith("PayloadTooLarge: ")
    assert rpc_error(streamed, 413).startswith("PayloadTooLarge: ")
    assert [p.status_code for p in pings[:4]] == [200] * 4
    assert rpc_error(pings[-1], 429).startswith("RateLimited: ")
    assert pings[-1].headers["retry-after"] == "100"
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()


def test_the_http_apis_refusals_keep_their_shape() -> None:
    """Only the MCP endpoint's refusals are JSON-RPC: the gate's and the body limit's
    answers elsewhere are the HTTP API's one error shape, as before."""
    start, body = error_messages(RateLimited("rate limit exceeded for key k", retry_after=2.2))
    assert start["status"] == 429 and (b"retry-after", b"3") in start["headers"]
    assert json.loads(body["body"]) == {
        "error": {"type": "RateLimited", "message": "rate limit exceeded for key k"}
    }
    start, body = error_messages(Unauthenticated("invalid API key"), jsonrpc=True)
    assert start["status"] == 401 and (b"www-authenticate", b"Bearer") in start["headers"]
    assert json.loads(body["body"])["error"]["message"] == "Unauthenticated: invalid API key"

    async def refused(path: str) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
            raise AssertionError("a body over the limit reached the app")

        limit = BodyLimitMiddleware(app, max_bytes=10, jsonrpc_under=("/mcp",))
        scope = {"type": "http", "path": path, "headers": [(b"content-length", b"11")]}
        await limit(scope, None, send)
        return sent

    api = anyio.run(refused, "/v1/memories")
    mcp = anyio.run(refused, "/mcp")
    assert api[0]["status"] == mcp[0]["status"] == 413
    assert set(json.loads(api[1]["body"])) == {"error"}
    assert json.loads(api[1]["body"])["error"]["type"] == "PayloadTooLarge"
    assert json.loads(mcp[1]["body"])["error"]["code"] == -32000


#: JSON that is not a JSON-RPC message, and the id each answer must carry.
NOT_JSON_RPC: list[tuple[bytes, str | int | None]] = [
    (b'{"jsonrpc":"1.0","id":"six","method":"ping"}', "six"),
    (b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":[1]}', 7),
    (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', None),  # a batch
    (b"{}", None),
    (b'{"jsonrpc":"2.0","id":5,"method":7}', 5),
]


def _stdio_answers(db: Path, key: str, lines: list[bytes]) -> list[dict[str, Any]]:
    """The error answers ``contextos mcp`` over stdio gives ``lines`` (after initialize)."""
    text = b"\n".join([json.dumps(RAW_INITIALIZE).encode(), *lines]) + b"\n"
    env = {**os.environ, "PYTHONPATH": SRC, "CONTEXTOS_API_KEY": key}
    done = subprocess.run(
        [*CLI, "mcp", "--db", str(db), "--embedder", "hash"],
        input=text,
        capture_output=True,
        timeout=120,
        env=env,
    )
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return [a for a in answers if "error" in a]


def test_http_answers_json_that_is_not_json_rpc_as_stdio_does(tmp_path: Path) -> None:
    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")
    lines = [line for line, _ in NOT_JSON_RPC]
    with mcp_over_http(db, stderr=tmp_path / "stderr.txt") as base:
        url = f"{base}/mcp"
        head = {**MCP_HEADERS, "Authorization": f"Bearer {key}"}
        over_http = [httpx.post(url, content=line, headers=head, timeout=30) for line in lines]
        ping = httpx.post(url, json={"jsonrpc": "2.0", "id": 9, "method": "ping"}, headers=head)
    over_stdio = _stdio_answers(db, key, lines)
    assert len(over_stdio) == len(lines), over_stdio
    for answer, by_stdio, (_, request_id) in zip(over_http, over_stdio, NOT_JSON_RPC, strict=True):
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert body == {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {
                "code": -32600,
                "message": "Invalid request: the message is JSON but not a JSON-RPC 2.0 message",
            },
        }
        assert by_stdio == body
    assert ping.status_code == 200 and ping.json() == {"jsonrpc": "2.0", "id": 9, "result": {}}
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()
