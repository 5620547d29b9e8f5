"""Plain value types shared across contextos.

Everything here is a frozen dataclass: easy to compare in tests, safe to pass
between threads, and free of any backend's own result types.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypedDict, get_args

from .errors import ScopeError
from .times import iso

MemoryType = Literal["episodic", "semantic", "procedural"]
MEMORY_TYPES: tuple[MemoryType, ...] = ("episodic", "semantic", "procedural")

HistoryEventKind = Literal["ADD", "UPDATE", "DELETE"]

Role = Literal["system", "user", "assistant", "tool"]
#: The roles a message may have (:data:`Role`).
ROLES: frozenset[str] = frozenset(get_args(Role))


def check_role(role: object) -> None:
    """Refuse a message role that is not one of :data:`ROLES`, where messages come in
    (``Memory.add``, every append to a session log). Why: ``Message("bot", ...)`` was
    stored as given and later sent to the provider as a user turn."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {sorted(ROLES)}")


DEFAULT_TENANT = "default"


def content_hash(text: str) -> str:
    """Stable hash of a memory's text, used to spot exact duplicates.

    The text in Unicode's composed form (NFC): "café" typed on one keyboard and pasted
    from a decomposed source ("cafe" + a combining accent, as macOS file names give
    it) are one text to a reader, and were stored twice. Text already composed, nearly
    all text, hashes as it did before this rule.

    Not :func:`contextos.text.canonical.canonical` (which also drops invisible format
    characters, as the claims and the reconciler compare texts): every stored record
    keeps the hash it was written with, so a rule that hashed a stored text otherwise
    made its repeat a second record in every store written before it, and beside a
    process of an older version (a review, s58)."""
    composed = unicodedata.normalize("NFC", text.strip())
    return hashlib.sha256(composed.encode("utf-8")).hexdigest()[:32]


#: The longest user, agent or session id, everywhere (:func:`scope_id`).
MAX_SCOPE_ID = 256


def scope_id(value: object, name: str = "id") -> str | None:
    """The one rule for a user, agent or session id, wherever one is passed.

    ``None`` means "not given": the scope is not narrowed by that id. Anything
    else must be a string with a non-space character, kept as given. An empty or
    blank id is a :class:`~contextos.errors.ScopeError` (a ``ValueError``), never
    read as "not given": ``user_id=""`` from an unset variable would otherwise file
    a memory under nobody, or read one session's memories instead of the user's.
    A non-string is a ``TypeError``. :class:`Scope` applies this to every scope
    it holds, so the Memory verbs, sessions, the HTTP API, MCP and the CLI agree.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string or None, not {type(value).__name__}")
    if not value.strip():
        raise ScopeError(
            f"{name} is empty or blank ({value!r}): give a non-blank id, or leave it out"
        )
    if len(value) > MAX_SCOPE_ID:
        # The HTTP API, MCP and the inspector refuse longer ids: what the library or
        # the CLI stored under one could not be read or forgotten there (a review).
        raise ScopeError(f"{name} is {len(value):,} characters long: at most {MAX_SCOPE_ID}")
    try:  # no store can write it (see ``engine.message_text.lone_surrogate_at``)
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ScopeError(
            f"{name} is not valid Unicode text (lone surrogate at index {exc.start})"
        ) from None
    return value


_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")


def validate_tenant(tenant: object) -> str:
    """The one rule for a tenant name where one is given (``Memory``, ``Session``, the
    CLI's ``--tenant``, the key table): 1-128 characters of letters, digits and
    ``_.:@-``, starting with a letter or digit.

    Why: the CLI and the key table refused other names, but ``Memory(tenant=...)`` took
    any, so rows written under ``""``, ``"a b"`` or ``5`` could never be read from the
    CLI or the server. Not applied by :class:`Scope`: a store's reads by an unknown or
    malformed tenant answer as for any tenant without rows (``tests/test_store_nul_ids.py``)."""
    if not isinstance(tenant, str):
        raise TypeError(f"tenant must be a string, not {type(tenant).__name__}")
    if not _TENANT.fullmatch(tenant):  # not .match: "$" lets "acme\n" through
        raise ValueError(  # as a bad flag value: the CLI's exit 2
            "tenant must be 1-128 characters of letters, digits and _.:@- (starting with "
            f"a letter or digit), not {tenant[:40]!r}"
        )
    return tenant


class ScopeIds(TypedDict):
    """A scope as the keywords of ``Memory``'s verbs (None: not narrowed by that id):
    ``memory.add(text, **scope.ids())``. Callers that hold a scope pass it as one value
    instead of repeating ``user_id``/``agent_id``/``session_id``."""

    user_id: str | None
    agent_id: str | None
    session_id: str | None


def scope_ids(
    user_id: str | None = None, agent_id: str | None = None, session_id: str | None = None
) -> ScopeIds:
    """The one way to make :class:`ScopeIds`, each id checked by :func:`scope_id`: the
    Memory verbs' keywords as a scope, a request body's or a CLI's flags' ids, a
    session context's."""
    return ScopeIds(
        user_id=scope_id(user_id, "user_id"),
        agent_id=scope_id(agent_id, "agent_id"),
        session_id=scope_id(session_id, "session_id"),
    )


@dataclass(frozen=True)
class Scope:
    """Who a memory belongs to. Tenant isolates customers; the rest narrow within one."""

    tenant: str = DEFAULT_TENANT
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None

    def __post_init__(self) -> None:
        scope_id(self.user_id, "user_id")
        scope_id(self.agent_id, "agent_id")
        scope_id(self.session_id, "session_id")

    @classmethod
    def stored(
        cls, tenant: str, user_id: str | None, agent_id: str | None, session_id: str | None
    ) -> Scope:
        """The scope of a stored row, as an earlier version wrote it, without the id
        rule: the rule is for ids coming in, and a row written before it (a blank
        agent id put through ``Store.put``) must still be read, not fail every
        search, get and list that meets it."""
        scope = object.__new__(cls)
        for name, value in zip(
            ("tenant", "user_id", "agent_id", "session_id"),
            (tenant, user_id, agent_id, session_id),
            strict=True,
        ):
            object.__setattr__(scope, name, value)
        return scope

    def is_scoped(self) -> bool:
        """True when at least one of user/agent/session narrows the tenant."""
        return any(v is not None for v in self.within_tenant())

    def for_reading(self) -> Scope:
        """This scope, if it may be read: one that names a user, agent or session (a
        ``ScopeError`` otherwise), the one rule of every read (``Memory``, the server's
        inspector)."""
        if not self.is_scoped():
            raise ScopeError(
                "reading memories needs a user_id, agent_id or session_id; "
                "an unscoped read would mix users' memories"
            )
        return self

    def within_tenant(self) -> tuple[str | None, str | None, str | None]:
        """``(user_id, agent_id, session_id)``: compare it to tell a scope exactly
        (a search for a user also finds that user's session and agent memories)."""
        return (self.user_id, self.agent_id, self.session_id)

    def ids(self) -> ScopeIds:
        """The scope as ``Memory``'s keywords (the tenant is always the Memory's own)."""
        return scope_ids(self.user_id, self.agent_id, self.session_id)


@dataclass(frozen=True)
class TokenCount:
    """The tokens of a memory's rendering, as counted when it was written, and what
    counted it and what it counted (``"<tokenizer name>/<rendering version>/<digest of
    the rendering>"``, see :mod:`contextos.memory.record_tokens`): a reader with another
    tokenizer, after the rendering changed, or reading a row another writer changed
    since, counts again instead of trusting it."""

    tokens: int
    counted_with: str


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
    #: A cache, not content: left out of equality and of ``to_dict``; None when the
    #: writer did not count it (rows older than the count, writes outside ``Memory``).
    token_count: TokenCount | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON data (times in ISO 8601, UTC as ``Z``:
        :func:`~contextos.times.iso`): one shape for the CLI's
        ``--json``, MCP tool results and the HTTP API's ``RecordOut``."""
        return {
            "id": self.id,
            "text": self.text,
            "memory_type": self.memory_type,
            "user_id": self.user_id,
            "agent_id": self.agent_id,
            "session_id": self.session_id,
            "metadata": dict(self.metadata),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "event_time": _iso(self.event_time),
            "valid_from": _iso(self.valid_from),
            "valid_to": _iso(self.valid_to),
            "provenance": list(self.provenance),
        }

    @property
    def tenant(self) -> str:
        """The customer the memory belongs to (``scope.tenant``)."""
        return self.scope.tenant

    @property
    def user_id(self) -> str | None:
        """Whose memory it is (``scope.user_id``)."""
        return self.scope.user_id

    @property
    def agent_id(self) -> str | None:
        """The agent it belongs to (``scope.agent_id``)."""
        return self.scope.agent_id

    @property
    def session_id(self) -> str | None:
        """The conversation it came from (``scope.session_id``)."""
        return self.scope.session_id


@dataclass(frozen=True)
class Filter:
    """What a read may see. ``scope`` is required for searches (see ScopeError).

    Times are compared as timezone-aware datetimes (naive ones are taken as UTC).
    ``as_of`` keeps only memories valid at that instant (valid time: a memory holds
    from when it was said, its ``event_time`` but never after it was written, until a
    later statement replaced or ended it); ``created_before``/``created_after`` ask
    what had been written by then instead. ``event_after``/``event_before`` bound the
    memory's ``event_time`` (start included, end excluded); a memory whose event time is
    unknown (None: added without one) is placed by when it was added, its
    ``created_at``, on every store alike. By default, records whose validity was
    closed (superseded or deleted facts) are hidden.

    ``exclude_session`` leaves out the memories of that session (a context window's
    search: the session's own log already holds what it remembered).

    ``no_user=True`` keeps only the memories of no user: with ``agent_id``, the
    agent's own, not those of its users (which a scope of the agent alone also
    matches). Why in the filter: read wide and kept after, an agent's own core
    blocks and memory files were read back behind every one of its users' (40 ms
    against 2 ms at 3,000 users, a review); each store now leaves the users' out
    where it reads. A scope that names a user as well is refused (ValueError).

    ``memory_types`` is a sequence of known types (``("episodic",)``); a string or an
    unknown type is refused with ValueError (a string was read letter by letter and
    matched nothing, silently). ``metadata`` maps dotted keys (``a.b`` looks into
    ``{"a": {"b": ...}}``) to the value the record's must equal, on every store alike
    (:func:`check_metadata_filter_value`): a str matches only a JSON string, a bool
    only a JSON ``true``/``false``, an int or float any JSON number equal to it (``1``
    matches ``1`` and ``1.0``, never ``true``); other values, None included, are
    refused with ValueError, as is a key that is no dotted path
    (:func:`check_metadata_key`: ``a..b``, ``k w``, a control character).
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
    exclude_session: str | None = None
    no_user: bool = False

    def __post_init__(self) -> None:
        """Refuse a filter the stores would answer differently, or answer with nothing
        when the caller meant something (see the class docstring)."""
        types: object = self.memory_types
        if isinstance(types, str | bytes):
            raise ValueError(
                f"memory_types must be a sequence of memory types such as ('episodic',), "
                f"not the string {types!r}"
            )
        as_tuple = tuple(self.memory_types)
        for kind in as_tuple:
            if kind not in MEMORY_TYPES:
                raise ValueError(f"unknown memory type {kind!r}; expected one of {MEMORY_TYPES}")
        if type(types) is not tuple:  # a list: kept as the field's (hashable) tuple
            object.__setattr__(self, "memory_types", as_tuple)
        scope_id(self.exclude_session, "exclude_session")
        if not isinstance(self.no_user, bool):
            raise TypeError(f"no_user must be True or False, not {self.no_user!r}")
        if self.no_user and self.scope.user_id is not None:
            raise ValueError(
                f"no_user=True keeps the memories of no user; "
                f"it cannot be read with user_id {self.scope.user_id!r}"
            )
        if not isinstance(self.metadata, Mapping):
            raise TypeError("the metadata filter must be a mapping of key to value")
        for key, value in self.metadata.items():
            check_metadata_key(key)  # not only in a store's SQL: with no hits it answered []
            check_metadata_filter_value(key, value)

    def matches(self, record: MemoryRecord, now: datetime) -> bool:
        """Whether ``record`` passes every part of this filter at instant ``now``.

        Stores filter in SQL or in their vector index; search results are checked
        again with this one function before they are returned, so an index that is
        stale (another process deleted a record and its id came back) can never
        hand a caller a record outside its scope.
        """
        scope = self.scope
        have = record.scope
        if have.tenant != scope.tenant:
            return False
        # Cheap tests first, each skipped when the filter leaves that part open: a
        # search checks its 50 candidates with this, so it is on every request's path.
        if scope.user_id is not None and scope.user_id != have.user_id:
            return False
        if self.no_user and have.user_id is not None:
            return False
        if scope.agent_id is not None and scope.agent_id != have.agent_id:
            return False
        if scope.session_id is not None and scope.session_id != have.session_id:
            return False
        if self.exclude_session is not None and self.exclude_session == have.session_id:
            return False
        if self.memory_types and record.memory_type not in self.memory_types:
            return False
        if (self.event_after is not None or self.event_before is not None) and not _in_range(
            _event_or_added(record), self.event_after, self.event_before
        ):
            return False
        if (self.created_after is not None or self.created_before is not None) and not _in_range(
            record.created_at, self.created_after, self.created_before
        ):
            return False
        if not self.include_invalid and not self._valid(record, now):
            return False
        return not self.metadata or all(
            _has_metadata_value(record.metadata, key, value) for key, value in self.metadata.items()
        )

    def one_user(self) -> bool:
        """Whether only one user's records can match: the scope's user, or with
        ``no_user`` the records of none (``scope.user_id`` None). The in-process indexes
        hold a block per user and then read that block alone, not the tenant's."""
        return self.no_user or self.scope.user_id is not None

    def _valid(self, record: MemoryRecord, now: datetime) -> bool:
        """Whether ``record`` is valid at ``as_of`` (or, without it, not closed by ``now``)."""
        from .times import utc

        valid_to = record.valid_to
        if self.as_of is None:  # as ``store.filters.open_clause``: a close is no end to come
            return valid_to is None or (
                utc(valid_to) > utc(now)
                and (record.updated_at is None or utc(valid_to) > utc(record.updated_at))
            )
        at = utc(self.as_of)
        if valid_to is not None and utc(valid_to) <= at:
            return False
        return record.valid_from is None or utc(record.valid_from) <= at


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

    def to_dict(self) -> dict[str, Any]:
        """The hit as plain JSON data: the record's fields plus how it ranked."""
        return {
            **self.record.to_dict(),
            "score": self.score,
            "lexical_rank": self.lexical_rank,
            "dense_rank": self.dense_rank,
            "relevance": self.relevance,
            "tokens": self.tokens,
        }


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
    """A message as logged in a session: position, token count, time, and who logged
    it (the user and agent of the scope it was appended in: in a session two users
    share, each turn keeps its author, so what is made of it can be erased with them)."""

    session_id: str
    seq: int
    message: Message
    tokens: int
    created_at: datetime
    user_id: str | None = None
    agent_id: str | None = None


@dataclass(frozen=True)
class Usage:
    """Token usage of one provider response, cache writes and reads included."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0


def _event_or_added(record: MemoryRecord) -> datetime | None:
    """The time an event-time filter places ``record`` at: its ``event_time``, or when it
    was added (``created_at``) when the event time is unknown (None)."""
    return record.created_at if record.event_time is None else record.event_time


def _in_range(value: datetime | None, after: datetime | None, before: datetime | None) -> bool:
    """SQL semantics: a bound on a missing time excludes the record."""
    from .times import utc

    if after is None and before is None:
        return True
    if value is None:
        return False
    at = utc(value)
    return (after is None or at >= utc(after)) and (before is None or at < utc(before))


def fits_int64(value: int) -> bool:
    """Whether ``value`` is an integer every store and JSON reader keeps exactly (64-bit
    signed): the one rule for integers in metadata, stored or filtered on, everywhere."""
    return -(2**63) <= value < 2**63


#: One part of a metadata filter key: any characters but white space, control
#: characters and the few a JSON path or an SQL text gives a meaning (both stores put the
#: key into a JSON path, SQLite into SQL text): ``. ' " [ ] $ \``. Any script and
#: ``user-id`` pass; a key such as ``città`` was stored and could never be filtered on
#: (ASCII letters, digits and ``_`` only: a review). Also the advertised JSON Schema
#: ``pattern`` of the HTTP API's and MCP's filter keys (format characters aside, which
#: :func:`check_metadata_key` refuses too).
METADATA_KEY_PART = r"""[^\s.'"\[\]$\\\x00-\x1f\x7f-\x9f]+"""
#: A metadata filter key: parts joined by dots (``a.b`` looks into ``{"a": {"b": ...}}``).
METADATA_KEY = rf"^{METADATA_KEY_PART}(\.{METADATA_KEY_PART})*$"
_METADATA_KEY = re.compile(METADATA_KEY)


def check_metadata_key(key: object) -> None:
    """A metadata filter key is a dotted path (``a``, ``a.b``, ``città``, ``user-id``) of
    parts :data:`METADATA_KEY_PART` allows; both stores put it into a JSON path, so
    ``a..b``, ``.a``, quotes, brackets, white space and control or format characters
    (a right-to-left override) are refused here."""
    if (
        not isinstance(key, str)
        or len(key) > 200
        or not _METADATA_KEY.fullmatch(key)
        or any(unicodedata.category(c)[0] == "C" for c in key)
    ):
        raise ValueError(f"metadata filter keys must be dotted identifiers, got {key!r}")


def check_metadata_filter_value(key: object, value: object) -> None:
    """A metadata filter's value must be one every store compares alike: a str, a bool,
    an int of 64 bits or a finite float (see :class:`Filter`).

    Why: SQLite compared ``json_extract(...) = ?``, where ``True`` is 1 (so it matched
    ``1`` and ``1.0``) and None matches nothing, while PostgreSQL's ``@>`` matched
    only ``true`` and an explicit ``null``. None, lists, mappings and bytes have no
    one answer there, and an int past 64 bits or a NaN fails on one store only."""
    if isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if fits_int64(value):
            return
        raise ValueError(f"metadata filter {key!r}: the integer {value} is past 64 bits")
    if isinstance(value, float):
        if math.isfinite(value):
            return
        raise ValueError(f"metadata filter {key!r}: {value} is not a finite number")
    if value is None:
        raise ValueError(
            f"metadata filter {key!r}: None is not a value to match (to find records "
            "without the key, filter them after listing)"
        )
    raise ValueError(
        f"metadata filter {key!r}: a value must be a str, int, float or bool, "
        f"not {type(value).__name__}"
    )


def metadata_paths(key: str) -> list[tuple[str, ...]]:
    """The places a filter key names in the metadata: ``a.b`` is the nested path
    (``{"a": {"b": ...}}``) and also the one key ``"a.b"`` as stored (a mem0 or
    LangChain app's ``{"source.app": ...}``), which a path alone never found. The one
    rule of both stores' SQL (``store.filters``) and of :meth:`Filter.matches`."""
    parts = tuple(key.split("."))
    return [parts] if len(parts) == 1 else [parts, (key,)]


def _has_metadata_value(metadata: Mapping[str, Any], key: str, wanted: object) -> bool:
    """Whether ``wanted`` is at one of the places a filter key names
    (:func:`metadata_paths`), as the stores' JSON lookups read them."""
    for path in metadata_paths(key):
        value: object = metadata
        for part in path:
            if not isinstance(value, Mapping) or part not in value:
                break
            value = value[part]
        else:
            if value == wanted:
                return True
    return False


def _iso(value: datetime | None) -> str | None:
    return None if value is None else iso(value)
