"""A memory record as a row of column values, in one column order for every backend.

The stores differ only in how a time and a JSON value are written (SQLite: epoch
seconds and JSON text; PostgreSQL: timestamptz and jsonb), so each passes its two
encoders and these two functions do the rest. A new record field is added here once.

The statements both stores run alike (appending to a session log, a history row and
its reading, the sessions an erasure reaches) are written here once too, with the
store's parameter mark (``?`` or ``%s``) and a cursor that has ``execute``,
``executemany`` and ``fetchone``/``fetchall`` (sqlite3's and psycopg's both do).
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar, NamedTuple, ParamSpec, TypeVar

import numpy as np

from ..errors import Conflict, NotFound
from ..types import (
    Filter,
    HistoryEvent,
    MemoryRecord,
    Message,
    Scope,
    TokenCount,
    ToolCall,
    Turn,
    check_role,
)
from .base import (
    Close,
    Derived,
    EmbeddedText,
    Patch,
    Quoting,
    TokenCounter,
    Vector,
    patch_columns,
)
from .erasure import Scrub, answers, reply_seq
from .tables import TURNS

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
    "token_count",
    "token_counter",
)


def patched(record: MemoryRecord, patch: Patch) -> MemoryRecord:
    """``record`` with ``patch``'s rendered fields applied, as the store will write
    them (metadata is replaced whole, like the UPDATE does): what the count counts."""
    return replace(
        record,
        text=record.text if patch.text is None else patch.text,
        metadata=record.metadata if patch.metadata is None else patch.metadata,
        event_time=record.event_time if patch.event_time is None else patch.event_time,
    )


#: The patch fields a memory's rendering reads (``memory.render``: text, speaker and
#: caption in metadata, the date of ``event_time``). A patch of any of them makes the
#: stored token count stale: ``update`` counts the new record again (or clears it).
RENDERED_FIELDS = ("text", "metadata", "event_time")


def record_values(
    r: MemoryRecord,
    now: datetime,
    *,
    time: Callable[[datetime | None], Any],
    to_json: Callable[[Any], Any],
) -> tuple[object, ...]:
    """The column values of ``r`` in ``RECORD_FIELDS`` order (creation defaults to ``now``).
    ValueError when one holds NUL (:func:`refuse_nul`)."""
    refuse_nul_in_scope(r.scope)
    for what, value in (
        ("text", r.text),
        ("metadata", r.metadata),  # before context: a speaker's name is copied there
        ("provenance", r.provenance),
        ("context", r.context),
        ("id", r.id),
    ):
        refuse_nul(what, value)
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
        r.token_count.tokens if r.token_count else None,
        r.token_count.counted_with if r.token_count else None,
    )


def one_tenant(records: Sequence[MemoryRecord]) -> str:
    """The tenant of ``records`` (``Store.restore``'s): ValueError when they have several
    or repeat an id."""
    tenants = {r.tenant for r in records}
    if len(tenants) != 1:
        raise ValueError(f"records of one tenant only, not of {len(tenants)}")
    if len({r.id for r in records}) != len(records):
        raise ValueError("the records repeat an id")
    return tenants.pop()


def record_from_values(
    values: Sequence[Any],
    *,
    time: Callable[[Any], datetime | None],
    from_json: Callable[[Any], Any],
) -> MemoryRecord:
    """The record of column values in ``RECORD_FIELDS`` order."""
    (mid, tenant, user_id, agent_id, session_id, mtype, text, context, metadata) = values[:9]
    created, updated, event, vfrom, vto, provenance, hsh, tokens, counter = values[9:]
    return MemoryRecord(
        id=mid,
        text=text,
        scope=Scope.stored(tenant, user_id, agent_id, session_id),
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
        token_count=None if tokens is None or counter is None else TokenCount(tokens, counter),
    )


def refuse_nul(what: str, value: object) -> None:
    """Refuse a NUL character (``\\x00``) in ``value``, a string or JSON data (keys
    included), with a ValueError that names ``what``.

    Why every store refuses it: PostgreSQL cannot hold NUL in text or jsonb and SQLite
    can, so one write was kept by one store and refused by the other (with an error
    that named no field), and a SQLite file holding one could not be moved to
    PostgreSQL. The HTTP API and MCP refuse NUL at their edge too
    (``server.schemas.check_text``)."""
    if _holds_nul(value):
        raise ValueError(
            f"{what} contains a NUL character (\\x00), which no store keeps (PostgreSQL cannot)"
        )


def nul_written_out(text: str) -> str:
    """``text`` with each NUL written as the four characters ``\\x00``: for what a store
    keeps that no caller wrote (an embedder's error, which may quote a binary body; a
    model id), where refusing it would stop the work that stores it."""
    return text.replace("\x00", "\\x00")


def refuse_nul_in_scope(scope: Scope) -> None:
    """:func:`refuse_nul` for each id of ``scope``."""
    for what in ("tenant", "user_id", "agent_id", "session_id"):
        refuse_nul(what, getattr(scope, what))


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    return False


_P = ParamSpec("_P")
_R = TypeVar("_R")


def nul_reads_as_absent(
    absent: object, *params: str
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Make a store method that looks rows up by id or scope answer for an id holding
    NUL (``\\x00``) as for an unknown id: it returns a copy of ``absent`` (None, [],
    0, ...), or raises ``absent`` when that is an exception class (``NotFound``),
    without a query. ``params`` names the arguments that are ids (a string), a
    :class:`Scope` or a :class:`Filter` (its ids and metadata values); in one that is a
    list of ids (``get_many``'s), those holding NUL are dropped and the rest looked up.

    Why: no store keeps a NUL (:func:`refuse_nul` refuses every write of one), so such
    an id names nothing. SQLite answered so; PostgreSQL cannot even send NUL as a
    parameter and failed instead, on a read whose id may come from a hostile client.
    """

    def decorate(method: Callable[_P, _R]) -> Callable[_P, _R]:
        signature = inspect.signature(method)

        @functools.wraps(method)
        def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            bound = signature.bind(*args, **kwargs)
            for name in params:
                value = bound.arguments.get(name)
                if isinstance(value, list | tuple):
                    bound.arguments[name] = [v for v in value if not _holds_nul(v)]
                elif _names_nul(value):
                    if isinstance(absent, type) and issubclass(absent, Exception):
                        raise absent(f"no memory {bound.arguments.get('memory_id', value)!r}")
                    return copy.deepcopy(absent)  # type: ignore[return-value]
            return method(*bound.args, **bound.kwargs)

        return guarded

    return decorate


def _names_nul(value: object) -> bool:
    """Whether an id, a scope or a filter (its scope, its metadata values) holds NUL."""
    if isinstance(value, Filter):
        return _names_nul(value.scope) or _holds_nul(list(value.metadata.values()))
    if isinstance(value, Scope):
        return _holds_nul([value.tenant, value.user_id, value.agent_id, value.session_id])
    return _holds_nul(value)


#: The ``turns`` columns, in the order both stores created and insert them.
TURN_FIELDS = TURNS.column_names()
#: The turn columns as a SELECT list, in ``TURN_FIELDS`` order.
TURN_COLUMNS = ", ".join(TURN_FIELDS)


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
    """The column values of one logged message in ``TURN_FIELDS`` order. ValueError
    when one holds NUL (:func:`refuse_nul`)."""
    refuse_nul_in_scope(scope)
    for what, value in (
        ("content", m.content),
        ("name", m.name),
        ("tool_call_id", m.tool_call_id),
        ("tool_calls", [[c.id, c.name, c.arguments] for c in m.tool_calls]),
        ("metadata", m.metadata),
    ):
        refuse_nul(f"message {what}", value)
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
    (_tenant, session_id, seq, user_id, agent_id, role, content, name, tool_call_id) = values[:9]
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
        session_id=session_id,
        seq=seq,
        message=msg,
        tokens=tokens,
        created_at=time(created),
        user_id=user_id,
        agent_id=agent_id,
    )


# -- updates -------------------------------------------------------------------


def patch_sets(
    patch: Patch,
    now: object,
    *,
    mark: str,
    time: Callable[[datetime], object],
    to_json: Callable[[Any], object],
    json_cast: str = "",
) -> tuple[list[str], list[object]]:
    """The ``col = mark`` SET clauses of ``patch`` (and ``updated_at = now``) with their
    values, times and JSON written with the store's encoders. ValueError when one
    holds NUL (:func:`refuse_nul`)."""
    for column, value in patch_columns(patch):
        refuse_nul(column, value)
    encode: dict[str, Callable[[Any], object]] = {
        "metadata": to_json,
        "valid_to": time,
        "event_time": time,
    }
    cols = [("updated_at", now)] + [
        (c, encode[c](v) if c in encode else v) for c, v in patch_columns(patch)
    ]
    sets = [f"{c} = {mark}{json_cast if c == 'metadata' else ''}" for c, _ in cols]
    return sets, [v for _, v in cols]


def check_unchanged(read: MemoryRecord, stored: MemoryRecord | None) -> None:
    """Raise unless ``stored`` (read in a writing transaction) is still ``read``, as the
    caller read it to decide a write (``Store.delete_many``'s ``based_on``): NotFound
    when it is gone, Conflict when its text, metadata or event time changed."""
    if stored is None:
        raise NotFound(f"no memory {read.id!r}")
    if not Derived(read).matches(stored):
        raise Conflict(f"memory {read.id!r} changed since it was read")


class RecordUpdate(ABC):
    """A store's ``update()`` in the transaction behind ``cur``: the steps and their
    rules are every store's and are written here; a subclass per store supplies the
    SQL of seven of them (``locked``, ``drop_vector``, ``write``, ``remove`` and
    ``insert`` for the records derived from it, ``quoting`` and ``set_context`` for the
    replies quoting it) and its ``mark``."""

    #: The store's parameter mark (``?`` or ``%s``).
    mark: ClassVar[str]

    def __init__(self, cur: Any) -> None:
        self.cur = cur

    def apply(
        self,
        tenant: str,
        memory_id: str,
        patch: Patch,
        sets: tuple[list[str], list[object]],
        *,
        now: object,
        actor: str,
        embeds: EmbeddedText | None = None,
        derived: Derived | None = None,
        quotes: Quoting | None = None,
    ) -> MemoryRecord:
        """Apply ``patch`` (its SET clauses ``sets``, from :func:`patch_sets`, with the
        token count columns when it changes the rendering) to one memory and return
        the record as stored: read it under the row lock, write the patch in one
        UPDATE, drop its vector if the record now embeds another text, rewrite the
        quotes of it in its session's replies and the name in its own context (with
        ``quotes``: :meth:`requote`), and log the change in the memory's history
        (:func:`update_event`).

        Another text: the text changed, or the metadata changed and ``embeds`` (see
        ``Store.update``) gives another text for the record as stored after the
        write than before it -- the speaker's name, an image caption, or the role and
        source that decide the expanded facts. Compared in this transaction, on the
        rows as stored, so no other writer's change falls in between, and a patch
        that repeats the metadata it finds keeps the vector.

        With ``derived`` (:class:`~contextos.store.base.Derived`), the records made
        from this one are replaced after it, in this transaction, if the row is still
        the one they were made from (else ``Conflict``, nothing written)."""
        found = self.locked(tenant, memory_id)
        if found is None:
            raise NotFound(f"no memory {memory_id!r}")
        key, old = found
        if derived is not None and not derived.matches(old):
            raise Conflict(f"memory {memory_id!r} changed since it was read")
        new = self.write(key, *sets)
        if new.text != old.text or (
            embeds is not None
            and dict(new.metadata) != dict(old.metadata)
            and embeds(new) != embeds(old)
        ):
            self.drop_vector(key)
        if quotes is not None:
            new = self.requote(key, old, new, quotes)
        self.cur.execute(
            insert_history_sql(self.mark), update_event(tenant, old, patch, now, actor)
        )
        if derived is not None:
            self.remove(tenant, derived.drop, now=now, actor=actor)
            self.insert(derived.put, now=now, actor=actor)
        return new

    def requote(
        self, key: Any, old: MemoryRecord, new: MemoryRecord, quotes: Quoting
    ) -> MemoryRecord:
        """Where the session turn ``old`` (row ``key``) became ``new``: store its own
        context as ``quotes.own`` gives it (a new speaker's name), and where it is
        quoted otherwise now (its text or speaker changed), give each record of its
        session that answers it (:func:`~contextos.store.erasure.answers`) and whose
        reply part quotes a text it had (``old``'s or one in its history: a reply
        quotes the turn as it was when the reply was added) ``quotes.reply(new)`` as
        its reply part instead. The turn as stored after it.

        Why: an update that redacted a turn left its old words in the reply's indexed
        context, and a search for them still found the conversation (a review)."""
        own = quotes.own(old, new)
        if own != new.context:
            self.set_context(key, own)
            new = replace(new, context=own)
        quote = quotes.reply(new)
        if old.session_id is None or quote == quotes.reply(old):
            return new
        texts = {old.text, *history_texts(self.cur, old.tenant, [old.id], mark=self.mark)}
        scrub = Scrub(texts)
        found = self.quoting(old.tenant, old.session_id, scrub.probes, reply_seq(old))
        for row, record in found:
            if record.id == old.id or not answers(record, old):
                continue
            context = scrub.requoted(record.context, quote)
            if context != record.context:
                self.set_context(row, context)
        return new

    @abstractmethod
    def locked(self, tenant: str, memory_id: str) -> tuple[Any, MemoryRecord] | None:
        """The memory's row key and record, its row locked until the transaction ends;
        None when there is no such memory."""

    @abstractmethod
    def drop_vector(self, key: Any) -> None:
        """Delete the memory's vector and queue it to be embedded again (out of
        quarantine: the new text may embed), ending any claim on it: a worker
        embedding the old text then stores nothing for it (``set_vectors``)."""

    @abstractmethod
    def write(self, key: Any, sets: Sequence[str], params: Sequence[object]) -> MemoryRecord:
        """Run the SET clauses ``sets`` with ``params`` on the row; the record after them."""

    @abstractmethod
    def remove(self, tenant: str, ids: Sequence[str], *, now: Any, actor: str) -> None:
        """Delete those of ``ids`` that exist, as ``Store.delete`` does, but log them as
        a purge does, without their texts (see ``Derived``)."""

    @abstractmethod
    def insert(self, records: Sequence[MemoryRecord], *, now: Any, actor: str) -> None:
        """Insert new records as ``Store.put`` does."""

    @abstractmethod
    def quoting(
        self, tenant: str, session_id: str, probes: Sequence[str], seq: int | None
    ) -> list[tuple[Any, MemoryRecord]]:
        """The records of the session whose context holds one of ``probes``, each once,
        with its row key, locked until the transaction ends; with ``seq`` (the number of
        the reply: :func:`~contextos.store.erasure.reply_seq`) only those numbered
        ``seq`` or holding no integer ``metadata["seq"]`` (rows written before
        numbering), selected in SQL: only they are read and locked, not every row of
        the session quoting a short text such as "ok"."""

    @abstractmethod
    def set_context(self, key: Any, context: str) -> None:
        """Store ``context`` as the row's (its full-text entry follows it)."""


# -- session logs --------------------------------------------------------------


def check_turns(scope: Scope, messages: Sequence[Message], tokens: Sequence[int]) -> None:
    """Refuse an append with no session to log to, a token count per message missing,
    or a scope holding NUL (:func:`refuse_nul`: named here, before the session's row
    is written)."""
    if not scope.session_id:
        raise ValueError("append_turns needs a session_id")
    refuse_nul_in_scope(scope)
    if len(messages) != len(tokens):
        raise ValueError("messages and tokens differ in length")
    for n, message in enumerate(messages):
        check_turn_content(message, f"message {n}" if len(messages) > 1 else "message")
        check_role(message.role)


def check_turn_content(message: Message, what: str = "message") -> None:
    """Refuse a turn whose content is not a string, naming the message, before anything is
    counted or written.

    Why: ``Message("assistant", reply.content)`` for an OpenAI reply that made tool calls
    (its content None) reached SQL and failed as ``StoreError: NOT NULL constraint
    failed``, which an app reads as a database fault (and retries); an int failed in the
    tokenizer (a review).

    Raises:
        TypeError: the content is not a ``str``; a message of tool calls alone has ``""``.
    """
    content = message.content
    if isinstance(content, str):
        return
    why = " (it has none)" if content is None else f", not {type(content).__name__}"
    hint = "; a message of tool calls alone has content ''" if message.tool_calls else ""
    raise TypeError(f"{what}: a Message needs a string 'content'{why}{hint}")


def append_turn_rows(
    cur: Any,
    scope: Scope,
    messages: Sequence[Message],
    tokens: Sequence[int],
    now: Any,
    *,
    mark: str,
    row_of: Callable[[Scope, int, Message, int, Any], tuple[object, ...]],
    json_cast: str = "",
    after: Turn | None = None,
    turn_of: Callable[[Sequence[Any]], Turn] | None = None,
    newest: int | None = None,
) -> list[tuple[object, ...]]:
    """Append ``messages`` (with their token counts) to the session log of ``scope`` in
    the transaction behind ``cur``, numbered after the last logged turn, and return the
    inserted rows (``row_of`` makes one, in ``TURN_FIELDS`` order).

    The session row is upserted first: on PostgreSQL that locks it, so concurrent
    appends to one session queue there instead of racing for the same seq numbers.
    ``json_cast`` is what follows a JSON column's mark (``::jsonb`` on PostgreSQL).
    The caller has run :func:`check_turns` before opening the transaction.

    ``after``: append only while the log holds that turn as it was logged
    (:func:`same_turn`), read under the same lock as the append (``turn_of`` reads a
    row of ``TURN_COLUMNS``); else raise :class:`NotFound`, and the caller's
    transaction rolls back. Why: a wrapped call logs its reply after the question it
    answers, and a ``forget`` that erased the session between a check and the append
    left the reply in the log, the first turn of the erased session.

    ``newest``: append only while the log's last turn is numbered ``newest`` (-1: an
    empty log), read under the same lock; else raise :class:`Conflict`. Why: a writer
    that decided what to append from the log as it read it (the app's history turns
    the log lacks) appended them again after another writer had logged them (two
    wrapped clients on one session: a reply logged twice; a review).
    """
    m = mark
    cur.execute(
        "INSERT INTO session_meta (tenant, session_id, user_id, agent_id, meta, updated_at) "
        f"VALUES ({m},{m},{m},{m},{m}{json_cast},{m}) ON CONFLICT (tenant, session_id) "
        "DO UPDATE SET updated_at = excluded.updated_at",
        (scope.tenant, scope.session_id, scope.user_id, scope.agent_id, fresh_meta_json(), now),
    )
    if after is not None:
        if turn_of is None:
            raise ValueError("a conditional append (after=) needs turn_of")
        row = cur.execute(
            f"SELECT {TURN_COLUMNS} FROM turns "
            f"WHERE tenant = {m} AND session_id = {m} AND seq = {m}",
            (scope.tenant, scope.session_id, after.seq),
        ).fetchone()
        if row is None or not same_turn(turn_of(row), after):
            raise NotFound(
                f"session {scope.session_id!r} no longer holds turn {after.seq} "
                "(erased): nothing was appended after it"
            )
    (last,) = cur.execute(
        f"SELECT coalesce(max(seq), -1) FROM turns WHERE tenant = {m} AND session_id = {m}",
        (scope.tenant, scope.session_id),
    ).fetchone()
    if newest is not None and last != newest:
        has = f"its last turn is {last}" if last >= 0 else "it has no turn"
        raise Conflict(
            f"session {scope.session_id!r} is not as the append expected ({has}, not "
            f"{newest}): nothing was appended"
        )
    rows = [
        row_of(scope, last + 1 + k, msg, t, now)
        for k, (msg, t) in enumerate(zip(messages, tokens, strict=True))
    ]
    marks = ",".join(
        m + (json_cast if f in ("tool_calls", "metadata") else "") for f in TURN_FIELDS
    )
    cur.executemany(f"INSERT INTO turns ({', '.join(TURN_FIELDS)}) VALUES ({marks})", rows)
    return rows


#: The key of a session's meta JSON that holds its revision: a fresh random token
#: written with every change of the row (``set_session_meta``, ``swap_session_meta``,
#: ``forget``'s reset, the row's creation by ``append_turns``). Kept inside the JSON so
#: that no schema migration was needed; ``session_meta`` hands the meta back without it.
REVISION_KEY = "_revision"
#: The session meta's key for when an erasure (``forget``) last reset it (seconds since
#: the epoch, by the store's clock: ``Store.clock``). Why: what other writers kept in the meta went
#: with the reset, and the wrapped calls' record of which commits ended
#: (``engine/owed.py``) must not read as "none ended": a memory the other user of a
#: shared session had deleted came back (a review). Holds made before it count as ended.
ERASED_AT_KEY = "_erased_at"


#: A list key's row number: ASCII digits only (``int`` also takes other scripts' digits,
#: signs, spaces and underscores).
_KEY_ROW = re.compile(r"[0-9]{1,19}")


def list_key(at: str, row: int) -> str:
    """The key of a record's place in ``Store.list``'s order (``Store.list_after``):
    its creation time as the store wrote it in ``at``, then its row number."""
    return f"{at},{row}"


def split_list_key(key: str) -> tuple[str, int]:
    """The time text and row number of a :func:`list_key` (ValueError if malformed)."""
    at, sep, row = key.rpartition(",")
    if not sep or not at or not _KEY_ROW.fullmatch(row):
        raise ValueError("not a key of this list (after)")
    return at, int(row)


def within_bytes(sized: Sequence[tuple[Any, int]], max_bytes: int | None) -> list[Any]:
    """The keys of ``(key, bytes)`` rows, in order, up to the first row that would take
    the total past ``max_bytes`` (at least one row; None: every row).

    Why: a list page of ``limit`` rows was read whole into memory, and 1,000 memories of
    100,000 four-byte characters are 400 MB: four such pages at once took a server from
    350 MB to 1.9 GB. The stores read the rows' sizes first (no text), then only the
    rows this keeps."""
    keys: list[Any] = []
    used = 0
    for key, size in sized:
        used += size
        if keys and max_bytes is not None and used > max_bytes:
            break
        keys.append(key)
    return keys


def new_revision() -> str:
    """A revision token never used before.

    Why random and not a counter: ``forget`` may delete a session's meta row and a
    later append create it again, and a counter would start over there, so a writer
    that read the old row could find "its" revision again and overwrite the reset
    (the ABA problem). A token drawn afresh for every write is never seen twice.
    """
    return uuid.uuid4().hex


def stored_json(value: object, what: str = "metadata") -> str:
    """``value`` as the JSON text both stores write: compact, key-sorted, strict (no NaN
    or Infinity: PostgreSQL's jsonb and every HTTP client refuse them, so a record that
    stored one in SQLite read back as null elsewhere). TypeError names ``what``."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable: {exc}") from None


def fresh_meta_json(meta: Mapping[str, Any] | None = None) -> str:
    """``meta`` as the JSON text to store, stamped with a new revision (a caller's
    meta may not use the reserved ``REVISION_KEY``)."""
    body = dict(meta or {})
    if REVISION_KEY in body:
        raise ValueError(f"session meta may not use the reserved key {REVISION_KEY!r}")
    refuse_nul("session meta", body)
    body[REVISION_KEY] = new_revision()
    return stored_json(body, "session meta")


def split_meta(stored: Mapping[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """(meta, revision) of a stored meta row's JSON; ({}, None) when there is no row.
    A row written before revisions existed has none (None), as an absent row."""
    meta = dict(stored or {})
    revision = meta.pop(REVISION_KEY, None)
    return meta, revision if isinstance(revision, str) else None


@dataclass(frozen=True)
class MetaSQL:
    """How one store writes the session-meta statements: its parameter ``mark``, what
    follows a JSON parameter (``json_cast``: ``::jsonb`` on PostgreSQL), its null-safe
    test that a row's stored revision equals a parameter (``same_revision``; SQLite:
    ``json_extract(meta, '$._revision') IS ?``, PostgreSQL: ``meta->>'_revision' IS NOT
    DISTINCT FROM %s``), its test that a session id is in a list parameter
    (``in_sessions``), how a stored meta value reads back (``decode``), and the
    expression that reads a row's revision (``revision``)."""

    mark: str
    json_cast: str
    same_revision: str
    in_sessions: str
    decode: Callable[[Any], Mapping[str, Any]]
    revision: str


def read_session_meta(
    read: Callable[[str, Sequence[object]], Sequence[Any]], scope: Scope, sql: MetaSQL
) -> tuple[dict[str, Any], str | None]:
    """(meta, revision) of ``scope``'s session (``split_meta``), read with the store's
    ``read``."""
    m = sql.mark
    rows = read(
        f"SELECT meta FROM session_meta WHERE tenant = {m} AND session_id = {m}",
        (scope.tenant, scope.session_id),
    )
    return split_meta(sql.decode(rows[0][0]) if rows else None)


#: Session ids that hold a lock's state, not a conversation (``agent.lock``): left out of
#: session listings.
LOCK_SESSION_PREFIX = "contextos.lock."


def list_sessions(
    read: Callable[[str, Sequence[object]], Sequence[Any]], scope: Scope, *, mark: str
) -> list[str]:
    """The ids of ``scope``'s tenant's session logs (those with a row in
    ``session_meta``), oldest activity first; of its user and of its agent when set
    (:func:`owner_sessions`: both, when both are); only ``scope.session_id`` when set
    (so ``[session_id]`` or ``[]`` answers whether the user or agent takes part in
    it). Not the reserved ones that hold a lock's state (:data:`LOCK_SESSION_PREFIX`),
    which are no conversation.

    With both a user and an agent, the agent is looked for only in the user's sessions,
    each by its id (:func:`named_in_session`). Why: ANDed with the agent's sessions
    (:func:`owner_sessions`), listing a user's handful of sessions read every turn of
    the tenant (the turns have no index on the agent): about 30 ms at 100,000 turns on
    SQLite and 23 ms on PostgreSQL, against 0.2 and 0.6 ms now (a review)."""
    sql = f"SELECT session_id FROM session_meta AS listed WHERE tenant = {mark}"
    # Exactly the reserved prefix (``Session`` refuses it case-sensitively): LIKE
    # ignores ASCII case on SQLite, and hid "Contextos.Lock.x", a conversation (s57).
    sql += f" AND substr(session_id, 1, {len(LOCK_SESSION_PREFIX)}) <> {mark}"
    params: list[object] = [scope.tenant, LOCK_SESSION_PREFIX]
    if scope.session_id is not None:
        sql += f" AND session_id = {mark}"
        params.append(scope.session_id)
    for column in ("user_id", "agent_id"):
        if getattr(scope, column) is None:
            continue
        if column == "agent_id" and scope.user_id is not None:
            test, test_params = named_in_session(scope, column, "listed", mark=mark)
        else:
            owned, test_params = owner_sessions(scope, column, mark=mark)
            test = f"session_id IN ({owned})"
        sql += f" AND {test}"
        params.extend(test_params)
    return [r[0] for r in read(sql + " ORDER BY updated_at, session_id", params)]


#: The tables whose rows name who takes part in a session: its memories, its logged
#: turns and its own row (which names whoever wrote to the session first).
PARTICIPATION_TABLES = ("memories", "turns", "session_meta")


def participation_selects(
    tenant: str, condition: str, params: Sequence[object], *, mark: str
) -> list[tuple[str, list[object]]]:
    """One SELECT per table of :data:`PARTICIPATION_TABLES`, with its parameters, of
    the ids of ``tenant``'s sessions in which a memory, a logged turn or the session's
    row passes ``condition``: SQL on the columns the three share (``user_id``,
    ``agent_id``, ``session_id``), with its ``params``. A memory of no session has no
    ``session_id``: unless ``condition`` tests it, NULL is among the ids."""
    return [
        (
            f"SELECT DISTINCT session_id FROM {table} WHERE tenant = {mark} AND {condition}",
            [tenant, *params],
        )
        for table in PARTICIPATION_TABLES
    ]


def sessions_where(
    tenant: str, condition: str, params: Sequence[object], *, mark: str
) -> tuple[str, list[object]]:
    """:func:`participation_selects` as one SELECT (their UNION) and its parameters."""
    selects = participation_selects(tenant, condition, params, mark=mark)
    return " UNION ".join(sql for sql, _ in selects), [p for _, args in selects for p in args]


def owner_sessions(scope: Scope, column: str, *, mark: str) -> tuple[str, list[object]]:
    """A SELECT of the sessions of ``scope``'s user (``column`` ``"user_id"``) or agent
    (``"agent_id"``): those in which a memory, a logged turn or the session's row names
    them; only ``scope.session_id`` when set. With its parameters.

    The one meaning of "a user's sessions", for listing them (:func:`list_sessions`)
    and erasing them (:func:`user_sessions`). Why: the listing read only the session's
    row, which names whoever wrote first, so a user whose app logged the system prompt
    first, or who spoke in a group chat another opened, had no sessions in the list,
    while ``forget`` found their turns there and erased them (a review). A user's rows
    are read through the indexes on the user (``memories_scope``, ``turns_user``), so
    the cost follows their rows, not the tenant's; the turns have no index on the
    agent, so an agent's sessions read the tenant's turns (on SQLite about 100 ms per
    100,000 turns)."""
    condition = f"{column} = {mark} AND session_id IS NOT NULL"
    params: list[object] = [getattr(scope, column)]
    if scope.session_id is not None:
        condition += f" AND session_id = {mark}"
        params.append(scope.session_id)
    return sessions_where(scope.tenant, condition, params, mark=mark)


def named_in_session(
    scope: Scope, column: str, outer: str, *, mark: str
) -> tuple[str, list[object]]:
    """A condition that a memory, a logged turn or the row of the session of the
    enclosing query's table ``outer`` names ``scope``'s user (``column`` ``"user_id"``)
    or agent (``"agent_id"``), with its parameters: :func:`owner_sessions`'s meaning,
    tested for one session. One EXISTS per table of :data:`PARTICIPATION_TABLES`.

    Why: it reads each session's rows by the session's id (the tables' session
    indexes), so its cost follows the sessions the enclosing query keeps, where
    :func:`owner_sessions` reads every row that names an agent (no index on it). Each
    EXISTS asks for whole rows: asked for a constant, SQLite (with no table statistics)
    read the tenant's whole ``memories_scope`` index, which holds every column tested,
    rather than the session's memories; PostgreSQL probes by session either way."""
    tests = [
        f"EXISTS (SELECT * FROM {table} AS named WHERE named.tenant = {outer}.tenant"
        f" AND named.session_id = {outer}.session_id AND named.{column} = {mark})"
        for table in PARTICIPATION_TABLES
    ]
    return "(" + " OR ".join(tests) + ")", [getattr(scope, column)] * len(tests)


def swap_session_meta_row(
    cur: Any,
    scope: Scope,
    meta: Mapping[str, Any],
    now: Any,
    *,
    revision: str | None,
    sql: MetaSQL,
) -> bool:
    """``Store.swap_session_meta`` in the transaction behind ``cur``: one UPDATE that
    matches only while the row's revision is still ``revision``; when ``revision`` is
    None (no row was there, or one from before revisions), an INSERT that adds the
    row only if it is still absent. Returns whether it wrote.

    ``sql.same_revision`` is the store's null-safe test of the stored revision against a
    parameter (``MetaSQL``). A concurrent writer's UPDATE waits
    on the row lock (PostgreSQL) or the write lock (SQLite), then sees the new
    revision and matches nothing: of two writers that read one revision, one wins.
    """
    m, json_cast = sql.mark, sql.json_cast
    refuse_nul_in_scope(scope)  # a write: refused on every store, as put() refuses one
    body = fresh_meta_json(meta)
    updated = cur.execute(
        f"UPDATE session_meta SET meta = {m}{json_cast}, updated_at = {m} "
        f"WHERE tenant = {m} AND session_id = {m} AND {sql.same_revision}",
        (body, now, scope.tenant, scope.session_id, revision),
    )
    if updated.rowcount:
        return True
    if revision is not None:
        return False
    inserted = cur.execute(
        "INSERT INTO session_meta (tenant, session_id, user_id, agent_id, meta, updated_at) "
        f"VALUES ({m},{m},{m},{m},{m}{json_cast},{m}) ON CONFLICT (tenant, session_id) "
        "DO NOTHING",
        (scope.tenant, scope.session_id, scope.user_id, scope.agent_id, body, now),
    )
    return bool(inserted.rowcount == 1)


def reset_session_meta(
    cur: Any,
    tenant: str,
    sessions: object,
    now: Any,
    sql: MetaSQL,
    erased_at: float,
) -> None:
    """``forget``'s reset of the sessions it took turns from (``sessions``, the value
    of the store's ``sql.in_sessions`` test),
    in the transaction that deleted them: their JSON state (the rolling summary quotes
    the erased turns) starts over, at a new revision, so a compaction or pin in flight
    on the old state fails its swap instead of writing it back.

    A session whose row went with the user (its row named them) but that still holds
    another user's turns gets a row again, naming no user: without one, a compaction
    that read "no row" could insert its state after a second erasure (a revision that
    no longer exists cannot change).

    ``erased_at``: the store's clock (``Store.clock``) at the erasure, kept in the meta
    (:data:`ERASED_AT_KEY`): the wrapped calls' holds it is compared with are stamped by
    that clock, and the erasing host's may be minutes apart from it (a review).
    """
    m, json_cast, in_sessions = sql.mark, sql.json_cast, sql.in_sessions
    body = fresh_meta_json({ERASED_AT_KEY: erased_at})
    cur.execute(
        f"UPDATE session_meta SET meta = {m}{json_cast}, updated_at = {m} "
        f"WHERE tenant = {m} AND session_id {in_sessions}",
        (body, now, tenant, sessions),
    )
    cur.execute(
        "INSERT INTO session_meta (tenant, session_id, user_id, agent_id, meta, updated_at) "
        f"SELECT DISTINCT tenant, session_id, NULL, NULL, {m}{json_cast}, {m} FROM turns "
        f"WHERE tenant = {m} AND session_id {in_sessions} "
        "ON CONFLICT (tenant, session_id) DO NOTHING",
        (body, now, tenant, sessions),
    )


def turns_since(
    read: Callable[[str, Sequence[object]], Sequence[Any]],
    scope: Scope,
    last: Turn,
    revision: str | None,
    *,
    sql: MetaSQL,
    turn_of: Callable[[Sequence[Any]], Turn],
) -> list[Turn] | None:
    """``Store.turns_since`` in one indexed read: the turns from ``last`` on, each row
    with the session's meta revision; ``read`` is the store's (sql, params) -> rows and
    ``turn_of`` decodes a row of ``TURN_FIELDS``.

    Why both checks: seq numbers are not stable identities. ``forget`` deletes turns
    without renumbering the rest, and a log that lost its newest turns numbers the next
    ones from the new maximum, so ``last.seq`` may name another turn (caught by
    comparing the turn), while turns before it may be gone: ``forget`` gives every
    session it takes turns from a new meta revision (or takes its row away), so an
    unchanged revision means no turn was erased. Comparing one value keeps the read
    as cheap for a session of 50,000 turns as for one of ten (counting the turns
    before ``last`` cost 4.8 ms per call at 50,000).
    """
    m = sql.mark
    rows = read(
        f"SELECT {', '.join(TURN_FIELDS)}, (SELECT {sql.revision} FROM session_meta "
        f"WHERE tenant = {m} AND session_id = {m}) FROM turns WHERE tenant = {m} "
        f"AND session_id = {m} AND seq >= {m} ORDER BY seq",
        (scope.tenant, scope.session_id, scope.tenant, scope.session_id, last.seq),
    )
    if not rows or rows[0][-1] != revision:
        return None
    first = turn_of(rows[0][:-1])
    if not same_turn(first, last):
        return None
    return [turn_of(r[:-1]) for r in rows[1:]]


def same_turn(a: Turn, b: Turn) -> bool:
    """Whether ``a`` and ``b`` are one logged turn: same place, time, role and text (a
    turn logged again at a reused seq after an erasure differs in its time)."""
    return (a.session_id, a.seq, a.created_at, a.message.role, a.message.content) == (
        b.session_id,
        b.seq,
        b.created_at,
        b.message.role,
        b.message.content,
    )


# -- history -------------------------------------------------------------------

#: The ``history`` columns an event is written with, in this order. ``session_id`` is
#: the memory's session (SQLite V14, PostgreSQL V12): what a ``forget`` of the session,
#: or of its user, finds the history of a memory deleted earlier by (rows written before
#: it hold NULL; see :meth:`ErasedRows.history`).
HISTORY_FIELDS = (
    "tenant",
    "user_id",
    "memory_id",
    "event",
    "old_text",
    "new_text",
    "at",
    "actor",
    "session_id",
)


def insert_history_sql(mark: str) -> str:
    """The INSERT of one history event, its values in ``HISTORY_FIELDS`` order."""
    marks = ",".join([mark] * len(HISTORY_FIELDS))
    return f"INSERT INTO history ({', '.join(HISTORY_FIELDS)}) VALUES ({marks})"


#: The metadata key of a closed fact naming the memory that replaced it
#: (``memory/reconcile.py``).
SUPERSEDED_BY = "superseded_by"


def update_event(
    tenant: str, old: MemoryRecord, patch: Patch, at: object, actor: str
) -> tuple[object, ...]:
    """The history row of ``patch`` applied to ``old``, in ``HISTORY_FIELDS`` order.

    A patch that only closes the record's validity (``valid_to`` and nothing else) is
    how reconciliation retires a memory, so it is recorded as a DELETE; any other
    patch is an UPDATE. The new text is the old one when the patch leaves it alone,
    but for a close that links the memory replacing it (``superseded_by``: an
    inferring add's UPDATE writes the new fact as a memory of its own): None, the new
    text being that memory's. Why: the old fact's history read "UPDATE 'User lives in
    Lisbon.' -> 'User lives in Lisbon.'", an update that changed nothing (a review);
    the new fact's text is not copied here, since a purge of it blanks only its own
    history.
    """
    closing = patch.valid_to is not None and patch.text is None and not patch.metadata
    replaced = (
        patch.valid_to is not None
        and patch.text is None
        and _changed_keys(old.metadata, patch.metadata or {}) == {SUPERSEDED_BY}
    )
    new_text = patch.text if patch.text is not None else None if replaced else old.text
    event = "DELETE" if closing else "UPDATE"
    return (tenant, old.user_id, old.id, event, old.text, new_text, at, actor, old.session_id)


def add_event(record: MemoryRecord, at: object, actor: str) -> tuple[object, ...]:
    """The history row of ``record``'s insertion, in ``HISTORY_FIELDS`` order."""
    return (
        record.tenant,
        record.user_id,
        record.id,
        "ADD",
        None,
        record.text,
        at,
        actor,
        record.session_id,
    )


def _changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> set[str]:
    """The keys whose value differs between two metadata mappings (added, removed or
    changed)."""
    return {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}


class Deletion(NamedTuple):
    """One deleted memory, as its deletion is logged (:func:`log_deletions`)."""

    memory_id: str
    user_id: str | None
    text: str
    session_id: str | None


#: Ids a statement names at most (``id IN (...)``): under SQLite's 32,766 parameters
#: and PostgreSQL's 65,535, and few enough plans of distinct lengths.
IDS_A_STATEMENT = 500


def id_chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    """``ids``, each once, in lists of at most :data:`IDS_A_STATEMENT`: one a statement."""
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), IDS_A_STATEMENT):
        yield unique[start : start + IDS_A_STATEMENT]


def _in_ids(mark: str, ids: Sequence[str]) -> str:
    """``memory_id IN (...)`` with one parameter an id."""
    return f"memory_id IN ({','.join([mark] * len(ids))})"


def log_deletions(
    cur: Any,
    tenant: str,
    deletions: Sequence[Deletion],
    *,
    blank: Collection[str],
    at: object,
    actor: str,
    mark: str,
) -> None:
    """Record the deletion of each of ``deletions`` in its memory's history. Those whose
    id is in ``blank`` (a purge) keep the event but every text of their history is
    blanked, so the erased words are left nowhere.

    Why a statement per 500 ids, not per memory: on PostgreSQL each statement is a round
    trip, and a purge of a 2,400-turn session with its facts made 7,200 of them (1.4 s
    of its 2.4 s here, 7.8 s on a loaded CI machine)."""
    blank_history(cur, tenant, [d.memory_id for d in deletions if d.memory_id in blank], mark=mark)
    events = [
        (tenant, d.user_id, d.memory_id, "DELETE", None if d.memory_id in blank else d.text)
        + (None, at, actor, d.session_id)
        for d in deletions
    ]
    if events:
        cur.executemany(insert_history_sql(mark), events)


def blank_history(cur: Any, tenant: str, memory_ids: Sequence[str], *, mark: str) -> None:
    """Blank every text the history of ``memory_ids`` keeps (a purge)."""
    for chunk in id_chunks(memory_ids):
        cur.execute(
            "UPDATE history SET old_text = NULL, new_text = NULL "
            f"WHERE tenant = {mark} AND {_in_ids(mark, chunk)}",
            (tenant, *chunk),
        )


def history_texts(cur: Any, tenant: str, memory_ids: Sequence[str], *, mark: str) -> list[str]:
    """Every text the memories ``memory_ids`` had, as their history keeps them (an
    update's old and new texts). Read by a purge before it blanks them: a copy of an
    earlier text (a reply's quote of the turn as first said, by an earlier version)
    must go too; and by an update rewriting such quotes (``RecordUpdate.requote``)."""
    texts: set[str] = set()
    for chunk in id_chunks(memory_ids):
        rows = cur.execute(
            "SELECT old_text, new_text FROM history "
            f"WHERE tenant = {mark} AND {_in_ids(mark, chunk)}",
            (tenant, *chunk),
        ).fetchall()
        texts.update(t for row in rows for t in row if t)
    return sorted(texts)


def purge_remains(cur: Any, tenant: str, memory_ids: Sequence[str], *, mark: str) -> list[str]:
    """Blank the history of memories deleted earlier without a purge (``memory_ids``,
    none of them a record any more) and return the texts it held, whose copies in
    other records' context the caller scrubs.

    Why: a plain delete keeps the text in history as an audit trail, and a reply's
    context keeps its quote of the turn. A purge asked for later found no record and
    answered "no memory", so the text could then only leave with the whole user
    (``forget``) (a review)."""
    texts = history_texts(cur, tenant, memory_ids, mark=mark)
    if texts:
        blank_history(cur, tenant, memory_ids, mark=mark)
    return texts


#: The LIMIT of a read from an offset with no limit: both dialects take a number.
_NO_LIMIT = 2**62


def read_history(
    read: Callable[[str, Sequence[object]], Sequence[Any]],
    tenant: str,
    memory_id: str,
    *,
    mark: str,
    time: Callable[[Any], datetime],
    offset: int = 0,
    limit: int | None = None,
) -> list[HistoryEvent]:
    """The history of one memory, oldest first, from event number ``offset`` (the first
    is 0), at most ``limit`` events (None: all); ``read`` is the store's (sql, params)
    -> rows. A number is a stable key: a memory's history only grows at its end."""
    page, args = "", list[object]([tenant, memory_id])
    if limit is not None or offset:
        page = f" LIMIT {mark} OFFSET {mark}"
        args += [limit if limit is not None else _NO_LIMIT, offset]
    rows = read(
        "SELECT memory_id, event, old_text, new_text, at, actor FROM history "
        f"WHERE tenant = {mark} AND memory_id = {mark} ORDER BY seq{page}",
        args,
    )
    return [HistoryEvent(r[0], r[1], r[2], r[3], time(r[4]), r[5]) for r in rows]


# -- erasure -------------------------------------------------------------------


#: A condition on a row of ``history``: no memory of it is there (any more). An
#: erasure deletes the history of the memories it deleted, and of those deleted
#: earlier, never of a live one. Why: on PostgreSQL (READ COMMITTED) each statement of
#: the erasure reads the tables as they are when it starts; an add (memory and ADD
#: event, one transaction) that committed after the DELETE of the memories read them
#: and before the DELETE of the history did kept its memory and lost its history, a
#: live memory with no audit trail (review s41). Its memory stays and comes after the
#: erasure, so its history stays too.
OF_NO_MEMORY = (
    "NOT EXISTS (SELECT 1 FROM memories m "
    "WHERE m.tenant = history.tenant AND m.id = history.memory_id)"
)


@dataclass(frozen=True)
class ErasedRows:
    """What one ``forget`` removes, as WHERE clauses with their parameters, in one
    store's dialect: ``records`` (of ``memories`` and ``session_meta``), ``turns``,
    and ``history(ids)`` (the history of the erased records, ``ids``, and of those
    deleted earlier); ``sessions`` (one parameter, made by ``listed``) the sessions
    whose rows naming no user go (a user's) or whose rows all go (a session's).

    Why one description for a user and a session: the two erasures differ only in
    which rows they reach; reading the texts to scrub, deleting, resetting the
    sessions that live on and clearing the file's old pages are the same steps, so
    each store writes them once (a second copy for sessions would drift)."""

    records: str
    record_args: tuple[object, ...]
    turns: str
    turn_args: tuple[object, ...]
    user_id: str | None
    sessions: object
    mark: str
    any_of: Callable[[str], str]
    listed: Callable[[Sequence[str]], object]

    def history(self, ids: Sequence[str]) -> tuple[str, tuple[object, ...]]:
        """The history rows erased with the records ``ids``: theirs; the whole history
        of every memory that a row of it places in ``sessions`` (for a user, of the
        memories naming no user there, as ``records`` reaches them); and for a user
        every event naming them. Memories deleted earlier (their rows gone) included;
        a memory still there and not in ``ids`` (added while the erasure ran) left out.

        Why by session: the assistant's reply in a user's chat, deleted without a
        purge (a regenerated answer), names no user, and its history kept the user's
        words after ``forget`` of the user (a review). Why a memory's whole history by
        any of its rows: rows written before history held a session (or by an older
        release still running beside this one) hold NULL; a memory with one row written
        since is found, and goes whole."""
        m, t = self.mark, self.record_args[0]
        of_memories = f"SELECT memory_id FROM history WHERE tenant = {m} AND "
        arms = [f"{of_memories}{self.any_of('memory_id')}"]
        args: list[object] = [t, t, self.listed(ids)]
        if self.user_id is not None:
            arms.append(f"{of_memories}user_id = {m}")
            args += [t, self.user_id]
        no_user = "" if self.user_id is None else "user_id IS NULL AND "
        arms.append(f"{of_memories}{no_user}{self.any_of('session_id')}")
        args += [t, self.sessions]
        # One arm an index range each (a WHERE of ORs read every history row of the
        # tenant: 220 ms at 250,000 rows, against 6 ms).
        reached = f"tenant = {m} AND memory_id IN ({' UNION '.join(arms)})"
        # Of those, the erased records' (still rows where a store reads this before it
        # deletes them, as SQLite does) and of memories no longer there (OF_NO_MEMORY).
        args.append(self.listed(ids))
        return f"{reached} AND ({self.any_of('memory_id')} OR {OF_NO_MEMORY})", tuple(args)


def erased_rows(
    cur: Any,
    scope: Scope,
    sessions: Sequence[str],
    *,
    mark: str,
    any_of: Callable[[str], str],
    listed: Callable[[Sequence[str]], object],
) -> ErasedRows:
    """The rows ``forget(scope)`` removes (see :class:`ErasedRows`), ``sessions`` being
    :func:`erased_sessions`'s answer, read in the erasure's transaction behind ``cur``;
    ``any_of(column)`` is the dialect's test that a column is one of a list given as
    one parameter, made by ``listed``.

    A user: their rows, and in those of their sessions that no other user takes part
    in (:func:`shared_sessions`) the rows that name no user (an assistant's replies,
    turns added with only a session id or an agent id). A session: every row of it,
    whoever it names.

    Why not in a shared session: in a group chat the rows naming no user are the
    agent's replies and notes to everyone; erasing one user took the replies to the
    others and the agent's notes about them (a review). In a one-to-one chat they
    answer the user and quote them, so they go with the user."""
    m, in_sessions = mark, any_of("session_id")
    t, listed_sessions = scope.tenant, listed(sessions)
    if scope.user_id is None:
        where = f"tenant = {m} AND {in_sessions}"
        args: tuple[object, ...] = (t, listed_sessions)
        return ErasedRows(where, args, where, args, None, listed_sessions, m, any_of, listed)
    shared = shared_sessions(cur, scope, sessions, mark=m, any_of=any_of, listed=listed)
    listed_own = listed([s for s in sessions if s not in shared])
    records = f"tenant = {m} AND (user_id = {m} OR (user_id IS NULL AND {in_sessions}))"
    # Turns of the listed sessions only (on PostgreSQL those it locked): a session the
    # user began after they were read is written after this erasure.
    turns = (
        f"tenant = {m} AND ((user_id = {m} AND {in_sessions}) "
        f"OR (user_id IS NULL AND {in_sessions}))"
    )
    u = scope.user_id
    return ErasedRows(
        records,
        (t, u, listed_own),
        turns,
        (t, u, listed_sessions, listed_own),
        u,
        listed_own,
        m,
        any_of,
        listed,
    )


def erasure_target(scope: Scope) -> Scope:
    """``scope`` if ``forget`` may take it: a tenant and exactly one of a user and a
    session (ValueError otherwise). Why so strict: a scope naming both would read as
    "the user's part of the session" to one caller and as both to another, and one
    naming neither (or an agent) as the whole tenant; erasure is not undone, so
    anything but one plain target is refused."""
    if scope.agent_id is not None or (scope.user_id is None) == (scope.session_id is None):
        raise ValueError("forget needs exactly one of a user_id and a session_id")
    return scope


@dataclass
class Committed:
    """Whether a write's COMMIT went through (``done``), set by the store's transaction
    as it ends, also when a Ctrl-C (``KeyboardInterrupt``) comes right after the COMMIT:
    ``forget`` tells its erasure committed from this, never from what the database
    holds afterwards, which other processes change (:class:`~.base.ErasedThenInterrupted`)."""

    done: bool = False


def sessions_emptied(
    cur: Any,
    tenant: str,
    touched: Iterable[str],
    *,
    mark: str,
    any_of: Callable[[str], str],
    listed: Callable[[Sequence[str]], object],
) -> int:
    """How many of ``touched``, the sessions a ``forget`` took turns from, hold no turn
    now: the session logs it erased whole (read in its transaction, after its DELETE;
    a group chat another user's turns keep is not one). ``any_of``/``listed`` as for
    :func:`erased_rows`."""
    sessions = sorted(set(touched))
    if not sessions:
        return 0
    left = cur.execute(
        f"SELECT DISTINCT session_id FROM turns WHERE tenant = {mark} AND {any_of('session_id')}",
        (tenant, listed(sessions)),
    ).fetchall()
    return len(set(sessions) - {r[0] for r in left})


def erased_sessions(cur: Any, scope: Scope, *, mark: str) -> list[str]:
    """The sessions a ``forget(scope)`` reaches: the session named, or a user's
    (:func:`user_sessions`)."""
    if scope.session_id is not None:
        return [scope.session_id]
    return user_sessions(cur, scope, mark=mark)


def user_sessions(cur: Any, scope: Scope, *, mark: str) -> list[str]:
    """The sessions a ``forget(scope)`` reaches: the user's (:func:`owner_sessions`,
    which ``Memory.sessions(user_id=...)`` lists too), every one in which they have a
    memory, a logged turn or the session's row, and those a history event of theirs
    names (:func:`_history_sessions`)."""
    sql, params = owner_sessions(scope, "user_id", mark=mark)
    found = [r[0] for r in cur.execute(sql, params).fetchall()]
    sql, params = _history_sessions(scope, f"user_id = {mark}", [scope.user_id], mark=mark)
    return found + [r[0] for r in cur.execute(sql, params).fetchall() if r[0] not in found]


def _history_sessions(
    scope: Scope, condition: str, params: Sequence[object], *, mark: str
) -> tuple[str, list[object]]:
    """A SELECT of the sessions that ``scope``'s tenant's history events passing
    ``condition`` name (only ``scope.session_id`` when set), with its parameters. Why:
    a chat the app deleted without a purge leaves its memories only in history, and
    ``forget`` of its user kept the assistant's reply there ("Noted: your passport
    ...") since no live row named the user in that session any more (a review).
    Apart from :data:`PARTICIPATION_TABLES`: history names no agent, and a session
    whose memories are all deleted is no session of the user's to list."""
    where = f"tenant = {mark} AND session_id IS NOT NULL AND {condition}"
    args: list[object] = [scope.tenant, *params]
    if scope.session_id is not None:
        where += f" AND session_id = {mark}"
        args.append(scope.session_id)
    return f"SELECT DISTINCT session_id FROM history WHERE {where}", args


def shared_sessions(
    cur: Any,
    scope: Scope,
    sessions: Sequence[str],
    *,
    mark: str,
    any_of: Callable[[str], str],
    listed: Callable[[Sequence[str]], object],
) -> set[str]:
    """Those of ``sessions`` in which a user other than ``scope``'s takes part (a memory,
    a logged turn or the session's row names them, as :func:`owner_sessions` reads it):
    a group chat. Read through each table's session index, so the cost follows the
    sessions' rows.

    Why one statement per table, each ``SELECT DISTINCT``, the sessions tested first:
    in one UNION, or in another order, SQLite read the tenant's whole
    ``memories_scope`` index to find the memories of a few sessions (40 ms at 300,000
    memories, where ``memories_session`` answers in 1 ms)."""
    if not sessions:
        return set()
    found: set[str] = set()
    for sql, params in participation_selects(
        scope.tenant,
        f"{any_of('session_id')} AND user_id <> {mark}",
        [listed(sessions), scope.user_id],
        mark=mark,
    ):
        found.update(r[0] for r in cur.execute(sql, params).fetchall())
    sql, params = _history_sessions(
        Scope(scope.tenant),
        f"{any_of('session_id')} AND user_id <> {mark}",
        [listed(sessions), scope.user_id],
        mark=mark,
    )
    found.update(r[0] for r in cur.execute(sql, params).fetchall())
    return found


class PatchUpdates(ABC):
    """``Store.update`` for a SQL store, written once: encode the patch in the store's
    dialect, open its write transaction and run the :class:`RecordUpdate` steps in it.
    A store supplies the two dialect parts (``_patch_sets`` and ``_updating``)."""

    @nul_reads_as_absent(NotFound, "tenant", "memory_id")
    def update(
        self,
        tenant: str,
        memory_id: str,
        patch: Patch,
        *,
        actor: str = "api",
        count: TokenCounter | None = None,
        embeds: EmbeddedText | None = None,
        derived: Derived | None = None,
        quotes: Quoting | None = None,
    ) -> MemoryRecord:
        """See ``Store.update``.

        A patch that changes the rendering (``RENDERED_FIELDS``) replaces the stored
        token count with ``count`` of the patched record, or clears it without
        ``count``, in the patch's own UPDATE. The count is made before the write
        transaction opens (a tokenizer may be slow or remote, and the transaction
        holds the store's write lock), from the row as read then: if another writer
        changes the row in between, the count's digest (``memory.record_tokens``) no
        longer matches what is stored and a reader counts it again."""
        now, (sets, params) = self._patch_sets(patch)
        recount = any(getattr(patch, f) is not None for f in RENDERED_FIELDS)
        counted = None
        if recount and count is not None:
            current = self.get(tenant, memory_id)
            if current is None:
                raise NotFound(f"no memory {memory_id!r}")
            counted = count(patched(current, patch))
        with self._updating() as steps:
            if recount:
                sets = [*sets, f"token_count = {steps.mark}", f"token_counter = {steps.mark}"]
                params = [*params, counted.tokens if counted else None]
                params.append(counted.counted_with if counted else None)
            return steps.apply(
                tenant,
                memory_id,
                patch,
                (sets, params),
                now=now,
                actor=actor,
                embeds=embeds,
                derived=derived,
                quotes=quotes,
            )

    def _close_in(self, steps: RecordUpdate, closes: Sequence[Close], *, actor: str) -> None:
        """``Store.put``'s ``closes``, in the put's transaction (``steps``): each row
        locked, checked to be still open and as read (else ``Conflict``), and patched as
        ``update`` patches it, with the close's token count when the patch changes the
        rendering."""
        for close in closes:
            based_on = close.based_on
            found = steps.locked(based_on.tenant, based_on.id)
            if found is None or not close.matches(found[1]):
                raise Conflict(f"memory {based_on.id!r} changed or ended since it was read")
            now, (sets, params) = self._patch_sets(close.patch)
            if any(getattr(close.patch, f) is not None for f in RENDERED_FIELDS):
                tokens = close.tokens
                sets = [*sets, f"token_count = {steps.mark}", f"token_counter = {steps.mark}"]
                params = [*params, tokens.tokens if tokens else None]
                params.append(tokens.counted_with if tokens else None)
            steps.apply(
                based_on.tenant,
                based_on.id,
                close.patch,
                (sets, params),
                now=now,
                actor=actor,
            )

    @abstractmethod
    def get(self, tenant: str, memory_id: str) -> MemoryRecord | None:
        """See ``Store.get``."""

    @abstractmethod
    def _patch_sets(self, patch: Patch) -> tuple[object, tuple[list[str], list[object]]]:
        """The store's "now" and the patch's SET clauses (:func:`patch_sets`) in its
        dialect."""

    @abstractmethod
    def _updating(self) -> AbstractContextManager[RecordUpdate]:
        """The store's :class:`RecordUpdate` on a cursor inside one write transaction."""


@dataclass(frozen=True)
class VectorWrite:
    """One ``Store.set_vectors`` call, checked: a float32 row of ``vectors`` per id
    (at least one), and the claimant the write is conditional on (None: none)."""

    tenant: str
    ids: list[str]
    vectors: Vector
    model: str
    owner: str | None


class VectorWrites(ABC):
    """``Store.set_vectors`` for a SQL store, written once: the arguments are checked
    here and a store supplies only its write (``_write_vectors``)."""

    @nul_reads_as_absent(None, "tenant", "owner")
    def set_vectors(
        self,
        tenant: str,
        ids: Sequence[str],
        vectors: Vector,
        model: str,
        *,
        owner: str | None = None,
    ) -> None:
        """See ``Store.set_vectors``."""
        if len(ids) != len(vectors):
            raise ValueError("ids and vectors differ in length")
        # An id holding NUL is of no record (nul_reads_as_absent): ignored, as unknown ids.
        keep = [k for k, memory_id in enumerate(ids) if not _holds_nul(memory_id)]
        if keep:
            rows = np.asarray(vectors, dtype=np.float32)
            if len(keep) < len(ids):
                rows = rows[keep]
            self._write_vectors(VectorWrite(tenant, [ids[k] for k in keep], rows, model, owner))

    @abstractmethod
    def _write_vectors(self, batch: VectorWrite) -> None:
        """Store ``batch`` in one write transaction: with ``batch.owner``, only the
        records whose queue row that claimant still holds; ids of no record of the
        tenant are ignored; for an id given twice, its last vector."""
