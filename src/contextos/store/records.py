"""A memory record as a row of column values, in one column order for every backend.

The stores differ only in how a time and a JSON value are written (SQLite: epoch
seconds and JSON text; PostgreSQL: timestamptz and jsonb), so each passes its two
encoders and these two functions do the rest. A new record field is added here once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ..types import MemoryRecord, Scope

#: The ``memories`` columns a record is written to and read from, in this order.
RECORD_FIELDS = (
    "id",
    "tenant",
    "user_id",
    "agent_id",
    "session_id",
    "memory_type",
    "text",
    "context",
    "metadata",
    "created_at",
    "updated_at",
    "event_time",
    "valid_from",
    "valid_to",
    "provenance",
    "hash",
)


def record_values(
    r: MemoryRecord,
    now: datetime,
    *,
    time: Callable[[datetime | None], Any],
    to_json: Callable[[Any], Any],
) -> tuple[object, ...]:
    """The column values of ``r`` in ``RECORD_FIELDS`` order (creation defaults to ``now``)."""
    created = r.created_at or now
    return (
        r.id,
        r.tenant,
        r.user_id,
        r.agent_id,
        r.session_id,
        r.memory_type,
        r.text,
        r.context,
        to_json(dict(r.metadata)),
        time(created),
        time(r.updated_at or created),
        time(r.event_time),
        time(r.valid_from),
        time(r.valid_to),
        to_json(list(r.provenance)),
        r.hash,
    )


def record_from_values(
    values: Sequence[Any],
    *,
    time: Callable[[Any], datetime | None],
    from_json: Callable[[Any], Any],
) -> MemoryRecord:
    """The record of column values in ``RECORD_FIELDS`` order."""
    (mid, tenant, user_id, agent_id, session_id, mtype, text, context, metadata) = values[:9]
    created, updated, event, vfrom, vto, provenance, hsh = values[9:]
    return MemoryRecord(
        id=mid,
        text=text,
        scope=Scope(tenant=tenant, user_id=user_id, agent_id=agent_id, session_id=session_id),
        memory_type=mtype,
        metadata=from_json(metadata),
        created_at=time(created),
        updated_at=time(updated),
        event_time=time(event),
        valid_from=time(vfrom),
        valid_to=time(vto),
        provenance=tuple(from_json(provenance)),
        context=context,
        hash=hsh,
    )
