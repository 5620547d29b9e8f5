"""Conversions between contextos values and SQLite rows (times, JSON, records)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from contextos.store import records
from contextos.store.filters import Dialect, where_clause
from contextos.times import from_epoch, opt_epoch, to_epoch
from contextos.types import Filter, MemoryRecord, Message, Scope, Turn

__all__ = ["from_epoch", "opt_epoch", "to_epoch"]  # re-exported for the SQLite store

RECORD_COLUMNS = "rowid, " + ", ".join(records.RECORD_FIELDS)


def dumps(value: object) -> str:
    """Compact, key-sorted JSON, so equal values are stored as equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def row_to_record(row: sqlite3.Row | tuple[Any, ...]) -> MemoryRecord:
    """A record of a row selected with ``RECORD_COLUMNS`` (rowid first)."""
    return records.record_from_values(tuple(row)[1:], time=from_epoch, from_json=_from_json)


def record_row(r: MemoryRecord, now: float) -> tuple[object, ...]:
    """Column values in ``records.RECORD_FIELDS`` order, for an INSERT."""
    return records.record_values(r, from_epoch(now), time=opt_epoch, to_json=_json_text)


TURN_COLUMNS = records.TURN_COLUMNS


def turn_row(scope: Scope, seq: int, m: Message, tokens: int, now: float) -> tuple[object, ...]:
    """Column values in ``records.TURN_FIELDS`` order, for an INSERT."""
    return records.turn_values(
        scope, seq, m, tokens, from_epoch(now), time=to_epoch, to_json=_json_text
    )


def turn_from_row(row: Sequence[Any]) -> Turn:
    """A turn of a row selected with ``TURN_COLUMNS``."""
    return records.turn_from_values(row, time=from_epoch, from_json=_from_json)


_EMPTY_JSON: dict[str, Callable[[], Any]] = {"{}": dict, "[]": list}
_decode_json = json.JSONDecoder().decode


def _from_json(text: str) -> Any:
    """``json.loads`` for the metadata and provenance columns; most rows hold an empty
    object or list (``dumps`` writes them as ``{}`` and ``[]``), built without parsing."""
    empty = _EMPTY_JSON.get(text)
    return empty() if empty is not None else _decode_json(text)


def _json_text(value: object) -> str:
    if isinstance(value, dict):
        return metadata_json(value)
    return json.dumps(value)


def filter_sql(flt: Filter, now: float, alias: str = "m") -> tuple[str, list[object]]:
    """A WHERE clause (without the keyword) and its parameters for ``flt``."""
    return where_clause(flt, from_epoch(now), SQLITE, alias)


SQLITE = Dialect(
    mark="?",
    time=to_epoch,
    one_of=lambda a, values: (f"{a}.memory_type IN ({','.join('?' * len(values))})", [*values]),
    metadata=lambda a, key, value: _metadata_clause(a, key, value),
    metadata_in=lambda a, key, values: (
        f"(json_type({a}.metadata, '$.{key}') = 'text' "
        f"AND json_extract({a}.metadata, '$.{key}') IN (SELECT value FROM json_each(?)))",
        [json.dumps(list(values))],
    ),
)


def _metadata_clause(alias: str, path: Sequence[str], value: object) -> tuple[str, object]:
    """One metadata test, as PostgreSQL's ``@>`` answers it (``Filter``'s rule): the
    JSON type must agree, not only the value. ``json_extract`` gives 1 for ``true``
    (so ``True`` matched ``1`` and ``1.0``, and ``1`` matched ``true``), and a JSON
    array's or object's text for a string to equal."""
    # every key quoted: ``"a.b"`` is one key (a filter key's parts hold no quote)
    at = f"{alias}.metadata, '$" + "".join(f'."{part}"' for part in path) + "'"
    if isinstance(value, bool):
        return f"json_type({at}) = ?", "true" if value else "false"
    kinds = "'text'" if isinstance(value, str) else "'integer', 'real'"
    return f"(json_extract({at}) = ? AND json_type({at}) IN ({kinds}))", value


def metadata_json(metadata: Mapping[str, Any]) -> str:
    """The metadata column's text (``records.stored_json``)."""
    return records.stored_json(dict(metadata))
