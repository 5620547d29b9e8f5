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


def _json(status: int, kind: str, message: str, jsonrpc: bool = False) -> tuple[Message, Message]:
    """The refusal's ASGI messages: the one error shape, or with ``jsonrpc`` the MCP
    endpoint's JSON-RPC error (:func:`~contextos.server.errors.rpc_error_body`)."""
    from .errors import rpc_error_body  # errors.py imports this module

    shaped = (
        rpc_error_body(kind, message) if jsonrpc else {"error": {"type": kind, "message": message}}
    )
    body = json.dumps(shaped).encode()
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
    """Pure ASGI middleware: 413 for bodies over ``max_bytes``, 400 for a bad length;
    under ``jsonrpc_under`` (the MCP endpoint) as a JSON-RPC error."""

    def __init__(self, app: Any, max_bytes: int, jsonrpc_under: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.jsonrpc_under = jsonrpc_under

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        jsonrpc = bool(self.jsonrpc_under) and str(scope.get("path", "")).startswith(
            self.jsonrpc_under
        )
        declared = dict(scope.get("headers") or []).get(b"content-length")
        problem = self._check_declared(declared, jsonrpc)
        if problem is not None:
            for message in problem:
                await send(message)
            return
        await self._guarded(scope, receive, send, jsonrpc)

    def _check_declared(
        self, declared: bytes | None, jsonrpc: bool
    ) -> tuple[Message, Message] | None:
        if declared is None:
            return None
        try:
            length = int(declared)
        except ValueError:
            return _json(400, "InvalidRequest", "Content-Length is not an integer", jsonrpc)
        if length > self.max_bytes:
            return self._too_large(jsonrpc)
        return None

    def _too_large(self, jsonrpc: bool) -> tuple[Message, Message]:
        message = f"request body is larger than {self.max_bytes} bytes"
        return _json(413, "PayloadTooLarge", message, jsonrpc)

    async def _guarded(self, scope: Message, receive: Any, send: Any, jsonrpc: bool) -> None:
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
                for ours in self._too_large(jsonrpc):
                    await send(ours)

        try:
            await self.app(scope, counting_receive, replacing_send)
        except PayloadTooLarge:
            if started and not replaced:
                raise
            if not replaced:
                replaced = True
                for ours in self._too_large(jsonrpc):
                    await send(ours)
