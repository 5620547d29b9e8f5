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

A key sent twice was read as its last value: ``?user_id=ana&user_id=bob`` passed a front
end that checked the first one (Flask's ``request.args.get`` and Go's ``Values.Get`` read
it) and listed bob's memories; ``?purge=false&purge=true`` purged (a review, session 39).
A repeated key is a 422 naming it, unless the route declares the parameter a list
(``memory_type``): what may repeat is read from the route, as FastAPI reads it.

(Duplicate keys inside a JSON body are still read as the last one, as Python's ``json``
reads them: the body models are validated from the parsed object.)
"""

from __future__ import annotations

import types
from collections import Counter
from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from .window_slots import ClientGone


@dataclass(frozen=True)
class DeclaredQuery:
    """The query parameters a route declares, its dependencies' included."""

    #: Their names, in order.
    names: tuple[str, ...]
    #: Those declared as a list (``memory_type: list[...]``): the only ones that may repeat.
    lists: frozenset[str]


#: The attribute a route keeps its declared query in. Why on the route: a cache keyed
#: by ``id(route)`` outlived the app, and a later app's route made at a dead one's
#: address read the dead route's names (a route is unhashable: Starlette defines
#: ``__eq__``), so a declared key was refused with a 422.
_ATTRIBUTE = "_contextos_declared_query"


def declared_query(route: APIRoute) -> DeclaredQuery:
    """The query parameters ``route`` declares; a list is one annotated as a sequence
    or set (``list[str] | None``), which FastAPI reads every value of."""
    declared: DeclaredQuery | None = getattr(route, _ATTRIBUTE, None)
    if declared is None:
        fields: dict[str, Any] = {}
        pending: list[Any] = [route.dependant]
        while pending:
            dependant = pending.pop()
            fields.update((field.alias, field) for field in dependant.query_params)
            pending.extend(dependant.dependencies)
        lists = (k for k, f in fields.items() if _takes_many(f.field_info.annotation))
        declared = DeclaredQuery(tuple(fields), frozenset(lists))
        setattr(route, _ATTRIBUTE, declared)
    return declared


def _takes_many(annotation: Any) -> bool:
    """Whether a query parameter annotated ``annotation`` takes every value of its key:
    a list, tuple or set, alone or in a union (``list[str] | None``). Ours, not
    ``fastapi._compat``'s: a private helper may change in any FastAPI release."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_takes_many(arg) for arg in get_args(annotation))
    kind = origin or annotation
    return isinstance(kind, type) and issubclass(kind, (Sequence, Set)) and kind not in (str, bytes)


async def strict_request(request: Request) -> None:
    """A route dependency: a 422 naming each query key the route does not declare or
    that is sent more than once without being a list, or the body of a route that
    declares none."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    if request.query_params:
        _refuse_query(request, declared_query(route))
    if route.body_field is None and await _has_body(request):
        names = declared_query(route).names
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


def _refuse_query(request: Request, declared: DeclaredQuery) -> None:
    """A 422 naming each query key not declared, and each one repeated that is not a list."""
    sent = Counter(key for key, _ in request.query_params.multi_items())
    errors = [error for key, times in sent.items() if (error := _query_error(key, times, declared))]
    if errors:
        raise RequestValidationError(errors)


def _query_error(key: str, times: int, declared: DeclaredQuery) -> dict[str, Any] | None:
    """What is wrong with ``key`` sent ``times`` times, if anything."""
    if key not in declared.names:
        msg = "Extra inputs are not permitted"
        return {"type": "extra_forbidden", "loc": ("query", key), "msg": msg}
    if times > 1 and key not in declared.lists:
        msg = f"sent {times} times, but it takes one value: send it once"
        return {"type": "repeated", "loc": ("query", key), "msg": msg}
    return None
