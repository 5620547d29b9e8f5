"""``contextos serve --log-level info`` writes one line a request (server/access_log.py).

A real server process on loopback, real HTTP clients, and its log read back: each
request once, with its status, duration and the tenant and key id it ran as (never
the secret); a hostile path stays one escaped line; a client that hangs up midway is
logged as gone; ``--no-access-log`` and the default level write none; ``--workers 2``
logs from its workers too."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli_support import logged_server
from contextos.server.keys import KeyStore

pytestmark = pytest.mark.timeout(120)

#: An access line of the API (health checks left out: the helper polls /healthz).
API_LINE = re.compile(r'^INFO: +(\S+) - "(\S+) (/v1/\S*) HTTP/1\.1" (.+?) ([0-9.]+) ms(.*)$')


def _key(db: str) -> tuple[str, str]:
    with KeyStore(db) as keys:
        issued = keys.create("acme")
    return issued.secret, issued.key.id


def _api_lines(log: Path) -> list[re.Match[str]]:
    found = (API_LINE.match(line) for line in log.read_text("utf-8").splitlines())
    return [m for m in found if m]


def _stopped(proc: Any) -> None:
    """Stop the server and wait: its last lines are in the log once it has exited."""
    proc.terminate()
    proc.wait(timeout=60)


def test_each_request_is_one_line_with_its_status_duration_and_caller(tmp_path: Path) -> None:
    db, log = str(tmp_path / "m.db"), tmp_path / "serve.log"
    secret, key_id = _key(db)
    with logged_server(db, log, "--log-level", "info") as (url, proc):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}) as c:
            assert (
                c.post(
                    "/v1/memories", json={"messages": "Ana lives in Lisbon.", "user_id": "ana"}
                ).status_code
                == 201
            )
            assert (
                c.post(
                    "/v1/memories/search", json={"query": "Lisbon", "user_id": "ana"}
                ).status_code
                == 200
            )
            assert c.get("/v1/memories", params={"user_id": "ana\nINFO: forged"}).status_code == 200
        # No key, and a path that holds a line break and an escape sequence.
        assert httpx.get(f"{url}/v1/memories/%0A%1B[2J%22x").status_code == 401
        _stopped(proc)
    text = log.read_text("utf-8")
    assert secret not in text
    assert not any(line.startswith("INFO: forged") for line in text.splitlines())
    lines = _api_lines(log)
    assert [(m[2], m[3].split("?")[0], m[4]) for m in lines] == [
        ("POST", "/v1/memories", "201"),
        ("POST", "/v1/memories/search", "200"),
        ("GET", "/v1/memories", "200"),
        ("GET", "/v1/memories/%0A%1B[2J%22x", "401"),
    ]
    assert lines[2][3] == "/v1/memories?user_id=ana%0AINFO%3A+forged"
    assert all(m[1].startswith("127.0.0.1:") for m in lines)
    assert all(float(m[5]) > 0 for m in lines)
    assert [m[6] for m in lines] == [f" tenant=acme key={key_id}"] * 3 + [""]


def test_a_client_that_hangs_up_midway_is_logged_as_gone(tmp_path: Path) -> None:
    db, log = str(tmp_path / "m.db"), tmp_path / "serve.log"
    secret, _ = _key(db)
    with logged_server(db, log, "--log-level", "info") as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /v1/memories HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {secret}\r\n".encode()
                + b'Content-Length: 1000\r\n\r\n{"messages": "half'
            )
            time.sleep(0.5)  # the request is in the app, waiting for the rest of its body
        deadline = time.monotonic() + 20
        while not _api_lines(log) and time.monotonic() < deadline:
            time.sleep(0.1)
        _stopped(proc)
    lines = _api_lines(log)
    assert len(lines) == 1, log.read_text("utf-8")
    assert (lines[0][2], lines[0][3]) == ("POST", "/v1/memories")
    assert lines[0][4].endswith("client gone"), lines[0][0]
    assert lines[0][6].startswith(" tenant=acme")


@pytest.mark.parametrize(
    ("flags", "logged"),
    [
        (("--log-level", "info", "--no-access-log"), False),
        ((), False),  # the default level, warning
        (("--log-level", "info", "--workers", "2"), True),
    ],
    ids=["no-access-log", "default-level", "workers"],
)
def test_which_servers_log_requests(tmp_path: Path, flags: tuple[str, ...], logged: bool) -> None:
    db, log = str(tmp_path / "m.db"), tmp_path / "serve.log"
    secret, _ = _key(db)
    with logged_server(db, log, *flags) as (url, proc):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}) as c:
            for _ in range(4):
                assert c.get("/v1/memories", params={"user_id": "ana"}).status_code == 200
        _stopped(proc)
    assert len(_api_lines(log)) == (4 if logged else 0), log.read_text("utf-8")
    if "info" in flags:  # the level still applies to uvicorn's own lines
        assert "Application startup complete." in log.read_text("utf-8")


def test_a_client_that_hangs_up_before_its_answer_is_logged_as_gone(tmp_path: Path) -> None:
    """The request was read whole, then the client gave up (its timeout) while the add
    waited for the store: uvicorn drops the answer without a word to the app, and the
    line read a plain 201, as if served (a review)."""
    import sqlite3

    db, log = str(tmp_path / "m.db"), tmp_path / "serve.log"
    secret, _ = _key(db)
    with logged_server(db, log, "--log-level", "info") as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        blocker = sqlite3.connect(db, timeout=5, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process writing: the add waits
        try:
            body = b'{"messages": "Ana keeps bees.", "user_id": "ana"}'
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(
                    b"POST /v1/memories HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Authorization: Bearer {secret}\r\n".encode()
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                time.sleep(0.5)  # read whole, waiting for the lock
        finally:
            time.sleep(0.3)  # the server has seen the hang-up
            blocker.execute("COMMIT")
            blocker.close()
        deadline = time.monotonic() + 30
        while not _api_lines(log) and time.monotonic() < deadline:
            time.sleep(0.1)
        _stopped(proc)
    (line,) = _api_lines(log)
    assert (line[2], line[3]) == ("POST", "/v1/memories")
    assert line[4] == "201 client gone", line[0]
