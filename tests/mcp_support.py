"""MCP test helpers: a real ``contextos mcp`` over stdio or streamable HTTP, and tool
results read back."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

import contextos
from cli_support import reaped
from contextos.bench.serve import free_port

CLI = [sys.executable, "-c", "from contextos.cli.main import main; main()"]
SRC = str(Path(contextos.__file__).resolve().parents[1])


async def stdio_call(
    db: Path,
    key: str,
    fn: Callable[[ClientSession], Awaitable[Any]],
    *,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    errlog: Path | None = None,
) -> Any:
    """``fn`` run against ``contextos mcp --db DB`` over stdio, acting with ``key``
    (``env``: more variables for the server; ``errlog``: where its stderr goes)."""
    params = StdioServerParameters(
        command=CLI[0],
        args=[*CLI[1:], "mcp", "--db", str(db), "--embedder", "hash"],
        env={"CONTEXTOS_API_KEY": key, "PYTHONPATH": SRC, **(env or {})},
    )
    with (
        anyio.fail_after(timeout),
        errlog.open("w") if errlog is not None else contextlib.nullcontext(sys.stderr) as err,
    ):
        async with (
            stdio_client(params, errlog=err) as (read, write),
            ClientSession(read, write) as s,
        ):
            await s.initialize()
            return await fn(s)


def payload(result: Any) -> Any:
    """A tool's structured result: one object, also sent as the one text block, in
    compact JSON (what a host gives the model)."""
    assert not result.is_error, result.content
    data = result.structured_content
    assert isinstance(data, dict), data
    [block] = result.content
    assert json.loads(block.text) == data and ",\n" not in block.text, block.text[:300]
    return data


def results(result: Any) -> list[Any]:
    """The entries of a tool that answers a list (``{"results": [...], ...}``)."""
    entries: list[Any] = payload(result)["results"]
    return entries


def error_text(result: Any) -> str:
    """The text of a tool error (the call must have failed)."""
    assert result.is_error, result.content
    return str(result.content[0].text)


MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-06-18",
}


#: The ``initialize`` request a raw client sends first (stdio lines, HTTP bodies).
RAW_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}


@contextmanager
def mcp_over_http(db: Path, *options: str, stderr: Path | None = None) -> Iterator[str]:
    """``contextos mcp --transport streamable-http`` on ``db`` (hash embedder; ``options``
    added to its command, no rate limit when none are given; its stderr written to
    ``stderr`` when given), its base URL once it listens; stopped at the end. Readiness
    is a TCP connect, not a request: a request without a key would count as a failed
    authentication against the limits a test sets."""
    port = free_port()
    cmd = [*CLI, "mcp", "--db", str(db), "--embedder", "hash", "--transport", "streamable-http"]
    cmd += ["--port", str(port), *(options or ("--rate", "0"))]
    env = {**os.environ, "PYTHONPATH": SRC}
    with (
        stderr.open("wb") if stderr is not None else contextlib.nullcontext() as err,
        reaped(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)) as proc,
    ):
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the MCP server exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the MCP server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
        proc.terminate()


def http_tool_call(http: httpx.Client, key: str, name: str, arguments: dict[str, object]) -> int:
    """One stateless ``tools/call`` to the streamable-HTTP server; 200 only when the tool
    answered without an error."""
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    answer = http.post(
        "/mcp",
        headers={**MCP_HEADERS, "Authorization": f"Bearer {key}"},
        json={**call, "params": {"name": name, "arguments": arguments}},
    )
    if answer.status_code != 200:
        return answer.status_code
    lines = [ln[5:].strip() for ln in answer.text.splitlines() if ln.startswith("data:")]
    result = json.loads(lines[-1] if lines else answer.text)["result"]
    return 500 if result["isError"] else 200
