"""Turning what users pass to ``Memory.add`` into records.

Accepts a string, a :class:`~contextos.types.Message`, a message dict
(``role``/``content`` plus optional ``name``/``speaker``, ``caption``, ids) or a
list of those. Each message becomes one episodic record holding the turn
verbatim; ``context`` gathers what helps find it later without changing it:
the speaker, the date, an image caption and, in a session, the turn it answers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..engine.message_text import check_text, check_unicode
from ..times import local_now, offset_minutes, opt_local, opt_utc
from ..types import (
    MEMORY_TYPES,
    MemoryRecord,
    MemoryType,
    Message,
    Scope,
    check_role,
    content_hash,
    fits_int64,
)
from .metadata_json import plain_size
from .render import FACT_OF, TURN_FACTS, UTC_OFFSET, caption_of, local_time

#: Longest text accepted for one memory (characters); larger inputs are an error.
MAX_TEXT_CHARS = 100_000
#: How much of the turn a reply answers its context quotes (of the stripped text).
QUOTED_CHARS = 300
#: Largest metadata one memory may hold: bytes of its JSON (UTF-8, compact). A LoCoMo
#: turn's fields but its text (ids, image urls, caption, query) take under 500 bytes but
#: for one, 16.5 KB, its image url inline; an image caption, a few tags much less.
MAX_METADATA_BYTES = 65_536
#: Most bytes of ``add``'s ``metadata`` one add may write: it is copied into every
#: memory the add stores, so its size times their number. Why: 0.9 MB of metadata with
#: 500 one-word messages, one request under the server's 1 MB body limit, wrote 467 MB
#: and answered 450 MB. Data of one message belongs in that message's own metadata.
MAX_METADATA_COPIES_BYTES = 1_000_000
#: What a refusal of one memory's metadata calls it.
RECORD_METADATA = "a memory's metadata"
#: The metadata keys the library writes into a memory: who said it (``role``,
#: ``speaker``), its place in its session (``seq``), its zone (``utc_offset``), a
#: session turn's facts mark (``turn_facts``), a fact's turn (``fact_of``), and what an
#: inferring add writes into each fact (``inferred``, ``confidence``, ``decided_by``,
#: ``entities``, ``extracted_by``, ``supersedes``, ``superseded_by``). They are not
#: counted against :data:`MAX_METADATA_BYTES`, on add, update and import alike
#: (:func:`check_metadata`), but count against :data:`MAX_STORED_METADATA_BYTES`.
#: Why: a fact's keys came on top of a caller's metadata at the limit, and the record
#: could then not be imported again nor updated with its own metadata (a review, s58).
LIBRARY_KEYS = frozenset(
    {
        "role",
        "speaker",
        "seq",
        UTC_OFFSET,
        TURN_FACTS,
        FACT_OF,
        "inferred",
        "confidence",
        "decided_by",
        "entities",
        "extracted_by",
        "supersedes",
        "superseded_by",
    }
)
#: Largest metadata one memory may hold with the library's keys (:data:`LIBRARY_KEYS`)
#: counted: bytes of its JSON. Why a bound at all: the keys are let past
#: :data:`MAX_METADATA_BYTES`, and an update or an import could otherwise store any
#: amount under their names. What the library writes there now stays far below it (a
#: fact's ``entities`` are capped: ``extract.MAX_ENTITIES``); why four times: a fact
#: stored before the cap listed every name of its text (at most about 175 KB for a
#: 100,000-character text), and its export, with caller metadata at the limit, must
#: import again.
MAX_STORED_METADATA_BYTES = 4 * MAX_METADATA_BYTES

_MESSAGE_KEYS = {"role", "content", "name", "tool_call_id", "tool_calls", "metadata"}


@dataclass(frozen=True)
class AddOptions:
    """The keyword arguments of ``Memory.add``, validated."""

    scope: Scope
    metadata: Mapping[str, Any]
    event_time: datetime | None
    memory_type: MemoryType
    #: ``event_time`` in the zone the caller gave it in (:func:`contextos.times.local`):
    #: what the memory's dates and inference's relative dates are read in (with the
    #: metadata's zone, :func:`said_local`).
    event_local: datetime | None = None


def to_messages(messages: object) -> list[Message]:
    """Normalise the accepted input shapes to a list of messages (validating types).

    An error names the message at fault, ``message 3`` (its index) in a list: a chat
    history of fifty messages was refused with "a message dict needs a string
    'content'" and no word of which (a review, s36)."""
    if isinstance(messages, (str, Message, Mapping)):
        messages = [messages]
    if not isinstance(messages, Sequence) or isinstance(messages, (bytes, bytearray)):
        raise TypeError("messages must be a string, a Message, a dict or a list of those")
    out = [_one_message(m, _which(i, len(messages))) for i, m in enumerate(messages)]
    if not out:
        raise ValueError("nothing to add: the message list is empty")
    return out


def _which(index: int, count: int) -> str:
    """How an error names the message at ``index`` of ``count``: as :func:`check_messages`
    does."""
    return f"message {index}" if count > 1 else "message"


@contextmanager
def _naming(index: int, count: int) -> Iterator[None]:
    """Name the message a ``ValueError`` is about, as :func:`check_messages` does. Why:
    one bad row among 5,000 (too long, metadata too large or deep, a reserved key) was
    refused without saying which (a review); nothing is stored either way."""
    try:
        yield
    except ValueError as exc:
        if count == 1 or type(exc) is not ValueError or str(exc).startswith("message "):
            raise
        raise ValueError(f"{_which(index, count)}: {exc}") from exc


def check_messages(messages: Sequence[Message]) -> None:
    """Refuse messages holding a lone surrogate (:func:`check_text`): a ValueError naming
    the message and the field, where an add raised a raw ``UnicodeEncodeError``."""
    for i, message in enumerate(messages):
        check_text(message, _which(i, len(messages)))


#: Roles of a message dict read as another: OpenAI's ``developer`` message is what
#: ``system`` was before it (the instructions of newer models), and the OpenAI wrapper
#: already reads it as a system turn; a memory of one is a memory of a system message.
ROLE_ALIASES = {"developer": "system"}


def _one_message(item: object, which: str = "message") -> Message:
    """``item`` as a Message; a TypeError or ValueError that starts with ``which``
    (:func:`_which`) and says what to pass instead."""
    if isinstance(item, Message):
        if not isinstance(item.content, str):  # an OpenAI reply of tool calls: None
            raise TypeError(
                f"{which}: {_not_text(item.content, bool(item.tool_calls), 'a Message')}"
            )
        _check_role(item.role, which)
        return item
    if isinstance(item, str):
        return Message(role="user", content=item)
    if not isinstance(item, Mapping):
        raise TypeError(
            f"{which}: cannot add a {type(item).__name__}; pass text, a Message or a dict"
        )
    content = item.get("content", item.get("text"))
    if not isinstance(content, str):
        raise TypeError(f"{which}: {_not_text(content, bool(item.get('tool_calls')))}")
    role: Any = item.get("role", "user")
    role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
    _check_role(role, which)
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


def _check_role(role: object, which: str) -> None:
    """:func:`~contextos.types.check_role`, its error naming the message."""
    try:
        check_role(role)
    except ValueError as exc:
        raise ValueError(f"{which}: {exc}") from None


def _not_text(content: object, tool_calls: bool, what: str = "a message dict") -> str:
    """Why a message (``what``: a dict or a ``Message``) whose ``content`` is not a string
    cannot be added, and what to do: a memory holds text, so a chat history's other
    shapes are named. One answer for both: a ``Message`` whose content was None (an
    OpenAI reply of tool calls) raised ``AttributeError`` where the dict was named."""
    if isinstance(content, list):
        return (
            "'content' is a list of parts (text, images, files); a memory holds text: "
            "pass the text parts joined into one string, or leave the message out"
        )
    if content is None and tool_calls:
        return (
            "'content' is None (a message of tool calls); a memory holds text: leave "
            "the message out, or pass what it says as a string 'content'"
        )
    if content is None:
        return f"{what} needs a string 'content' (it has none)"
    return f"{what} needs a string 'content', not {type(content).__name__}"


#: Why a ``memory_type`` with ``infer`` is refused: the extractor types each fact, and
#: the type given was dropped without a word (a review).
INFERRED_TYPES = (
    "memory_type is chosen for each fact by the extractor when infer is true: leave it out"
)


def check_inferred_type(memory_type: str | None, infer: bool) -> None:
    """Refuse a ``memory_type`` given with ``infer`` (``Memory.add``, the server's add
    body, ``contextos add --type --infer``). "episodic" passes: it was the default
    until the type became optional, and clients generated from that schema send it
    with every add (a review: their inferring adds failed)."""
    if infer and memory_type not in (None, "episodic"):
        raise ValueError(INFERRED_TYPES)


def validate_options(
    scope: Scope,
    *,
    metadata: Mapping[str, Any] | None = None,
    event_time: datetime | str | None = None,
    memory_type: str = "episodic",
) -> AddOptions:
    """Check the keyword arguments of ``add`` and bundle them. The ids come as one
    :class:`~contextos.types.Scope`, already checked by its one rule
    (:func:`~contextos.types.scope_id`); here it must name someone."""
    if memory_type not in MEMORY_TYPES:
        raise ValueError(f"memory_type must be one of {MEMORY_TYPES}, got {memory_type!r}")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError("metadata must be a dict")
    # An ISO-8601 string too, as every read (``as_of``, ``time_range``) takes one.
    when = opt_utc(event_time, "event_time")
    if metadata:
        check_metadata(metadata, callers=True)
    if not scope.is_scoped():
        from ..errors import ScopeError

        raise ScopeError("add needs a user_id, agent_id or session_id to scope the memory")
    local = opt_local(event_time, "event_time")
    return AddOptions(scope, dict(metadata or {}), when, memory_type, local)


def check_add(
    scope: Scope,
    messages: object,
    *,
    metadata: Mapping[str, Any] | None = None,
    event_time: datetime | str | None = None,
    memory_type: str | None = None,
    infer: bool = False,
    build: bool = False,
) -> tuple[AddOptions, list[Message]]:
    """The checks ``Memory.add`` makes of its arguments before it reads or writes
    anything, in one place: ``memory_type`` with ``infer``, the options
    (:func:`validate_options`: scope, metadata, time), the messages, the reserved keys
    (a session's :data:`TURN_FACTS`; an inferring add's own :func:`check_said_by`).
    Returns the options and the messages, checked.

    ``build``: also build a verbatim add's records once, as its write will
    (:func:`build_records`, whose checks of each record, a reserved ``fact_of`` or an
    oversized text, come later in ``add``), for a caller that must refuse before it
    opens the store. Why one function: ``contextos add`` made a copy of these checks so
    that a failed add would create no database file, and the copy had already left
    two out (a session's ``turn_facts`` created the file; a review).

    Raises:
        ScopeError, TypeError, ValueError: as ``Memory.add``."""
    check_inferred_type(memory_type, infer)
    opts = validate_options(
        scope, metadata=metadata, event_time=event_time, memory_type=memory_type or "episodic"
    )
    said = to_messages(messages)
    check_messages(said)
    if infer:
        check_said_by(said, opts)  # a verbatim add checks each record as it builds it
    else:
        if scope.session_id is not None:
            _refuse_own_mark(opts.metadata, said)
        if build:
            build_records(said, opts)
    return opts, said


def _refuse_own_mark(metadata: Mapping[str, Any], messages: Sequence[Message]) -> None:
    """Refuse a caller's own :data:`TURN_FACTS` in a session add's metadata (ValueError):
    the library writes it, and an update would derive facts for a turn added without."""
    if TURN_FACTS in metadata or any(TURN_FACTS in m.metadata for m in messages):
        raise ValueError(
            f"metadata key {TURN_FACTS!r} is reserved in a session: the library marks a "
            "turn stored with its facts (add(facts=True)) there; give your key another name"
        )


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
    check_metadata_copies(opts.metadata, sum(1 for m in messages if m.content.strip()))
    for index, message in enumerate(messages):
        with _naming(index, len(messages)):
            text = message.content.strip()
            if not text:
                continue
            # Counted as given, as an update's text and the HTTP API's and MCP's are (after
            # the strip, a file of 100,000 characters and a newline was stored by Python and
            # the CLI and refused over HTTP: a review).
            if len(message.content) > MAX_TEXT_CHARS:
                raise ValueError(
                    f"a memory may hold at most {MAX_TEXT_CHARS:,} characters "
                    f"(got {len(message.content):,}); split it first"
                )
            # A message's own time, even "" (refused as the call's ""; it was read as no
            # time at all, a review); the call's where the message gives none.
            given = message.metadata.get("event_time")
            event_time = _as_datetime(opts.event_time if given is None else given)
            local = said_local(message, opts)
            meta = _record_metadata(opts.metadata, message)
            if FACT_OF in meta:
                raise ValueError(
                    f"metadata key {FACT_OF!r} is reserved: it marks a fact stored beside a turn"
                )
            check_metadata(counted_metadata(meta), RECORD_METADATA, callers=True)
            _keep_zone(meta, local if local is not None else undated_now(meta))
            if seq is not None:
                _refuse_own_seq(meta)
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
                    context=_context(message, local, prev),
                    hash=content_hash(text),
                )
            )
            prev = message if in_session else None
    if not records:
        raise ValueError("nothing to add: every message is empty")
    return records


def metadata_bytes(metadata: Mapping[str, Any]) -> int:
    """The size of ``metadata`` as stored: bytes of its compact JSON in UTF-8. A value
    JSON cannot hold counts as its ``str`` (the store refuses it in its own words)."""
    try:
        text = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, default=str)
    except (ValueError, RecursionError):  # a cycle, or nested past Python's stack
        return 0
    return len(text.encode("utf-8", "surrogatepass"))


#: How deep metadata may nest (objects and lists in objects and lists). Why: past
#: Python's stack (about 900 levels) every later walk of it failed with a
#: RecursionError deep in the store, after the add had started (a review, through
#: ``contextos add --metadata``). The HTTP API and MCP allow the same.
MAX_METADATA_DEPTH = 32


def metadata_depth(value: Any, limit: int = MAX_METADATA_DEPTH) -> int:
    """How many objects and lists ``value`` nests (0 for a scalar), walked without
    recursion; once past ``limit`` the walk stops (a cycle is past any limit)."""
    deepest, todo = 0, [(value, 0)]
    while todo and deepest <= limit:
        item, depth = todo.pop()
        if isinstance(item, Mapping | list | tuple):
            deepest = max(deepest, depth + 1)
            children = item.values() if isinstance(item, Mapping) else item
            todo.extend((child, depth + 1) for child in children)
    return deepest


def wide_int(value: Any) -> int | None:
    """The first integer in ``value`` (walked without recursion) past 64 bits, or None.

    Why: ``Memory.add`` and ``contextos add --metadata`` stored such an id, which the
    HTTP API and MCP then refused to write back (an update sending the metadata as read)
    and no filter could match (a review)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, int) and not isinstance(item, bool) and not fits_int64(item):
            return item
        if isinstance(item, Mapping):
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            todo.extend(item)
    return None


def check_metadata(
    metadata: Mapping[str, Any], what: str = "metadata", *, callers: bool = False
) -> int:
    """Refuse ``metadata`` over its size limits (:func:`check_metadata_size`: the
    library's keys not counted against :data:`MAX_METADATA_BYTES`), nested deeper than
    :data:`MAX_METADATA_DEPTH` or holding an integer past 64 bits (ValueError naming the
    limit); return its size in bytes as counted. The one rule of every memory's
    metadata, on add, update and import. Plain JSON is read at C speed
    (:func:`.metadata_json.plain_size`); the walks run for anything else, and say
    what is wrong.

    ``callers``: every key is the caller's (an add's metadata, before the library
    writes its own), so all count against :data:`MAX_METADATA_BYTES`, a key named as
    one of the library's too: 5 MB under a caller's own ``seq`` were stored once (a
    review). An update's or an import's metadata may hold the keys the library wrote
    (a record read back), so there they are let past that limit."""
    counted = None if callers else metadata
    size = plain_size(metadata, MAX_METADATA_DEPTH)
    if size is not None:
        return check_metadata_size(size, what, counted)
    if metadata_depth(metadata) > MAX_METADATA_DEPTH:
        raise ValueError(f"{what} may nest at most {MAX_METADATA_DEPTH} levels deep")
    wide = wide_int(metadata)
    if wide is not None:
        raise ValueError(f"{what} integers must fit in 64 bits (got {wide})")
    check_unicode(metadata, what)  # a ValueError naming it, not a UnicodeEncodeError
    return check_metadata_size(metadata_bytes(metadata), what, counted)


def check_metadata_size(
    size: int, what: str = "metadata", metadata: Mapping[str, Any] | None = None
) -> int:
    """The size of ``metadata`` as its limit counts it, given ``size`` (bytes of it all
    as stored: :func:`metadata_bytes`): without the library's keys
    (:data:`LIBRARY_KEYS`), at most :data:`MAX_METADATA_BYTES`, and with them at most
    :data:`MAX_STORED_METADATA_BYTES`; else a ValueError saying the limit. Without
    ``metadata``, ``size`` is all counted."""
    counted = size
    if size > MAX_METADATA_BYTES and metadata is not None:
        own = {k: v for k, v in metadata.items() if k not in LIBRARY_KEYS}
        if len(own) < len(metadata):
            counted = metadata_bytes(own)
    if counted > MAX_METADATA_BYTES:
        raise ValueError(
            f"{what} may hold at most {MAX_METADATA_BYTES:,} bytes as JSON "
            f"(got {counted:,}); store large data elsewhere and keep a reference"
        )
    if size > MAX_STORED_METADATA_BYTES:
        raise ValueError(
            f"{what} may hold at most {MAX_STORED_METADATA_BYTES:,} bytes as JSON with the "
            f"keys the library writes ({', '.join(sorted(LIBRARY_KEYS))}; got {size:,})"
        )
    return counted


def counted_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A memory's metadata on add as its size limit counts it (``check_metadata(...,
    callers=True)``), before the library numbers it in its session (``seq``): without
    the ``role`` it writes into every memory. Why: metadata of exactly the documented
    65,536 bytes was refused with a size the caller never sent (65,550: ``role``
    added), and over HTTP as a 400 where the body's own check (a 422) had let it
    through. A caller's own ``seq`` outside a session counts."""
    return {k: v for k, v in meta.items() if k != "role"}


def check_add_metadata(metadata: Mapping[str, Any], messages: Sequence[Message]) -> None:
    """The metadata checks of an add of ``messages`` with ``metadata`` (what
    :func:`build_records` refuses, but for a turn's ``seq``): the copies of ``metadata``
    in all (:func:`check_metadata_copies`), then each memory's (:func:`check_metadata`)."""
    said = [m for m in messages if m.content.strip()]
    check_metadata_copies(metadata, len(said))
    for message in said:
        check_metadata(
            counted_metadata(_record_metadata(metadata, message)), RECORD_METADATA, callers=True
        )


def check_metadata_copies(metadata: Mapping[str, Any], copies: int) -> None:
    """Refuse an add whose ``metadata``, copied into each of its ``copies`` memories,
    would write more than :data:`MAX_METADATA_COPIES_BYTES` (ValueError saying why)."""
    size = _copied_bytes(metadata, copies)
    if size:
        raise ValueError(
            f"metadata of {size:,} bytes would be copied into each of {copies:,} memories "
            f"({size * copies:,} bytes); one add may copy at most "
            f"{MAX_METADATA_COPIES_BYTES:,} bytes: put data of one message in that message's "
            "metadata, or add fewer messages at a time"
        )


def check_fact_copies(metadata: Mapping[str, Any], facts: int) -> None:
    """Refuse a turn whose ``metadata``, copied into each of the ``facts`` stored beside
    it (``add(facts=True)``), would write more than :data:`MAX_METADATA_COPIES_BYTES`
    (ValueError). Its own words: the add's were about the add's messages, and told a
    caller who had put the data in the message's own metadata to do just that."""
    size = _copied_bytes(metadata, facts)
    if size:
        raise ValueError(
            f"the turn's metadata of {size:,} bytes would be copied into each of the "
            f"{facts:,} facts stored beside it ({size * facts:,} bytes); at most "
            f"{MAX_METADATA_COPIES_BYTES:,} bytes may be copied: keep large data out of "
            "the turn's metadata, split the turn, or store it without facts (facts=False)"
        )


def _copied_bytes(metadata: Mapping[str, Any], copies: int) -> int:
    """The size of ``metadata`` where its ``copies`` would write more than
    :data:`MAX_METADATA_COPIES_BYTES`, else 0."""
    if copies <= 1 or not metadata:
        return 0
    size = metadata_bytes(metadata)
    return size if size * copies > MAX_METADATA_COPIES_BYTES else 0


def next_seq(previous: MemoryRecord | None) -> int:
    """The session position after ``previous``, the session's latest turn (0 when none):
    where an add, of turns or of inferred facts, numbers its first record."""
    seq = previous.metadata.get("seq") if previous is not None else None
    return seq + 1 if isinstance(seq, int) else 0


def _record_metadata(shared: Mapping[str, Any], message: Message) -> dict[str, Any]:
    """A record's metadata but its ``seq``: the add's, the message's own over it (but its
    ``event_time``, kept as the record's), who said it."""
    meta = {**shared, **{k: v for k, v in message.metadata.items() if k != "event_time"}}
    _refuse_said_by(meta, message)
    meta["role"] = message.role
    if message.name:
        meta["speaker"] = message.name
    return meta


def _refuse_said_by(meta: Mapping[str, Any], message: Message) -> None:
    """Refuse metadata whose ``role`` (or ``speaker``, for a message with a ``name``) is
    not who said ``message``: the library writes those keys (ValueError saying so).

    Why: ``add("...", metadata={"role": "manager"})`` stored ``role: "user"`` without a
    word, and a filter on the app's own key then found nothing (a review). The same
    value (metadata copied from a stored memory) is let through."""
    said_by = {"role": message.role, **({"speaker": message.name} if message.name else {})}
    for key, value in said_by.items():
        if key in meta and meta[key] != value:
            raise ValueError(
                f"metadata key {key!r} is reserved: the library stores who said each memory "
                f"there ({value!r}), which would replace your {meta[key]!r}; give your key "
                f"another name (e.g. 'user_{key}')"
            )


def _keep_zone(meta: dict[str, Any], local: datetime | None) -> None:
    """Write into ``meta`` the zone ``local`` (the memory's time) was given in, unless
    UTC (:data:`~contextos.memory.render.UTC_OFFSET`), refusing the caller's own value
    of that key where it says another (ValueError), as :func:`_refuse_said_by` does."""
    offset = offset_minutes(local)
    _refuse_other_zone(meta, offset)
    if offset:
        meta[UTC_OFFSET] = offset


def _refuse_other_zone(meta: Mapping[str, Any], offset: int) -> None:
    """Refuse a caller's ``utc_offset`` that is not the zone of the memory's time
    (:func:`said_local`, which already reads a time given without a zone in the key's):
    the library keeps that zone there, and reads the memory's dates in it."""
    if UTC_OFFSET in meta and meta[UTC_OFFSET] != offset:
        raise ValueError(
            f"metadata key {UTC_OFFSET!r} is reserved: the library keeps there the zone "
            f"of the memory's time (event_time as given; without one, now), in minutes "
            f"east of UTC ({offset}), which would replace your {meta[UTC_OFFSET]!r}: a "
            "whole number of minutes, with event_time given in that zone "
            "(e.g. 2023-05-08T20:00:00-07:00), or your key another name"
        )


def _refuse_own_seq(meta: Mapping[str, Any]) -> None:
    """Refuse a caller's ``seq`` in a session's metadata: the library numbers the
    session's memories there (it was renumbered without a word, before: a review)."""
    if "seq" in meta:
        raise ValueError(
            "metadata key 'seq' is reserved in a session: the library numbers the "
            "session's turns there; give your key another name"
        )


def check_said_by(messages: Sequence[Message], opts: AddOptions) -> None:
    """The reserved-key checks of an add that stores facts, not the messages
    (``infer=True``): the same as :func:`build_records` makes of each record, so the two
    kinds of add refuse the same metadata (ValueError)."""
    for message in messages:
        meta = {**opts.metadata, **message.metadata}
        _refuse_said_by(meta, message)
        local = said_local(message, opts)
        _refuse_other_zone(meta, offset_minutes(local if local is not None else undated_now(meta)))
        if opts.scope.session_id is not None:
            _refuse_own_seq(meta)


def _as_message(record: MemoryRecord) -> Message:
    speaker = record.metadata.get("speaker")
    return Message(
        role="user", content=record.text, name=speaker if isinstance(speaker, str) else None
    )


def _provenance(message: Message) -> tuple[str, ...]:
    source = message.metadata.get("source_id", message.metadata.get("dia_id"))
    return (str(source),) if source else ()


def _context(message: Message, local: datetime | None, prev: Message | None) -> str:
    """What a record is indexed with (see the module docstring); its date is the day in
    the zone its time was given in (``local``), the day the speaker said it."""
    parts = []
    if message.name:
        parts.append(message.name)
    if local is not None:
        parts.append(local.strftime("%d %B %Y %A"))
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
    return _PART.join(parts)


#: What separates the parts of a record's context (:func:`_context`).
_PART = " | "


def renamed_context(old: MemoryRecord, new: MemoryRecord) -> str:
    """The context of the session turn ``new`` (``new.context``, as stored) once said by
    ``new``'s speaker where ``old`` names another: the part naming who said it, which
    :func:`_context` puts first, names the new one (or goes, or comes). A context that
    does not start with ``old``'s name part (written otherwise) is left as it is.

    Why: an update of the speaker (an operator pseudonymising "Ann Smith") re-quoted
    the reply to the turn, but the turn's own context kept the old name, and a search
    for it still found the turn (a review)."""
    before, after = _named(old), _named(new)
    context = new.context
    if before == after:
        return context
    if before:
        if context != before and not context.startswith(before + _PART):
            return context
        context = context[len(before) + len(_PART) :]
    return _PART.join(part for part in (after, context) if part)


def _named(turn: MemoryRecord) -> str:
    """The part of ``turn``'s context naming who said it, as :func:`_context` writes it
    ("" when the turn names no one)."""
    return _context(_as_message(turn), None, None)


def _as_datetime(value: object) -> datetime | None:
    return opt_utc(value, "event_time")


def said_local(message: Message, opts: AddOptions) -> datetime | None:
    """When ``message`` was said (its own ``event_time``, else the add's) in the zone it
    was said in (:func:`zoned`, by the message's metadata over the add's)."""
    given = message.metadata.get("event_time")
    local = opts.event_local if given is None else opt_local(given, "event_time")
    return zoned(local, {**opts.metadata, **message.metadata})


def undated_now(metadata: Mapping[str, Any]) -> datetime:
    """When a message given no time was said, for its dates: now in the zone the
    caller's metadata keeps (``utc_offset``, as a memory read back holds it), else on
    this process's calendar (:func:`~contextos.times.local_now`, kept in ``utc_offset``
    where it is not UTC). One rule for a plain add, an inferring one and its checks.

    Why the caller's zone: every memory a process outside UTC stores without a time
    keeps its zone now, and one exported there (``contextos list --json``) was refused
    when added back in a process of another offset (a server in UTC, the same app after
    a daylight-saving change): the key was judged against the adding process's zone,
    though no time was given to tell it by (a review)."""
    if UTC_OFFSET in metadata:
        return local_time(datetime.now(UTC), metadata)  # an invalid key: UTC, refused
    return local_now()


def zoned(local: datetime | None, metadata: Mapping[str, Any]) -> datetime | None:
    """``local`` as given, but one given without a zone (naive or UTC) is read in the
    zone ``metadata`` keeps (``utc_offset``), where it keeps a valid one.

    Why: a memory read back holds its time in UTC and its zone in that key, and
    ``add(r.text, metadata=r.metadata, event_time=r.event_time)`` (a copy, or an
    export through ``contextos list --json`` re-imported) was refused as a time of
    zone 0 (a review). The record and its key describe the local time whole; one
    reading of the key (:func:`~contextos.memory.render.local_time`). A zoned time
    that says another zone is still refused (:func:`_refuse_other_zone`)."""
    if local is None or offset_minutes(local):
        return local
    return local_time(local, metadata)
