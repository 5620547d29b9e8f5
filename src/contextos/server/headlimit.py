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
seconds of connecting (or, on a kept-alive connection, of the request's first byte),
else it is answered 408; and a request line plus headers over :data:`MAX_HEAD_BYTES`
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
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: The most bytes of request line and headers a request may send (the URL, then each
#: header's name and value). Browsers and SDKs send a few hundred to a few thousand
#: (nginx accepts 4 x 8 KiB by default, Node.js 16 KiB); this leaves room for large
#: cookies and tokens and bounds what a connection can make the server hold.
MAX_HEAD_BYTES = 64 * 1024

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
_TOO_LARGE = _response(
    b"431 Request Header Fields Too Large",
    f"request line and headers over {MAX_HEAD_BYTES} bytes\n".encode("ascii"),
)


def set_header_timeout(config: Any, seconds: float) -> None:
    """Give ``config`` (a ``uvicorn.Config``) the header deadline its protocols apply."""
    if seconds <= 0:
        raise ValueError("header_timeout must be positive")
    setattr(config, _ATTRIBUTE, float(seconds))


class HeadLimitProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request head is late or
    too large."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        #: None (a config without :func:`set_header_timeout`): no deadline.
        self.header_timeout: float | None = getattr(config, _ATTRIBUTE, None)
        self._header_timer: asyncio.TimerHandle | None = None
        #: Between a connection's start (or a request's first byte) and the end of the
        #: request's headers, and the bytes received meanwhile.
        self._in_head = False
        self._head_bytes = 0
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        counted = self._in_head  # a request's first chunk is counted from its second on
        super().data_received(data)
        # Counted only while the head is still incomplete after this chunk: the bytes
        # after the headers (a body) are the app's. httptools keeps a header value whole
        # until it ends, so this, not the parser's callbacks, bounds what it holds.
        if counted and self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # a request on a kept-alive connection
            self._start_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a refused request was answered already
            super().send_400_response(msg)

    def _start_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        if self.header_timeout is not None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        self._refuse(_LATE)

    def _refuse(self, response: bytes) -> None:
        self._disarm()
        if not self._refused and not self.transport.is_closing():
            self._refused = True
            self.transport.write(response)
            self.transport.close()
