"""Refuse request bodies over a size limit with 413, before anything parses them.

A declared ``Content-Length`` over the limit is refused without reading; a
chunked body is counted as it streams and cut off once it passes the limit, so
neither form can make the server buffer an arbitrarily large JSON document.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ContextosError

Message = dict[str, Any]

#: Larger request bodies get 413 (HTTP API and MCP endpoint alike).
DEFAULT_MAX_BODY = 1_000_000


class PayloadTooLarge(ContextosError):
    """The request body is larger than the server accepts (HTTP 413)."""


def _json(status: int, kind: str, message: str) -> tuple[Message, Message]:
    body = json.dumps({"error": {"type": kind, "message": message}}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class BodyLimitMiddleware:
    """Pure ASGI middleware: 413 for bodies over ``max_bytes``, 400 for a bad length."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        problem = self._check_declared(declared)
        if problem is not None:
            for message in problem:
                await send(message)
            return
        await self._guarded(scope, receive, send)

    def _check_declared(self, declared: bytes | None) -> tuple[Message, Message] | None:
        if declared is None:
            return None
        try:
            length = int(declared)
        except ValueError:
            return _json(400, "InvalidRequest", "Content-Length is not an integer")
        if length > self.max_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> tuple[Message, Message]:
        return _json(413, "PayloadTooLarge", f"request body is larger than {self.max_bytes} bytes")

    async def _guarded(self, scope: Message, receive: Any, send: Any) -> None:
        """Count a streamed body; once over the limit, whatever the app answers
        (frameworks often turn a failed body read into their own 400) is replaced
        by the 413, unless a response had already started."""
        seen = 0
        exceeded = False
        replaced = False
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message: Message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise PayloadTooLarge(f"request body is larger than {self.max_bytes} bytes")
            return message

        async def replacing_send(message: Message) -> None:
            nonlocal replaced, started
            if not exceeded or (started and not replaced):
                started = started or message["type"] == "http.response.start"
                await send(message)
            elif not replaced and message["type"] == "http.response.start":
                replaced = True
                for ours in self._too_large():
                    await send(ours)

        try:
            await self.app(scope, counting_receive, replacing_send)
        except PayloadTooLarge:
            if started and not replaced:
                raise
            if not replaced:
                replaced = True
                for ours in self._too_large():
                    await send(ours)
