"""Conversions between contextos values and PostgreSQL rows: filters, records, turns, vectors.

Kept apart from the store so the SQL a :class:`~contextos.types.Filter` becomes
can be read (and reasoned about) in one place. Semantics follow the SQLite
store's ``sqlite_codec`` exactly: naive datetimes are UTC, closed validity is
hidden unless asked for, metadata keys are identifiers with dots for nesting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from contextos.store import records
from contextos.store.filters import Dialect, where_clause
from contextos.text.query import keyword_text
from contextos.times import opt_utc, utc
from contextos.types import Filter, MemoryRecord, Message, Scope, Turn, fits_int64

RECORD_COLUMNS = ", ".join(f"m.{name}" for name in records.RECORD_FIELDS)

TURN_COLUMNS = records.TURN_COLUMNS


def jsonb(value: object) -> str:
    """The JSON text of a jsonb parameter (``records.stored_json``)."""
    return records.stored_json(value)


def _wide_ints_as_floats(value: Any) -> Any:
    """A memory's metadata as jsonb gives it back, its integers past 64 bits as floats.

    Why: jsonb keeps numbers as ``numeric``, whose text has no exponent, so a float
    stored as ``1e300`` came back as a 301-digit int. A search filtered on the value
    written missed it (its re-check compared the int to the float), and the record as
    read could not be written again ("metadata integers must fit in 64 bits"). A
    memory's metadata holds no integer past 64 bits (``types.fits_int64``, refused at
    write), so one read back was a float. Only here: a turn's or a session's metadata
    may hold wider integers, which jsonb keeps exactly."""
    if isinstance(value, dict):
        return {k: _wide_ints_as_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wide_ints_as_floats(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not fits_int64(value):
        return float(value)
    return value


def metadata_jsonb(metadata: Mapping[str, Any]) -> str:
    return jsonb(dict(metadata))


def record_from_row(row: Sequence[Any]) -> MemoryRecord:
    """A record of a row selected with ``RECORD_COLUMNS``."""
    return records.record_from_values(row, time=opt_utc, from_json=_wide_ints_as_floats)


def record_params(r: MemoryRecord, now: datetime) -> tuple[object, ...]:
    """Column values in ``records.RECORD_FIELDS`` order, for an INSERT."""
    return records.record_values(r, now, time=opt_utc, to_json=jsonb)


def filter_sql(flt: Filter, now: datetime) -> tuple[str, list[object]]:
    """A WHERE clause (without the keyword, over alias ``m``) and its parameters."""
    return where_clause(flt, now, POSTGRES)


POSTGRES = Dialect(
    mark="%s",
    time=utc,
    one_of=lambda a, values: (f"{a}.memory_type = ANY(%s)", [list(values)]),
    # jsonb containment: served by the metadata GIN index
    metadata=lambda a, path, value: (f"{a}.metadata @> %s::jsonb", jsonb(_nested(path, value))),
    metadata_in=lambda a, key, values: _metadata_in(a, key, values),
)


def _metadata_in(alias: str, key: str, values: Sequence[str]) -> tuple[str, list[object]]:
    """One value: a containment probe, which the metadata GIN index serves (a look-up
    across the tenant, for a turn already gone). Several: one pass over the scope's
    rows, each value compared once (OR'd probes tested every row 100 times: 60 ms
    against 2 ms for 100 turns of a 4,000-record session)."""
    if len(values) == 1:
        return f"{alias}.metadata @> %s::jsonb", [jsonb(_nested(key.split("."), values[0]))]
    # ``->`` by text, not ``#>`` by path: a numeric part names an object key, as in a
    # metadata filter and in SQLite, never an array element
    parts = key.split(".")
    at = alias + ".metadata" + " -> %s" * len(parts)
    clause = f"(jsonb_typeof({at}) = 'string' AND {at} #>> '{{}}' = ANY(%s))"
    return clause, [*parts, *parts, list(values)]


def _nested(path: Sequence[str], value: object) -> dict[str, Any]:
    """``{"a": {"b": value}}`` for path ``("a", "b")``: a jsonb containment probe
    (GIN-indexed)."""
    probe: Any = value
    for part in reversed(path):
        probe = {part: probe}
    return dict(probe)


def tsquery_words(words: Sequence[str], *, fold: bool = True) -> list[str]:
    """The query's words (``text.query.query_terms``) cut as ``memories.tsv`` cuts a
    text (``text.query.keyword_text``, schema V10): NFC-normalised, folded ("ß" "ss",
    "ς" "σ", full-width ASCII ASCII) and split at ``schema.SEPARATOR_RANGES``;
    distinct, in order. ``fold`` false: not folded, as a database that is not UTF-8
    holds its words (V10 cannot fold them there).

    The query side's words hold no separator (a test checks every range against it),
    so this only normalises and folds them; it also keeps ``or_tsquery`` from ever
    quoting a ``'`` or a ``\\``, both separators."""
    out: list[str] = []
    for word in words:
        for piece in keyword_text(word, fold=fold).split(" "):
            if piece and piece not in out:
                out.append(piece)
    return out


def or_tsquery(words: Sequence[str]) -> str:
    """A ``to_tsquery`` expression matching any of ``words`` (of ``tsquery_words``)."""
    return " | ".join(f"'{w}'" for w in words)


def vector_text(vec: np.ndarray[Any, Any]) -> str:
    """pgvector's text form, ``[x,y,...]``, exact for float32."""
    return "[" + ",".join(repr(float(x)) for x in vec) + "]"


def turn_params(
    scope: Scope, seq: int, m: Message, tokens: int, now: datetime
) -> tuple[object, ...]:
    """Column values in ``records.TURN_FIELDS`` order, for an INSERT."""
    return records.turn_values(scope, seq, m, tokens, now, time=utc, to_json=jsonb)


def turn_from_row(r: Sequence[Any]) -> Turn:
    """A turn of a row selected with ``TURN_COLUMNS``."""
    return records.turn_from_values(r, time=utc, from_json=lambda value: value)
