"""The Store protocol: durable memory records, their history, session logs,
and lexical and vector search under a typed :class:`~contextos.types.Filter`.

Every method takes the tenant explicitly (inside a Scope or Filter): a store
never answers across tenants. Backends convert their driver errors into
:class:`~contextos.errors.StoreError`. ``tests/store_contract.py`` is the
specification: a new backend is done when that suite passes against it.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from ..errors import Conflict, StoreError
from ..times import utc
from ..types import Filter, HistoryEvent, MemoryRecord, Message, Scope, TokenCount, Turn

Vector = npt.NDArray[np.float32]

#: A record's count of tokens, made by its writer (``Memory``) and stored with the row:
#: counted once at write time instead of on every search that returns it. None when
#: it could not count (the row is then counted when read).
TokenCounter = Callable[[MemoryRecord], TokenCount | None]

#: The text a record's vector is made of (``Store.update`` compares it before and after
#: a metadata change, to tell whether the stored vector still describes the record).
EmbeddedText = Callable[[MemoryRecord], str]


#: How the reply to a session turn quotes it: the reply part of the reply's context
#: (``replying to Ann: ...``) for the turn as it is (``Memory`` passes the quote as
#: ``memory.ingest`` writes it; see ``Store.update``'s ``quotes``).
QuoteOf = Callable[[MemoryRecord], str]


@dataclass(frozen=True)
class Quoting:
    """How a session turn is written into contexts (``Memory`` passes ``memory.ingest``'s
    own functions), for ``Store.update`` to write it anew in the update's transaction:
    ``reply`` quotes it in the context of the reply to it; ``own`` is the turn's own
    context after an update from one record (as it was) to another (as stored, with its
    context as it is now): the name it was said under follows a new speaker."""

    reply: QuoteOf
    own: Callable[[MemoryRecord, MemoryRecord], str]


class Erasure(int):
    """What ``Store.forget`` erased, counted in its own transaction: the records removed
    (the int itself, which is what ``forget`` always returned, and ``Memory.forget``
    returns), ``turns``, the session log turns removed, and ``sessions``, the session
    logs it emptied (they had turns, none is left: a log another user's turns keep alive
    is not one).

    Why the store counts them: ``contextos forget -u`` counted the log before and after,
    so turns another process logged meanwhile hid the ones erased (a review)."""

    sessions: int
    turns: int

    def __new__(cls, memories: int, *, sessions: int = 0, turns: int = 0) -> Erasure:
        erased = super().__new__(cls, memories)
        erased.sessions = sessions
        erased.turns = turns
        return erased

    @property
    def memories(self) -> int:
        return int(self)

    def __repr__(self) -> str:
        return f"Erasure({int(self)}, sessions={self.sessions}, turns={self.turns})"


class ErasedThenInterrupted(KeyboardInterrupt):
    """A Ctrl-C (``KeyboardInterrupt``) that reached ``Store.forget`` once its erasure had
    committed: while the store finished it (SQLite's rebuild of the file, which runs in C
    for a second or more on a large store, the signal waiting for it). ``erased`` is what
    the committed transaction removed; the rest of the erasure (the rebuild, the WAL) is
    finished as the store closes, or by the next process that opens the file.

    Why: ``forget`` said "aborted" for an erasure that had happened; read from the
    database after the interrupt, "committed" was guessed from counts other processes
    change (a review). A ``KeyboardInterrupt`` still, to whoever does not look for it."""

    def __init__(self, erased: Erasure) -> None:
        super().__init__()
        self.erased = erased


class ErasurePending(StoreError):
    """An erasure (``Store.forget``, ``forget_tenant``, a purge) committed (``erased``: what
    it removed; no read finds any of it), but could not finish removing the old bytes:
    an open reader (a backup, a ``sqlite3`` shell, another process's long read) kept the
    old pages in SQLite's write-ahead log past the busy timeout, or the file could not be
    rebuilt (no room on the disk). ``reason`` says which and what finishes it: for the
    reader, the next write or close of any process (a retried forget too, which says 0);
    for the disk, room.

    Why: it was a plain ``StoreError`` raised after the commit, read as "nothing done":
    the server answered 503 "busy, retry", the retry answered ``forgotten: 0``, and how
    much had been erased was said nowhere (a review)."""

    def __init__(self, erased: Erasure, reason: str) -> None:
        count = int(erased)
        super().__init__(f"erased {count} memor{'y' if count == 1 else 'ies'}; {reason}")
        self.erased = erased
        self.reason = reason


@dataclass(frozen=True)
class Newest:
    """What a write was based on: the newest record matching ``filter`` (newest by
    creation, as ``Store.list`` orders) had the id ``id`` (None: there was none) and,
    where ``updated_at`` is given, that time of its last update
    (``MemoryRecord.updated_at``).

    Why the update time: a session's next turn quotes the newest turn as read, its
    text and its speaker. An update of that turn leaves it the newest, so the write
    went through and quoted what the update had just replaced (and rewritten in every
    reply already stored). A hash of the text alone let a new speaker's name through
    (a review: a pseudonymised name stayed in the reply); every update moves
    ``updated_at``, of the text or of the metadata."""

    filter: Filter
    id: str | None
    updated_at: datetime | None = None


def check_newest(seen: Newest, found: tuple[str, datetime] | None) -> None:
    """Raise ``Conflict`` unless ``found`` (the id and update time of the newest record
    matching ``seen.filter``, read in a write's transaction and decoded as the store
    decodes a record's; None: there is none) is what ``seen`` names."""
    if (found[0] if found else None) != seen.id or (
        found and seen.updated_at is not None and found[1] != seen.updated_at
    ):
        raise Conflict("the newest record changed since it was read")


@dataclass(frozen=True)
class Repeats:
    """What an add that stores a new text was based on: the live records of ``scope``
    whose text has the hash ``hash`` were ``ids`` (none of them the same memory).

    Why: an add hands back a stored record it repeats exactly instead of storing a
    second (``Memory.add(dedupe=True)``). Threads of one ``Memory`` take turns for
    that, but two processes adding one text at once (a double submit reaching two
    server workers, a CLI beside a server) both found nothing and both stored it.
    ``Store.put`` checks this in the write's own transaction; the add, refused, reads
    again and hands back the other process's record."""

    scope: Scope
    hash: str
    ids: frozenset[str]


def check_repeats(seen: Repeats, found: Iterable[str]) -> None:
    """Raise ``Conflict`` if a record with ``seen``'s text was stored in its scope
    since it was read (``found``: the ids live now; one erased meanwhile does not
    count)."""
    if set(found) - seen.ids:
        raise Conflict("a record with the same text was stored since it was read")


@dataclass(frozen=True)
class Ranked:
    """A record id with a retriever's score (higher is better)."""

    id: str
    score: float


@dataclass(frozen=True)
class Quarantined:
    """A record whose embedding failed: kept out of the queue, with the error."""

    id: str
    tenant: str
    error: str
    at: datetime


@dataclass(frozen=True)
class EmbeddingStatus:
    """How far embedding has got: records still waiting, and those set aside: the
    oldest :data:`QUARANTINED_SHOWN` listed, ``quarantined_total`` counts them all."""

    pending: int
    quarantined: tuple[Quarantined, ...] = ()
    quarantined_total: int = 0


#: Quarantined records an :class:`EmbeddingStatus` lists (the oldest first).
QUARANTINED_SHOWN = 100


@dataclass(frozen=True)
class Patch:
    """A partial update of a record; ``None`` leaves a field as it is."""

    text: str | None = None
    metadata: Mapping[str, Any] | None = None
    valid_to: datetime | None = None
    event_time: datetime | None = None
    context: str | None = None


@dataclass(frozen=True)
class Derived:
    """Records made from one memory (the facts stored beside a turn), replaced in the
    transaction of that memory's ``Store.update``: ``drop`` are deleted (ids already
    gone are skipped) and ``put`` inserted (as ``Store.put`` inserts).

    Why in one transaction: the facts repeat what the turn says. Changed one write at
    a time, a crash between the turn's update and the facts' replacement left facts
    with the old meaning pointing at the new text, and nothing ever replaced them.

    The records dropped are logged as deleted without their texts (as a purge logs
    them): they repeat the memory's, whose own history keeps the old text, and once
    dropped nothing links them to it any more, so a later purge of the memory could
    not reach a text left in their history.

    ``based_on`` is the memory as the caller read it to make ``put``: if the stored
    row no longer has its text, metadata and event time (another writer changed it
    since), the update raises ``errors.Conflict`` and writes nothing; the caller
    reads it again and derives anew.
    """

    based_on: MemoryRecord
    drop: Sequence[str] = ()
    put: Sequence[MemoryRecord] = ()

    def matches(self, stored: MemoryRecord) -> bool:
        """Whether ``stored`` is still the record these were derived from."""
        b = self.based_on
        return (stored.text, dict(stored.metadata), stored.event_time) == (
            b.text,
            dict(b.metadata),
            b.event_time,
        )


@dataclass(frozen=True)
class Close:
    """A record a ``Store.put`` ends in its own transaction (a reconciler's UPDATE closes
    the fact it replaces, a DELETE the fact it ends): ``patch`` (its ``valid_to``, and a
    link in its metadata) is applied to the record ``based_on`` (as the caller read it)
    only if the stored row is still open (no ``valid_to``) with the text, metadata and
    event time read; else ``errors.Conflict`` and the put writes nothing. ``tokens`` is
    the record's count after the patch (None: counted when read).

    Why in the put's transaction: two adds that both read a fact open and both replace
    it each wrote their new fact, and the second close only overwrote the first, so both
    replacements stayed true. Conditional and in one transaction, the second is refused
    and decided again, seeing the first's."""

    based_on: MemoryRecord
    patch: Patch
    tokens: TokenCount | None = None

    def matches(self, stored: MemoryRecord) -> bool:
        """Whether ``stored`` is still open and as ``based_on`` was read."""
        return stored.valid_to is None and Derived(self.based_on).matches(stored)


def newest_checks(after: Newest | Sequence[Newest] | None) -> tuple[Newest, ...]:
    """``Store.put``'s ``after`` as a tuple of the checks it makes, in order."""
    if after is None:
        return ()
    return (after,) if isinstance(after, Newest) else tuple(after)


#: timestamptz's resolution: a write based on a scope's newest record is stamped at
#: least this long after it.
TICK = timedelta(microseconds=1)

#: How many of its lengths ahead of the store's clock a lease may end and still run: a
#: holder stamps one length ahead, so an end further off was stamped before the clock
#: stepped back, and no live holder stands behind it.
LEASE_REACH = 2


def lease_runs(until: object, now: float, lease_s: float) -> bool:
    """Whether a lease of ``lease_s`` seconds ending at ``until`` still runs at ``now``,
    both by the store's clock (``Store.clock``): not yet ended, and not ending further
    ahead than :data:`LEASE_REACH` lengths. Why the bound: a dead holder's lease stamped
    before the host's clock stepped back an hour held its work for that hour (a review).
    The offload's archive hold and the agent owner lock judge theirs by it."""
    return isinstance(until, int | float) and now < until <= now + LEASE_REACH * lease_s


def stamped_after(
    records: Sequence[MemoryRecord], scope: Scope, newest: datetime | None, now: datetime
) -> Sequence[MemoryRecord]:
    """``records``, each of ``scope`` created no earlier than :data:`TICK` after
    ``newest`` (the creation time of the scope's newest record, read in the put's
    transaction, under the scope's lock or the store's write lock).

    Why: a write based on a scope's newest record (``put(after=...)``: a session's next
    turn, numbered after and quoting the one before) must become the newest, and newest
    is by ``created_at``, which each process stamps from its own clock. With one app
    server's clock 2 s behind another's (PostgreSQL), or one host's clock stepped back
    (SQLite, a review), its turns never became the session's newest, so the next add
    numbered itself after, and quoted, an older turn. Stamped here, a session's order
    is the order its writes committed in; a clock that is right is left alone. Both
    stores' ``put`` use it."""
    if newest is None:
        return records
    floor = newest + TICK
    in_scope = Filter(scope=scope, include_invalid=True)
    stamped: builtins.list[MemoryRecord] = []
    for r in records:
        if utc(r.created_at or now) < floor and in_scope.matches(r, now):
            updated = None if r.updated_at is None else max(utc(r.updated_at), floor)
            r = replace(r, created_at=floor, updated_at=updated)
        stamped.append(r)
    return stamped


def check_unchanged(expected: Mapping[str, str], found: Iterable[Sequence[Any]]) -> None:
    """Raise ``Conflict`` unless ``found`` (id, hash rows of the open records read in a
    write's transaction) holds every id of ``expected`` with its hash (``Store.put``'s
    ``unchanged``)."""
    now = {row[0]: row[1] for row in found}
    gone = [i for i, h in expected.items() if now.get(i) != h]
    if gone:
        raise Conflict(f"{len(gone)} record(s) it was derived from changed, ended or were erased")


def patch_columns(patch: Patch) -> builtins.list[tuple[str, Any]]:
    """The columns a patch sets, with their values before backend encoding.

    Both backends build their UPDATE from this, so a new Patch field is added once.
    """
    from ..types import content_hash

    cols: builtins.list[tuple[str, Any]] = []
    if patch.text is not None:
        cols += [("text", patch.text), ("hash", content_hash(patch.text))]
    for name in ("metadata", "context", "valid_to", "event_time"):
        value = getattr(patch, name)
        if value is not None:
            cols.append((name, value))
    return cols


@runtime_checkable
class Store(Protocol):
    """Durable storage for contextos. See the module docstring."""

    #: Opened read-only (an SQLite file or folder this process may not write): every
    #: write raises ``StoreError``, and nothing pending can be embedded here.
    read_only: bool

    # -- records ---------------------------------------------------------
    def put(
        self,
        records: Sequence[MemoryRecord],
        *,
        actor: str = "api",
        after: Newest | Sequence[Newest] | None = None,
        unchanged: Mapping[str, str] | None = None,
        closes: Sequence[Close] = (),
        repeats: Sequence[Repeats] = (),
    ) -> None:
        """Insert new records atomically (all or none) and log an ADD for each; each
        record's ``token_count`` is stored as it is (None: counted when read).

        ``after``: write only if the newest record matching its filter is still the
        one it names (each of several, checked in the order given), checked in the
        write's own transaction, else raise ``errors.Conflict`` and write nothing. A
        session's next turn is numbered after, and quotes, the turn before it: another
        add in between would repeat its number, and an erasure in between would have
        the quote of an erased turn written after the erasure scrubbed the rest. An
        inferring add checks its user's newest record too: another add of a fact it
        was deciding about would otherwise go unseen, and the fact be stored twice.

        ``unchanged``: ids (of the write's tenant) and content hashes of the records
        the new ones were derived from; write only if each still exists, open (no
        ``valid_to``), with that hash, else ``Conflict``. A reconciler shown a user's
        facts may merge one into the fact it adds: erased (or rewritten) meanwhile,
        its old text would be written again after the erasure; closed meanwhile, it
        decided on a fact no longer believed.

        ``closes``: records ended after the inserts, in the same transaction, each
        only if still open and as read (see :class:`Close`), else ``Conflict``; a
        put with closes and no records still makes its checks and writes them.

        ``repeats``: for each, no live record of its scope with its text hash beyond
        the ids it names, else ``Conflict`` (see :class:`Repeats`): checked so that
        two handles writing one text at once, in any processes, store it once."""
        ...

    def restore(
        self, records: Sequence[MemoryRecord], *, actor: str = "import"
    ) -> builtins.dict[str, MemoryRecord | None]:
        """Insert, in one transaction, those of ``records`` (all of one tenant, ids
        distinct) whose id is not stored yet, exactly as given: id, times, validity,
        context, metadata and token count kept (``put`` does too), each indexed for
        keyword search, queued for its vector and logged as an ADD by ``actor``.

        Returns the ids that were not inserted because they are stored already: each
        with its stored record, or None where the id belongs to another tenant (SQLite,
        where ids are unique across tenants). Nothing stored is changed: the caller
        tells a record already restored from one that differs.

        Why not ``put``: an export restored (a backup, a move from SQLite to
        PostgreSQL) must keep what ``put``'s callers check against the live store (the
        session's newest record, a text's repeats), and be run again after a crash
        without storing anything twice (``Memory.import_records``)."""
        ...

    def get(self, tenant: str, memory_id: str) -> MemoryRecord | None:
        """One record of ``tenant`` by id, or None."""
        ...

    def get_many(self, tenant: str, ids: Sequence[str]) -> builtins.list[MemoryRecord]:
        """Records of ``tenant`` for ``ids``, in the order given; unknown ids are skipped.
        All of one moment: read in one snapshot, however many ids."""
        ...

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
        """Apply ``patch``, log an UPDATE, clear the stored vector if the text changed,
        or if ``embeds`` says the record embeds another text after a metadata change.
        With ``derived``, replace the records made from it in the same transaction
        (see :class:`Derived`; ``errors.Conflict`` when the row changed since it was
        read).

        ``quotes`` (for a session turn): when the turn is quoted otherwise after the
        write (its text or speaker changed), the records of its session that answer it
        (``erasure.answers``: the reply numbered after it and the facts beside that
        reply, selected by that number in SQL) and whose reply part quotes a text it
        had (its current one or one in its history: ``erasure.Scrub``) get
        ``quotes.reply`` of the turn as stored instead, and the turn's own context
        becomes ``quotes.own`` of it (a new speaker's name), in the same transaction.
        A reply quoted the turn as first said, so a redacted text stayed searchable
        through the reply.

        A patch of what the rendering reads (text, metadata, event time) stores
        ``count`` of the updated record as its token count, in the same UPDATE (none
        without ``count``: a reader counts it then). ``count`` runs before the write
        transaction opens, so a slow tokenizer holds no lock; its count is stamped
        with a digest of what it counted, so if another writer changed the row
        meanwhile a reader sees it does not match and counts again.

        A cleared vector is queued again and its claim ends (a worker embedding the
        old record stores nothing for it). ``embeds`` is the text a record's vector is
        made of (``Memory`` passes ``memory.render.embedding_text``: the speaker, an
        image caption and the expanded facts come from the metadata); the store cannot
        tell which metadata that reads, so without ``embeds`` only a text change clears
        the vector, and a metadata tag (reconciliation's ``superseded_by``) never does.

        Raises NotFound when the id is not in this tenant.
        """
        ...

    def delete(
        self, tenant: str, memory_id: str, *, actor: str = "api", purge: bool = False
    ) -> None:
        """Hard-delete a record (text, index rows, vector) and log a DELETE.

        By default the history keeps the texts the record had (an audit trail);
        ``purge=True`` removes them from history and from every copy (reply
        contexts, index pages), leaving the events without their text. A purge
        looks for copies of every text the record ever had (its history's, read
        before they are blanked), not only its current one: a reply stored by an
        earlier version quotes the turn as it was when the reply was added (an update
        now rewrites the quote: ``update``'s ``quotes``).
        """
        ...

    def delete_many(
        self,
        tenant: str,
        ids: Sequence[str],
        *,
        actor: str = "api",
        purge: bool = False,
        derived: Collection[str] = (),
        based_on: Sequence[MemoryRecord] = (),
    ) -> builtins.list[str]:
        """Delete those of ``ids`` that exist, as ``delete`` deletes each, in one
        transaction; returns the ids deleted (those already gone are skipped).
        ``derived``: those of ``ids`` made from another record deleted with them (a
        turn's facts); their history keeps no text even without ``purge``, as the
        record they repeat keeps it: a later purge of that record, which cannot tell
        which deleted records were made from it, leaves the text nowhere.
        ``based_on``: records as the caller read them (a delete with ``expected_text``
        or ``expected_updated_at``): unless each is still stored with the text,
        metadata and event time read (:meth:`Derived.matches`), checked in the
        transaction, ``errors.Conflict`` (``NotFound`` when it is gone) and nothing is
        deleted.

        Why: a turn and the facts stored beside it repeat one text. Deleted one
        transaction each, a crash after the turn's left the facts searchable (and a
        purge's text in their history) with nothing to retry it: the turn was gone.
        """
        ...

    def find_by_hash(self, scope: Scope, content_hash: str) -> builtins.list[MemoryRecord]:
        """Current records with this text hash in exactly ``scope`` (every part equal,
        missing parts included), oldest first: finds exact repeats through an index."""
        ...

    def list(
        self, flt: Filter, *, limit: int = 100, offset: int = 0, max_bytes: int | None = None
    ) -> builtins.list[MemoryRecord]:
        """Records matching ``flt``, newest first: ``limit`` of them from ``offset``, or
        fewer where ``max_bytes`` cuts the page (the UTF-8 bytes of their text and
        metadata; at least one record; :func:`~contextos.store.records.within_bytes`)."""
        ...

    def list_after(
        self,
        flt: Filter,
        *,
        after: str | None = None,
        limit: int = 100,
        offset: int = 0,
        max_bytes: int | None = None,
        oldest_first: bool = False,
    ) -> builtins.list[tuple[MemoryRecord, str]]:
        """Records matching ``flt`` in ``list``'s order (newest first), each with its
        key: ``limit`` of them from ``offset`` (or fewer, cut by ``max_bytes`` as
        ``list`` cuts) among those that come after the record whose key is ``after``
        (None: from the newest). A key is the record's place in that order (its
        ``created_at`` and the store's row number, as the store holds them), opaque to
        callers; a key this store did not make raises ValueError.

        Why: paged by offset, or by an offset under a clock time, a record written
        meanwhile moved the rest down (a page began with the last one of the page
        before) -- a record's ``created_at`` is stamped before its write waits for
        the store's lock, so a record committed after a page was read could still be
        older than that read. A page after a key holds only records after it in the
        order, whatever was written or deleted since the key was read.

        ``oldest_first``: in the opposite order (oldest first; a key is then followed by
        the records after it in that order). An export reads so, and its import stores
        the records in the order they were written: records made at one instant (the
        turns an offload archives) keep their order, which tells a session's newest."""
        ...

    def list_snapshot(
        self, flt: Filter, *, limit: int = 500, max_bytes: int | None = None
    ) -> Iterator[builtins.list[tuple[MemoryRecord, str]]]:
        """Every record matching ``flt``, oldest first, in pages of ``limit`` (cut by
        ``max_bytes`` as :meth:`list_after` cuts), all of them read in one snapshot of
        the store: the pages together are the store as it was at one moment, whatever is
        written, updated or deleted while they are read. Lazy: the snapshot is held
        until the iterator is exhausted or closed (a generator: ``close()`` it, or read
        it to the end).

        Why: an export read each page on its own, so a fact superseded between two
        pages came back current beside the fact superseding it, and a memory deleted
        meanwhile came back on restore (review s57)."""
        ...

    def pointing_to(
        self, scope: Scope, key: str, ids: Sequence[str]
    ) -> builtins.list[MemoryRecord]:
        """Records in ``scope`` (any validity) whose ``metadata[key]`` is one of ``ids``
        (a string), in no set order: the facts stored beside many turns (``fact_of``),
        found in one read. ``key`` is a dotted path, as in a metadata filter (a numeric
        part names an object key, not an array element)."""
        ...

    def count(self, flt: Filter) -> int:
        """How many records match ``flt``."""
        ...

    def history(
        self, tenant: str, memory_id: str, *, offset: int = 0, limit: int | None = None
    ) -> builtins.list[HistoryEvent]:
        """The changes to a record, oldest first (kept after deletion): from event
        number ``offset`` (the first is 0), at most ``limit`` (None: every one)."""
        ...

    def forget(self, scope: Scope) -> Erasure:
        """Erase everything of ``scope.user_id``, or of ``scope.session_id``, in
        ``scope.tenant`` (exactly one of the two, and no agent_id: ValueError
        otherwise). A user: records, history, index rows, vectors, session logs; in
        the user's sessions also the records and turns that name no user. A session:
        its log and metadata, and every record of it whoever it names, with their
        history, index rows and vectors. Both: the history of the records they reach
        deleted earlier too (its events name the record's session; those written
        before they did name none, ``records.ErasedRows.history``), and copies of
        the erased text in other records' reply context. A session that loses turns
        and lives on (another user's turns remain) has its metadata reset to only the
        erasure's time (``records.ERASED_AT_KEY``), at a new revision: its rolling
        summary quoted the erased turns, and the next compaction rebuilds it from those
        that remain (pins go too); a row that named the user is made again naming
        nobody.
        Returns the number of records removed, an :class:`Erasure` that also counts the
        session log's turns and the logs emptied, in the erasure's transaction. A
        ``KeyboardInterrupt`` once that transaction has committed is raised as
        :class:`ErasedThenInterrupted`, holding the same counts."""
        ...

    def forget_tenant(self, tenant: str) -> int:
        """Erase every row of ``tenant``: records, history, index rows, vectors, session
        logs and metadata, with ``forget``'s guarantee on what is left of them (an
        offboarding: the per-user and per-session erasures cannot reach records that
        name only an agent, nor list what there is). Returns the records removed."""
        ...

    # -- search ----------------------------------------------------------
    def keyword_search(
        self, flt: Filter, query: str, *, limit: int, context_weight: float = 0.5
    ) -> builtins.list[Ranked]:
        """BM25 over text and context (context scaled by ``context_weight``), best first."""
        ...

    def vector_search(self, flt: Filter, vector: Vector, *, limit: int) -> builtins.list[Ranked]:
        """Cosine similarity over stored vectors, best first."""
        ...

    def without_vectors(
        self, tenant: str, ids: Sequence[str], *, dimensions: int
    ) -> builtins.set[str]:
        """Those of ``ids`` (of ``tenant``) that ``vector_search`` with a vector of
        ``dimensions`` cannot rank, because no such vector is stored for them: pending
        in the embedding queue, quarantined, with a vector of another size, or unknown.
        A vector kept while it is queued again (``requeue_stale_vectors``) counts.

        The hybrid retriever asks this right after its ``vector_search``, about the
        keyword hits that search did not return: one call per search, so it is cheap
        (SQLite answers from the vector index that search brought up to date, without
        SQL; a vector stored since it may not count yet)."""
        ...

    def vector_scores(
        self, tenant: str, ids: Sequence[str], vector: Vector
    ) -> builtins.dict[str, float]:
        """The score ``vector_search`` gives each of ``ids`` (of ``tenant``) that has a
        stored vector of ``vector``'s size; the others are left out. The retriever asks
        this with ``min_score`` about keyword hits ranked beyond the vector search's
        depth, whose cosine is otherwise unknown."""
        ...

    # -- vectors (embedded in batches behind add) -------------------------
    def set_vectors(
        self,
        tenant: str,
        ids: Sequence[str],
        vectors: Vector,
        model: str,
        *,
        owner: str | None = None,
    ) -> None:
        """Store (normalised) vectors for records; unknown ids are ignored. With
        ``owner`` (a claimant of ``claim_vectors``), only records whose queue row it
        still claims are written, in the same transaction as the check; the others
        are skipped and stay pending: their text changed since the claim (which ends
        it) or another worker took the claim over, so the vector may describe text
        the record no longer has."""
        ...

    def requeue_stale_vectors(self, model: str, *, dimensions: int | None = None) -> int:
        """Queue again every record whose vector was stored by another ``model`` (another
        embedder, or an older text recipe) or, given ``dimensions``, is of another size,
        and every record quarantined by another model (or by none recorded); returns how
        many. Their old vectors stay searchable until new ones replace them."""
        ...

    def pending_vectors(self, *, limit: int) -> builtins.list[MemoryRecord]:
        """Records of any tenant waiting for a vector (oldest first; vectors queued again
        by ``requeue_stale_vectors`` keep serving while they wait)."""
        ...

    def claim_vectors(
        self, owner: str, *, limit: int, lease_s: float
    ) -> builtins.list[MemoryRecord]:
        """Claim up to ``limit`` pending records for ``owner`` for ``lease_s`` seconds
        and return them (oldest first): those nobody holds, those whose claim ran out
        (its holder died or hung), and those ``owner`` holds already (a batch it failed
        to store). Several processes' embedding workers on one store thus embed each
        record once; ``set_vectors`` or ``quarantine_vectors`` ends the claim with the
        record's place in the queue, and a change of the record's text ends it too."""
        ...

    def extend_claim(self, owner: str, *, lease_s: float) -> int:
        """Keep the records ``owner`` still claims its own for ``lease_s`` seconds from
        now; returns how many it holds. A worker whose batch outlasts its lease (a slow
        or remote embedder, a starved CPU) calls this while it embeds, so a live holder
        never loses its batch to another process (whose vectors would then be dropped
        in turn); a holder that died stops calling, and its lease runs out."""
        ...

    def quarantine_vectors(
        self,
        tenant: str,
        ids: Sequence[str],
        error: str,
        *,
        owner: str | None = None,
        model: str | None = None,
    ) -> None:
        """Take records whose embedding failed out of the queue, keeping the error and
        the ``model`` that failed (a text change puts them back, and so does opening the
        store with another model: ``requeue_stale_vectors``). With ``owner``, only
        records it still claims, as in ``set_vectors``."""
        ...

    def embedding_status(self, tenant: str | None = None) -> EmbeddingStatus:
        """Pending and quarantined records (of ``tenant``, or of all tenants)."""
        ...

    # -- session logs ----------------------------------------------------
    def append_turns(
        self,
        scope: Scope,
        messages: Sequence[Message],
        tokens: Sequence[int],
        *,
        after: Turn | None = None,
        newest: int | None = None,
    ) -> builtins.list[Turn]:
        """Append messages to ``scope.session_id``'s log durably; returns them numbered.

        ``after``: only while the log still holds that turn as it was logged (an erasure,
        ``forget``, removes it), checked in the append's own transaction; else
        :class:`~contextos.errors.NotFound` is raised and nothing is appended.
        ``newest``: only while the log's last turn is numbered ``newest`` (-1: empty),
        checked the same way; else :class:`~contextos.errors.Conflict`."""
        ...

    def turns(
        self,
        scope: Scope,
        *,
        after_seq: int = -1,
        limit: int | None = None,
        newest: bool = False,
        max_bytes: int | None = None,
        settled: bool = False,
    ) -> builtins.list[Turn]:
        """A session's turns in order, those with seq > ``after_seq``: the first
        ``limit`` of them, or with ``newest`` the last ``limit`` (one indexed read
        either way, however long the log); ``max_bytes`` stops them (the first, or with
        ``newest`` the last) where the UTF-8 bytes of their content, tool calls and
        metadata would pass it (at least one turn;
        :func:`~contextos.store.records.within_bytes`).

        ``settled``: read after any write of this session's log under way (an append,
        an erasure) has committed. Why: an offload's check for turns erased while it
        archived them (``engine/offload.py``) read the log before a ``forget`` that was
        committing on PostgreSQL, found the turns, and kept copies of erased text that
        nothing erased again (a review). SQLite's one writer settles every read. A
        settled read takes no ``max_bytes`` (``ValueError``)."""
        ...

    def turn_texts(
        self, scope: Scope, *, after_seq: int = -1, limit: int | None = None
    ) -> builtins.list[tuple[int, str, str]]:
        """(seq, role, content) of a session's turns in order, those with seq >
        ``after_seq``, the first ``limit`` of them: for a scan of the log's words (the
        agents' ``conversation_search``), which needs no tool calls, metadata or times.
        Decoding those into :class:`Turn` was most of a scan's cost (8,000 turns, SQLite:
        91-95 ms a search, against 30-34 ms reading only these columns)."""
        ...

    def turns_since(
        self, scope: Scope, last: Turn, *, revision: str | None
    ) -> builtins.list[Turn] | None:
        """The turns logged after ``last``, for a reader that read the log whole when the
        session's meta was at ``revision`` (``session_meta_revision``, read before the
        turns) and has extended it since (a long-lived Session's cache); None when the
        log may no longer hold those turns as they were -- the revision moved (an
        erasure, ``forget``, draws a new one; so do compactions and pins), or the log
        restarted and ``last``'s seq now numbers another turn -- and the reader must
        read it whole again. One indexed read, like ``turns``, whatever the log's length."""
        ...

    def set_session_meta(self, scope: Scope, meta: Mapping[str, Any]) -> None:
        """Replace the JSON state kept beside a session log (summary, compaction marks),
        whatever it holds now. It is derived from the log: ``forget`` resets it to {} in
        every session it takes turns from, and its writer builds it again from the turns
        that remain. A writer that read the state to change it uses
        :meth:`swap_session_meta` instead. The key ``_revision`` is reserved."""
        ...

    def swap_session_meta(
        self, scope: Scope, meta: Mapping[str, Any], *, revision: str | None
    ) -> bool:
        """Compare-and-set: replace the session's JSON state with ``meta`` only if its
        revision is still ``revision`` (from :meth:`session_meta_revision`; None: there
        was no row, or one from before revisions); returns whether it wrote.

        Why: the state is read, changed (a compaction's summary may take a slow model
        call) and written back, possibly by several processes at once. Every write
        draws a new revision, and ``forget``'s reset does too, so a write built on a
        state that changed meanwhile (another compaction, a pin, an erasure) matches
        nothing and the writer reads again; no lock is held while it works."""
        ...

    def session_meta(self, scope: Scope) -> dict[str, Any]:
        """The JSON state kept beside a session log ({} when none)."""
        ...

    def session_meta_revision(self, scope: Scope) -> tuple[dict[str, Any], str | None]:
        """The JSON state kept beside a session log and its revision, read together:
        ``({}, None)`` when there is no row (see :meth:`swap_session_meta`)."""
        ...

    def sessions(self, scope: Scope) -> builtins.list[str]:
        """Session ids of ``scope.tenant`` (narrowed by user/agent when given)."""
        ...

    def owner_turn(self, owner: Scope) -> AbstractContextManager[bool]:
        """Held around an inferring add of ``owner``'s facts, from its first read to its
        write, so that such adds through other handles on this store (other processes)
        take turns instead of refusing each other's writes; yields whether the turn was
        had. Only an aid to progress: the write stays conditional."""
        ...

    def vacuum(self) -> tuple[str, ...]:
        """Rewrite the storage so that erased rows leave no bytes behind and space is
        reclaimed (see each backend for what it does and what it locks). Returns notes
        on what it was not permitted to finish (none when it did all it does; the CLI
        prints them on stderr): a step left to the server's next routine work."""
        ...

    def clock(self) -> float:
        """Now, in epoch seconds, by the one clock every process on this store judges
        leases by (an offload's archive hold, an agent owner lock): SQLite, this host's
        (one host); PostgreSQL, the database server's.

        Why: each process stamped a lease's end with its own clock and another compared
        it with its own, so a host whose clock ran ahead took over a live hold (its turns
        were stored twice) or a live lock (two holders at once; a review)."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: every call after it fails, so a background
        thread that outlived its store (an embedding worker) stops instead of retrying."""
        ...
