"""The HTTP server: a FastAPI app over one store, with tenant-scoped API keys.

``create_app`` builds everything from a :class:`ServerConfig`; the app holds
no state beyond the store (and in-process rate-limit buckets), so replicas
pointed at one PostgreSQL are interchangeable. Errors are JSON in one shape,
``{"error": {"type", "message"}}``, with the status chosen in one table here;
a traceback never reaches a client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from ..embed import Embedder, make_embedder
from ..errors import (
    BudgetError,
    ConfigError,
    ContextosError,
    MissingExtraError,
    NotFound,
    RateLimited,
    ScopeError,
    StoreError,
)
from ..tokens import Tokenizer, default_tokenizer
from .auth import Authenticator, Forbidden, Unauthenticated, validate_admin_key
from .batching import BatchingEmbedder
from .bodylimit import BodyLimitMiddleware, PayloadTooLarge
from .keys import KeyStore
from .ratelimit import RateLimit, TokenBucketLimiter
from .tenants import TenantMemories

log = logging.getLogger("contextos.server")

#: Status code of each error class; the first matching row wins (subclasses first).
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (RateLimited, 429),
    (PayloadTooLarge, 413),
    (NotFound, 404),
    (ScopeError, 400),
    (BudgetError, 400),
    (StoreError, 503),
    (ConfigError, 400),
    (ContextosError, 400),
    (ValueError, 400),
    (TypeError, 400),
)

DEFAULT_MAX_BODY = 1_000_000


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``contextos serve`` decides; tests build one directly."""

    db: str
    embedder: str = "minilm"
    admin_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    rate_limit: RateLimit = field(default_factory=RateLimit)


def config_to_json(config: ServerConfig) -> str:
    """Serialise a config for another process (``serve --workers``)."""
    return json.dumps({**asdict(config), "rate_limit": asdict(config.rate_limit)})


def config_from_json(text: str) -> ServerConfig:
    """The inverse of :func:`config_to_json`."""
    data = json.loads(text)
    return ServerConfig(**{**data, "rate_limit": RateLimit(**data["rate_limit"])})


def status_for(exc: BaseException) -> int:
    """The HTTP status of an exception (500 only for bugs)."""
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 500)


def error_body(kind: str, message: str) -> dict[str, dict[str, str]]:
    """The one error shape every route and middleware answers with."""
    return {"error": {"type": kind, "message": message}}


def _import_fastapi() -> Any:
    try:
        import fastapi
    except ImportError as exc:
        raise MissingExtraError("server", "fastapi") from exc
    return fastapi


def create_app(
    config: ServerConfig, *, embedder: Embedder | None = None, tokenizer: Tokenizer | None = None
) -> Any:
    """Build the FastAPI app for ``config`` (store and key table opened now)."""
    fastapi = _import_fastapi()
    from .routes import key_router, memory_router, session_router

    validate_admin_key(config.admin_key)  # before anything is opened
    batching = BatchingEmbedder(embedder or make_embedder(config.embedder))
    try:
        tenants = TenantMemories.open(config.db, batching)
    except BaseException:
        batching.close()
        raise
    try:
        keys = KeyStore(config.db)
    except BaseException:
        tenants.close()
        batching.close()
        raise
    auth = Authenticator(
        keys, admin_key=config.admin_key, limiter=TokenBucketLimiter(config.rate_limit)
    )

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        # Shutdown only drains embeddings: the same app object may be served more than
        # once (tests, schema tools), so closing the store is close_app's job.
        try:
            yield
        finally:
            tenants.flush()

    app = fastapi.FastAPI(
        title="contextos",
        version=_version(),
        lifespan=lifespan,
        description="Tenant-scoped memory and session API of contextos.",
    )
    app.state.tenants, app.state.keys, app.state.auth = tenants, keys, auth

    def close() -> None:
        tenants.close()
        keys.close()
        batching.close()

    app.state.close = close
    app.include_router(memory_router(auth, tenants))
    app.include_router(session_router(auth, tenants, tokenizer or default_tokenizer()))
    app.include_router(key_router(auth))
    from ..agent.routes import agent_router  # the self-editing memory tools

    app.include_router(agent_router(auth, tenants))

    app.add_api_route("/healthz", _healthz, methods=["GET"], tags=["health"], summary="health")

    _install_error_handlers(app, fastapi)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    return app


def _healthz() -> dict[str, str]:
    """Liveness: the process answers (no auth, touches no data)."""
    return {"status": "ok"}


def close_app(app: Any) -> None:
    """Close what ``create_app`` opened (store, key table), after serving has stopped."""
    app.state.close()


def _install_error_handlers(app: Any, fastapi: Any) -> None:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def respond(exc: BaseException, status: int, message: str) -> Any:
        headers = {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = TokenBucketLimiter.retry_after_header(exc.retry_after or 1)
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(error_body(type(exc).__name__, message), status, headers=headers)

    async def on_library_error(_: Any, exc: Exception) -> Any:
        status = status_for(exc)
        if status >= 500:
            log.error("unexpected error", exc_info=exc)
            return respond(exc, 500, "internal server error")
        return respond(exc, status, str(exc) or type(exc).__name__)

    async def on_validation(_: Any, exc: RequestValidationError) -> Any:
        return JSONResponse(error_body("InvalidRequest", _describe(exc.errors())), 422)

    async def on_http(_: Any, exc: HTTPException) -> Any:
        return JSONResponse(
            error_body("HTTPError", str(exc.detail)),
            exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    for cls in (ContextosError, ValueError, TypeError, Exception):
        app.add_exception_handler(cls, on_library_error)


def _describe(errors: Any) -> str:
    """One readable line per validation problem: ``body.limit: must be <= 100``."""
    parts = []
    for err in list(errors)[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("contextos")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"
