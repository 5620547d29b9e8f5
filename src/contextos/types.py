"""Plain value types shared across contextos.

Everything here is a frozen dataclass: easy to compare in tests, safe to pass
between threads, and free of any backend's own result types.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

MemoryType = Literal["episodic", "semantic", "procedural"]
MEMORY_TYPES: tuple[MemoryType, ...] = ("episodic", "semantic", "procedural")

HistoryEventKind = Literal["ADD", "UPDATE", "DELETE"]

Role = Literal["system", "user", "assistant", "tool"]

DEFAULT_TENANT = "default"


def content_hash(text: str) -> str:
    """Stable hash of a memory's text, used to spot exact duplicates."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Scope:
    """Who a memory belongs to. Tenant isolates customers; the rest narrow within one."""

    tenant: str = DEFAULT_TENANT
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None

    def is_scoped(self) -> bool:
        """True when at least one of user/agent/session narrows the tenant."""
        return any(v is not None for v in (self.user_id, self.agent_id, self.session_id))


@dataclass(frozen=True)
class MemoryRecord:
    """One stored memory: a turn (episodic), a fact (semantic) or a rule (procedural).

    ``context`` is extra text indexed for retrieval but not returned as the
    memory itself (speaker, date, image caption, the turn it answers).
    ``valid_from``/``valid_to`` bound when the memory was believed true; an
    UPDATE or DELETE by reconciliation closes ``valid_to`` instead of erasing.
    """

    id: str
    text: str
    scope: Scope = field(default_factory=Scope)
    memory_type: MemoryType = "episodic"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    event_time: datetime | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    provenance: tuple[str, ...] = ()
    context: str = ""
    hash: str = ""

    @property
    def tenant(self) -> str:
        return self.scope.tenant

    @property
    def user_id(self) -> str | None:
        return self.scope.user_id

    @property
    def agent_id(self) -> str | None:
        return self.scope.agent_id

    @property
    def session_id(self) -> str | None:
        return self.scope.session_id


@dataclass(frozen=True)
class Filter:
    """What a read may see. ``scope`` is required for searches (see ScopeError).

    Times are compared as timezone-aware datetimes (naive ones are taken as UTC).
    ``as_of`` keeps only memories valid at that instant; by default, records
    whose validity was closed (superseded or deleted facts) are hidden.
    """

    scope: Scope = field(default_factory=Scope)
    memory_types: tuple[MemoryType, ...] = ()
    event_after: datetime | None = None
    event_before: datetime | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    as_of: datetime | None = None
    include_invalid: bool = False
    metadata: Mapping[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """A search result: the record, its fused score and how each retriever ranked it."""

    record: MemoryRecord
    score: float
    lexical_rank: int | None = None
    dense_rank: int | None = None
    tokens: int = 0
    #: Cosine similarity of the query and the memory (the embedder's scale, the same
    #: for every query, unlike ``score``); what ``search(min_score=...)`` compares.
    #: None when the memory has no vector yet or fell outside the dense candidates.
    relevance: float | None = None


@dataclass(frozen=True)
class HistoryEvent:
    """One change to a memory, kept even after the memory is deleted."""

    memory_id: str
    event: HistoryEventKind
    old_text: str | None
    new_text: str | None
    at: datetime
    actor: str = "api"


@dataclass(frozen=True)
class ToolCall:
    """A tool invocation requested by the assistant."""

    id: str
    name: str
    arguments: str  # JSON text, kept verbatim so the cached prefix stays byte-stable


@dataclass(frozen=True)
class Message:
    """One chat message in provider-neutral form."""

    role: Role
    content: str
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Turn:
    """A message as logged in a session: position, token count and time."""

    session_id: str
    seq: int
    message: Message
    tokens: int
    created_at: datetime


@dataclass(frozen=True)
class Usage:
    """Token usage of one provider response, cache writes and reads included."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0
