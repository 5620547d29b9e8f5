"""The HTTP server: a FastAPI app over one store, with tenant-scoped API keys.

``create_app`` builds everything from a :class:`ServerConfig`; the app holds
no state beyond the store (and in-process rate-limit buckets), so replicas
pointed at one PostgreSQL are interchangeable. Errors are JSON in one shape,
``{"error": {"type", "message"}}``, with the status chosen in one table here;
a traceback never reaches a client.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from contextos.llm.tokens import Tokenizer, default_tokenizer

from ..config import Settings, check_batch_size
from ..embed import DEFAULT_EMBEDDER, Embedder, make_embedder
from ..errors import ContextosError, MissingExtraError
from .access_log import AccessLog
from .auth import DEFAULT_AUTH_FAILURES, Authenticator, validate_admin_key
from .batching import BatchingEmbedder
from .bodylimit import DEFAULT_MAX_BODY, BodyLimitMiddleware
from .errors import (
    STATUS,
    describe,
    error_body,
    package_version,
    public_message,
    retry_after,
    status_for,
)
from .gate import AuthGate, HeadAsGet, JsonBody, Utf8Url, allowed_methods
from .keys import KEY_CACHE_TTL, KeyStore
from .ratelimit import RateLimit, TokenBucketLimiter
from .shutdown import ShutdownAnswer
from .stop_watch import CLOSE_RESERVE_S, ShutdownClock, begin_on_signals, exit_when_stuck
from .tenants import TenantMemories
from .window_slots import ClientGone, WindowSlots

log = logging.getLogger("contextos.server")

#: Seconds shutdown waits for pending embeddings before leaving them to the next start,
#: at most: no more than its shutdown's limit leaves (:class:`.stop_watch.ShutdownClock`).
SHUTDOWN_FLUSH_S = 30.0

#: Net new container objects between young-generation garbage collections in a
#: serving process (CPython's default: 700). Under 50 concurrent clients the default
#: ran ~50 collections a second, promoting the objects of requests in flight into the
#: older generations, whose collections walk the whole heap; with this threshold a
#: 20 s run made 8 collections instead of 1,118 (docs/benchmarks.md, sixth session).
SERVING_GC_THRESHOLD = 20_000

__all__ = ["STATUS", "ServerConfig", "close_app", "create_app", "error_body", "status_for"]

#: Path prefixes of the API: authenticated before their body is read, bodies are JSON.
API_PREFIXES = ("/v1/", "/ui/api/")


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``contextos serve`` decides; tests build one directly."""

    db: str
    embedder: str = DEFAULT_EMBEDDER
    admin_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    rate_limit: RateLimit = field(default_factory=RateLimit)
    #: Failed authentications per client address (burst, then per second); over it: 429.
    auth_failures: RateLimit = field(default_factory=lambda: DEFAULT_AUTH_FAILURES)
    #: Seconds a verified key is trusted without reading the key table again: the
    #: longest a key revoked by the CLI or another replica still works here.
    key_cache_ttl: float = KEY_CACHE_TTL
    #: Records the embedding worker embeds per forward pass (``CONTEXTOS_EMBED_BATCH_SIZE``).
    embed_batch_size: int = Settings.embed_batch_size


def checked_embedder(config: ServerConfig, embedder: Embedder | None = None) -> Embedder:
    """``embedder``, else the one ``config`` names, once ``config`` passed the checks
    :func:`create_app` makes before it opens anything (the admin key's length, the
    embedder's name, the batch size).

    Why apart: ``serve --workers N`` checks in its parent, so a setting no worker could
    start with is refused in one line, as with one worker; the workers were announced
    as serving, died with a traceback and were started again, for ever (a review)."""
    validate_admin_key(config.admin_key)
    check_batch_size(config.embed_batch_size)
    return embedder or make_embedder(config.embedder)


def config_to_json(config: ServerConfig) -> str:
    """Serialise a config for another process (``serve --workers``)."""
    return json.dumps(asdict(config))


def config_from_json(text: str) -> ServerConfig:
    """The inverse of :func:`config_to_json`."""
    data = json.loads(text)
    limits = {name: RateLimit(**data[name]) for name in ("rate_limit", "auth_failures")}
    return ServerConfig(**{**data, **limits})


def _import_fastapi() -> Any:
    try:
        import fastapi
    except ImportError as exc:
        raise MissingExtraError("server", "fastapi") from exc
    return fastapi


def create_app(
    config: ServerConfig,
    *,
    embedder: Embedder | None = None,
    tokenizer: Tokenizer | None = None,
    close_on_shutdown: bool = False,
    own_process: bool = False,
) -> Any:
    """Build the FastAPI app for ``config`` (store and key table opened now).

    With ``own_process`` (a process that does nothing but serve this app: ``contextos
    serve`` and its workers), the process ends when its shutdown cannot finish in time
    (:mod:`.stop_watch`), and a request the shutdown cuts off is answered 503
    (:mod:`.shutdown`). Both act on the whole process, so an application that serves the
    app among its own work leaves them off: its own timeouts cancel tasks too.

    With ``close_on_shutdown`` the app closes its store, key table and embedding
    worker when the server shuts it down (``contextos serve``: uvicorn re-raises
    SIGTERM once it has stopped, so nothing after ``run`` would get to run);
    otherwise :func:`close_app` does, and the app may be served more than once.
    Such an app owns its process, so its startup also tunes the process's garbage
    collector for serving (:func:`tune_gc_for_serving`)."""
    fastapi = _import_fastapi()
    from .routes import key_router, memory_router, session_router
    from .strict_query import strict_request

    batching = BatchingEmbedder(checked_embedder(config, embedder))  # before anything opens
    try:
        tenants = TenantMemories.open(config.db, batching, batch_size=config.embed_batch_size)
    except BaseException:
        batching.close()
        raise
    try:
        keys = KeyStore(config.db, cache_ttl=config.key_cache_ttl)
    except BaseException:
        tenants.close()
        batching.close()
        raise
    auth = Authenticator(
        keys,
        admin_key=config.admin_key,
        limiter=TokenBucketLimiter(config.rate_limit),
        failures=TokenBucketLimiter(config.auth_failures),
    )
    closed = False

    def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            tenants.close()
            keys.close()
            batching.close()

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        if close_on_shutdown:
            tune_gc_for_serving()
        clock = ShutdownClock()
        store_closed = threading.Event()
        if own_process:  # the limit counts from the stop signal, not from here
            begin_on_signals(clock)
            exit_when_stuck(clock, store_closed)
        try:
            yield
        finally:
            clock.begin()  # a shutdown no signal began
            try:
                # Drain embeddings, but not a whole re-embedding backlog (vectors queued
                # again after an upgrade): the rest stays pending for the next process.
                # The wait for requests in flight may have taken most of the limit.
                drain_s = clock.share(SHUTDOWN_FLUSH_S, leave_s=CLOSE_RESERVE_S)
                if not tenants.flush(drain_s, unless_down=True):
                    log.warning("embeddings still pending at shutdown; the next start embeds them")
            except Exception as exc:  # noqa: BLE001 - logged; pending rows stay pending
                log.warning("pending embeddings not drained at shutdown: %s", exc)
            try:
                if close_on_shutdown:
                    close()
            finally:
                store_closed.set()

    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN, and nothing
    # here may need the internet. The schema is at /openapi.json for any local viewer.
    app = fastapi.FastAPI(
        title="contextos",
        version=package_version(),
        lifespan=lifespan,
        description="Tenant-scoped memory and session API of contextos.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.tenants, app.state.keys, app.state.auth = tenants, keys, auth
    app.state.close = close
    # Every /v1 route refuses query keys it does not declare, and a body if it takes none.
    strict = [fastapi.Depends(strict_request)]
    app.include_router(memory_router(auth, tenants), dependencies=strict)
    tokenizer = tokenizer or default_tokenizer()
    # One tenant's windows, however asked for (/v1 or the inspector), one at a time.
    windows = WindowSlots()
    app.include_router(session_router(auth, tenants, tokenizer, windows), dependencies=strict)
    app.include_router(key_router(auth), dependencies=strict)
    from ..agent.routes import agent_router  # the self-editing memory tools

    app.include_router(agent_router(auth, tenants, windows), dependencies=strict)

    app.add_api_route("/healthz", _healthz, methods=["GET"], tags=["health"], summary="health")

    _install_error_handlers(app, fastapi)
    # Outermost last: the body limit, then authentication, then JSON bodies.
    app.add_middleware(JsonBody, prefixes=API_PREFIXES)
    # Without an admin key /v1/keys answers 403 with a hint, whatever key is sent.
    ungated = () if config.admin_key else ("/v1/keys",)
    app.add_middleware(AuthGate, auth=auth, prefixes=API_PREFIXES, exclude=ungated)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(Utf8Url)  # before anything reads the path or the query
    app.add_middleware(HeadAsGet)  # HEAD on every GET route
    # The inspector page (/ui), its JSON routes, and the security headers (added last:
    # outermost, so even the body-limit middleware's 413s carry them).
    from .ui import install_ui

    install_ui(app, auth, tenants, tokenizer, windows)
    if own_process:  # a request the shutdown cut off
        app.add_middleware(ShutdownAnswer)
    # Outermost: it logs what the client was answered (the admin key never in a line).
    app.add_middleware(AccessLog, admin_key=config.admin_key)
    return app


def tune_gc_for_serving() -> None:
    """Set up the garbage collector of a process that does nothing but serve.

    ``gc.freeze()`` moves everything alive at startup (modules, the app, the
    framework's caches: most of the heap) out of the collector's reach, so a full
    collection walks only what requests left behind; and young collections wait for
    :data:`SERVING_GC_THRESHOLD` new objects instead of 700, so the objects of
    requests in flight die young instead of being promoted and walked again. Cycles
    are still collected, just in larger, rarer passes."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(SERVING_GC_THRESHOLD, older, oldest)


async def _healthz() -> dict[str, str]:
    """Liveness: the process answers (no auth, touches no data). On the event loop, not
    a worker thread: a sync route waited for one of the thread pool's threads, and
    during a PostgreSQL outage every thread waited on the store, so a liveness probe
    took 12.7 s and would have restarted every replica (a review, s55)."""
    return {"status": "ok"}


def close_app(app: Any) -> None:
    """Close what ``create_app`` opened (store, key table), after serving has stopped."""
    app.state.close()


def body_parse_error(exc: BaseException) -> str | None:
    """Why the framework could not read a request body as JSON, in words, or None.

    FastAPI answers a body its JSON parser fails on for any reason but a syntax error
    with a bare 400 "There was an error parsing the body" (the cause chained): invalid
    UTF-8, JSON nested past the parser's depth, an integer of more digits than Python
    converts. Malformed input is a 422 that says what is wrong (docs/server.md)."""
    cause = exc.__cause__
    if getattr(exc, "status_code", None) != 400 or cause is None:
        return None
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not UTF-8 (byte {cause.start} cannot be decoded)"
    if isinstance(cause, RecursionError):
        return "the body's JSON nests too deep to read"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "a number in the body has too many digits to read"
    return None


def _install_error_handlers(app: Any, fastapi: Any) -> None:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    async def on_library_error(_: Any, exc: Exception) -> Any:
        status = status_for(exc)
        headers = {}
        wait = retry_after(exc)
        if wait is not None:
            headers["Retry-After"] = TokenBucketLimiter.retry_after_header(wait)
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        body = error_body(type(exc).__name__, public_message(exc))
        return JSONResponse(body, status, headers=headers)

    async def on_validation(_: Any, exc: RequestValidationError) -> Any:
        return JSONResponse(error_body("InvalidRequest", describe(exc.errors())), 422)

    async def on_http(request: Any, exc: HTTPException) -> Any:
        unparsed = body_parse_error(exc)
        if unparsed is not None:
            return JSONResponse(error_body("InvalidRequest", unparsed), 422)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # every method of the path, not its first route's
            allow = ", ".join(allowed_methods(request.app, request.scope))
            headers = {**(headers or {}), "Allow": allow}
        return JSONResponse(
            error_body("HTTPError", str(exc.detail)), exc.status_code, headers=headers
        )

    async def on_client_gone(_: Any, exc: ClientGone) -> Any:
        # Nobody reads it: 499, nginx's "client closed request", for the access log.
        return Response(status_code=499)

    app.add_exception_handler(ClientGone, on_client_gone)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    for cls in (ContextosError, ValueError, TypeError, Exception):
        app.add_exception_handler(cls, on_library_error)
