"""A server at its limit of open files (``ulimit -n``) serves again once connections
close, and its log stays small meanwhile.

Each connection holds a file descriptor. Held at the limit by clients that send nothing
(no key is needed to open a TCP connection), ``contextos mcp --transport
streamable-http`` stopped accepting for good while its process lived on: the MCP SDK's
rich log handler failed inside asyncio's handling of the failed ``accept()``. And
``contextos serve`` logged a traceback per failed ``accept()``, about 3 MB a second (a
review). Now a server holds at most ``headlimit.connection_cap()`` connections and answers the
rest 503 at once. Both run here as users run them, in a subprocess with a low limit.
"""

from __future__ import annotations

import resource
import select
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from cli_support import reaped, run_cli
from contextos.bench.serve import free_port
from contextos.server.headlimit import RESERVED_FILES
from mcp_support import CLI

#: Open files the server may hold: enough to start (the store, the model's files,
#: the listening socket), few enough that the test's connections pass it.
LIMIT = 200
#: Connections the test holds open: more than the limit.
HELD = LIMIT + 60


def _low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def _answers(kind: str, url: str, key: str) -> int | str:
    """The status of one ordinary request, or why it got none."""
    headers = {"Authorization": f"Bearer {key}"}
    try:
        if kind == "serve":
            return httpx.get(
                f"{url}/v1/memories", params={"user_id": "ana"}, headers=headers
            ).status_code
        rpc = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        headers["Accept"] = "application/json, text/event-stream"
        return httpx.post(f"{url}/mcp", json=rpc, headers=headers, timeout=5).status_code
    except httpx.TransportError as exc:
        return type(exc).__name__


@pytest.mark.serial
@pytest.mark.parametrize("kind", ["serve", "mcp"])
def test_a_server_held_at_its_file_limit_serves_again_and_logs_little(
    kind: str, tmp_path: Path
) -> None:
    db = tmp_path / "fd.db"
    key = run_cli("keys", "create", "--tenant", "acme", db=db).stdout.split()[0]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*CLI, kind, "--db", str(db), "--embedder", "hash", "--port", str(port)]
    if kind == "mcp":
        cmd += ["--transport", "streamable-http"]
    log = tmp_path / "server.log"
    with (
        log.open("wb") as out,
        reaped(subprocess.Popen(cmd, stdout=out, stderr=out, preexec_fn=_low_limit)) as proc,
    ):
        deadline = time.monotonic() + 60
        while _answers(kind, url, key) != 200:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        held = []
        for _ in range(HELD):  # bare connections: no byte, no key
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(3)
        answered, _, _ = select.select(held, [], [], 1.0)
        turned_away = [c.recv(100) for c in answered]
        # Those over the cap were answered 503 and closed on arrival; the rest wait.
        assert turned_away and all(a.startswith(b"HTTP/1.1 503") for a in turned_away)
        assert len(turned_away) == HELD - connection_cap_at(LIMIT)
        assert _answers(kind, url, key) == 503
        for conn in held:
            conn.close()
        deadline = time.monotonic() + 20
        while (status := _answers(kind, url, key)) != 200:
            assert time.monotonic() < deadline, f"no longer serving: {status}"
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    text = log.read_text()
    # A burst may still pass the limit for a moment (asyncio accepts a whole backlog
    # before any connection is turned away): said once, not once per failed accept.
    assert text.count("out of system resource") <= 2, text[-3000:]
    assert len(text) < 5_000, text[-3000:]


def connection_cap_at(limit: int) -> int:
    """``headlimit.connection_cap`` of a process whose limit of open files is ``limit``."""
    return limit - max(RESERVED_FILES, limit // 5)
