"""``contextos serve`` closes connections whose request headers are late.

A client that connects and says nothing, or trickles its headers a byte at a time,
held its connection for as long as it liked (uvicorn arms no timer until a response
has been sent), so enough of them used up the server's file descriptors. Each test
runs the real command on loopback and talks to it over raw sockets.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cli_support import reaped
from contextos.server.keys import KeyStore

CLI = [sys.executable, "-c", "from contextos.cli.main import main; main()"]
TIMEOUT = 1.5


@contextmanager
def serving(tmp_path: Path, *extra: str) -> Iterator[tuple[str, int, str]]:
    """(host, port, key) of a running ``contextos serve --header-timeout 1.5``."""
    db = tmp_path / "slow.db"
    with KeyStore(str(db)) as store:
        key = store.create("acme").secret
    args = ["--db", str(db), "--embedder", "hash", "--port", "0"]
    command = [*CLI, "serve", *args, "--header-timeout", str(TIMEOUT), *extra]
    with reaped(
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "serving on" in line, line + (proc.stderr.read() if proc.stderr else "")
            url = urlsplit(line.split("serving on ")[1].split()[0])
            assert url.hostname is not None and url.port is not None
            yield url.hostname, url.port, key
        finally:
            proc.terminate()
            proc.communicate(timeout=60)  # and closes its pipes


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``seconds``, and what it sent first."""
    sock.settimeout(0.2)
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def response(sock: socket.socket) -> bytes:
    """One whole HTTP response (status line, headers, a Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(4096)
    return head


def health(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return closed_within(sock, 10)[1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_silent_client_is_disconnected_with_408(tmp_path: Path, workers: str) -> None:
    with serving(tmp_path, "--workers", workers) as (host, port, _key):
        with socket.create_connection((host, port), timeout=10) as sock:
            started = time.monotonic()
            closed, sent = closed_within(sock, 10 * TIMEOUT)
            took = time.monotonic() - started
        assert closed and sent.startswith(b"HTTP/1.1 408"), sent
        assert TIMEOUT * 0.8 <= took <= TIMEOUT + 3
        assert b" 200 " in health(host, port)


def test_headers_trickled_a_byte_at_a_time_do_not_hold_the_connection(tmp_path: Path) -> None:
    # Each byte arrives well inside the deadline; the headers as a whole do not.
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
    with serving(tmp_path) as (host, port, _key):
        with socket.create_connection((host, port), timeout=10) as sock:
            started = time.monotonic()
            for byte in request:
                try:
                    sock.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    break
                time.sleep(0.05)
                if time.monotonic() - started > 4 * TIMEOUT:
                    break
            closed, sent = closed_within(sock, 2 * TIMEOUT)
            took = time.monotonic() - started
        assert closed and sent.startswith(b"HTTP/1.1 408"), sent
        assert took <= TIMEOUT + 3


def test_a_kept_alive_connection_gets_a_fresh_deadline_for_each_request(tmp_path: Path) -> None:
    # Prompt requests on one connection are answered however long it lives; a later
    # request whose headers stall is cut off a deadline after its first byte.
    with serving(tmp_path) as (host, port, _key):
        with socket.create_connection((host, port), timeout=10) as sock:
            for _ in range(4):
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = response(sock)
                assert answer.startswith(b"HTTP/1.1 200"), answer
                time.sleep(TIMEOUT * 0.6)  # 2.4 deadlines in all, never a late header
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
            started = time.monotonic()
            closed, sent = closed_within(sock, 10 * TIMEOUT)
            took = time.monotonic() - started
        assert closed and sent.startswith(b"HTTP/1.1 408"), sent
        assert took <= TIMEOUT + 3


def test_a_slow_body_is_not_cut_by_the_header_deadline(tmp_path: Path) -> None:
    # Headers on time, body sent over more than the deadline: the request is served.
    body = b'{"messages": "a note", "user_id": "u"}'
    with serving(tmp_path) as (host, port, key):
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/memories HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                + f"Authorization: Bearer {key}\r\n".encode()
                + b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            for part in (body[:10], body[10:20], body[20:]):
                time.sleep(TIMEOUT * 0.7)
                sock.sendall(part)
            closed, sent = closed_within(sock, 10)
        assert sent.startswith(b"HTTP/1.1 201"), sent
