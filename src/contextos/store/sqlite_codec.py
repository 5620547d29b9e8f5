"""Conversions between contextos values and SQLite rows (times, JSON, records)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from ..times import from_epoch, opt_epoch, to_epoch
from ..types import Filter, MemoryRecord, Scope
from .base import check_metadata_key

__all__ = ["from_epoch", "opt_epoch", "to_epoch"]  # re-exported for the SQLite store

RECORD_COLUMNS = (
    "rowid, id, tenant, user_id, agent_id, session_id, memory_type, text, context, metadata, "
    "created_at, updated_at, event_time, valid_from, valid_to, provenance, hash"
)


def dumps(value: object) -> str:
    """Compact, key-sorted JSON, so equal values are stored as equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def row_to_record(row: sqlite3.Row | tuple[Any, ...]) -> MemoryRecord:
    (
        _rowid,
        mid,
        tenant,
        user_id,
        agent_id,
        session_id,
        mtype,
        text,
        context,
        metadata,
        created,
        updated,
        event,
        vfrom,
        vto,
        provenance,
        hsh,
    ) = tuple(row)
    return MemoryRecord(
        id=mid,
        text=text,
        scope=Scope(tenant=tenant, user_id=user_id, agent_id=agent_id, session_id=session_id),
        memory_type=mtype,
        metadata=json.loads(metadata),
        created_at=from_epoch(created),
        updated_at=from_epoch(updated),
        event_time=from_epoch(event),
        valid_from=from_epoch(vfrom),
        valid_to=from_epoch(vto),
        provenance=tuple(json.loads(provenance)),
        context=context,
        hash=hsh,
    )


def filter_sql(flt: Filter, now: float, alias: str = "m") -> tuple[str, list[object]]:
    """A WHERE clause (without the keyword) and its parameters for ``flt``."""
    a = alias
    clauses = [f"{a}.tenant = ?"]
    params: list[object] = [flt.scope.tenant]
    for col in ("user_id", "agent_id", "session_id"):
        value = getattr(flt.scope, col)
        if value is not None:
            clauses.append(f"{a}.{col} = ?")
            params.append(value)
    if flt.memory_types:
        clauses.append(f"{a}.memory_type IN ({','.join('?' * len(flt.memory_types))})")
        params.extend(flt.memory_types)
    for col, op, value in (
        ("event_time", ">=", flt.event_after),
        ("event_time", "<", flt.event_before),
        ("created_at", ">=", flt.created_after),
        ("created_at", "<", flt.created_before),
    ):
        if value is not None:
            clauses.append(f"{a}.{col} {op} ?")
            params.append(to_epoch(value))
    if not flt.include_invalid:
        at = now if flt.as_of is None else to_epoch(flt.as_of)
        clauses.append(f"({a}.valid_to IS NULL OR {a}.valid_to > ?)")
        params.append(at)
        if flt.as_of is not None:
            clauses.append(f"({a}.valid_from IS NULL OR {a}.valid_from <= ?)")
            params.append(at)
    for key, value in sorted(flt.metadata.items()):
        check_metadata_key(key)
        clauses.append(f"json_extract({a}.metadata, '$.{key}') = ?")
        params.append(value)
    return " AND ".join(clauses), params


def metadata_json(metadata: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(metadata), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be JSON-serialisable: {exc}") from None
