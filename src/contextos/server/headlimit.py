"""Limits on what one connection may hold: a request head's deadline and size, a
body's pace, and a response's stall.

uvicorn times out an idle keep-alive connection, but from the moment a connection is
made, or a request's first byte arrives, until its headers are complete, it waits for
ever: every byte received cancels the keep-alive timer and arms nothing. A client
that connects and sends nothing, or trickles its headers a byte at a time
("slowloris"), keeps its socket, and a few thousand of them use up the process's file
descriptors, after which no client is accepted. And it keeps the whole request line in
memory however long it is (a 120 MB URL grew the server by 240 MB, its copies
included), so a few fast clients exhaust memory instead.

Here each connection must deliver a request's headers within ``header_timeout``
seconds of connecting (or, on a kept-alive connection, of the request's first byte,
or of the end of the responses before it when requests are pipelined), else it is
answered 408; and a head (URL, header names and values) over :data:`MAX_HEAD_BYTES`
is answered 431. Either way the connection is closed.

The body and the response have the same hole. A client that sends its headers on
time and then trickles the body (a byte every few seconds) kept the connection and
the request's task for ever; here, once ``header_timeout`` seconds have passed since
its headers, a body must have come at :data:`MIN_BODY_RATE` bytes a second on
average (Kestrel's rule and default), else the connection is answered 408 (or, if
the app has begun its answer, closed). A client that stops reading its responses
left each one in the server's memory for ever (uvicorn's close waits for the write
buffer to drain, which it never does: a few clients asking for large search results
held megabytes each); here a connection whose writes stay blocked for
``send_timeout`` seconds is aborted.

The protocol is uvicorn's httptools one with these checks added (``uvicorn.Config(
http=...)`` takes a protocol class); the timeouts travel on the config
(:func:`set_timeouts`) so that ``serve --workers N`` processes, which receive a
pickled copy of it, apply the same ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import math
import resource
import socket
import struct
import termios
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .access_log import CONNECTION_EXTENSION
from .errors import error_body

#: The most bytes of request head a request may send: its URL and each header's name
#: and value. Browsers and SDKs send a few hundred to a few thousand
#: (nginx accepts 4 x 8 KiB by default, Node.js 16 KiB); this leaves room for large
#: cookies and tokens and bounds what a connection can make the server hold.
MAX_HEAD_BYTES = 64 * 1024

#: The most requests a client may pipeline behind the one in flight. Browsers do not
#: pipeline at all; a client that queues more is flooding.
MAX_PIPELINED = 32

#: Seconds a refused connection is kept open, reading and dropping, after its answer.
LINGER_S = 2.0

#: Bytes a second a request body must average once its grace (the header timeout)
#: is over: ASP.NET Core's Kestrel default. A client on the slowest mobile link sends
#: far more; one that sends less holds a connection for the price of almost nothing.
MIN_BODY_RATE = 240.0

#: Seconds between looks at a body whose wait is the server's (reading paused,
#: requests queued before it, ``100 Continue`` not sent): the client's clock starts
#: again at the last look, so this is the most of its grace the server can take.
HOLD_POLL_S = 0.25

_HEADER = "contextos_header_timeout"
_SEND = "contextos_send_timeout"


#: Seconds a client turned away for the server's sake (the connection cap, a pipeline
#: past :data:`MAX_PIPELINED`) is asked to wait before it tries again.
RETRY_AFTER_S = 1


def _response(status: str, kind: str, message: str, *, retry: bool = False) -> bytes:
    """A whole canned answer in the one JSON error shape (errors.error_body), closing
    the connection. Why JSON: these were ``text/plain``, where the OpenAPI spec and
    docs/server.md promise every error as ``{"error": {"type", "message"}}``, and a
    generated client failed to parse the 503 it should back off from (a review)."""
    body = json.dumps(error_body(kind, message)).encode("ascii")
    head = [
        f"HTTP/1.1 {status}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        *([f"retry-after: {RETRY_AFTER_S}"] if retry else []),
        "connection: close",
    ]
    return "\r\n".join([*head, "", ""]).encode("ascii") + body


_LATE = _response("408 Request Timeout", "RequestTimeout", "request headers not received in time")
_BODY_LATE = _response("408 Request Timeout", "RequestTimeout", "request body not received in time")
_MALFORMED = _response(
    "400 Bad Request",
    "InvalidRequest",
    "the request is not valid HTTP/1.1 (its request line, a header or its body's framing)",
)
_TOO_MANY = _response(
    "429 Too Many Requests",
    "TooManyPipelined",
    f"more than {MAX_PIPELINED} requests pipelined on one connection",
    retry=True,
)
_TOO_LARGE = _response(
    "431 Request Header Fields Too Large",
    "HeadTooLarge",
    f"request line and headers over {MAX_HEAD_BYTES} bytes",
)
_FULL = _response(
    "503 Service Unavailable",
    "TooManyConnections",
    "the server holds as many connections as it can; retry",
    retry=True,
)

#: File descriptors a server keeps for itself, out of its limit of open files: the
#: store's files and connections, the model's, logs, outbound sockets. At least
#: this many, or a fifth of the limit if that is more.
RESERVED_FILES = 100


@functools.cache
def connection_cap() -> int:
    """How many client connections one server process holds at once: its limit of open
    files (``ulimit -n``, soft) less :data:`RESERVED_FILES` (or a fifth); at least 1.

    Why: past the limit every ``accept()`` failed, asyncio logged a traceback for each
    (about 3 MB a second), and ``contextos mcp`` stopped accepting for good. A client
    needs no key to open connections, and idle ones are held until the header timeout
    (a review: 320 bare connections against a limit of 300)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(1, soft - max(RESERVED_FILES, soft // 5))


def set_timeouts(config: Any, *, header: float, send: float) -> None:
    """Give ``config`` (a ``uvicorn.Config``) the timeouts its protocols apply: ``header``
    seconds for a request's head (and a body's grace), ``send`` for a blocked write."""
    for name, seconds in (("header_timeout", header), ("send_timeout", send)):
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, not {seconds}")
    setattr(config, _HEADER, float(header))
    setattr(config, _SEND, float(send))


def _release_read_callback(transport: asyncio.BaseTransport | None) -> None:
    """Drop a closed selector transport's cached read callback, a bound method of the
    transport itself: as Python 3.12 does on close (CPython gh-100348), not 3.11.

    Why: that cycle left every closed connection's transport (with its socket and
    dicts) to the cyclic collector, which a server tuned for throughput
    (:func:`~contextos.server.app.tune_gc_for_serving`) runs rarely. Small dead
    objects left between the multi-megabyte buffers of large responses kept the heap
    from shrinking: 2,500 clients that reset partway through a 3 MB page grew the
    server from 118 to 358 MB (a review); freed by reference counting instead, it
    stays flat. Only the attribute CPython itself clears, and only if present."""
    if transport is not None and getattr(transport, "_read_ready_cb", None) is not None:
        transport._read_ready_cb = None  # type: ignore[attr-defined]


class HeadLimitProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request head is late or
    too large, or that make it hold or queue without bound.

    Size. A head's size is what the parser reports of it (URL fragments, header names
    and values), whatever the TCP segments were, so a complete head over the limit is
    refused however it arrived. Trailer fields of a chunked body count towards it too
    (uvicorn appended them to the request's headers without limit). Separately, the
    bytes the parser has taken in without reporting them (an unfinished header or
    trailer value, which httptools keeps to itself) may not exceed twice the limit:
    what one connection can make the server hold is bounded by that plus one read
    (256 KiB). Bytes an earlier pipelined request's body was reported as never count.

    Time. The deadline runs while the connection waits for a head and nothing earlier
    on it is in flight: from the connection's start, from a request's first byte, from
    the end of the responses before a pipelined request, and from any byte that begins
    no request (a CRLF between requests, the rest of a body the app did not read:
    uvicorn's keep-alive timer is cancelled by every byte and armed again only by a
    response).

    Queue. At most :data:`MAX_PIPELINED` requests wait behind the one in flight;
    uvicorn queued every request of every read, and read again after each response
    however long the queue. A client past it is answered 429 and closed: HTTP/1.1
    clients must be ready to resend what a closed connection did not answer.

    A refusal (408, 431, 429) stops reading and parsing at once, is sent after the
    answers owed to requests before it, and closes gently (:meth:`_answer`).

    Body. From a request's complete head until its body's end, the body's clock
    runs: after a grace of ``header_timeout`` seconds the body must have averaged
    :data:`MIN_BODY_RATE` bytes a second. The clock starts again whenever the wait is
    the server's (reading paused because the app has not taken what came, requests
    queued before it, ``Expect: 100-continue`` not answered yet; looked at every
    :data:`HOLD_POLL_S`). A late body gets
    408 if the app has not begun its answer (the app reads a disconnect), else the
    connection is closed.

    Send. Bytes written and not taken by the client for ``send_timeout`` seconds (a
    write blocked, or a complete response still in the kernel's queue) reset the
    connection: uvicorn's close waits for the buffer to drain, so a client that
    stopped reading kept its responses in memory for ever (:meth:`_watch_unsent`)."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        #: None (a config without :func:`set_header_timeout`): no deadline.
        self.header_timeout: float | None = getattr(config, _HEADER, None)
        self.send_timeout: float | None = getattr(config, _SEND, None)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._in_body = False  # a request's head is complete, its body is not
        self._body_since = 0.0  # loop time the body's clock last started
        self._body_bytes = 0  # body bytes received since then
        self._send_timer: asyncio.TimerHandle | None = None
        self._send_buffered = 0  # bytes waiting in the write buffer at the last check
        self._send_at_rest = False  # the clock runs for a complete response's unsent bytes
        self._in_head = False  # a request's first byte is parsed, its headers are not
        self._head_bytes = 0  # of the current request's head and trailers, as reported
        self._reported = 0  # bytes reported by the parser during the current read
        self._unreported = 0  # bytes taken in since the parser last reported any
        self._refused = False
        self._owed: bytes | None = None  # the refusal to send once earlier responses are out
        self._turned_away = False  # over the connection cap: closed on arrival
        self._transport: asyncio.BaseTransport | None = None  # its cycle is broken at the end
        #: Lent to each request's scope (:data:`.access_log.CONNECTION_EXTENSION`): "gone" once the
        #: client hung up before a response was whole, which uvicorn keeps to itself.
        self._connection: dict[str, bool] = {"gone": False}

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._transport = transport
        if len(self.connections) >= connection_cap():
            # Over the cap (:func:`connection_cap`): answered 503 and closed at once,
            # before anything of the connection is kept; its descriptor goes back.
            self._turned_away = True
            transport.write(_FULL)
            transport.close()
            return
        super().connection_made(transport)
        self._arm()  # the first request's head, not begun yet

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            if self._turned_away:
                return  # nothing of it was kept
            self._disarm()
            self._in_body = False
            for timer in (self._body_timer, self._send_timer):
                if timer is not None:
                    timer.cancel()
            self._body_timer = self._send_timer = None
            if self.cycle is not None and not self.cycle.response_complete:
                self._connection["gone"] = True
            super().connection_lost(exc)
        finally:
            _release_read_callback(self._transport)
            self._transport = None

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes it cannot parse as a request (a negative
        ``Content-Length``, one beside ``Transfer-Encoding: chunked``, a bad chunk
        size), in the one JSON error shape, closing the connection: it was a text/plain
        "Invalid HTTP request received." (a review, s55)."""
        self.transport.write(_MALFORMED)
        self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_unsent()

    def _watch_unsent(self, *, at_rest: bool = False) -> None:
        """Arm the send clock (:meth:`_send_check`) while bytes written are not taken:
        when the transport pauses writing, and (``at_rest``) when the last response is
        complete with bytes still unsent. Why the latter: the kernel's buffers
        (megabytes) can take a whole answer, so writing never paused, and a client that
        read none of it kept its connection and up to ~4 MB of kernel memory for minutes
        past the send timeout (its close only queued a FIN behind the data; a review,
        s55). The clock at rest stops when the next request begins: its unsent bytes
        are then another response's, and comparing them with the last one's reset a
        steady reader of a page a second (the session's diff review)."""
        if self.send_timeout is not None and self._send_timer is None and not self._turned_away:
            unsent = self._unsent()
            if unsent:
                self._send_buffered = unsent
                self._send_at_rest = at_rest
                self._send_timer = self.loop.call_later(self.send_timeout, self._send_check)

    def _stop_send_clock(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        self._send_at_rest = False

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stop_send_clock()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._reported = 0
        super().data_received(data)
        if self._refused or self.transport.is_closing():
            return
        self._unreported = max(0, self._unreported + len(data) - self._reported)
        if self._head_bytes > MAX_HEAD_BYTES or self._unreported > 2 * MAX_HEAD_BYTES:
            self._refuse(_TOO_LARGE)
        elif self._header_timer is None and not self._in_head and self._idle():
            self._arm()  # bytes that began no request: no timer of uvicorn's is left
        if self._in_body and self._body_timer is None and self.header_timeout is not None:
            self._body_since, self._body_bytes = self.loop.time(), 0
            self._body_timer = self.loop.call_later(self.header_timeout, self._body_check)

    # -- parser callbacks (none acts once the connection is refused) ------------------
    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        if self._send_at_rest:
            self._stop_send_clock()  # the next response's bytes are not the last one's
        self.scope["extensions"] = {CONNECTION_EXTENSION: self._connection}  # type: ignore[dict-item]
        self._in_head = True
        self._head_bytes = 0
        if self._header_timer is None and self._idle():
            self._arm()  # a request on a kept-alive connection

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            self._report(len(url), head=True)
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._report(len(name) + len(value), head=True)
        if self._in_head:  # else a trailer field: counted, not added to the headers
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        self._disarm()
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(_TOO_LARGE)  # whole in one read: refused here, never run
        elif len(self.pipeline) >= MAX_PIPELINED:
            self._refuse(_TOO_MANY)
        else:
            super().on_headers_complete()
            self._in_body = True  # until its end: a body's clock is armed after this read

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            self._report(len(body), head=False)
            self._body_bytes += len(body)
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            self._in_body = False
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._idle():  # not when a pipelined request's answer is under way already
            self._watch_unsent(at_rest=True)
        if self._owed is not None:  # refused behind earlier requests: answer once done
            if self._idle():
                self._answer(self._owed)
            else:
                self.flow.pause_reading()
        elif self.pipeline:
            self.flow.pause_reading()  # uvicorn resumed reading whatever was queued
        elif self._in_head and self._header_timer is None and self._idle():
            self._arm()  # a pipelined head that waited for this response: its turn now

    # -- the limits -----------------------------------------------------------------
    def _report(self, n: int, *, head: bool) -> None:
        self._reported += n
        self._unreported = 0
        if head:
            self._head_bytes += n

    def _idle(self) -> bool:
        """Nothing earlier on this connection is running or queued."""
        return (self.cycle is None or self.cycle.response_complete) and not self.pipeline

    def _arm(self) -> None:
        if self.header_timeout is not None and not self._refused:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        self._refuse(_LATE)

    def _body_check(self) -> None:
        """Re-arm while the body keeps :data:`MIN_BODY_RATE` after its grace, or while
        the wait is the server's; else the body is late."""
        self._body_timer = None
        if not self._in_body or self._refused or self.transport.is_closing():
            return
        now = self.loop.time()
        cycle = self.cycle
        assert self.header_timeout is not None  # the clock is armed only with a deadline
        if self.flow.read_paused or self.pipeline or (cycle and cycle.waiting_for_100_continue):
            # Not reading: not the client's delay. Its clock starts again, and the next
            # look is soon, so that it starts again close to when the server reads.
            self._body_since, self._body_bytes = now, 0
            self._body_timer = self.loop.call_later(
                min(HOLD_POLL_S, self.header_timeout), self._body_check
            )
            return
        due = self._body_since + self.header_timeout + self._body_bytes / MIN_BODY_RATE
        if now < due:
            self._body_timer = self.loop.call_at(due, self._body_check)
        else:
            self._body_late()

    def _body_late(self) -> None:
        """A body too slow: its request's app reads a disconnect (and anything it sends
        is dropped); the client gets 408 unless the app's answer had begun."""
        self._in_body = False
        self._disarm()
        self._refused = True
        cycle = self.cycle
        answered = cycle is not None and cycle.response_started
        if cycle is not None:
            cycle.disconnected = True
            cycle.message_event.set()
        if answered:
            self.transport.close()
        else:
            self._answer(_BODY_LATE)

    def _unsent(self) -> int:
        """Bytes written and not yet taken by the client: the transport's buffer plus
        the kernel's send queue (Linux's ``SIOCOUTQ``, where the kernel tells it). The
        transport's buffer alone moves only when the kernel frees a third of its own
        (up to megabytes), so a slow but steady reader could look stalled."""
        unsent = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                queued = bytearray(4)
                fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, queued)
                unsent += int.from_bytes(queued, "little", signed=True)
            except (OSError, ValueError):
                pass  # not Linux, or closed meanwhile: the transport's buffer alone
        return unsent

    def _send_check(self) -> None:
        """Abort the connection if the client took nothing since the last check."""
        self._send_timer = None
        buffered = self._unsent()
        if not buffered:
            return  # all taken: nothing to watch until a write is held again
        if buffered < self._send_buffered:  # it reads, however slowly: wait on
            self._send_buffered = buffered
            assert self.send_timeout is not None  # armed only with one
            self._send_timer = self.loop.call_later(self.send_timeout, self._send_check)
        else:
            self._reset()

    def _reset(self) -> None:
        """Drop the connection and what the kernel still holds of it: a reset
        (``SO_LINGER`` 0). A plain abort closed the socket, but the kernel kept its
        unsent bytes (up to ~4 MB) behind a FIN, for a client that never reads, for
        minutes (a review, s55)."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _refuse(self, response: bytes) -> None:
        """Stop reading and parsing, and answer ``response`` then close; behind requests
        still in flight or queued, once their responses are out (they were sent
        before the refused one, and a pipelining client expects their answers first)."""
        self._disarm()
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        if self._idle():
            self._answer(response)
        else:
            self._owed = response
            self.flow.pause_reading()

    def _answer(self, response: bytes) -> None:
        """Send ``response``, then close gently: a socket closed with unread input
        sends a reset, and a reset makes the client drop what it had not read yet,
        this response included. So the write side is shut after it (the client reads
        it, then end of file), what the client still sends is read and dropped, and
        the connection is closed ``LINGER_S`` later (or when the client closes)."""
        self._owed = None
        if self.transport.is_closing():
            return
        self.transport.write(response)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        try:
            self.transport.write_eof()
        except OSError:
            # The client reset the connection already (ENOTCONN from shutdown()): nothing
            # is left to say to it. Raised on, it went to asyncio's or uvicorn's handlers,
            # a traceback per refused client (1.3 MB of log a second; a review).
            self.transport.abort()
            return
        self.flow.resume_reading()  # read and drop (``data_received`` ignores it)
        self.loop.call_later(LINGER_S, self.transport.close)
