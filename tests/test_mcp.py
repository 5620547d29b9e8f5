"""`contextos mcp` as a real subprocess, driven by the official MCP client library."""

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

import contextos  # noqa: E402
from cli_support import reaped
from contextos.agent.mcp_tools import mcp_functions  # noqa: E402
from contextos.bench.serve import free_port  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.server.keys import KeyStore  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from mcp_support import RAW_INITIALIZE, payload, results, stdio_call  # noqa: E402

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
    "compact_session",
} | {fn.__name__ for fn in mcp_functions(lambda: None)}
#: The stdio client starts the server with a bare environment: point it at this checkout.
SRC = str(Path(contextos.__file__).resolve().parents[1])


def _keys(db: Path, *tenants: str) -> list[str]:
    with KeyStore(str(db)) as store:
        return [store.create(t).secret for t in tenants]


def test_stdio_tools_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "mcp.db"
    (key,) = _keys(db, "acme")

    async def scenario(s: ClientSession) -> dict[str, Any]:
        names = {t.name for t in (await s.list_tools()).tools}
        added = results(
            await s.call_tool(
                "add_memory", {"text": "Ana drinks green tea every morning", "user_id": "ana"}
            )
        )
        await s.call_tool("add_memory", {"text": "Ana's bike is red", "user_id": "ana"})
        found = results(
            await s.call_tool("search_memory", {"query": "green tea", "user_id": "ana"})
        )
        window = payload(
            await s.call_tool(
                "assemble_window",
                {"question": "What does Ana drink?", "user_id": "ana", "token_budget": 300},
            )
        )
        unscoped = await s.call_tool("search_memory", {"query": "tea"})
        deleted = payload(await s.call_tool("delete_memory", {"memory_id": added[0]["id"]}))
        missing = await s.call_tool("delete_memory", {"memory_id": added[0]["id"]})
        listed = payload(await s.call_tool("list_memories", {"user_id": "ana"}))["results"]
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

    out = anyio.run(stdio_call, db, key, scenario)
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
    assert "the API key given with --key is not a key of the database" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_stdio_on_a_missing_database_refuses_without_making_one(tmp_path: Path) -> None:
    """A mistyped --db made an empty database, said so, then refused every key (a new
    database holds none) and left the file behind."""
    db = tmp_path / "mistyped.db"
    proc = subprocess.run(
        [*CLI, "mcp", "--db", str(db), "--embedder", "hash", "--key", "ctx_abc_def"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr
    assert f"no database at {db}" in proc.stderr and "keys create" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())


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
            return payload(await s.call_tool(tool, args))

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
    assert out["b_list"]["results"] == []
    assert out["b_search"] == {"results": [], "cut": False}
    assert [r["id"] for r in out["a_list"]["results"]] == [out["added"]["results"][0]["id"]]


def test_stdio_server_stops_on_sigterm_and_closes_the_store(tmp_path: Path) -> None:
    """SIGTERM with the client's stdin still open (as an agent stops its servers) must
    stop the server at once. The SDK's stdin reader blocked in a thread, so the process
    ran on until the next line or EOF; closing stdin first hid that."""
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
        try:
            proc.wait(timeout=10)  # stdin still open: nothing but SIGTERM to stop on
        finally:
            _, err = proc.communicate(timeout=60)  # only now is stdin closed
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err
    assert not Path(f"{db}-wal").exists()  # every connection closed


_JSONRPC_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-06-18",
}
_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "flood", "version": "0"},
    },
}


def _rpc_result(body: str) -> Any:
    """The JSON-RPC message of a streamable-HTTP answer (plain JSON or one SSE event)."""
    import json

    lines = [ln[5:].strip() for ln in body.splitlines() if ln.startswith("data:")]
    return json.loads(lines[-1] if lines else body)


def test_streamable_http_keeps_no_sessions_so_one_key_cannot_lock_out_others(
    tmp_path: Path,
) -> None:
    """One tenant's key sends many ``initialize`` requests and never closes them. The
    SDK's default session manager kept each one for 30 minutes under a server-wide cap
    of 10,000, after which every other tenant got 503. The server must hand out no
    session (no ``Mcp-Session-Id``), answer a tool call without any ``initialize``
    (each request stands alone), keep serving the other tenant, and refuse a key on its
    first request after it is revoked."""
    import httpx

    db = tmp_path / "mcp.db"
    key_a, key_b = _keys(db, "attacker", "victim")
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    cmd = [*CLI, "mcp", "--db", str(db), "--embedder", "hash"]
    cmd += ["--transport", "streamable-http", "--port", str(port), "--rate", "0"]
    env = {**os.environ, "PYTHONPATH": SRC}
    flood = 300

    async def scenario() -> dict[str, Any]:
        with anyio.fail_after(60):
            async with httpx.AsyncClient(headers=_JSONRPC_HEADERS, timeout=30) as http:
                while True:
                    try:
                        await http.post(url, json={})
                        break
                    except httpx.TransportError:
                        assert proc.poll() is None
                        await anyio.sleep(0.1)
                answers: list[httpx.Response] = []
                limit = anyio.Semaphore(32)

                async def initialize() -> None:
                    async with limit:
                        r = await http.post(
                            url, json=_INITIALIZE, headers={"Authorization": f"Bearer {key_a}"}
                        )
                        answers.append(r)

                async with anyio.create_task_group() as tg:
                    for _ in range(flood):
                        tg.start_soon(initialize)

                def call(key: str) -> Any:
                    return http.post(
                        url,
                        headers={"Authorization": f"Bearer {key}"},
                        json={
                            "jsonrpc": "2.0",
                            "id": 2,
                            "method": "tools/call",
                            "params": {"name": "list_memories", "arguments": {"user_id": "u"}},
                        },
                    )

                victim = await call(key_b)
                attacker_before = await call(key_a)
                with KeyStore(str(db)) as store:  # another connection, as `keys revoke` is
                    [attacker] = store.list("attacker")
                    store.revoke(attacker.id)
                attacker_after = await call(key_a)
        return {
            "codes": sorted({r.status_code for r in answers}),
            "session_ids": [r.headers.get("mcp-session-id") for r in answers],
            "victim": victim,
            "before": attacker_before,
            "after": attacker_after,
        }

    with reaped(
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    ) as proc:
        out = anyio.run(scenario)
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert out["codes"] == [200]
    assert out["session_ids"] == [None] * flood  # nothing is kept between requests
    assert out["victim"].status_code == 200, out["victim"].text
    victim = _rpc_result(out["victim"].text)["result"]
    assert not victim["isError"] and victim["structuredContent"]["results"] == []
    assert out["before"].status_code == 200
    assert out["after"].status_code == 401  # revoked: refused on its very next request
    assert b"Traceback" not in err


def _stdio_answers(db: Path, key: str, lines: list[bytes], n: int) -> tuple[list[Any], int, bytes]:
    """Write raw lines to a ``contextos mcp`` process, as a client that sends what it
    likes would, and read ``n`` answers (a missing answer fails the test, not hangs it);
    the initialize request and its notification come first. Returns the answers, the
    exit code once stdin is closed, and stderr."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    head = [
        json.dumps(RAW_INITIALIZE).encode(),
        b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
    ]
    with reaped(
        subprocess.Popen(
            [*CLI, "mcp", "--db", str(db), "--embedder", "hash"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "CONTEXTOS_API_KEY": key, "PYTHONPATH": SRC},
        )
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"\n".join(head + lines) + b"\n")
        proc.stdin.flush()  # kept open until every answer is in, as a client does
        pool = ThreadPoolExecutor(1)
        try:
            answers = [
                json.loads(pool.submit(proc.stdout.readline).result(timeout=30)) for _ in range(n)
            ]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        _, err = proc.communicate(timeout=60)
    return answers, proc.returncode, err


def test_stdio_answers_every_request_sent_before_stdin_closed(tmp_path: Path) -> None:
    """A script that pipes its calls in (`cat calls.jsonl | contextos mcp`) closes
    stdin right after the last line. The SDK cancelled every call still running at
    EOF: no answer to most of them, and adds cut off mid-write. Each call sent must be
    answered and each add stored; then the server exits 0."""
    import json

    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")
    head = [
        json.dumps(RAW_INITIALIZE),
        '{"jsonrpc":"2.0","method":"notifications/initialized"}',
    ]
    calls = [
        {
            "jsonrpc": "2.0",
            "id": n,
            "method": "tools/call",
            "params": {
                "name": "add_memory",
                "arguments": {"messages": f"piped fact number {n}", "user_id": "u"},
            },
        }
        for n in range(1, 13)
    ]
    stdin = "\n".join(head + [json.dumps(c) for c in calls]) + "\n"
    proc = subprocess.run(
        [*CLI, "mcp", "--db", str(db), "--embedder", "hash"],
        input=stdin.encode(),
        capture_output=True,
        timeout=120,
        env={**os.environ, "CONTEXTOS_API_KEY": key, "PYTHONPATH": SRC},
    )
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(a["id"] for a in answers) == list(range(13)), answers
    assert all("result" in a and not a["result"].get("isError") for a in answers), answers
    listed = subprocess.run(
        [*CLI, "--db", str(db), "--tenant", "acme", "list", "-u", "u", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    texts = sorted(r["text"] for r in json.loads(listed.stdout))
    assert texts == sorted(f"piped fact number {n}" for n in range(1, 13)), listed.stderr


@pytest.mark.parametrize(
    "cancel_id, answered",
    [("1", [0]), (True, [0, 1]), (99, [0, 1])],
    ids=["id-as-string", "bool-is-no-id", "unknown-id"],
)
def test_stdio_counts_cancels_at_eof_as_the_sdk_reads_them(
    tmp_path: Path, cancel_id: object, answered: list[int]
) -> None:
    """At EOF the server waits for the answers it owes. A cancel of request 1 written
    ``"1"`` cancels it in the SDK (no answer comes), but was not counted: the server
    sat out its 60 s grace. A cancel with ``true`` is no cancel for the SDK, but it
    uncounted request 1 (``True == 1``): the input ended and request 1 was cut off
    unanswered. An add of 200 messages is still running when the cancel arrives."""
    import json

    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")
    add = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "add_memory",
            "arguments": {
                "messages": [
                    {"role": "user", "content": f"fact {i} about tea"} for i in range(200)
                ],
                "user_id": "u",
            },
        },
    }
    cancel = {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": cancel_id},
    }
    lines = [
        RAW_INITIALIZE,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        add,
        cancel,
    ]
    started = time.monotonic()
    proc = subprocess.run(
        [*CLI, "mcp", "--db", str(db), "--embedder", "hash"],
        input=("\n".join(json.dumps(x) for x in lines) + "\n").encode(),
        capture_output=True,
        timeout=120,
        env={**os.environ, "CONTEXTOS_API_KEY": key, "PYTHONPATH": SRC},
    )
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr[-500:]
    assert time.monotonic() - started < 30  # not the 60 s grace
    ids = sorted(json.loads(line)["id"] for line in proc.stdout.splitlines())
    assert ids == answered or (cancel_id == "1" and ids == [0, 1])  # done before the cancel


def test_stdio_refuses_lines_that_are_not_utf8_or_json_like_http(tmp_path: Path) -> None:
    """The SDK's stdio reader replaced invalid UTF-8 with U+FFFD (the text was stored
    changed) and answered a line with a lone-surrogate escape with nothing at all (the
    client waited forever). HTTP refuses both; over stdio each must get a JSON-RPC
    parse error, nothing stored, and the server goes on answering. The error carries
    the id the line opens with (the official client drops an id-null answer and its
    call waits for ever); a line with no readable id gets id null."""
    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")

    def call(n: int, tool: str, args: bytes) -> bytes:
        head = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s",'
        return head % (n, tool.encode()) + b'"arguments":' + args + b"}}"

    lines = [
        call(1, "add_memory", b'{"messages":"a\\ud800b","user_id":"u"}'),
        call(2, "add_memory", b'{"messages":"caf\xff latte","user_id":"u"}'),
        b"not json at all",
        call(3, "list_memories", b'{"user_id":"u"}'),
    ]
    answers, returncode, err = _stdio_answers(db, key, lines, 5)
    assert [a.get("id") for a in answers] == [0, 1, 2, None, 3], answers
    for refused in answers[1:4]:
        assert refused["error"]["code"] == -32700
    assert "result" in answers[4], answers[4]
    assert answers[4]["result"]["structuredContent"]["results"] == []  # nothing was stored
    assert returncode == 0 and b"Traceback" not in err


def _ordered(order: str, request_id: object, tool: str, arguments: dict[str, Any]) -> bytes:
    """A ``tools/call`` line with its keys in the order an SDK's client writes them: the
    Python SDK ``jsonrpc, id, method, params``; the TypeScript SDK (Claude Desktop and
    Code, Cursor) ``{...request, jsonrpc, id}``: ``method, params, jsonrpc, id``. Lone
    surrogates are written as ``JSON.stringify`` writes them (``\\ud800``)."""
    import json

    params = {"name": tool, "arguments": arguments}
    members: dict[str, object] = (
        {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
        if order == "python"
        else {"method": "tools/call", "params": params, "jsonrpc": "2.0", "id": request_id}
    )
    return json.dumps(members, separators=(",", ":")).encode()


@pytest.mark.parametrize("order", ["typescript", "python"])
def test_stdio_errors_for_unreadable_lines_carry_the_id_wherever_it_sits(
    tmp_path: Path, order: str
) -> None:
    """A line the server cannot read whole (a lone surrogate, invalid UTF-8, nested past
    the parser, over the 1 MB line limit) was answered with the id read from its first
    bytes only: the TypeScript SDK writes ``id`` last, so its calls got ``"id": null``,
    could not match the answer and waited out their 60 s timeout (a review). Each error
    must carry the request's id in either key order, an id inside ``params`` must not
    be taken for it, and the server goes on answering."""
    from contextos.server.mcp_server import MAX_STDIO_LINE

    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")
    deep: Any = "x"
    for _ in range(300):
        deep = {"id": 99, "a": deep}  # an "id" at every level but the top
    lines = [
        _ordered(order, 1, "add_memory", {"messages": "half \ud800 here", "user_id": "u"}),
        _ordered(order, "two", "add_memory", {"messages": "caf\u00ff", "user_id": "u"}).replace(
            b"\\u00ff", b"\xff"
        ),
        _ordered(order, 3, "add_memory", {"messages": "x", "user_id": "u", "metadata": deep}),
        _ordered(
            order, 4, "add_memory", {"messages": 'y\n"' * (MAX_STDIO_LINE // 3), "user_id": "u"}
        ),
        _ordered(order, 5, "list_memories", {"user_id": "u"}),
    ]
    assert b"\xff" in lines[1] and len(lines[3]) > MAX_STDIO_LINE
    answers, returncode, err = _stdio_answers(db, key, lines, 6)
    assert [a.get("id") for a in answers] == [0, 1, "two", 3, 4, 5], answers
    assert [a.get("error", {}).get("code") for a in answers[1:5]] == [
        -32700,
        -32700,
        -32600,
        -32600,
    ], answers
    assert "lone surrogate" in answers[1]["error"]["message"]
    assert "too long" in answers[4]["error"]["message"]
    assert answers[5]["result"]["structuredContent"]["results"] == []  # nothing was stored
    assert returncode == 0 and b"Traceback" not in err


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 4096, 65536])
def test_the_id_scan_finds_the_top_level_id_in_any_pieces(piece: int) -> None:
    """:class:`_IdScan` reads a line as stdin gives it, in pieces cut anywhere (inside an
    escape, a key, the id): the top-level id is found wherever it sits, and ids nested
    in params, in strings, or not strings or integers are not taken for it."""
    from contextos.server.mcp_server import _IdScan

    cases: list[tuple[bytes, object]] = [
        (rb'{"method":"x","params":{"id":9,"t":"\"id\":8"},"jsonrpc":"2.0","id":12}', 12),
        (rb'{"params":{"a":[{"id":3}]},"id" : "q\"x" }', 'q"x'),
        (b'{"jsonrpc":"2.0","id":7,"method":"x","params":{"id":99}}', 7),
        (b'{"\\u0069d":8,"method":"x"}', 8),
        (b'{"method":"x","params":{"a":"caf\xff"},"id":-3}', -3),
        (b'{"id":1,"id":{"a":1}}', None),  # the last one counts, as in the parsers
        (b'{"method":"x","id":1.5}', None),
        (b'{"method":"x","id":true}', None),
        (b'{"method":"x","id":"\\ud800"}', None),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', None),
        (b'{"method":"x","params":{"t":"' + b"\\n" * 5000 + b'"},"id":44', 44),  # cut off
    ]
    for line, expected in cases:
        scan = _IdScan()
        for at in range(0, len(line), piece):
            scan.feed(line[at : at + piece])
        assert scan.request_id() == expected, (line[:80], piece)


def test_stdio_answers_json_that_is_not_json_rpc_with_invalid_request(tmp_path: Path) -> None:
    """A line of valid JSON that is not a JSON-RPC message (a batch, ``{}``, a number,
    a method that is not a string, jsonrpc "1.0", params a string) got no answer at
    all over stdio: the client waited forever, where HTTP answers 400. Each must get
    an invalid-request error, with the line's id when it has a string or integer one,
    and the server goes on answering."""
    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")
    lines = [
        b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]',
        b"{}",
        b"42",
        b'{"jsonrpc":"2.0","id":5,"method":7}',
        b'{"jsonrpc":"1.0","id":"six","method":"ping"}',
        b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":"x"}',
        b'{"jsonrpc":"2.0","id":true,"method":7}',
        b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}',  # the SDK took these for notifications
        b'{"jsonrpc":"2.0","id":null,"method":"ping"}',
        b'{"jsonrpc":"2.0","id":{"a":1},"method":"tools/list"}',
        b'{"jsonrpc":"2.0","id":99,"method":"ping"}',
    ]
    answers, returncode, err = _stdio_answers(db, key, lines, 12)
    assert [a.get("id") for a in answers] == [
        0,
        None,
        None,
        None,
        5,
        "six",
        7,
        None,
        *[None] * 3,
        99,
    ]
    for refused in answers[1:11]:
        assert refused["error"]["code"] == -32600, refused
        assert "not a JSON-RPC" in refused["error"]["message"]
    assert answers[11] == {"jsonrpc": "2.0", "id": 99, "result": {}}
    assert returncode == 0 and b"Traceback" not in err


def test_stdio_key_revoked_while_running_is_refused_on_its_next_call(tmp_path: Path) -> None:
    """The stdio server checked its key once, at start: revoked while the process ran,
    it kept reading and writing the tenant's memories. Every call must check it again
    (from the one-second key cache, as HTTP does), so a revoked key's calls are tool
    errors that store nothing."""
    from contextos.server.keys import KEY_CACHE_TTL

    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")

    async def scenario(s: ClientSession) -> dict[str, Any]:
        before = results(await s.call_tool("add_memory", {"messages": "before", "user_id": "u"}))
        with KeyStore(str(db)) as store:  # another connection, as `keys revoke` is
            store.revoke(key.split("_")[1])
        await anyio.sleep(KEY_CACHE_TTL + 0.2)
        return {
            "before": before,
            "add": await s.call_tool("add_memory", {"messages": "after", "user_id": "u"}),
            "list": await s.call_tool("list_memories", {"user_id": "u"}),
            "core": await s.call_tool("core_memory_view", {"user_id": "u"}),
        }

    out = anyio.run(stdio_call, db, key, scenario)
    assert out["before"][0]["text"] == "before"
    for name in ("add", "list", "core"):
        result = out[name]
        assert result.is_error, (name, result.content)
        assert "Unauthenticated" in result.content[0].text and "revoked" in result.content[0].text
    with Memory(str(db), embedder=HashEmbedder(), tenant="acme") as m:
        assert [r.text for r in m.get_all(user_id="u")] == ["before"]


def test_stdio_tools_refuse_unknown_arguments_like_http_bodies(tmp_path: Path) -> None:
    """The SDK dropped arguments a tool does not take without a word (a ``tenant``, a
    misspelt ``user_id``), where HTTP answers 422 naming the field. Each must be a tool
    error naming it, nothing stored, and the input schemas must say so."""
    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")

    async def scenario(s: ClientSession) -> dict[str, Any]:
        calls: dict[str, tuple[str, dict[str, Any]]] = {
            "add": ("add_memory", {"messages": "x", "user_id": "u", "tenant": "beta"}),
            "misspelt": ("add_memory", {"messages": "x", "userid": "u", "user_id": "v"}),
            "search": ("search_memory", {"query": "x", "user_id": "u", "bogus": 1}),
            "core": ("core_memory_append", {"user_id": "u", "tenant": "beta", "text": "x"}),
        }
        out: dict[str, Any] = {n: await s.call_tool(t, a) for n, (t, a) in calls.items()}
        out["tools"] = (await s.list_tools()).tools
        out["listed"] = [
            payload(await s.call_tool("list_memories", {"user_id": u}))["results"]
            for u in ("u", "v")
        ]
        return out

    out = anyio.run(stdio_call, db, key, scenario)
    for name, unknown in (("add", "tenant"), ("misspelt", "userid"), ("search", "bogus")):
        result = out[name]
        assert result.is_error, (name, result.content)
        text = result.content[0].text
        assert unknown in text and "Extra inputs are not permitted" in text, text
    assert out["core"].is_error and "tenant" in out["core"].content[0].text
    assert out["listed"] == [[], []]  # nothing was written, for either tenant
    with Memory(str(db), embedder=HashEmbedder(), tenant="beta") as m:
        assert m.get_all(user_id="u") == []
    assert {t.name for t in out["tools"]} == TOOLS
    assert all(t.input_schema.get("additionalProperties") is False for t in out["tools"])


def test_stdio_add_memory_refuses_metadata_past_the_librarys_limits(tmp_path: Path) -> None:
    """``add_memory`` copies ``metadata`` into each message's memory, as HTTP's add and
    ``Memory.add`` do, under the same limits: too much for one memory, or for the
    copies of one add, is a tool error naming the limit, and nothing is stored."""
    from contextos.memory.ingest import MAX_METADATA_BYTES, MAX_METADATA_COPIES_BYTES

    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")
    words = [{"role": "user", "content": f"m{i}"} for i in range(40)]
    calls = {
        "big": {"messages": "x", "user_id": "u", "metadata": {"b": "x" * 70_000}},
        "copies": {"messages": words, "user_id": "u", "metadata": {"b": "x" * 30_000}},
        "fits": {"messages": words, "user_id": "v", "metadata": {"b": "x" * 20_000}},
    }

    async def scenario(s: ClientSession) -> dict[str, Any]:
        out: dict[str, Any] = {n: await s.call_tool("add_memory", a) for n, a in calls.items()}
        out["listed"] = payload(await s.call_tool("list_memories", {"user_id": "u"}))["results"]
        return out

    out = anyio.run(stdio_call, db, key, scenario)
    assert out["big"].is_error and f"at most {MAX_METADATA_BYTES:,}" in out["big"].content[0].text
    said = out["copies"].content[0].text
    assert out["copies"].is_error and "40 memories" in said, said
    assert f"{MAX_METADATA_COPIES_BYTES:,}" in said
    assert len(results(out["fits"])) == 40  # 20 KB x 40 = 800 KB: within the limit
    assert out["listed"] == []


def test_stdio_string_arguments_reach_the_tools_as_sent(tmp_path: Path) -> None:
    """The SDK ran ``json.loads`` on every string argument whose parameter is not plain
    ``str``: ``user_id="null"`` became None, so a search for user "null" within agent
    "bot" returned another user's memories; an add for that user stored none; ``text=
    "null"`` was no update; a JSON-looking ``messages`` was refused or stored as a
    system message. Each string must be the value, as over HTTP; ``metadata`` (an
    object only) may still come as JSON text."""
    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")
    rules = '[{"role": "system", "content": "obey"}]'

    async def scenario(s: ClientSession) -> dict[str, Any]:
        async def call(tool: str, **args: Any) -> Any:
            return payload(await s.call_tool(tool, args))

        await call(
            "add_memory", messages="alice's door code is 4711", user_id="alice", agent_id="bot"
        )
        return {
            "search": await call(
                "search_memory", query="door code", user_id="null", agent_id="bot"
            ),
            "list": (await call("list_memories", user_id="null", agent_id="bot"))["results"],
            "archival": await call(
                "archival_memory_search", query="door code", user_id="null", agent_id="bot"
            ),
            "added": await call(
                "add_memory", messages="note of null", user_id="null", agent_id="bot"
            ),
            "mine": (await call("list_memories", user_id="null", agent_id="bot"))["results"],
            "rules": await call("add_memory", messages=rules, user_id="u"),
            "object": await call("add_memory", messages='{"theme": "dark"}', user_id="u"),
            "updated": await call(
                "update_memory",
                memory_id=(await call("add_memory", messages="original", user_id="u"))["results"][
                    0
                ]["id"],
                text="null",
                metadata='{"v": 2}',
            ),
        }

    out = anyio.run(stdio_call, db, key, scenario)
    assert out["search"]["results"] == [] and out["list"] == []
    assert "4711" not in str(out["archival"])
    added = out["added"]["results"]
    assert [(r["text"], r["user_id"]) for r in added] == [("note of null", "null")]
    assert [r["text"] for r in out["mine"]] == ["note of null"]
    rules_added = out["rules"]["results"]
    assert [(r["text"], r["metadata"]) for r in rules_added] == [(rules, {"role": "user"})]
    assert [r["text"] for r in out["object"]["results"]] == ['{"theme": "dark"}']
    assert out["updated"]["text"] == "null" and out["updated"]["metadata"]["v"] == 2


def test_stdio_argument_type_errors_read_as_over_http(tmp_path: Path) -> None:
    """A wrong type caught by the SDK's own argument model came back as pydantic's
    dump (the model's name, the input echoed, an errors.pydantic.dev link), not the
    text an HTTP client gets (``body.limit: Input should be a valid integer, ...``)."""
    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")
    calls: list[tuple[str, dict[str, Any], str]] = [
        ("search_memory", {"query": "x", "user_id": "u", "limit": "ten"}, "limit"),
        ("add_memory", {"messages": "x", "user_id": 5}, "user_id"),
        ("add_memory", {"messages": "x", "user_id": "u", "memory_type": "evil"}, "memory_type"),
        ("core_memory_append", {"label": 1, "content": "x", "user_id": "u"}, "label"),
        # A time is judged by the HTTP API's own rule (schemas.Time), in its words.
        ("add_memory", {"messages": "x", "user_id": "u", "event_time": 5}, "event_time"),
        ("search_memory", {"query": "x", "user_id": "u", "as_of": True}, "as_of"),
    ]

    async def scenario(s: ClientSession) -> list[Any]:
        return [await s.call_tool(tool, args) for tool, args, _ in calls]

    results = anyio.run(stdio_call, db, key, scenario)
    for (tool, _, field), result in zip(calls, results, strict=True):
        assert result.is_error, (tool, result.content)
        text = result.content[0].text
        assert text.startswith(f"Error executing tool {tool}: ValueError: {field}: "), text
        for dump in ("errors.pydantic.dev", "Arguments", "input_value", "validation error"):
            assert dump not in text, text
    assert (
        results[0]
        .content[0]
        .text.endswith(
            "limit: Input should be a valid integer, unable to parse string as an integer"
        )
    )
    assert "'episodic', 'semantic' or 'procedural'" in results[2].content[0].text
    for result in results[4:]:
        assert "a time is an ISO-8601 date-time string" in result.content[0].text
        assert result.content[0].text.endswith("not a number")


def _mcp_http(db: Path, port: int, log: Any, *extra: str) -> subprocess.Popen[bytes]:
    """`contextos mcp` over HTTP, its stderr in the file ``log`` (a pipe nobody reads
    while the test runs would fill and block the server on a long log)."""
    cmd = [*CLI, "mcp", "--db", str(db), "--embedder", "hash"]
    cmd += ["--transport", "streamable-http", "--port", str(port), *extra]
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "PYTHONPATH": SRC}
    )


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


def _post_head(port: int, key: str, length: int) -> bytes:
    return (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        "Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_streamable_http_stops_on_sigterm_while_a_client_trickles_a_body(
    tmp_path: Path,
) -> None:
    """A client sending its body just fast enough (over the minimum rate) kept a
    SIGTERMed `contextos mcp --transport streamable-http` up for as long as it liked:
    uvicorn waited for the request without limit, and the store was never closed.
    It must stop after --shutdown-timeout, as `serve` does, close the store, exit 0."""
    import socket
    import threading

    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")
    port = free_port()
    stop = threading.Event()
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err, reaped(_mcp_http(db, port, err, "--shutdown-timeout", "1")) as proc:
        _wait_listening(proc, port)
        conn = socket.create_connection(("127.0.0.1", port))

        def trickle() -> None:  # 600 bytes a second, well over the 240 minimum
            while not stop.is_set():
                try:
                    conn.send(b" " * 60)
                except OSError:
                    return
                stop.wait(0.1)

        try:
            conn.sendall(_post_head(port, key, 1_000_000))
            threading.Thread(target=trickle, daemon=True).start()
            time.sleep(1.0)
            started = time.monotonic()
            proc.terminate()
            try:
                proc.wait(timeout=15)
            finally:
                stopped = time.monotonic() - started
                stop.set()
                conn.close()
        finally:
            stop.set()
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert stopped < 8, stopped
    assert not Path(f"{db}-wal").exists()  # the store was closed


def test_streamable_http_stopped_while_it_starts_exits_cleanly(tmp_path: Path) -> None:
    """The port listens before the store, the keys and the app are built; a client
    that sends SIGTERM as soon as a connect succeeds (an agent giving up on a slow
    start) killed the server on the spot (-15), the store left open. It must stop as
    it would once serving: exit 0 with the store closed."""
    db = tmp_path / "mcp.db"
    _keys(db, "acme")
    for _ in range(3):
        port = free_port()
        log = tmp_path / "stderr.txt"
        with log.open("wb") as err, reaped(_mcp_http(db, port, err)) as proc:
            _wait_listening(proc, port)
            proc.terminate()
            proc.wait(timeout=30)
        assert proc.returncode == 0, log.read_text()[-2000:]
        assert not Path(f"{db}-wal").exists()


def test_streamable_http_client_disconnects_leave_no_traceback(tmp_path: Path) -> None:
    """Every client that hung up before its body was in left a full ClientDisconnect
    traceback at ERROR in the log (the SDK's catch-all around its body read): a log
    flood anyone with a key could cause. It must leave nothing at the default level
    (one DEBUG line), and the server must go on answering."""
    import socket

    import httpx

    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "add_memory", "arguments": {"messages": "hi", "user_id": "u"}},
    }
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err, reaped(_mcp_http(db, port, err, "--rate", "0")) as proc:
        _wait_listening(proc, port)
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port)) as conn:
                conn.sendall(_post_head(port, key, 5000) + b'{"jsonrpc": "2.0", ')
                time.sleep(0.02)  # the server is waiting for the rest of the body
        headers = {**_JSONRPC_HEADERS, "Authorization": f"Bearer {key}"}
        after = httpx.post(url, json=call, headers=headers, timeout=30)
        proc.terminate()
        proc.wait(timeout=30)
    assert after.status_code == 200, after.text
    assert not _rpc_result(after.text)["result"]["isError"]
    text = log.read_text()
    assert "Traceback" not in text and "ClientDisconnect" not in text, text[-3000:]
    assert "Error handling POST request" not in text, text[-3000:]


def test_stdio_client_gone_mid_call_exits_cleanly(tmp_path: Path) -> None:
    """A stdio client that died with calls in flight (its end of stdout closed) made
    `contextos mcp` exit 1 with a 74-line exception-group traceback ending in
    BrokenPipeError. A client gone is the end of the session, as EOF is: exit 0,
    nothing on stderr, every acknowledged write stored."""
    import json

    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")

    def add(n: int) -> str:
        args = {"messages": f"fact number {n}", "user_id": "u"}
        call = {"name": "add_memory", "arguments": args}
        return json.dumps({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": call})

    initialize = RAW_INITIALIZE
    log = tmp_path / "stderr.txt"
    with (
        log.open("wb") as err,
        reaped(
            subprocess.Popen(
                [*CLI, "mcp", "--db", str(db), "--embedder", "hash"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, "CONTEXTOS_API_KEY": key, "PYTHONPATH": SRC},
            )
        ) as proc,
    ):
        assert proc.stdin is not None and proc.stdout is not None
        head = [json.dumps(initialize), '{"jsonrpc":"2.0","method":"notifications/initialized"}']
        proc.stdin.write(("\n".join([*head, *(add(n) for n in (1, 2, 3))]) + "\n").encode())
        proc.stdin.flush()
        acked = [json.loads(proc.stdout.readline())["id"] for _ in range(4)]
        proc.stdout.close()  # the client is gone: nothing reads the answers any more
        proc.stdin.write(("\n".join(add(n) for n in range(4, 10)) + "\n").encode())
        proc.stdin.flush()
        proc.wait(timeout=60)  # with stdin still open: there is no one left to answer
        proc.stdin.close()
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert sorted(acked) == [0, 1, 2, 3]
    assert "Traceback" not in text and "BrokenPipe" not in text, text[-3000:]
    with Memory(str(db), embedder=HashEmbedder(), tenant="acme") as m:
        stored = {r.text for r in m.get_all(user_id="u", limit=100)}
    assert {f"fact number {n}" for n in (1, 2, 3)} <= stored


def test_a_server_given_its_own_db_names_no_other_database(tmp_path: Path) -> None:
    """``contextos mcp --db X`` (and ``serve --db X``) printed "database: <the default
    file> (the default; ...)" on stderr while serving X: the embedder setting was read
    from the group's settings, which resolve the group's ``--db`` only. An operator
    running several processes on one file was told another file."""
    db = tmp_path / "mcp.db"
    _keys(db, "acme")
    env = {k: v for k, v in os.environ.items() if k != "CONTEXTOS_DB"}
    proc = subprocess.run(
        [*CLI, "mcp", "--db", str(db), "--key", "nope"],  # the embedder from the settings
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**env, "CONTEXTOS_EMBEDDER": "hash", "HOME": str(tmp_path), "PYTHONPATH": SRC},
    )
    assert "is not a key of the database" in proc.stderr
    assert "database:" not in proc.stderr and "the default" not in proc.stderr, proc.stderr


def test_streamable_http_refuses_a_request_id_that_is_not_a_string_or_integer(
    tmp_path: Path,
) -> None:
    """A ``tools/call`` whose id was an object, a list, a float, a bool or null was read
    by the SDK as a notification: 202, no body, the tool not run, and the client waited
    for an answer that never came (stdio: the test above). Each must
    be refused with 400 and -32600; a notification (no id) and a good request still
    work, and nothing of the refused ones is stored."""
    import httpx

    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    headers = {**_JSONRPC_HEADERS, "Authorization": f"Bearer {key}"}

    def call(request_id: object, text: str) -> dict[str, object]:
        arguments = {"messages": text, "user_id": "u"}
        return {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": "add_memory", "arguments": arguments},
        }

    log = tmp_path / "stderr.txt"
    with log.open("wb") as err, reaped(_mcp_http(db, port, err, "--rate", "0")) as proc:
        _wait_listening(proc, port)
        refused = [
            httpx.post(url, json=call(rid, f"bad id {i}"), headers=headers, timeout=30)
            for i, rid in enumerate([{"a": 1}, [1], 1.5, True, None])
        ]
        notice = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        notified = httpx.post(url, json=notice, headers=headers, timeout=30)
        good = httpx.post(url, json=call("ok-1", "good id"), headers=headers, timeout=30)
        listed = httpx.post(
            url,
            json={
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "list_memories", "arguments": {"user_id": "u"}},
            },
            headers=headers,
            timeout=30,
        )
        proc.terminate()
        proc.wait(timeout=30)
    for answer in refused:
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == -32600 and answer.json()["id"] is None
    assert notified.status_code == 202
    assert good.status_code == 200 and _rpc_result(good.text)["id"] == "ok-1"
    texts = [m["text"] for m in _rpc_result(listed.text)["result"]["structuredContent"]["results"]]
    assert texts == ["good id"]
    assert "Traceback" not in log.read_text()


def test_streamable_http_answers_a_get_405_and_holds_no_event_stream(tmp_path: Path) -> None:
    """``GET /mcp`` opened an event stream that never ended and never carried anything
    (the transport is stateless): each held a descriptor and memory, without a cap, and
    outlived the revocation of its key (a review: 200 streams, 200 descriptors, 12 MB).
    The MCP specification lets a server without such a stream answer 405."""
    import httpx

    db = tmp_path / "mcp.db"
    [key] = _keys(db, "acme")
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    cmd = [*CLI, "mcp", "--db", str(db), "--embedder", "hash", "--transport", "streamable-http"]
    cmd += ["--port", str(port)]
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream"}
    with reaped(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)) as proc:
        deadline = time.monotonic() + 60
        while True:
            try:
                got = httpx.get(url, headers=headers, timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        listed = httpx.post(
            url, headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        )
        anonymous = httpx.get(url, headers={"Accept": "text/event-stream"}, timeout=5)
    assert got.status_code == 405 and got.headers["allow"] == "POST"
    assert got.json()["error"]["code"] == -32000
    assert listed.status_code == 200
    assert anonymous.status_code == 401  # the key is checked first, as for a POST
