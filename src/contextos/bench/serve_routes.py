"""``contextos bench serve --routes``: CPU per request of each server route, in process.

The load test (:mod:`contextos.bench.serve`) gives one CPU figure for the whole
server under 50 clients. To see where it goes, this drives the same ASGI app
(``create_app``, every middleware included) directly, one request at a time, with
no HTTP server, socket or other client in the way, and reports process CPU
milliseconds per request of each route: ``/healthz`` is the framework's floor
(routing and middleware, no key, no body), ``add`` and ``search`` the two
routes of the load test over a store holding ``memories`` records, ``search``
also with the embedder under test.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from ..embed import DEFAULT_EMBEDDER
from .serve import USERS_PER_RUN, _sentence

Message = dict[str, Any]


class _Driver:
    """Calls an ASGI app the way uvicorn would for one HTTP/1.1 request."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self.auth = f"Bearer {key}".encode()

    async def call(self, method: str, path: str, body: Any = None, query: bytes = b"") -> int:
        data = b"" if body is None else json.dumps(body).encode()
        scope: Message = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"authorization", self.auth),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": data, "more_body": False}
            await asyncio.Event().wait()  # no disconnect: the request completes
            raise AssertionError("unreachable")

        status = 0

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])

        await self.app(scope, receive, send)
        return status


def route_cpu(
    *, embedder: str = DEFAULT_EMBEDDER, requests: int = 300, memories: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """CPU ms per request of ``/healthz``, ``add`` and ``search`` (see the module
    docstring), after ``memories`` records were added and embedded."""
    if requests < 1 or memories < 0:
        raise ValueError("requests must be >= 1 and memories >= 0")
    from ..server.app import ServerConfig, close_app, create_app
    from ..server.keys import KeyStore
    from ..server.ratelimit import RateLimit

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="ctx-bench-routes-") as tmp:
        db = str(Path(tmp) / "routes.db")
        with KeyStore(db) as keys:
            key = keys.create("bench-routes", "bench serve --routes").secret
        app = create_app(ServerConfig(db=db, embedder=embedder, rate_limit=RateLimit(rate=0)))
        try:
            driver = _Driver(app, key)

            def user() -> str:
                return f"user{rng.randrange(USERS_PER_RUN)}"

            routes: dict[str, Any] = {
                "healthz": lambda: ("GET", "/healthz", None),
                "add": lambda: (
                    "POST",
                    "/v1/memories",
                    {"messages": _sentence(rng), "user_id": user()},
                ),
                "search": lambda: (
                    "POST",
                    "/v1/memories/search",
                    {"query": _sentence(rng)[:60], "user_id": user(), "limit": 10},
                ),
            }

            async def run() -> dict[str, float]:
                for _ in range(memories):
                    await driver.call(*routes["add"]())
                app.state.tenants.flush()
                out: dict[str, float] = {}
                for name, make in routes.items():
                    for _ in range(5):  # warm-up: the model loads on the first search
                        await driver.call(*make())
                    app.state.tenants.flush()
                    start = time.process_time()
                    for _ in range(requests):
                        status = await driver.call(*make())
                        if status >= 300:
                            raise RuntimeError(f"{name} answered HTTP {status}")
                    app.state.tenants.flush()  # an add's embedding is part of its cost
                    out[name] = (time.process_time() - start) * 1000 / requests
                return out

            costs = asyncio.run(run())
        finally:
            close_app(app)
    return {
        "config": {"embedder": embedder, "requests": requests, "memories": memories},
        "cpu_ms_per_request": costs,
    }
