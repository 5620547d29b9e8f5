"""A tiny threaded HTTP server on 127.0.0.1 for the fake LLM providers.

The fake providers (:mod:`contextos.testing.fake_anthropic`,
:mod:`contextos.testing.fake_openai`) build on this: it records every request
it receives (so tests can assert what a wrapper actually sent on the wire),
plays scripted responses first-in first-out, and otherwise asks the provider
subclass to answer. Streaming bodies go out with chunked transfer encoding,
one chunk per Server-Sent Event, the way the real APIs send them.

It is a real socket server: the real SDK clients talk to it through their own
HTTP stack, so nothing inside an SDK is mocked.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake server received, byte for byte."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON (``None`` when empty)."""
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class SSEEvent:
    """One Server-Sent Event: an optional ``event:`` name and its ``data:`` text."""

    data: str
    event: str | None = None

    def encode(self) -> bytes:
        head = f"event: {self.event}\n" if self.event else ""
        return f"{head}data: {self.data}\n\n".encode()


@dataclass(frozen=True)
class FakeResponse:
    """What the fake server answers: a JSON body, or a stream of SSE events.

    ``cut`` makes a stream fail the way a network does, after its ``events``:
    ``"drop"`` closes the connection without the body's final chunk, ``"stall"``
    sends nothing more for ``stall_seconds`` (past the client's read timeout), then
    drops it. On a JSON response (no ``events``), ``"stall"`` is a provider that
    accepted the request and never answers: nothing at all (no status line) for
    ``stall_seconds``, then the connection is dropped.
    """

    status: int = 200
    json_body: Any = None
    events: Sequence[SSEEvent] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    cut: Literal["drop", "stall"] | None = None
    stall_seconds: float = 2.0

    def body_bytes(self) -> bytes:
        return json.dumps(self.json_body).encode() if self.json_body is not None else b""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs pool connections
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body are separate writes: without NODELAY, Nagle's algorithm and
        # the client's delayed ACK would add ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.owner._track(self.connection, open_=False)
        super().finish()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            # The client went away mid-body (a process stopped mid-call): a real server
            # drops the connection; answering the cut request printed a traceback.
            self.close_connection = True
            return
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        response = self.server.owner._dispatch(request)
        if response.events is None and response.cut == "stall":
            self._stall(response.stall_seconds)
        elif response.events is None:
            self._send_json(response)
        else:
            self._send_events(response)

    def _send_json(self, response: FakeResponse) -> None:
        payload = response.body_bytes()
        self.send_response(response.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_events(self, response: FakeResponse) -> None:
        self.send_response(response.status)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        for event in response.events or ():
            chunk = event.encode()
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        if response.cut is None:
            self.wfile.write(b"0\r\n\r\n")
            return
        if response.cut == "stall":
            time.sleep(response.stall_seconds)
        self.close_connection = True  # the body never ends: the client sees it cut
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _stall(self, seconds: float) -> None:
        """Answer nothing for ``seconds``, then drop the connection (a hung provider)."""
        time.sleep(seconds)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Stay quiet: tests and benchmarks read stdout."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: FakeHTTPServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client dropping a kept-alive connection (after a stream) is normal: stay quiet."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class FakeHTTPServer:
    """Base of the fake providers: loopback server, request log, response script.

    Use it as a context manager (or call :meth:`start`/:meth:`stop`)::

        with FakeAnthropic() as fake:
            client = anthropic.Anthropic(base_url=fake.base_url, api_key="test")
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._script: list[FakeResponse] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> Self:
        """Bind a free port on 127.0.0.1 and serve on a background thread."""
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with self._lock:
                open_connections = list(self._connections)
            for conn in open_connections:  # keep-alive connections a client left open
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake server is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    # -- script and log ----------------------------------------------------
    def enqueue(self, *responses: FakeResponse) -> None:
        """Answer the next requests with ``responses``, in order, before the default."""
        with self._lock:
            self._script.extend(responses)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Recorded requests whose path (without query) equals ``path``."""
        return [r for r in list(self.requests) if r.path.split("?")[0] == path]

    def clear(self) -> None:
        """Forget recorded requests and pending scripted responses."""
        with self._lock:
            self.requests.clear()
            self._script.clear()

    def _track(self, conn: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _dispatch(self, request: RecordedRequest) -> FakeResponse:
        with self._lock:
            self.requests.append(request)
            scripted = self._script.pop(0) if self._script else None
        if scripted is not None:
            return scripted
        return self.respond(request)

    def respond(self, request: RecordedRequest) -> FakeResponse:
        """The default answer; providers override this."""
        return FakeResponse(status=404, json_body={"error": f"no route for {request.path}"})


def json_object(request: RecordedRequest) -> dict[str, Any] | None:
    """The request's body as a JSON object, or None (no body, not JSON, not an
    object): what a provider refuses with a 400."""
    try:
        body = request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def echo_reply(body: Mapping[str, Any]) -> str:
    """The fakes' default answer: the last user message quoted back (deterministic, so
    tests can predict it); its text parts joined when the content is a list of parts."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if not isinstance(content, str):
                content = " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
            return f"You said: {content[-200:]}"
    return "Hello."


def error_headers(id_header: str, request_id: str, retry_after: float | None) -> dict[str, str]:
    """A scripted error's headers: the provider's request-id header, and ``retry-after``
    (seconds) when given, which the SDKs' retry logic reads."""
    headers = {id_header: request_id}
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
    return headers


def sse_json(events: Iterator[tuple[str | None, Any]]) -> list[SSEEvent]:
    """SSE events from ``(event name, JSON payload)`` pairs."""
    return [SSEEvent(data=json.dumps(payload), event=name) for name, payload in events]


def text_pieces(text: str, size: int = 8) -> list[str]:
    """Split ``text`` into stream deltas of about ``size`` characters."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def estimate_tokens(text: str) -> int:
    """The fakes' deterministic token count: one token per four characters, rounded up."""
    return (len(text) + 3) // 4


def without_key(item: Any, key: str) -> Any:
    """``item`` with every mapping entry named ``key`` dropped, at any depth: cache markers
    (``cache_control``, ``prompt_cache_breakpoint``) are not content, so prefix comparisons
    leave them out."""
    if isinstance(item, dict):
        return {k: without_key(v, key) for k, v in item.items() if k != key}
    if isinstance(item, list):
        return [without_key(v, key) for v in item]
    return item


def canonical_json(item: Any) -> str:
    """Compact, key-sorted JSON: the fakes' prompt-cache keys, equal exactly when the
    content is."""
    return json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
