"""The agent tools at the edge, against ``contextos serve`` and ``contextos mcp`` as real
processes: hostile ids and texts are refused like the memory routes refuse them, a busy
store is a 503 (never a tool result quoting the store's error), and a forged block tag
breaks nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402

from cli_support import reaped  # noqa: E402
from contextos.bench.serve import free_port  # noqa: E402
from mcp_support import stdio_call  # noqa: E402
from server_support import assert_error, auth, store_locked  # noqa: E402
from test_mcp import _keys  # noqa: E402

CLI = [sys.executable, "-c", "from contextos.cli.main import main; main()"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """A ``contextos serve`` process on loopback: (base URL, a key of tenant acme, db)."""
    db = tmp_path_factory.mktemp("agent_http") / "s.db"
    (key,) = _keys(db, "acme")
    port = free_port()
    cmd = [*CLI, "serve", "--db", str(db), "--port", str(port), "--embedder", "hash"]
    proc = subprocess.Popen([*cmd, "--rate", "0"], stdout=subprocess.DEVNULL)
    with reaped(proc):
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base, key, str(db)
        proc.terminate()
        proc.wait(timeout=30)


def _tool(served: tuple[str, str, str], name: str, body: Any) -> httpx.Response:
    base, key, _ = served
    url = f"{base}/v1/agent/tools/{name}"
    if isinstance(body, bytes):
        headers = {**auth(key), "content-type": "application/json"}
        return httpx.post(url, content=body, headers=headers, timeout=60)
    return httpx.post(url, json=body, headers=auth(key), timeout=60)


APPEND = {"label": "human", "content": "x"}
HOSTILE = [
    ("archival_memory_insert", {"user_id": "ana", "arguments": {"content": "a\x00b"}}),
    ("archival_memory_insert", b'{"user_id":"ana","arguments":{"content":"a\\ud800b"}}'),
    ("core_memory_append", {"user_id": "ana", "arguments": {**APPEND, "content": "x" * 100_001}}),
    ("core_memory_append", {"user_id": "ana\x00evil", "arguments": APPEND}),
    ("core_memory_append", {"user_id": "u" * 300_000, "arguments": APPEND}),
    ("core_memory_append", {"user_id": "ana", "tenant": "other", "arguments": APPEND}),
    ("archival_memory_search", {"user_id": "ana", "arguments": {"query": {"q": ["\x00"]}}}),
]


@pytest.mark.parametrize(("name", "body"), HOSTILE)
def test_hostile_tool_input_is_422_over_http(
    served: tuple[str, str, str], name: str, body: Any
) -> None:
    """Why: the agent routes took NUL, lone surrogates, 300k-char ids and a "tenant" field
    that the memory routes refuse with 422."""
    assert_error(_tool(served, name, body), 422)


def test_hostile_tool_input_is_a_tool_error_over_mcp(tmp_path: Path) -> None:
    """Why: the MCP agent tools skipped the validation the MCP memory tools do."""
    db = tmp_path / "mcp.db"
    (key,) = _keys(db, "acme")
    calls = [
        ("core_memory_append", {"label": "human", "content": "x", "user_id": "ana\x00evil"}),
        ("core_memory_append", {"label": "human", "content": "x", "user_id": "u" * 300_000}),
        ("archival_memory_insert", {"content": "a\x00b", "user_id": "ana"}),
        ("core_memory_view", {"user_id": "u" * 300_000}),
    ]

    async def scenario(s: ClientSession) -> list[tuple[bool, str]]:
        out = []
        for name, args in calls:
            result = await s.call_tool(name, args)
            out.append((result.is_error, "".join(getattr(c, "text", "") for c in result.content)))
        return out

    results = anyio.run(stdio_call, db, key, scenario)
    assert [error for error, _ in results] == [True] * len(calls), results
    for _, text in results:
        assert "NUL" in text or "at most 256" in text, text


def test_forged_block_tag_breaks_no_core_route(served: tuple[str, str, str]) -> None:
    """Why: a memory tagged source=core_memory without a label made every core route 500."""
    base, key, _ = served
    forged = {"messages": "hello", "user_id": "bob", "metadata": {"source": "core_memory"}}
    assert httpx.post(f"{base}/v1/memories", json=forged, headers=auth(key)).status_code == 201
    core = httpx.get(f"{base}/v1/agent/core", params={"user_id": "bob"}, headers=auth(key))
    assert core.status_code == 200, core.text
    body = {"user_id": "bob", "arguments": {"label": "human", "content": "likes tea"}}
    out = _tool(served, "core_memory_append", body)
    assert out.status_code == 200 and out.json()["text"].endswith("likes tea")


def test_busy_store_is_503_not_a_tool_result(served: tuple[str, str, str]) -> None:
    """Why: a StoreError (SQLite busy) came back as a 200 tool result whose text was the
    store's own error (it may name the file, a host): the client could not tell to retry."""
    _, _, db = served
    body = {"user_id": "ana", "arguments": {"content": "a passage"}}
    assert _tool(served, "archival_memory_insert", body).status_code == 200
    with store_locked(db):
        busy = _tool(
            served, "core_memory_append", {**body, "arguments": {"label": "human", "content": "x"}}
        )
    error = assert_error(busy, 503, "StoreError")
    assert busy.headers["retry-after"] == "1" and "retry" in error["message"]
    assert db not in busy.text and Path(db).name not in busy.text
    again = _tool(
        served,
        "core_memory_append",
        {"user_id": "ana", "arguments": {"label": "human", "content": "x"}},
    )
    assert again.status_code == 200 and not again.json()["is_error"]
