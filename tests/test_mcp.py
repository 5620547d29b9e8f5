"""`contextos mcp` as a real subprocess, driven by the official MCP client library."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

import contextos  # noqa: E402
from cli_support import reaped
from contextos.agent.mcp_tools import mcp_functions  # noqa: E402
from contextos.bench.serve import free_port  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.server.keys import KeyStore  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402

CLI = [sys.executable, "-c", "from contextos.cli.main import main; main()"]
TOOLS = {
    "add_memory",
    "search_memory",
    "list_memories",
    "get_memory",
    "update_memory",
    "memory_history",
    "delete_memory",
    "assemble_window",
} | {fn.__name__ for fn in mcp_functions(lambda: None)}
#: The stdio client starts the server with a bare environment: point it at this checkout.
SRC = str(Path(contextos.__file__).resolve().parents[1])


def _keys(db: Path, *tenants: str) -> list[str]:
    with KeyStore(str(db)) as store:
        return [store.create(t).secret for t in tenants]


def _payload(result: Any) -> Any:
    """A tool's structured result (lists come wrapped as {"result": [...]})."""
    assert not result.is_error, result.content
    data = result.structured_content
    assert data is not None
    return data["result"] if set(data) == {"result"} else data


async def _stdio(db: Path, key: str, fn: Callable[[ClientSession], Awaitable[Any]]) -> Any:
    params = StdioServerParameters(
        command=CLI[0],
        args=[*CLI[1:], "mcp", "--db", str(db), "--embedder", "hash"],
        env={"CONTEXTOS_API_KEY": key, "PYTHONPATH": SRC},
    )
    with anyio.fail_after(60):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            return await fn(s)


def test_stdio_tools_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "mcp.db"
    (key,) = _keys(db, "acme")

    async def scenario(s: ClientSession) -> dict[str, Any]:
        names = {t.name for t in (await s.list_tools()).tools}
        added = _payload(
            await s.call_tool(
                "add_memory", {"text": "Ana drinks green tea every morning", "user_id": "ana"}
            )
        )
        await s.call_tool("add_memory", {"text": "Ana's bike is red", "user_id": "ana"})
        found = _payload(
            await s.call_tool("search_memory", {"query": "green tea", "user_id": "ana"})
        )
        window = _payload(
            await s.call_tool(
                "assemble_window",
                {"question": "What does Ana drink?", "user_id": "ana", "token_budget": 300},
            )
        )
        unscoped = await s.call_tool("search_memory", {"query": "tea"})
        deleted = _payload(await s.call_tool("delete_memory", {"memory_id": added[0]["id"]}))
        missing = await s.call_tool("delete_memory", {"memory_id": added[0]["id"]})
        listed = _payload(await s.call_tool("list_memories", {"user_id": "ana"}))
        return {
            "names": names,
            "added": added,
            "found": found,
            "window": window,
            "unscoped": unscoped,
            "deleted": deleted,
            "missing": missing,
            "listed": listed,
        }

    out = anyio.run(_stdio, db, key, scenario)
    assert out["names"] == TOOLS
    tea_id = out["added"][0]["id"]
    # Ranks are the retriever's business (vectors may still be pending here): check presence.
    assert tea_id in [f["id"] for f in out["found"]]
    assert tea_id in out["window"]["memory_ids"]
    assert out["window"]["tokens"] <= 300
    assert out["window"]["text"].rstrip().endswith("What does Ana drink?")
    assert out["unscoped"].is_error and "ScopeError" in out["unscoped"].content[0].text
    assert out["deleted"] == {"deleted": tea_id, "purged": False}
    assert out["missing"].is_error and "NotFound" in out["missing"].content[0].text
    assert [r["text"] for r in out["listed"]] == ["Ana's bike is red"]


def test_stdio_refuses_to_start_without_a_valid_key(tmp_path: Path) -> None:
    db = tmp_path / "mcp.db"
    _keys(db, "acme")
    proc = subprocess.run(
        [*CLI, "mcp", "--db", str(db), "--embedder", "hash", "--key", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1
    assert "needs a valid API key" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_streamable_http_scopes_each_request_by_its_key(tmp_path: Path) -> None:
    httpx2 = pytest.importorskip("httpx2")
    from mcp.client.streamable_http import streamable_http_client

    db = tmp_path / "mcp.db"
    key_a, key_b = _keys(db, "tenant-a", "tenant-b")
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    proc = subprocess.Popen(
        [
            *CLI,
            "mcp",
            "--db",
            str(db),
            "--embedder",
            "hash",
            "--transport",
            "streamable-http",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    async def call(key: str, tool: str, args: dict[str, Any]) -> Any:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http,
            streamable_http_client(url, http_client=http) as (read, write, *_),
            ClientSession(read, write) as s,
        ):
            await s.initialize()
            return _payload(await s.call_tool(tool, args))

    async def scenario() -> dict[str, Any]:
        with anyio.fail_after(60):
            while True:
                try:
                    async with httpx2.AsyncClient() as http:
                        anonymous = await http.post(url, json={})
                    break
                except httpx2.TransportError:
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    await anyio.sleep(0.2)
            added = await call(
                key_a, "add_memory", {"text": "A's launch code is 0451", "user_id": "ana"}
            )
            return {
                "anonymous": anonymous.status_code,
                "added": added,
                "b_list": await call(key_b, "list_memories", {"user_id": "ana"}),
                "b_search": await call(
                    key_b, "search_memory", {"query": "launch code", "user_id": "ana"}
                ),
                "a_list": await call(key_a, "list_memories", {"user_id": "ana"}),
            }

    try:
        out = anyio.run(scenario)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
    assert out["anonymous"] == 401
    assert out["b_list"] == [] and out["b_search"] == []
    assert [r["id"] for r in out["a_list"]] == [out["added"][0]["id"]]


def test_stdio_server_stops_on_sigterm_and_closes_the_store(tmp_path: Path) -> None:
    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")
    with Memory(str(db), embedder=HashEmbedder(), tenant="acme") as m:
        m.add("something to keep the file busy", user_id="u")
    with reaped(
        subprocess.Popen(
            [*CLI, "mcp", "--db", str(db), "--embedder", "hash"],
            stdin=subprocess.PIPE,  # kept open: the server waits for a client
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "CONTEXTOS_API_KEY": key, "PYTHONPATH": SRC},
        )
    ) as proc:
        for _ in range(100):  # until the server has opened the store
            if Path(f"{db}-wal").exists():
                break
            time.sleep(0.1)
        time.sleep(1.0)
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err
    assert not Path(f"{db}-wal").exists()  # every connection closed
