"""A memory record as a row of column values, in one column order for every backend.

The stores differ only in how a time and a JSON value are written (SQLite: epoch
seconds and JSON text; PostgreSQL: timestamptz and jsonb), so each passes its two
encoders and these two functions do the rest. A new record field is added here once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ..types import MemoryRecord, Message, Scope, ToolCall, Turn

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


#: The ``turns`` columns, in the order both stores insert them.
TURN_FIELDS = (
    "tenant",
    "session_id",
    "seq",
    "user_id",
    "agent_id",
    "role",
    "content",
    "name",
    "tool_call_id",
    "tool_calls",
    "metadata",
    "tokens",
    "created_at",
)


def turn_values(
    scope: Scope,
    seq: int,
    m: Message,
    tokens: int,
    now: datetime,
    *,
    time: Callable[[datetime], Any],
    to_json: Callable[[Any], Any],
) -> tuple[object, ...]:
    """The column values of one logged message in ``TURN_FIELDS`` order."""
    return (
        scope.tenant,
        scope.session_id,
        seq,
        scope.user_id,
        scope.agent_id,
        m.role,
        m.content,
        m.name,
        m.tool_call_id,
        to_json([[c.id, c.name, c.arguments] for c in m.tool_calls]),
        to_json(dict(m.metadata)),
        tokens,
        time(now),
    )


def turn_from_values(
    values: Sequence[Any],
    *,
    time: Callable[[Any], datetime],
    from_json: Callable[[Any], Any],
) -> Turn:
    """The turn of column values in ``TURN_FIELDS`` order."""
    (_tenant, session_id, seq, _user, _agent, role, content, name, tool_call_id) = values[:9]
    tool_calls, metadata, tokens, created = values[9:]
    msg = Message(
        role=role,
        content=content,
        name=name,
        tool_call_id=tool_call_id,
        tool_calls=tuple(ToolCall(*c) for c in from_json(tool_calls)),
        metadata=from_json(metadata),
    )
    return Turn(
        session_id=session_id, seq=seq, message=msg, tokens=tokens, created_at=time(created)
    )
