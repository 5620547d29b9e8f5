"""One log line per request: who asked for what, the answer's status, and how long it took.

``contextos serve --log-level info`` writes it (``--no-access-log`` leaves it out), as
uvicorn's own access log would, with what an operator of a multi-tenant memory server
asks of it first: the tenant and key a request ran as, and its duration::

    INFO:     10.0.0.7:50412 - "POST /v1/memories/search HTTP/1.1" 200 12.4 ms tenant=acme key=3f9a

Why our own and not uvicorn's: uvicorn's line has no duration and no caller, and it is
written when the response starts, so a request its client gave up on, or one that
failed after its headers were sent, looked served. Here the line is written when the
request is over: ``client gone`` when the client hung up before its whole answer was sent,
``500`` when the app failed before answering, ``failed`` after the status when it failed
midway through an answer. The path and query are written
percent-encoded (as uvicorn does), so a request cannot write a line break or an escape
sequence into the log. The key's secret never reaches the log: only its id (a key
sent in the query, ``?api_key=ctx_...``, is refused and written ``ctx_<id>_<redacted>``,
the admin key ``<admin key>``, and so is one a client put in the path); nor does a
memory's text: ``expected_text`` (``DELETE``'s precondition, the one query value that
holds one) is written as its length, ``expected_text=<31 chars>``.

At ``--log-level warning`` (the default) the middleware costs one level check a request.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any
from urllib.parse import quote, unquote_plus

from .auth import Principal

Message = dict[str, Any]

#: The logger of the access lines (``contextos serve`` gives it uvicorn's format).
log = logging.getLogger("contextos.access")

#: The ASGI scope extension holding the connection's state (``{"gone": bool}``), lent by
#: ``contextos serve``'s connections (:mod:`.headlimit`): how the access line learns that
#: a client hung up after its request was read, whose answer uvicorn then drops without
#: a word to the app. Here, not there: this module loads without uvicorn.
CONNECTION_EXTENSION = "contextos.connection"

#: The ASGI scope key of the dict :class:`AccessLog` lends the routes' gate: it puts the
#: verified caller there (the scope itself is copied on its way in, the dict is shared).
ACCESS_NOTE = "contextos.access"

#: What a request line's path and query may hold unescaped: printable ASCII but space,
#: ``"``, ``\\``, ``<``, ``>``, `````, ``{``, ``|``, ``}`` and ``^`` (``%`` keeps what a
#: client escaped readable as it sent it).
_SAFE = "/:@!$&'()*+,;=-._~%?[]"

#: The query keys whose values are a memory's text, written as their length only.
#: Why: a purge sent with ``expected_text`` wrote the very text it erased into the
#: operator's log at ``--log-level info`` (a review).
_TEXT_KEYS = frozenset({"expected_text"})

#: A key's shape (``keys._KEY_RE``: ``ctx_<12 hex>_<secret>``) wherever it stands in a
#: query's name or value; its secret is what :func:`_logged` leaves out.
_KEY_SHAPE = re.compile(r"ctx_([0-9a-fA-F]{12})_[A-Za-z0-9_-]+")

#: What a query part :func:`_redacted` writes decoded may keep unescaped: :data:`_SAFE`
#: less ``%``, ``&`` and ``+``, which would read as the client's own escapes and
#: separators. (The whole ``key=value`` is decoded at once: an admin key ending in
#: base64's ``=`` sent as ``?<key>`` is cut there by the split into key and value.)
_SAFE_DECODED = "/:@!$'()*,;=-._~?[]"


def note_caller(scope: dict[str, Any], principal: Principal) -> None:
    """Tell the access line who the request runs as (called by the gate once verified)."""
    note = scope.get(ACCESS_NOTE)
    if isinstance(note, dict):
        note["who"] = principal


class AccessLog:
    """Pure ASGI middleware: log each HTTP request once it is over (see the module)."""

    def __init__(self, app: Any, admin_key: str | None = None) -> None:
        """``admin_key``: the server's, written ``<admin key>`` wherever a query holds it."""
        self.app = app
        self.admin_key = admin_key

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        note: dict[str, Any] = {}
        status: list[int] = []
        state = {"done": False, "gone": False}

        async def receiving() -> Message:
            message: Message = await receive()
            if message["type"] == "http.disconnect" and not state["done"]:
                state["gone"] = True
            return message

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                state["done"] = True
            await send(message)

        failed = False
        try:
            await self.app({**scope, ACCESS_NOTE: note}, receiving, sending)
        except BaseException:
            failed = True
            raise
        finally:  # also when cancelled (the server stops)
            outcome = str(status[0]) if status else ("500" if failed else "-")
            if state["gone"] or _hung_up(scope):
                outcome += " client gone"
            elif failed and status:
                outcome += " failed"  # the app failed after its answer began
            took = time.perf_counter() - began
            log.info("%s", request_line(scope, outcome, took, note, self.admin_key))


def _hung_up(scope: Message) -> bool:
    """Whether ``contextos serve``'s connection (:mod:`.headlimit`) saw the client hang up
    before its answer was whole: after its body was read, the app is told nothing."""
    connection = (scope.get("extensions") or {}).get(CONNECTION_EXTENSION)
    return isinstance(connection, dict) and bool(connection.get("gone"))


def request_line(
    scope: Message,
    outcome: str,
    seconds: float,
    note: dict[str, Any],
    admin_key: str | None = None,
) -> str:
    """The access line of one request (without the level prefix)."""
    client = scope.get("client")
    where = f"{client[0]}:{client[1]}" if client else "-"
    target = _path_logged(str(scope.get("path", "")), admin_key)
    query = scope.get("query_string", b"")
    if query:
        target += "?" + _query_logged(query.decode("latin-1"), admin_key)
    method = quote(scope.get("method", "-"), safe="")
    line = (
        f'{where} - "{method} {target} HTTP/{scope.get("http_version", "1.1")}" '
        f"{outcome} {seconds * 1000:.1f} ms"
    )
    who = note.get("who")
    if isinstance(who, Principal):
        line += " admin" if who.is_admin else f" tenant={who.tenant} key={who.key_id}"
    return line


def _path_logged(path: str, admin_key: str | None) -> str:
    """A request's (decoded) path as the access line writes it: escaped, with any API
    key (or ``admin_key``) in it without its secret (:func:`_redacted`). Why: a client
    that put its key in the path (``/v1/sessions/ctx_.../turns``) had the whole working
    key written to the log, where one in the query was redacted (a review)."""
    secrets = _secrets(admin_key)
    return _redacted(path, secrets) if secrets.search(path) else quote(path, safe=_SAFE)


def _query_logged(query: str, admin_key: str | None) -> str:
    """A query string as the access line writes it: each ``key=value`` as :func:`_logged`
    writes it, and the admin key sent unescaped cut out first. Why first: a base64 admin
    key holds ``+`` (read as a space once decoded) and may hold ``&`` or ``%``, so
    matched only after decoding, in parts split at ``&``, it was written whole (a
    review)."""
    pieces = query.split(admin_key) if admin_key else [query]
    return "<admin key>".join(
        "&".join(_logged(part, admin_key) for part in piece.split("&")) for piece in pieces
    )


def _logged(pair: str, admin_key: str | None = None) -> str:
    """One ``key=value`` of a query string as the access line writes it: escaped, the
    value of a key of :data:`_TEXT_KEYS` as its length in characters, and any API key
    (or ``admin_key``) in it without its secret (:func:`_redacted`). All are decoded as
    the app reads them (Starlette's ``parse_qsl`` of the latin-1 text), so
    ``expected%5Ftext`` is ``expected_text`` here too, and an escaped key is a key.

    Why keys: a client that sends its key as ``?api_key=...`` (what many APIs take) is
    refused, and its line held the whole working key for whoever reads the log (a
    review)."""
    key, sep, value = pair.partition("=")
    if sep and unquote_plus(key) in _TEXT_KEYS:
        return f"{quote(key, safe=_SAFE)}=<{len(unquote_plus(value))} chars>"
    secrets, text = _secrets(admin_key), unquote_plus(pair)
    return _redacted(text, secrets) if secrets.search(text) else quote(pair, safe=_SAFE)


def _secrets(admin_key: str | None) -> re.Pattern[str]:
    """What :func:`_redacted` leaves out: ``admin_key`` (first: it may look like a
    key) and :data:`_KEY_SHAPE`."""
    if not admin_key:
        return _KEY_SHAPE
    return re.compile(f"{re.escape(admin_key)}|{_KEY_SHAPE.pattern}")


def _redacted(text: str, secrets: re.Pattern[str]) -> str:
    """``text`` (decoded) escaped, with each API key in it as ``ctx_<id>_<redacted>``
    and the admin key as ``<admin key>``."""
    out, at = [], 0
    for found in secrets.finditer(text):
        out.append(quote(text[at : found.start()], safe=_SAFE_DECODED))
        out.append(f"ctx_{found[1]}_<redacted>" if found[1] else "<admin key>")
        at = found.end()
    out.append(quote(text[at:], safe=_SAFE_DECODED))
    return "".join(out)
