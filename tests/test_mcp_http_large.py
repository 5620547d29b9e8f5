"""Over streamable HTTP, the official MCP client reads tool answers over 1 MiB.

The client refuses any SSE event over 1 MiB (``DEFAULT_MAX_SSE_EVENT_SIZE``) but reads a
plain JSON answer uncapped. The server answered every call as an SSE stream, so a default
``list_memories`` page of long memories, and the answer to a large batch ``add_memory``
failed in the client, the add after storing everything (a retry stored it twice). (A list
page is now bounded for a model, ``test_mcp_results``; an add's answer still lists every
memory stored.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402

from contextos.server.keys import KeyStore  # noqa: E402
from mcp_support import mcp_over_http, results  # noqa: E402

MIB = 1 << 20


def test_streamable_http_client_reads_tool_answers_over_one_mib(tmp_path: Path) -> None:
    httpx2 = pytest.importorskip("httpx2")
    from mcp.client.streamable_http import streamable_http_client

    db = tmp_path / "mcp.db"
    with KeyStore(str(db)) as store:
        key = store.create("acme").secret
    notes = [  # each under the 2,000 characters an answer shows of a memory
        {"role": "user", "content": f"imported note {i}: " + "a line of a chat log. " * 85}
        for i in range(1000)
    ]

    async def scenario(url: str) -> dict[str, Any]:
        with anyio.fail_after(180):
            return await calls(url)

    async def calls(url: str) -> dict[str, Any]:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120) as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, *_),
            ClientSession(read, write) as s,
        ):
            await s.initialize()
            added = await s.call_tool("add_memory", {"messages": notes, "user_id": "importer"})
            return {"added": added}

    with mcp_over_http(db, "--rate", "0", "--max-body-bytes", str(4 * MIB)) as url:
        out = anyio.run(scenario, url)
    for result in out.values():  # each answer was one message of over 1 MiB
        assert len(result.model_dump_json(by_alias=True)) > MIB
    assert len(results(out["added"])) == 1000
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT count(*) FROM memories WHERE user_id = 'importer'")
        assert stored.fetchone() == (1000,)


def _tool_call_last_id(arguments: str, request_id: int) -> bytes:
    """A raw ``tools/call`` body with its id last, as the TypeScript SDK writes it."""
    params = '{"name":"add_memory","arguments":' + arguments + "}"
    body = f'{{"jsonrpc":"2.0","method":"tools/call","params":{params},"id":{request_id}}}'
    return body.encode()


def test_streamable_http_names_a_lone_surrogate_and_deep_nesting_with_the_request_id(
    tmp_path: Path,
) -> None:
    """Legal JSON that the SDK's parser refuses (a lone-surrogate escape; nesting past its
    recursion limit) got ``-32700`` "unexpected end of hex escape" or a column number,
    with id null, over HTTP; stdio names the cause and answers with the request's id."""
    import httpx

    from mcp_support import MCP_HEADERS

    db = tmp_path / "mcp.db"
    with KeyStore(str(db)) as store:
        key = store.create("acme").secret
    deep = "1"
    for _ in range(3000):
        deep = '{"a":' + deep + "}"
    bodies = {
        7: _tool_call_last_id('{"messages":"x\\ud800","user_id":"u"}', 7),
        8: _tool_call_last_id('{"messages":"x","user_id":"u","metadata":' + deep + "}", 8),
    }
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {key}"}
    with mcp_over_http(db) as url, httpx.Client(base_url=url, timeout=60) as http:
        answers = {
            rid: http.post("/mcp", content=body, headers=headers) for rid, body in bodies.items()
        }
        good = http.post(
            "/mcp",
            content=_tool_call_last_id('{"messages":"ok","user_id":"u"}', 9),
            headers=headers,
        )
    surrogate, nested = answers[7], answers[8]
    assert surrogate.status_code == nested.status_code == 400
    assert surrogate.json()["id"] == 7 and nested.json()["id"] == 8
    assert surrogate.json()["error"]["code"] == -32700
    assert "lone surrogate escape" in surrogate.json()["error"]["message"]
    assert nested.json()["error"] == {
        "code": -32600,
        "message": "Invalid request: the message nests too deeply",
    }
    assert good.status_code == 200, good.text
