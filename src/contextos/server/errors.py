"""How an exception is told to a client: one table for HTTP and MCP alike.

The status of each error class, and the text a client may see, are decided
here once, so the HTTP API and the MCP tools cannot drift apart. Input errors
keep their message (it says what to fix); store failures are answered with a
fixed text and a ``Retry-After``, because their detail (file paths, host, port,
database name) is infrastructure a client must not learn, and the usual cause
(another writer holding the lock, a restarting database) passes by itself. A store
fault that will not pass by itself (``StoreFault``: an error inside the store, such as
its keyword index failing on what it read) is a 500 of its own type and fixed text,
with no ``Retry-After``. An embedder that cannot run on the server's install
(``EmbedderSetupError``: its weights package is not installed) is the server's fault,
not the request's: a 503 that says what the operator must install, without a
``Retry-After`` (it does not pass by itself); any other ``ConfigError`` (an unknown
model named in a request) stays 400.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import (
    BudgetError,
    ConfigError,
    Conflict,
    ContextosError,
    EmbedderOutputError,
    EmbedderSetupError,
    EmbedderUnavailable,
    NotFound,
    RateLimited,
    ScopeError,
    StoreError,
    StoreFault,
    quoted,
)
from .auth import Forbidden, Unauthenticated
from .bodylimit import PayloadTooLarge

log = logging.getLogger("contextos.server")


class InvalidRequest(ContextosError):
    """Malformed input that only the store could recognise (HTTP 422, as a body field the
    models refuse): a list key (``after``) the store did not make. It was a 400
    ``ValueError``, the answer the docs keep for a library error, so a client told
    "fix your input" from "the request cannot be served" wrongly (a review)."""


#: Status code of each error class; the first matching row wins (subclasses first).
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (RateLimited, 429),
    (PayloadTooLarge, 413),
    (InvalidRequest, 422),
    (NotFound, 404),
    (ScopeError, 400),
    (BudgetError, 400),
    (StoreFault, 500),
    (StoreError, 503),
    (Conflict, 409),  # the state a write was based on kept changing: safe to retry
    (EmbedderSetupError, 503),  # the server's install, not the request: before ConfigError
    (EmbedderUnavailable, 503),  # the embedder is down (min_score needs it): retry later
    (EmbedderOutputError, 500),  # the server's embedder broke its protocol, not the request
    (ConfigError, 400),
    (ContextosError, 400),
    (ValueError, 400),
    (TypeError, 400),
)

#: Seconds a client is asked to wait after a 503 (a busy SQLite lock or a
#: PostgreSQL failover is usually over by then).
STORE_RETRY_AFTER = 1

STORE_UNAVAILABLE = "the store is busy or unavailable; retry after a moment"

STORE_FAULT = "the store failed on this request; the server's log has the detail"

EMBEDDER_UNAVAILABLE = (
    "the server's embedder is unavailable; retry after a moment (a search without "
    "min_score answers with keyword hits meanwhile)"
)


def error_body(kind: str, message: str) -> dict[str, dict[str, str]]:
    """The one error shape every route and middleware answers with."""
    return {"error": {"type": kind, "message": message}}


#: The JSON-RPC code of a request the MCP endpoint refused before reading it (the
#: range JSON-RPC leaves to servers): :func:`rpc_error_body`.
REFUSED_CODE = -32000


def rpc_error_body(kind: str, message: str) -> dict[str, Any]:
    """:func:`error_body` as the MCP endpoint answers it: a JSON-RPC error whose message
    begins with the type (``RateLimited: rate limit exceeded ...``), id null (the body
    was not read; the official client puts its request's id in its place).

    Why: at a non-2xx status the official ``mcp`` client reads the body only when it
    is a JSON-RPC error, else it stands in ``-32603`` "Server returned an error
    response", so an invalid key, a body over the limit and a rate limit read the same
    (a review)."""
    error = {"code": REFUSED_CODE, "message": f"{kind}: {message}"}
    return {"jsonrpc": "2.0", "id": None, "error": error}


def status_for(exc: BaseException) -> int:
    """The HTTP status of an exception (500 only for bugs and a ``StoreFault``)."""
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 500)


#: The store faults whose traceback was logged (:func:`_first_time`), at most
#: :data:`TRACED_FAULTS` of them.
_traced: set[str] = set()
TRACED_FAULTS = 256
_traced_lock = threading.Lock()


def _first_time(message: str) -> bool:
    """Whether a store fault with this message is logged with its traceback: the first
    time only. Why: a fault repeats on every write until someone acts on it (a file
    left read-only, a damaged file), and its message already says what to do; a
    58-line traceback with each buried that line in thousands a minute (a review)."""
    with _traced_lock:
        if message in _traced:
            return False
        if len(_traced) < TRACED_FAULTS:
            _traced.add(message)
        return True


def public_message(exc: BaseException) -> str:
    """What a client may read about ``exc``: the message of an input error, a fixed
    text for a store failure (logged here with its detail) or for a bug."""
    status = status_for(exc)
    if isinstance(exc, EmbedderSetupError):
        log.error("the embedder cannot run: %s", exc)
        return f"the server cannot embed text: {exc.public}"
    if isinstance(exc, EmbedderUnavailable):  # its detail may name the service's host
        log.warning("embedder unavailable: %s", exc)
        return EMBEDDER_UNAVAILABLE
    if isinstance(exc, StoreFault):
        log.error("store fault: %s", exc, exc_info=exc if _first_time(str(exc)) else None)
        return STORE_FAULT
    if status == 503:
        log.warning("store unavailable: %s", exc)
        return STORE_UNAVAILABLE
    if status >= 500:
        log.error("unexpected error", exc_info=exc)
        return "internal server error"
    return str(exc) or type(exc).__name__


def retry_after(exc: BaseException) -> float | None:
    """Seconds to send as ``Retry-After`` (None when the client should not retry as is)."""
    if isinstance(exc, RateLimited):
        return exc.retry_after or 1.0
    if isinstance(exc, StoreError) and not isinstance(exc, StoreFault):
        return float(STORE_RETRY_AFTER)
    if isinstance(exc, EmbedderUnavailable):
        return float(STORE_RETRY_AFTER)
    return None


#: How the labels of a union's branches begin (:mod:`contextos.server.schemas` picks one
#: branch by the value's type, and pydantic puts its label in an error's path): no field
#: name or accepted metadata key holds a colon.
BRANCH = "branch:"


#: The most characters of one problem's message :func:`describe` gives (a check's own
#: message is a line or two; one that quotes the value it refused may be longer).
DESCRIBED_CHARS = 500


def describe(errors: Iterable[Mapping[str, Any]]) -> str:
    """One readable line per validation problem: ``body.limit: must be <= 100``. The
    path leaves out the label of the union branch a value was validated as
    (``body.messages: a memory may hold ...``, not ``body.messages.branch:text: ...``),
    and a check's own message is given as it is (pydantic's ``Value error, `` left out).

    Each part of the path (an unknown key's name) is cut to its first
    :data:`~contextos.errors.QUOTED_CHARS` characters and each message to
    :data:`DESCRIBED_CHARS`, saying how long they were: a 900,000-character key was
    echoed whole, a 900 KB 422 or tool error (a review)."""
    parts = []
    for err in list(errors)[:5]:
        if err.get("type") == "json_invalid":
            parts.append(_not_json(err))
            continue
        loc = err.get("loc", ())
        where = ".".join(
            quoted(str(p), as_repr=False)
            for p in loc
            if not (isinstance(p, str) and p.startswith(BRANCH))
        )
        msg = err.get("msg", "invalid")
        cause = (err.get("ctx") or {}).get("error")
        if err.get("type") == "value_error" and cause is not None and str(cause):
            msg = str(cause)
        msg = quoted(str(msg), DESCRIBED_CHARS, as_repr=False)
        # A model's own check (a model validator) has no path when the model is not a
        # body: MCP arguments (schemas.parse). Its message alone, not ": message".
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts) or "invalid request"


def _not_json(err: Mapping[str, Any]) -> str:
    """A body that is not JSON, said so with where and why: its ``loc`` holds the
    character's position where a field's path goes ("body.15: JSON decode error" read
    as a field named 15, and said nothing of a raw control character; a review, s55)."""
    loc = err.get("loc", ())
    where = f"character {loc[1]}: " if len(loc) > 1 and isinstance(loc[1], int) else ""
    reason = str((err.get("ctx") or {}).get("error") or "cannot be read")
    reason = reason.removesuffix(" at").strip()
    return f"body: not valid JSON ({where}{reason[:1].lower()}{reason[1:]})"


def package_version() -> str:
    """The installed contextos version, reported by the HTTP API and the MCP server."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("contextos")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"
