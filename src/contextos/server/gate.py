"""Pure ASGI middleware in front of the routes: authenticate before the body is read.

A framework reads and parses a request body before its route dependencies run,
so a check done in a dependency lets anyone make the server buffer and parse a
body they had no right to send. :class:`AuthGate` looks only at the headers:
a missing or wrong key is answered 401 (or 429 once the client has used up its
failed attempts) without a byte of the body being read (a revoked key sent with
its right secret is 401 too, but uses no attempt: its holder is not guessing),
and a valid key is charged to its rate-limit bucket here, once, for the HTTP API
and the MCP endpoint alike. The verified :class:`~contextos.server.auth.Principal`
travels in the ASGI scope to the route, which does not look the key up again,
except once its body is in, when that took longer than the key cache's lifetime:
a key revoked while its request's body was arriving is then refused 401 before
the route runs (:meth:`AuthGate._readmitting`).

:class:`JsonBody` lets a JSON body through whatever ``Content-Type`` the client
sent (``curl -d`` sends a form type): every body of this API is JSON.

:class:`HeadAsGet` answers ``HEAD`` on every ``GET`` route, and
:func:`allowed_methods` is what a 405's ``Allow`` names.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

import anyio.to_thread
from starlette.routing import Match

from ..errors import ContextosError
from .access_log import note_caller
from .auth import Authenticator, Principal, bearer_credential
from .errors import error_body, public_message, retry_after, rpc_error_body, status_for
from .ratelimit import TokenBucketLimiter

Message = dict[str, Any]

#: The ASGI scope key that carries the verified caller to the routes.
PRINCIPAL = "contextos.principal"


def principal_in(scope: Mapping[str, Any]) -> Principal | None:
    """The caller :class:`AuthGate` verified for this request, if it ran."""
    found = scope.get(PRINCIPAL)
    return found if isinstance(found, Principal) else None


def headers_of(scope: Message) -> dict[str, str]:
    """The request's headers by lower-case name (the last of a repeated one), as the
    gate reads its key from them."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _keys_sent(scope: Message) -> int:
    """How many different keys the request's key headers (``Authorization: Bearer``,
    ``X-API-Key``) carry.

    Why it matters: :func:`headers_of` keeps the last of two ``Authorization`` headers and
    the MCP SDK's own check reads the first, so one request was charged to one key and
    ran as another's tenant, and a client could put guesses first and its own key last:
    each wrong guess escaped the failed-authentication throttle (a review). A request
    with more than one is refused as a failed authentication; the same key in both
    headers is one key. An ``Authorization`` of another scheme carries no key
    (:func:`~contextos.server.auth.bearer_credential`, the rule the key is read by): a
    proxy's HTTP Basic credential next to ``X-API-Key`` counted as a second key, and 20
    such requests locked the proxy's address out (a review)."""
    sent: set[str] = set()
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            credential = bearer_credential(value.decode("latin-1"))
        elif name.lower() == b"x-api-key":
            credential = value.decode("latin-1").strip() or None
        else:
            continue
        if credential is not None:
            sent.add(credential)
    return len(sent)


def error_messages(exc: BaseException, *, jsonrpc: bool = False) -> tuple[Message, Message]:
    """The ASGI messages of the one JSON error shape for ``exc`` (see errors.py); with
    ``jsonrpc``, the MCP endpoint's (:func:`~contextos.server.errors.rpc_error_body`),
    whose message says the ``Retry-After`` too (an MCP client sees no headers)."""
    status = status_for(exc)
    wait = retry_after(exc)
    after = None if wait is None else TokenBucketLimiter.retry_after_header(wait)
    kind, message = type(exc).__name__, public_message(exc)
    if jsonrpc:
        said = message if after is None else f"{message}; retry after {after} s"
        body = json.dumps(rpc_error_body(kind, said)).encode()
    else:
        body = json.dumps(error_body(kind, message)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if after is not None:
        headers.append((b"retry-after", after.encode()))
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    start = {"type": "http.response.start", "status": status, "headers": headers}
    return start, {"type": "http.response.body", "body": body}


class AuthGate:
    """Authenticate and rate-limit requests under ``prefixes`` (except those under
    ``exclude``) from their headers alone; a refusal under ``jsonrpc_under`` (the MCP
    endpoint) is a JSON-RPC error (:func:`error_messages`)."""

    def __init__(
        self,
        app: Any,
        auth: Authenticator,
        prefixes: tuple[str, ...],
        exclude: tuple[str, ...] = (),
        jsonrpc_under: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.auth = auth
        self.prefixes = prefixes
        self.exclude = exclude
        self.jsonrpc_under = jsonrpc_under

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        path = str(scope.get("path", ""))
        if (
            scope["type"] != "http"
            or not path.startswith(self.prefixes)
            or (self.exclude and path.startswith(self.exclude))
        ):
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("unknown", 0)
        headers, address = headers_of(scope), str(client[0])
        try:
            # A key verified in the last second is answered from memory; any other on a
            # thread, even for a SQLite key table: the key table's lock is shared with
            # key writes, which may wait out a busy database for 30 s, and on the event
            # loop that wait would stall every request.
            keys = _keys_sent(scope)
            principal = self.auth.admit_cached(headers, address) if keys <= 1 else None
            if principal is None:
                principal = await anyio.to_thread.run_sync(
                    functools.partial(self.auth.admit, headers, address, keys_sent=keys)
                )
        except ContextosError as exc:
            jsonrpc = bool(self.jsonrpc_under) and path.startswith(self.jsonrpc_under)
            for message in error_messages(exc, jsonrpc=jsonrpc):
                await send(message)
            return
        note_caller(scope, principal)
        scope = {**scope, PRINCIPAL: principal}
        if principal.is_admin:
            await self.app(scope, receive, send)
            return
        jsonrpc = bool(self.jsonrpc_under) and path.startswith(self.jsonrpc_under)
        await self._readmitting(scope, receive, send, headers, principal, jsonrpc)

    async def _readmitting(
        self,
        scope: Message,
        receive: Any,
        send: Any,
        headers: dict[str, str],
        principal: Principal,
        jsonrpc: bool,
    ) -> None:
        """Run the app, checking the key again when the request's body is in if that
        was more than the key cache's lifetime after its admission
        (:meth:`~contextos.server.auth.Authenticator.readmit`): a key revoked meanwhile
        gets the 401 a fresh request gets, before the route runs.

        Why: the key is checked from the headers, and the route runs once the body is
        in; a client trickling its body (a 1 MB body may take an hour) was served long
        after its key was revoked, a write landing 300 s after the revocation and one
        after ``forget --whole-tenant`` had made its last pass (a review). Whatever the
        app answers to the failed body read (FastAPI's 400) is replaced by the 401, as
        :class:`~contextos.server.bodylimit.BodyLimitMiddleware` replaces it by its
        413; a request whose body arrived within the cache's lifetime costs nothing."""
        admitted = time.monotonic()
        refused: list[ContextosError] = []
        started = False

        async def checking_receive() -> Message:
            message: Message = await receive()
            if (
                message["type"] == "http.request"
                and not message.get("more_body", False)
                and time.monotonic() - admitted > self.auth.keys.cache_ttl
            ):
                try:
                    await anyio.to_thread.run_sync(self.auth.readmit, headers, principal)
                except ContextosError as exc:
                    refused.append(exc)
                    raise _KeyGone from exc
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused and not started:
                return  # the app's answer to the failed body read: the 401 replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, checking_receive, guarded_send)
        except _KeyGone:
            if started:
                raise
        if refused and not started:
            for message in error_messages(refused[0], jsonrpc=jsonrpc):
                await send(message)


class _KeyGone(Exception):
    """Raised to the app by :meth:`AuthGate._readmitting`'s receive: the request's key
    was revoked while its body was arriving (not a ContextosError: no handler of the
    app's may answer it)."""


class JsonBody:
    """Treat every request body under ``prefixes`` as JSON, whatever its Content-Type."""

    def __init__(self, app: Any, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope.get("method") in ("POST", "PUT", "PATCH")
            and str(scope.get("path", "")).startswith(self.prefixes)
        ):
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
            headers.append((b"content-type", b"application/json"))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


class Utf8Url:
    """Refuse with 422 a URL whose percent-escapes do not decode as UTF-8.

    The framework decodes them with replacement characters, so ``/v1/sessions/%FF``
    and ``/v1/sessions/%FE`` both named the session ``"\ufffd"`` (two clients' turns
    in one log), and an escaped lone surrogate was stored as three of them, where
    the same text in a body is refused. Path and query alike, before any route."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not _utf8_url(scope):
            body = json.dumps(
                error_body("InvalidRequest", "the URL's percent-escapes are not UTF-8")
            ).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": 422, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _utf8_url(scope: Message) -> bool:
    """Whether the raw path and every query part percent-decode to UTF-8."""
    raw = scope.get("raw_path") or str(scope.get("path", "")).encode("utf-8", "surrogatepass")
    parts = [raw, *bytes(scope.get("query_string", b"")).split(b"&")]
    try:
        for part in parts:
            unquote_to_bytes(part).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


#: The methods an ``Allow`` header may name, in the order it names them.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class HeadAsGet:
    """Answer ``HEAD`` as ``GET`` is answered, without the body (RFC 9110 9.3.2).

    FastAPI's routes take only the methods they name, so ``HEAD /healthz`` (what some
    load balancers and uptime probes send) was a 405 (a review). The status and
    headers, ``Content-Length`` included, are the ``GET``'s."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


def allowed_methods(app: Any, scope: Mapping[str, Any]) -> list[str]:
    """Every method some route of ``app`` takes at ``scope``'s path (``HEAD`` wherever
    ``GET``: :class:`HeadAsGet`), for a 405's ``Allow``.

    Why: the router answers 405 with the methods of the first route whose path
    matched, so ``PUT /v1/memories`` was told ``Allow: POST`` though the path takes
    ``GET`` too (a review; RFC 9110 says ``Allow`` lists what the resource supports)."""
    path = {"type": "http", "path": scope["path"], "root_path": scope.get("root_path", "")}
    taken = {
        method
        for method in METHODS
        if any(route.matches({**path, "method": method})[0] is Match.FULL for route in app.routes)
    }
    if "GET" in taken:
        taken.add("HEAD")
    return [method for method in METHODS if method in taken]
