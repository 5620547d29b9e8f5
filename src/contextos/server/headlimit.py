"""Limits on a request's head (request line and headers): a deadline and a size.

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
is answered 431. Either way the connection is closed. The body is not covered: a
request with complete headers is the app's (its body limit and the graceful-shutdown
timeout apply).

The protocol is uvicorn's httptools one with these checks added (``uvicorn.Config(
http=...)`` takes a protocol class); the deadline travels on the config
(:func:`set_header_timeout`) so that ``serve --workers N`` processes, which receive a
pickled copy of it, apply the same one.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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

_ATTRIBUTE = "contextos_header_timeout"


def _response(status: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(text)).encode("ascii") + b"\r\n"
        b"connection: close\r\n"
        b"\r\n" + text
    )


_LATE = _response(b"408 Request Timeout", b"request headers not received in time\n")
_TOO_MANY = _response(
    b"429 Too Many Requests",
    f"more than {MAX_PIPELINED} requests pipelined on one connection\n".encode("ascii"),
)
_TOO_LARGE = _response(
    b"431 Request Header Fields Too Large",
    f"request line and headers over {MAX_HEAD_BYTES} bytes\n".encode("ascii"),
)


def set_header_timeout(config: Any, seconds: float) -> None:
    """Give ``config`` (a ``uvicorn.Config``) the header deadline its protocols apply."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"header_timeout must be a positive number of seconds, not {seconds}")
    setattr(config, _ATTRIBUTE, float(seconds))


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
    answers owed to requests before it, and closes gently (:meth:`_answer`)."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        #: None (a config without :func:`set_header_timeout`): no deadline.
        self.header_timeout: float | None = getattr(config, _ATTRIBUTE, None)
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_head = False  # a request's first byte is parsed, its headers are not
        self._head_bytes = 0  # of the current request's head and trailers, as reported
        self._reported = 0  # bytes reported by the parser during the current read
        self._unreported = 0  # bytes taken in since the parser last reported any
        self._refused = False
        self._owed: bytes | None = None  # the refusal to send once earlier responses are out

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # the first request's head, not begun yet

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

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

    # -- parser callbacks (none acts once the connection is refused) ------------------
    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
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

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            self._report(len(body), head=False)
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
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
        self.transport.write_eof()
        self.flow.resume_reading()  # read and drop (``data_received`` ignores it)
        self.loop.call_later(LINGER_S, self.transport.close)
