"""Turning what users pass to ``Memory.add`` into records.

Accepts a string, a :class:`~contextos.types.Message`, a message dict
(``role``/``content`` plus optional ``name``/``speaker``, ``caption``, ids) or a
list of those. Each message becomes one episodic record holding the turn
verbatim; ``context`` gathers what helps find it later without changing it:
the speaker, the date, an image caption and, in a session, the turn it answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..times import opt_utc
from ..types import MEMORY_TYPES, MemoryRecord, MemoryType, Message, Scope, content_hash
from .render import FACT_OF, caption_of

#: Longest text accepted for one memory (characters); larger inputs are an error.
MAX_TEXT_CHARS = 100_000
#: How much of the turn a reply answers its context quotes (of the stripped text).
QUOTED_CHARS = 300

_MESSAGE_KEYS = {"role", "content", "name", "tool_call_id", "tool_calls", "metadata"}
_ROLES = {"system", "user", "assistant", "tool"}


@dataclass(frozen=True)
class AddOptions:
    """The keyword arguments of ``Memory.add``, validated."""

    scope: Scope
    metadata: Mapping[str, Any]
    event_time: datetime | None
    memory_type: MemoryType


def to_messages(messages: object) -> list[Message]:
    """Normalise the accepted input shapes to a list of messages (validating types)."""
    if isinstance(messages, (str, Message, Mapping)):
        messages = [messages]
    if not isinstance(messages, Sequence) or isinstance(messages, (bytes, bytearray)):
        raise TypeError("messages must be a string, a Message, a dict or a list of those")
    out = [_one_message(m) for m in messages]
    if not out:
        raise ValueError("nothing to add: the message list is empty")
    return out


def _one_message(item: object) -> Message:
    if isinstance(item, Message):
        return item
    if isinstance(item, str):
        return Message(role="user", content=item)
    if not isinstance(item, Mapping):
        raise TypeError(f"cannot add a {type(item).__name__}; pass text, a Message or a dict")
    content = item.get("content", item.get("text"))
    if not isinstance(content, str):
        raise TypeError("a message dict needs a string 'content'")
    role = item.get("role", "user")
    if role not in _ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {sorted(_ROLES)}")
    name = item.get("name", item.get("speaker"))
    extra = {
        k: v for k, v in item.items() if k not in _MESSAGE_KEYS and k not in ("text", "speaker")
    }
    meta = {**dict(item.get("metadata") or {}), **extra}
    return Message(
        role=role,
        content=content,
        name=name if isinstance(name, str) else None,
        tool_call_id=item.get("tool_call_id"),
        metadata=meta,
    )


def validate_options(
    scope: Scope,
    *,
    metadata: Mapping[str, Any] | None = None,
    event_time: datetime | None = None,
    memory_type: str = "episodic",
) -> AddOptions:
    """Check the keyword arguments of ``add`` and bundle them. The ids come as one
    :class:`~contextos.types.Scope`, already checked by its one rule
    (:func:`~contextos.types.scope_id`); here it must name someone."""
    if memory_type not in MEMORY_TYPES:
        raise ValueError(f"memory_type must be one of {MEMORY_TYPES}, got {memory_type!r}")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError("metadata must be a dict")
    if event_time is not None and not isinstance(event_time, datetime):
        raise TypeError("event_time must be a datetime")
    event_time = opt_utc(event_time, "event_time")
    if not scope.is_scoped():
        from ..errors import ScopeError

        raise ScopeError("add needs a user_id, agent_id or session_id to scope the memory")
    return AddOptions(scope, dict(metadata or {}), event_time, memory_type)


def build_records(
    messages: Sequence[Message], opts: AddOptions, previous: MemoryRecord | None = None
) -> list[MemoryRecord]:
    """One episodic (or ``opts.memory_type``) record per non-empty message.

    With a session, records are numbered (``metadata["seq"]``) after ``previous``,
    the session's latest record, and each is indexed with the turn it answers.
    Without one, ``previous`` is ignored and no record quotes another.
    """
    now = datetime.now(UTC)
    records: list[MemoryRecord] = []
    in_session = opts.scope.session_id is not None
    # Only a session's turns answer one another: outside one, a list of messages is a
    # batch of separate memories, none holding a copy of another's text.
    prev = _as_message(previous) if previous is not None and in_session else None
    seq = next_seq(previous) if in_session else None
    for message in messages:
        text = message.content.strip()
        if not text:
            continue
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(
                f"a memory may hold at most {MAX_TEXT_CHARS:,} characters "
                f"(got {len(text):,}); split it first"
            )
        event = message.metadata.get("event_time") or opts.event_time
        event_time = _as_datetime(event)
        meta = {**opts.metadata, **{k: v for k, v in message.metadata.items() if k != "event_time"}}
        if FACT_OF in meta:
            raise ValueError(
                f"metadata key {FACT_OF!r} is reserved: it marks a fact stored beside a turn"
            )
        meta["role"] = message.role
        if message.name:
            meta["speaker"] = message.name
        if seq is not None:
            meta["seq"] = seq
            seq += 1
        records.append(
            MemoryRecord(
                id=str(uuid.uuid4()),
                text=text,
                scope=opts.scope,
                memory_type=opts.memory_type,
                metadata=meta,
                created_at=now,
                updated_at=now,
                event_time=event_time,
                # Valid from when it was said, never after it was written: a turn dated
                # later (an event's time) holds now (``as_of`` is valid time).
                valid_from=min(event_time, now) if event_time else now,
                provenance=_provenance(message),
                context=_context(message, event_time, prev),
                hash=content_hash(text),
            )
        )
        prev = message if in_session else None
    if not records:
        raise ValueError("nothing to add: every message is empty")
    return records


def next_seq(previous: MemoryRecord | None) -> int:
    """The session position after ``previous``, the session's latest turn (0 when none):
    where an add, of turns or of inferred facts, numbers its first record."""
    seq = previous.metadata.get("seq") if previous is not None else None
    return seq + 1 if isinstance(seq, int) else 0


def _as_message(record: MemoryRecord) -> Message:
    speaker = record.metadata.get("speaker")
    return Message(
        role="user", content=record.text, name=speaker if isinstance(speaker, str) else None
    )


def _provenance(message: Message) -> tuple[str, ...]:
    source = message.metadata.get("source_id", message.metadata.get("dia_id"))
    return (str(source),) if source else ()


def _context(message: Message, event_time: datetime | None, prev: Message | None) -> str:
    parts = []
    if message.name:
        parts.append(message.name)
    if event_time is not None:
        parts.append(event_time.strftime("%d %B %Y %A"))
    caption = caption_of(message.metadata)
    if caption:
        parts.append(f"image: {caption}")
    # The turn answered, as stored (stripped): an erasure finds the quote by the stored
    # text's first characters (``store/erasure.py``), so leading blanks must not push
    # them out of the quoted 300.
    said = prev.content.strip() if prev is not None else ""
    if prev is not None and said:
        who = f"{prev.name}: " if prev.name else ""
        parts.append(f"replying to {who}{said[:QUOTED_CHARS]}")
    return " | ".join(parts)


def _as_datetime(value: object) -> datetime | None:
    return opt_utc(value, "event_time")
