"""Query parameters a route does not declare are refused with a 422, as unknown body
fields are.

FastAPI drops a query key it was not told about, and the request runs as if it had not
been sent: ``DELETE /v1/memories/{id}?expected-text=...`` (a misspelt precondition)
deleted a memory someone else had changed, ``?purged=true`` deleted without purging,
``GET /v1/sessions?userid=ana`` listed every user's sessions (a review, session 34). The
body models already forbid extra fields; :func:`strict_request` does the same for the
query string of every ``/v1`` route.

A body sent to a route that takes none (``GET``, ``DELETE``) was dropped the same way:
``DELETE /v1/memories/{id}`` with ``{"expected_updated_at": ...}`` in a JSON body, as
``PATCH`` takes it, deleted a memory someone else had changed, answered as a checked
delete (a review, session 38). Such a body is a 422 too, naming what goes in the query.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from .window_slots import ClientGone

#: The query names each route declares, in order, by route (routes live as long as the app).
_DECLARED: dict[int, tuple[str, ...]] = {}


def declared_query(route: APIRoute) -> tuple[str, ...]:
    """The query parameter names ``route`` declares, its dependencies' included."""
    names = _DECLARED.get(id(route))
    if names is None:
        found: dict[str, None] = {}
        pending: list[Any] = [route.dependant]
        while pending:
            dependant = pending.pop()
            found.update(dict.fromkeys(field.alias for field in dependant.query_params))
            pending.extend(dependant.dependencies)
        names = _DECLARED[id(route)] = tuple(found)
    return names


async def strict_request(request: Request) -> None:
    """A route dependency: a 422 naming each query key the route does not declare, or
    the body of a route that declares none."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    if request.query_params:
        _refuse_unknown_query(request, declared_query(route))
    if route.body_field is None and await _has_body(request):
        names = declared_query(route)
        where = f"; send {', '.join(names)} in the query" if names else ""
        msg = f"this route takes no body{where}"
        raise RequestValidationError([{"type": "no_body", "loc": ("body",), "msg": msg}])


async def _has_body(request: Request) -> bool:
    """Whether the request came with a body of at least one byte. Most need no read to
    know: HTTP/1.1 has no body without ``Content-Length`` or ``Transfer-Encoding``."""
    length = request.headers.get("content-length")
    if (length is None or length.strip() == "0") and "transfer-encoding" not in request.headers:
        return False
    try:
        return bool(await request.body())
    except ClientDisconnect:
        raise ClientGone from None  # nobody reads the answer: 499 in the access log


def _refuse_unknown_query(request: Request, declared: tuple[str, ...]) -> None:
    unknown = [key for key in dict.fromkeys(request.query_params.keys()) if key not in declared]
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", key),
                    "msg": "Extra inputs are not permitted",
                    "input": request.query_params[key],
                }
                for key in unknown
            ]
        )
