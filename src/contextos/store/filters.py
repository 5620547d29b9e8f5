"""A :class:`~contextos.types.Filter` as a SQL WHERE clause, for every backend.

The clause is the same for SQLite and PostgreSQL but for four things, which each
store passes as a :class:`Dialect`: its parameter mark, how it writes a time, how it
tests a type against a list, and how it looks into the metadata JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..types import Filter, check_metadata_key, metadata_paths


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends' WHERE clauses."""

    mark: str
    time: Callable[[datetime], object]
    #: (alias, values) -> (clause, params) testing ``memory_type`` against ``values``
    one_of: Callable[[str, Sequence[str]], tuple[str, list[object]]]
    #: (alias, path, value) -> (clause, param) testing the metadata value at ``path``
    #: (its keys, outermost first)
    metadata: Callable[[str, Sequence[str], object], tuple[str, object]]
    #: (alias, dotted key, strings) -> (clause, params): the metadata value is a string
    #: among ``strings`` (:func:`pointing_clause`)
    metadata_in: Callable[[str, str, Sequence[str]], tuple[str, list[object]]]


def open_clause(alias: str, now: str) -> str:
    """The SQL test that a record of ``alias`` is open at ``now`` (a parameter mark or a
    SQL time): no ``valid_to``, or one still ahead that no close wrote.

    Why the close: ``valid_to`` is stamped with the closing writer's clock, so a reader
    whose clock was behind it (another app server, a host whose clock stepped back)
    saw a replaced fact as current beside the fact that replaced it, for as long as the
    clocks differed (a review). A close writes ``valid_to`` no later than the
    ``updated_at`` of the same write; an end still to come (a fact said to hold until a
    date) lies after it. So a closed record is told by its own two times, whatever the
    reader's clock. :meth:`~contextos.types.Filter.matches` holds the same rule."""
    return (
        f"({alias}.valid_to IS NULL OR "
        f"({alias}.valid_to > {now} AND {alias}.valid_to > {alias}.updated_at))"
    )


def where_clause(
    flt: Filter, now: datetime, dialect: Dialect, alias: str = "m"
) -> tuple[str, list[object]]:
    """A WHERE clause (without the keyword) over ``alias`` and its parameters."""
    a, mark = alias, dialect.mark
    clauses = [f"{a}.tenant = {mark}"]
    params: list[object] = [flt.scope.tenant]
    for col in ("user_id", "agent_id", "session_id"):
        value = getattr(flt.scope, col)
        if value is not None:
            clauses.append(f"{a}.{col} = {mark}")
            params.append(value)
    if flt.no_user:
        clauses.append(f"{a}.user_id IS NULL")
    if flt.exclude_session is not None:
        clauses.append(f"({a}.session_id IS NULL OR {a}.session_id <> {mark})")
        params.append(flt.exclude_session)
    if flt.memory_types:
        clause, values = dialect.one_of(a, flt.memory_types)
        clauses.append(clause)
        params.extend(values)
    # A memory without an event_time (unknown) is placed by when it was added.
    event = f"COALESCE({a}.event_time, {a}.created_at)"
    for col, op, bound in (
        (event, ">=", flt.event_after),
        (event, "<", flt.event_before),
        (f"{a}.created_at", ">=", flt.created_after),
        (f"{a}.created_at", "<", flt.created_before),
    ):
        if bound is not None:
            clauses.append(f"{col} {op} {mark}")
            params.append(dialect.time(bound))
    if not flt.include_invalid:
        if flt.as_of is None:
            clauses.append(open_clause(a, mark))
            params.append(dialect.time(now))
        else:
            at = dialect.time(flt.as_of)
            clauses.append(f"({a}.valid_to IS NULL OR {a}.valid_to > {mark})")
            clauses.append(f"({a}.valid_from IS NULL OR {a}.valid_from <= {mark})")
            params += [at, at]
    for key, value in sorted(flt.metadata.items()):
        check_metadata_key(key)
        tests = [dialect.metadata(a, path, value) for path in metadata_paths(key)]
        clauses.append("(" + " OR ".join(clause for clause, _ in tests) + ")")
        params.extend(param for _, param in tests)
    return " AND ".join(clauses), params


def pointing_clause(
    dialect: Dialect, key: str, ids: Sequence[str], alias: str = "m"
) -> tuple[str, list[object]]:
    """A clause (and its parameters) true of the records whose ``metadata[key]`` is one
    of ``ids``: the facts of many turns (``fact_of``) in one read, where a filter on one
    value read the turns' scope once per turn."""
    check_metadata_key(key)
    return dialect.metadata_in(alias, key, list(ids))
