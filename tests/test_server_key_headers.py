"""Where a request's API key may stand, on a real ``contextos serve`` and ``contextos mcp``
on loopback (server/gate.py, server/access_log.py, server/mcp_server.py; a review).

An ``Authorization`` header of another scheme than Bearer (HTTP Basic, added by a proxy
in front) next to ``X-API-Key`` is no second key: it was refused as "two keys" and
charged as a failed authentication, so 20 such requests locked the proxy's address out.
Two different keys are still refused. A key sent in the query is refused and its secret
stays out of the access log (the admin key too). MCP over HTTP takes ``X-API-Key`` as
the HTTP API does: the gate admitted it, then the SDK answered a 401 of its own shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from cli_support import logged_server
from contextos.server.access_log import request_line
from contextos.server.keys import KeyStore
from mcp_support import MCP_HEADERS, mcp_over_http
from server_support import ADMIN_KEY, assert_error, assert_rpc_refusal

pytestmark = pytest.mark.timeout(180)

#: What nginx's ``auth_basic`` forwards upstream by default: the client's credential
#: for the proxy, ``user:pass``.
BASIC = "Basic dXNlcjpwYXNz"
#: More requests than the failed-authentication throttle lets through at once (20).
PAST_THE_THROTTLE = 25


def _keys(db: Path, *tenants: str) -> list[str]:
    with KeyStore(str(db)) as keys:
        return [keys.create(tenant).secret for tenant in tenants]


def test_a_proxys_basic_credential_next_to_x_api_key_is_no_second_key(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    acme, beta = _keys(db, "acme", "beta")
    proxied = {"Authorization": BASIC, "X-API-Key": acme}
    with (
        logged_server(str(db), tmp_path / "serve.log") as (url, _proc),
        httpx.Client(base_url=url, timeout=30) as c,
    ):
        added = c.post(
            "/v1/memories", headers=proxied, json={"messages": "Ana keeps bees.", "user_id": "ana"}
        )
        assert added.status_code == 201, added.text
        listed = [
            c.get("/v1/memories", headers=proxied, params={"user_id": "ana"})
            for _ in range(PAST_THE_THROTTLE)
        ]
        # The reason keys are counted stays: a request with two different keys is
        # refused, whichever header each stands in.
        two = c.get(
            "/v1/memories",
            headers={"Authorization": f"Bearer {beta}", "X-API-Key": acme},
            params={"user_id": "ana"},
        )
        basic_alone = c.get("/v1/memories", headers={"Authorization": BASIC})
        after = c.get("/v1/memories", headers={"X-API-Key": acme}, params={"user_id": "ana"})
    assert [r.status_code for r in listed] == [200] * PAST_THE_THROTTLE, listed[-1].text
    assert [m["text"] for m in listed[-1].json()["results"]] == ["Ana keeps bees."]
    assert "one API key" in assert_error(two, 401, "Unauthenticated")["message"]
    basic_alone_error = assert_error(basic_alone, 401, "Unauthenticated")["message"]
    assert basic_alone_error.startswith("Authorization must be 'Bearer <key>'"), basic_alone_error
    assert after.status_code == 200, after.text


def test_a_key_in_the_query_is_refused_and_kept_out_of_the_access_log(tmp_path: Path) -> None:
    db, log = tmp_path / "m.db", tmp_path / "serve.log"
    (acme,) = _keys(db, "acme")
    key_id, secret = acme.split("_")[1], acme.split("_", 2)[2]
    escaped = acme.replace("_", "%5F")  # decoded by the app, so by the log too
    extra = ("--log-level", "info", "--admin-key", ADMIN_KEY)
    with logged_server(str(db), log, *extra) as (url, proc), httpx.Client(base_url=url) as c:
        in_query = c.get(f"/v1/memories?user_id=bob&api_key={acme}")
        escaped_query = c.get(f"/v1/memories?user_id=bob&api_key={escaped}")
        admin_in_query = c.get(f"/v1/keys?token={ADMIN_KEY}")
        proc.terminate()
        proc.wait(timeout=60)
    assert "missing API key" in assert_error(in_query, 401, "Unauthenticated")["message"]
    assert escaped_query.status_code == 401 and admin_in_query.status_code == 401
    text = log.read_text("utf-8")
    assert secret not in text and ADMIN_KEY not in text
    assert secret.replace("_", "%5F") not in text
    lines = [line for line in text.splitlines() if '"GET /v1/' in line]
    assert [line.split('"')[1] for line in lines] == [
        f"GET /v1/memories?user_id=bob&api_key=ctx_{key_id}_<redacted> HTTP/1.1",
        f"GET /v1/memories?user_id=bob&api_key=ctx_{key_id}_<redacted> HTTP/1.1",
        "GET /v1/keys?token=<admin key> HTTP/1.1",
    ]


@pytest.mark.parametrize(
    ("query", "logged"),
    [
        # A key inside a longer value, its text around it escaped as sent.
        (
            "q=Bearer+ctx_0123456789ab_" + "s" * 43 + "%0A",
            "q=Bearer%20ctx_0123456789ab_<redacted>%0A",
        ),
        # The admin key ending in base64's "=" sent bare: the "=" is no cut in it.
        ("x-admin-key-0123456789=", "<admin key>"),
        ("user_id=ana%0AINFO%3A+forged", "user_id=ana%0AINFO%3A+forged"),  # as before
    ],
    ids=["key-in-a-value", "admin-key-with-padding", "no-key"],
)
def test_the_access_line_writes_no_secret_wherever_it_stands(query: str, logged: str) -> None:
    scope = {"method": "GET", "path": "/v1/memories", "query_string": query.encode()}
    line = request_line(scope, "401", 0.001, {}, admin_key="x-admin-key-0123456789=")
    assert line == f'- - "GET /v1/memories?{logged} HTTP/1.1" 401 1.0 ms'


@pytest.mark.parametrize(
    "admin_key", ["q8Zr+Kd3/YtW7uPz1LmN+0aBcXe9fGh2", "adm&in%2Bkey+0123456789"]
)
def test_an_admin_key_sent_unescaped_is_not_logged(admin_key: str) -> None:
    """A base64 admin key holds ``+`` (a space once decoded) and may hold ``&`` or
    ``%``: sent as is in the query, it was written whole (a review)."""
    query = f"user_id=ana&api_key={admin_key}&limit=5"
    scope = {"method": "GET", "path": "/v1/memories", "query_string": query.encode()}
    line = request_line(scope, "401", 0.001, {}, admin_key=admin_key)
    assert (
        line == '- - "GET /v1/memories?user_id=ana&api_key=<admin key>&limit=5 HTTP/1.1" 401 1.0 ms'
    )


def _rpc(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    return {**call, "params": {"name": name, "arguments": arguments}}


def test_mcp_over_http_takes_a_key_in_x_api_key(tmp_path: Path) -> None:
    """The official client with the key in ``X-API-Key`` (behind a Basic-auth proxy
    too) adds and lists as its tenant; a wrong key there is the usual error shape."""
    httpx2 = pytest.importorskip("httpx2")
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    from mcp_support import payload

    db = tmp_path / "mcp.db"
    acme, beta = _keys(db, "acme", "beta")

    async def call(headers: dict[str, str], url: str, tool: str, args: dict[str, Any]) -> Any:
        with anyio.fail_after(60):
            async with (
                httpx2.AsyncClient(headers=headers) as http,
                streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, *_),
                ClientSession(read, write) as s,
            ):
                await s.initialize()
                return payload(await s.call_tool(tool, args))

    async def scenario(url: str) -> dict[str, Any]:
        bees = {"text": "Ana keeps bees.", "user_id": "ana"}
        return {
            "added": await call({"X-API-Key": acme}, url, "add_memory", bees),
            "proxied": await call(
                {"Authorization": BASIC, "X-API-Key": acme},
                url,
                "list_memories",
                {"user_id": "ana"},
            ),
            "beta": await call({"X-API-Key": beta}, url, "list_memories", {"user_id": "ana"}),
        }

    with mcp_over_http(db) as url:
        out = anyio.run(scenario, url)
        with httpx.Client(base_url=url, timeout=30) as http:
            wrong = http.post(
                "/mcp",
                headers={**MCP_HEADERS, "X-API-Key": acme[:-2] + "xx"},
                json=_rpc("list_memories", {"user_id": "ana"}),
            )
            two = http.post(
                "/mcp",
                headers={**MCP_HEADERS, "Authorization": f"Bearer {beta}", "X-API-Key": acme},
                json=_rpc("list_memories", {"user_id": "ana"}),
            )
    assert [m["id"] for m in out["proxied"]["results"]] == [out["added"]["results"][0]["id"]]
    assert out["beta"]["results"] == []
    # Under /mcp a refusal is a JSON-RPC error, which an MCP client can show.
    assert "invalid API key" in assert_rpc_refusal(wrong, 401, "Unauthenticated")
    assert "one API key" in assert_rpc_refusal(two, 401, "Unauthenticated")
