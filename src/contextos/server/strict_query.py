"""Query parameters a route does not declare are refused with a 422, as unknown body
fields are.

FastAPI drops a query key it was not told about, and the request runs as if it had not
been sent: ``DELETE /v1/memories/{id}?expected-text=...`` (a misspelt precondition)
deleted a memory someone else had changed, ``?purged=true`` deleted without purging,
``GET /v1/sessions?userid=ana`` listed every user's sessions (a review, session 34). The
body models already forbid extra fields; :func:`strict_query` does the same for the
query string of every ``/v1`` route.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

#: The query names each route declares, by route (routes live as long as the app).
_DECLARED: dict[int, frozenset[str]] = {}


def declared_query(route: APIRoute) -> frozenset[str]:
    """The query parameter names ``route`` declares, its dependencies' included."""
    names = _DECLARED.get(id(route))
    if names is None:
        found: set[str] = set()
        pending: list[Any] = [route.dependant]
        while pending:
            dependant = pending.pop()
            found.update(field.alias for field in dependant.query_params)
            pending.extend(dependant.dependencies)
        names = _DECLARED[id(route)] = frozenset(found)
    return names


async def strict_query(request: Request) -> None:
    """A route dependency: a 422 naming each query key the route does not declare."""
    route = request.scope.get("route")
    if not request.query_params or not isinstance(route, APIRoute):
        return
    declared = declared_query(route)
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
