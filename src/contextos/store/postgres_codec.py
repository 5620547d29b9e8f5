"""Conversions between contextos values and PostgreSQL rows: filters, records, turns, vectors.

Kept apart from the store so the SQL a :class:`~contextos.types.Filter` becomes
can be read (and reasoned about) in one place. Semantics follow the SQLite
store's ``sqlite_codec`` exactly: naive datetimes are UTC, closed validity is
hidden unless asked for, metadata keys are identifiers with dots for nesting.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from ..times import opt_utc, utc
from ..types import Filter, MemoryRecord, Message, Scope, ToolCall, Turn
from .base import check_metadata_key

RECORD_COLUMNS = (
    "m.id, m.tenant, m.user_id, m.agent_id, m.session_id, m.memory_type, m.text, m.context, "
    "m.metadata, m.created_at, m.updated_at, m.event_time, m.valid_from, m.valid_to, "
    "m.provenance, m.hash"
)

TURN_COLUMNS = (
    "session_id, seq, role, content, name, tool_call_id, tool_calls, metadata, tokens, created_at"
)

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def jsonb(value: object) -> str:
    """Compact, key-sorted JSON text for a jsonb parameter."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be JSON-serialisable: {exc}") from None


def metadata_jsonb(metadata: Mapping[str, Any]) -> str:
    return jsonb(dict(metadata))


def record_from_row(row: Sequence[Any]) -> MemoryRecord:
    (
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
    ) = row
    return MemoryRecord(
        id=mid,
        text=text,
        scope=Scope(tenant=tenant, user_id=user_id, agent_id=agent_id, session_id=session_id),
        memory_type=mtype,
        metadata=metadata,
        created_at=opt_utc(created),
        updated_at=opt_utc(updated),
        event_time=opt_utc(event),
        valid_from=opt_utc(vfrom),
        valid_to=opt_utc(vto),
        provenance=tuple(provenance),
        context=context,
        hash=hsh,
    )


def record_params(r: MemoryRecord, now: datetime) -> tuple[object, ...]:
    created = opt_utc(r.created_at) or now
    return (
        r.tenant,
        r.id,
        r.user_id,
        r.agent_id,
        r.session_id,
        r.memory_type,
        r.text,
        r.context,
        metadata_jsonb(r.metadata),
        created,
        opt_utc(r.updated_at) or created,
        opt_utc(r.event_time),
        opt_utc(r.valid_from),
        opt_utc(r.valid_to),
        jsonb(list(r.provenance)),
        r.hash,
    )


def filter_sql(flt: Filter, now: datetime) -> tuple[str, list[object]]:
    """A WHERE clause (without the keyword, over alias ``m``) and its parameters."""
    clauses = ["m.tenant = %s"]
    params: list[object] = [flt.scope.tenant]
    for col in ("user_id", "agent_id", "session_id"):
        value = getattr(flt.scope, col)
        if value is not None:
            clauses.append(f"m.{col} = %s")
            params.append(value)
    if flt.memory_types:
        clauses.append("m.memory_type = ANY(%s)")
        params.append(list(flt.memory_types))
    for col, op, value in (
        ("event_time", ">=", flt.event_after),
        ("event_time", "<", flt.event_before),
        ("created_at", ">=", flt.created_after),
        ("created_at", "<", flt.created_before),
    ):
        if value is not None:
            clauses.append(f"m.{col} {op} %s")
            params.append(utc(value))
    if not flt.include_invalid:
        at = now if flt.as_of is None else utc(flt.as_of)
        clauses.append("(m.valid_to IS NULL OR m.valid_to > %s)")
        params.append(at)
        if flt.as_of is not None:
            clauses.append("(m.valid_from IS NULL OR m.valid_from <= %s)")
            params.append(at)
    for key, value in sorted(flt.metadata.items()):
        clauses.append("m.metadata @> %s::jsonb")
        params.append(jsonb(_nested(key, value)))
    return " AND ".join(clauses), params


def _nested(key: str, value: object) -> dict[str, Any]:
    """``{"a": {"b": value}}`` for key ``a.b``: a jsonb containment probe (GIN-indexed)."""
    check_metadata_key(key)
    probe: Any = value
    for part in reversed(key.split(".")):
        probe = {part: probe}
    return dict(probe)


def query_words(text: str, stopwords: frozenset[str]) -> list[str]:
    """The distinct non-stopword words of ``text``, lower-cased, at most 64."""
    words: list[str] = []
    for w in _WORD.findall(text.lower()):
        if w not in stopwords and w not in words:
            words.append(w)
    return words[:64]


def or_tsquery(words: Sequence[str]) -> str:
    """A ``to_tsquery`` expression matching any of ``words`` (each is ``[^\\W_]+``)."""
    return " | ".join(f"'{w}'" for w in words)


def vector_text(vec: np.ndarray[Any, Any]) -> str:
    """pgvector's text form, ``[x,y,...]``, exact for float32."""
    return "[" + ",".join(repr(float(x)) for x in vec) + "]"


def turn_params(
    scope: Scope, seq: int, m: Message, tokens: int, now: datetime
) -> tuple[object, ...]:
    calls = jsonb([[c.id, c.name, c.arguments] for c in m.tool_calls])
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
        calls,
        metadata_jsonb(m.metadata),
        tokens,
        now,
    )


def turn_from_row(r: Sequence[Any]) -> Turn:
    (session_id, seq, role, content, name, tool_call_id, tool_calls, metadata, tokens, created) = r
    msg = Message(
        role=role,
        content=content,
        name=name,
        tool_call_id=tool_call_id,
        tool_calls=tuple(ToolCall(*c) for c in tool_calls),
        metadata=metadata,
    )
    return Turn(session_id=session_id, seq=seq, message=msg, tokens=tokens, created_at=utc(created))
