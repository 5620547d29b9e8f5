"""Turn SDK exceptions into the contextos error tree, at the seam.

Both official SDKs (``anthropic``, ``openai``) raise the same shapes: an
``APIStatusError`` carrying ``status_code``, ``response`` and ``body``, and an
``APIConnectionError`` when no response came. We read those attributes instead
of importing either SDK, so this module works whichever is installed. A stream
that breaks while the caller reads it (a dropped connection, a read timeout, a
body closed under it) raises the HTTP library's own error through the SDK; that
too becomes a :class:`ProviderError`.

Retries: both SDKs already retry connection errors, 408/409/429 and 5xx with
exponential backoff (``max_retries``, honouring ``retry-after``). contextos
does not retry on top of them -- a second loop would multiply the attempts and
the wait. When the SDK gives up, the caller gets :class:`RateLimited` (with the
server's ``retry_after``), :class:`AuthError` or :class:`ProviderHTTPError`.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from ..errors import AuthError, ProviderError, ProviderHTTPError, RateLimited

T = TypeVar("T")

_AUTH_STATUSES = (401, 403)

#: The HTTP status each of the API's error types comes with, for an ``error`` event
#: inside a stream: the response itself was a 200, so its status says nothing.
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _status_of(exc: BaseException) -> Any:
    """The error's HTTP status; for an error event inside a (200) stream, the status of
    its ``error.type`` (unknown types: 500, the server failed mid-reply)."""
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or status >= 400:
        return status
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, Mapping) else None
    kind = error.get("type") if isinstance(error, Mapping) else None
    return _ERROR_TYPE_STATUS.get(str(kind), 500)


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: float | None = None
) -> float | None:
    """Seconds to wait, from ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date).

    Example:
        >>> parse_retry_after({"retry-after": "2"})
        2.0
    """
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return max(0.0, email.utils.mktime_tz(parsed) - (time.time() if now is None else now))


def _body_text(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if body is None:
        response = getattr(exc, "response", None)
        return str(getattr(response, "text", "") or "")
    return body if isinstance(body, str) else json.dumps(body, default=str)


#: The HTTP libraries under the SDKs (anthropic 2.x reads through ``httpx2``, openai
#: through ``httpx``).
_HTTP_LIBRARIES = ("httpx", "httpx2")


def is_sdk_error(exc: BaseException) -> bool:
    """True for exceptions raised by the anthropic or openai SDKs (by their module), and
    for their HTTP library's request and stream errors (:func:`_is_transport_error`)."""
    root = type(exc).__module__.split(".")[0]
    return root in ("anthropic", "openai") or _is_transport_error(exc)


#: The HTTP libraries' error bases a stream's read lets through the SDKs: ``RequestError``
#: (transport, timeout, decoding) and ``StreamError`` (a closed or consumed body).
_HTTP_ERROR_BASES = ("RequestError", "StreamError")


def _is_transport_error(exc: BaseException) -> bool:
    """True for an ``httpx`` / ``httpx2`` ``RequestError``: transport errors (a dropped
    connection, ``RemoteProtocolError``), timeouts (``ReadTimeout``), a body that
    fails to decode; and for a ``StreamError``: a body read after its response was
    closed (``StreamClosed``: a stream closed from another thread while its reader
    waits, or closed by the wrapper as left).

    Why: the SDKs turn these into ``APIConnectionError`` while sending, but a stream
    reads its body later, in the caller's loop, where the SDK lets the HTTP
    library's own exception through; the caller was promised a ``ProviderError``
    (a review: ``StreamClosed``, not a ``RequestError``, reached the app as it was).
    Matched by class name and module (the bases above), so neither library is
    imported here.
    """
    return any(
        cls.__name__ in _HTTP_ERROR_BASES and cls.__module__.split(".")[0] in _HTTP_LIBRARIES
        for cls in type(exc).__mro__
    )


def _transport_error_in(exc: BaseException) -> BaseException | None:
    """The HTTP library's error ``exc`` is or wraps: anthropic before 2.17 let a stream's
    ``ReadTimeout`` through as it was, 2.17 and openai wrap it in ``APITimeoutError``
    (``raise ... from``), whose message alone ("Request timed out.") names no cause."""
    seen: BaseException | None = exc
    for _ in range(3):  # the SDK's error, its cause: no deeper chain is theirs
        if seen is None:
            return None
        if _is_transport_error(seen):
            return seen
        seen = seen.__cause__
    return None


def to_contextos_error(exc: BaseException, provider: str) -> ProviderError:
    """The contextos error for an SDK exception (the caller raises it ``from exc``)."""
    status = _status_of(exc)
    message = getattr(exc, "message", None) or str(exc)
    transport = _transport_error_in(exc)
    if transport is not None:  # "timed out" / "Connection error." does not say what failed
        message = f"{type(transport).__name__}: {message}"
    if not isinstance(status, int):
        return ProviderError(f"{provider}: {message}")
    if status in _AUTH_STATUSES:
        return AuthError(
            f"{provider} refused the credentials (HTTP {status}): {message}. "
            f"Set the API key ({provider.upper()}_API_KEY) or pass api_key= to the client."
        )
    if status == 429:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        return RateLimited(
            f"{provider} rate limit: {message}", retry_after=parse_retry_after(headers)
        )
    return ProviderHTTPError(f"{provider}: {message}", status=status, body=_body_text(exc))


@contextmanager
def mapped_errors(provider: str) -> Iterator[None]:
    """Re-raise SDK exceptions inside the block as contextos errors (``from`` the original)."""
    try:
        yield
    except Exception as exc:
        if not is_sdk_error(exc):
            raise
        raise to_contextos_error(exc, provider) from exc


def call_mapped(provider: str, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``func(*args, **kwargs)`` with SDK exceptions mapped (see :func:`mapped_errors`)."""
    with mapped_errors(provider):
        return func(*args, **kwargs)
