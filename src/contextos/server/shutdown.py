"""A request cut off by the server's shutdown is answered in the API's error shape.

A stop (SIGTERM, Ctrl-C) lets requests in flight finish for ``--shutdown-timeout``
seconds, then uvicorn cancels the ones still running. The cancellation passed through
every middleware to uvicorn, which logged a 30-line "Exception in ASGI application"
traceback per request and answered a plain-text ``500 Internal Server Error``: not the
documented ``{"error": {...}}`` shape, and no ``Retry-After``, though such a request is
safe to send again, to another replica or to the server once it is back (a review, on a
frozen PostgreSQL). :class:`ShutdownAnswer`, outermost, answers it ``503`` with
``Retry-After`` and logs one line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from .errors import STORE_RETRY_AFTER, error_body

log = logging.getLogger("contextos.server")

Message = dict[str, Any]

#: Why the request was not answered, and what retrying it means: a write already on its
#: thread may still finish after the answer (an add outside a session sent again is
#: found as the same memory, not stored twice).
STOPPING = (
    "the server stopped before this request finished (a write may still have been made); "
    "retry after a moment"
)


class ShutdownAnswer:
    """Pure ASGI middleware: a request whose task is cancelled before its response began
    gets a JSON 503 with ``Retry-After``. Only in a process that does nothing but serve
    (``create_app(own_process=True)``, as ``contextos serve``): there only uvicorn's
    shutdown cancels a request's task (a client that goes away does not). In an
    application's own process a cancellation may be its own timeout's, which must reach
    it: the middleware is not installed there."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if started:
                raise  # part of an answer went out: the connection is closed
            log.warning(
                "a request was cut off by the shutdown: %s %r",
                scope.get("method"),
                scope.get("path"),
            )
            body = json.dumps(error_body("ShuttingDown", STOPPING)).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(STORE_RETRY_AFTER).encode()),
            ]
            # The task ends here: answered, it is not cancelled again.
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
