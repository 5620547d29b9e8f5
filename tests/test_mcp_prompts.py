"""`contextos mcp` has no prompts and no resources, and says so cleanly: over stdio and
streamable HTTP, through the real MCP client, ``prompts/list``, ``resources/list`` and
``resources/templates/list`` answer empty lists, and ``prompts/get`` of any name (the
caller's text, escape sequences included) and ``resources/read`` of an unknown URI answer a
JSON-RPC invalid-params error. Neither writes a traceback, an ERROR record or the caller's
raw text to the server's stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

import contextos  # noqa: E402
from cli_support import reaped  # noqa: E402
from contextos.bench.serve import free_port  # noqa: E402
from contextos.server.keys import KeyStore  # noqa: E402
from mcp_support import payload  # noqa: E402

CLI = [sys.executable, "-c", "from contextos.cli.main import main; main()"]
SRC = str(Path(contextos.__file__).resolve().parents[1])
INVALID_PARAMS = -32602

#: A prompt name that sets the terminal's title, clears the screen and prints a fake
#: alert in red, were it written raw to the operator's terminal (the review's repro).
HOSTILE = "x\x1b]0;OWNED-TITLE\x07\x1b[2J\x1b[31mFAKE: all keys revoked\x1b[0m"
HOSTILE_URI = "file:///etc/\x1b[2J\x1b[31mOWNED-URI"


def _key(db: Path) -> str:
    with KeyStore(str(db)) as store:
        return store.create("acme").secret


async def _probe(s: ClientSession) -> dict[str, Any]:
    """What the server answers to every prompt and resource request, then a tool call
    (the server still serves)."""
    out: dict[str, Any] = {
        "prompts": (await s.list_prompts()).prompts,
        "resources": (await s.list_resources()).resources,
        "templates": (await s.list_resource_templates()).resource_templates,
        "errors": [],
    }
    for _ in range(3):
        for name in (HOSTILE, "plain"):
            with pytest.raises(MCPError) as got:
                await s.get_prompt(name, {"a": "b"})
            out["errors"].append(("prompt", name, got.value.code, got.value.message))
    for uri in (HOSTILE_URI, "memory://nothing-here"):
        with pytest.raises(MCPError) as got:
            await s.read_resource(uri)
        out["errors"].append(("resource", uri, got.value.code, got.value.message))
    added = await s.call_tool("add_memory", {"messages": "still serving", "user_id": "u"})
    out["added"] = payload(added)
    return out


def _check(out: dict[str, Any], log: str) -> None:
    for raw in ("Traceback", "ERROR", "Unknown prompt", "OWNED", "\x1b", "\x07"):
        assert raw not in log, (raw, log[-3000:])
    assert out["prompts"] == [] and out["resources"] == [] and out["templates"] == []
    for kind, name, code, message in out["errors"]:
        assert code == INVALID_PARAMS, (kind, name, code, message)
        if kind == "prompt":  # the name, escaped: no ESC or BEL reaches the client either
            assert message == f"Unknown prompt: {name!r}", message
            assert "\x1b" not in message and "\x07" not in message
    assert [r["text"] for r in out["added"]["results"]] == ["still serving"]


def test_stdio_prompts_and_resources_answer_cleanly_and_log_nothing(tmp_path: Path) -> None:
    db = tmp_path / "mcp.db"
    key = _key(db)
    errlog = tmp_path / "stderr.txt"
    params = StdioServerParameters(
        command=CLI[0],
        args=[*CLI[1:], "mcp", "--db", str(db), "--embedder", "hash"],
        env={"CONTEXTOS_API_KEY": key, "PYTHONPATH": SRC},
    )

    async def run() -> dict[str, Any]:
        with errlog.open("w") as err, anyio.fail_after(120):
            async with (
                stdio_client(params, errlog=err) as (read, write),
                ClientSession(read, write) as s,
            ):
                init = await s.initialize()
                # Advertised, and served: an empty list, not "Method not found".
                assert init.capabilities.prompts is not None
                return await _probe(s)

    out = anyio.run(run)
    _check(out, errlog.read_text(errors="replace"))


def test_streamable_http_prompts_and_resources_answer_cleanly_and_log_nothing(
    tmp_path: Path,
) -> None:
    """The review's case: any key holder on `contextos mcp --transport streamable-http`
    wrote ~130 lines of traceback per ``prompts/get``, the name's ESC sequences raw."""
    httpx2 = pytest.importorskip("httpx2")
    from mcp.client.streamable_http import streamable_http_client

    db = tmp_path / "mcp.db"
    key = _key(db)
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    cmd = [*CLI, "mcp", "--db", str(db), "--embedder", "hash"]
    cmd += ["--transport", "streamable-http", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": SRC}
    log = tmp_path / "stderr.txt"

    async def scenario() -> dict[str, Any]:
        with anyio.fail_after(120):
            return await session()

    async def session() -> dict[str, Any]:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http,
            streamable_http_client(url, http_client=http) as (read, write, *_),
            ClientSession(read, write) as s,
        ):
            await s.initialize()
            return await _probe(s)

    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        with reaped(proc):
            _wait_listening(proc, port)
            out = anyio.run(scenario)
            proc.terminate()
            proc.wait(timeout=30)
    _check(out, log.read_text(errors="replace"))


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    import socket

    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the MCP server exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the MCP server did not start"
            time.sleep(0.1)
