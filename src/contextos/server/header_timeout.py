"""A deadline for a request's headers: slow or silent clients cannot hold connections.

uvicorn times out an idle keep-alive connection, but from the moment a connection is
made, or a request's first byte arrives, until its headers are complete, it waits for
ever: every byte received cancels the keep-alive timer and arms nothing. A client
that connects and sends nothing, or trickles its headers a byte at a time
("slowloris"), keeps its socket, and a few thousand of them use up the process's file
descriptors, after which no client is accepted. Here each connection must deliver a
request's headers within ``header_timeout`` seconds of connecting (or, on a kept-alive
connection, of the request's first byte); otherwise it is answered 408 and closed.
The body is not covered: a request with complete headers is the app's (its body limit
and the graceful-shutdown timeout apply).

The protocol is uvicorn's httptools one with that timer added (``uvicorn.Config(http=
...)`` takes a protocol class); the deadline travels on the config
(:func:`set_header_timeout`) so that ``serve --workers N`` processes, which receive a
pickled copy of it, apply the same one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_ATTRIBUTE = "contextos_header_timeout"

_TIMEOUT_BODY = b"request headers not received in time\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode("ascii") + b"\r\n"
    b"connection: close\r\n"
    b"\r\n" + _TIMEOUT_BODY
)


def set_header_timeout(config: Any, seconds: float) -> None:
    """Give ``config`` (a ``uvicorn.Config``) the header deadline its protocols apply."""
    if seconds <= 0:
        raise ValueError("header_timeout must be positive")
    setattr(config, _ATTRIBUTE, float(seconds))


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose headers are late."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        #: None (a config without :func:`set_header_timeout`): uvicorn's behaviour.
        self.header_timeout: float | None = getattr(config, _ATTRIBUTE, None)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # a request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self.header_timeout is not None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()
