"""Offload: archiving the turns a compaction rotated out into long-term memory.

The ``offload`` strategy stores each rotated turn as an episodic memory
(:func:`archive`), in its author's scope, keeping what identifies the turn
(:data:`TURN_SEQ_KEY`, :data:`TURN_AT_KEY`). A compaction's save lists the turns as
unarchived and holds them (a lease of :data:`ARCHIVE_LEASE_S`, named by
:func:`archive_claim`); once they are stored a second compare-and-set confirms them
(:func:`finish_archive`). A crash or a failure in between leaves them listed, and the next
offload stores those not stored yet, so a rotated turn is never lost and never stored
twice. A hold whose process is seen dead (:func:`hold_runs`) or that failed (released) no
longer keeps them from the next offload.

Separate from :mod:`.session` because it is one job with its own rules (which records
say a turn is stored, when to look them up, what an erasure during the write leaves),
and it reaches the session only through what it is handed: the session's scope, its
state's read and compare-and-set, and a read of its log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from contextos.engine.compaction import HistoryState
from contextos.engine.holders import holder_claim as archive_claim
from contextos.engine.holders import holder_died as _holder_died
from contextos.engine.summarize import turn_ref, turn_time
from contextos.llm.media_tokens import THINKING_KEY, TOOL_RESULTS_KEY, WIRE_KEY
from contextos.memory.ingest import (
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_TEXT_CHARS,
    metadata_bytes,
    metadata_depth,
)
from contextos.memory.render import FACT_OF, TURN_FACTS
from contextos.providers.base import is_placeholder
from contextos.retry import wait_before_retry
from contextos.store.base import lease_runs
from contextos.store.records import same_turn
from contextos.times import on_local_calendar
from contextos.types import ROLES, Filter, MemoryRecord, Message, Scope, Turn, scope_ids

if TYPE_CHECKING:  # the session module imports this one
    from contextos.engine.session import MemoryLike

#: The session meta's key for the seq from which no turn has been stored in long-term
#: memory, but those the state lists as unarchived (``HistoryState.unarchived``): an
#: offload stores the turns its own save just listed from there on without looking them
#: up. ``forget``'s reset drops it (a shared session's surviving turns are rotated, and
#: may be archived, again), and so does a writer that does not know it: the next offload
#: then reads the session's archive once (:func:`_stored_turns`) and sets it again.
_UNSTORED_KEY = "unstored_from"

#: Seconds a Session holds a compaction's rotated turns while it stores them in
#: long-term memory; past it (the holder died, or hangs) the next offload stores them.
#: Long, as a live holder's ``memory.add`` may embed hundreds of turns through a slow
#: model: taken over while it stores, its turns were stored twice. A holder on the same
#: machine that died is seen at once (:func:`hold_runs`); this is the wait for one that
#: died elsewhere (another host sharing a PostgreSQL, another container).
ARCHIVE_LEASE_S = 120.0


def hold_runs(state: HistoryState, now: float) -> bool:
    """Whether ``state``'s turns are held by an offload storing them now: a hold
    (``HistoryState.archiver``) whose lease runs at ``now`` (the store's clock,
    ``Store.clock``, that stamped it: :func:`~contextos.store.base.lease_runs`) and whose
    process is not known to be dead (:func:`~contextos.engine.holders.holder_died`).

    Why the process: a process killed while it stored its turns (OOM, a deploy, kill
    -9) kept them held for the whole lease. The next offload, even the restarted app's,
    stored nothing and listed its own rotated turns under the dead hold, so for two
    minutes every turn rotated out was in neither the window nor long-term memory. A
    live holder is never taken over: its turns, found not stored yet, were stored
    twice.

    Why the store's clock: a host whose clock ran more than a lease ahead of the
    holder's took over a live hold, and its turns were stored twice (a review)."""
    if not state.archiver or not lease_runs(state.archiver_until, now, ARCHIVE_LEASE_S):
        return False
    return not _holder_died(state.archiver)


#: A session's state, the whole meta it is kept in, and the meta's revision.
ReadState = Callable[[], tuple[HistoryState, dict[str, Any], str | None]]
#: Writes a state (and extra meta keys) back if the meta is still at the revision read;
#: False, writing nothing, when another writer changed it meanwhile.
SaveState = Callable[[HistoryState, Mapping[str, Any], str | None, Mapping[str, Any] | None], bool]
#: The turns of the given seqs that the log holds now, by seq.
ReadLogged = Callable[[Sequence[int] | set[int]], dict[int, Turn]]


def _author(turn: Turn, scope: Scope) -> Scope:
    """Where a turn is archived: its author's scope in the session, else ``scope``."""
    named = turn.user_id is not None or turn.agent_id is not None
    return replace(scope, user_id=turn.user_id, agent_id=turn.agent_id) if named else scope


#: Metadata keys of an archived turn's records: what identifies the turn (its seq in the
#: record's session, and the time it was logged: a seq is used again after an erasure),
#: beside ``source_id``, its provenance (:func:`turn_ref`: a caller's ``dia_id`` when
#: given, which several turns may share).
TURN_SEQ_KEY = "turn_seq"
TURN_AT_KEY = "turn_at"

#: Records a page of :func:`_stored_turns` reads (``Memory.get_all``'s most).
_PAGE = 1000
#: Up to this many turns are looked up one by one (:func:`_stored_seqs`), more in one
#: read of the session's archive. A look-up reads every record of the session in the
#: store (SQLite: ~0.9 us a record); a read of them all builds each record (~18 us a
#: record): 14 ms against 285 ms at 16,000 records.
_ONE_BY_ONE = 20


def turn_at(turn: Turn) -> str:
    """When ``turn`` was logged, as its archived records keep it (:data:`TURN_AT_KEY`)."""
    return turn.created_at.isoformat()


@dataclass(frozen=True)
class _StoredTurns:
    """The turns of one session archived in long-term memory (:func:`_stored_turns`)."""

    #: (seq, source_id, logged at) of each record; logged at is None in the records of
    #: versions that did not keep it.
    keys: frozenset[tuple[int, str, str | None]]
    #: One past the highest seq archived (0 when none is).
    unstored_from: int

    def holds(self, turn: Turn) -> bool:
        """Whether ``turn`` is archived (:func:`_archive_key`)."""
        key = _archive_key(turn)
        return key in self.keys or (*key[:2], None) in self.keys


def _archive_key(turn: Turn) -> tuple[int, str, str]:
    """What tells ``turn``'s records in its session: its seq, ``source_id`` and the time
    it was logged. Records by earlier versions keep no time: they match by the first two."""
    return turn.seq, turn_ref(turn), turn_at(turn)


def _record_key(record: MemoryRecord) -> tuple[int, str, str | None] | None:
    """:func:`_archive_key` of the turn an archived record was stored from (None: it was
    not, or its metadata is not as :func:`archive` writes it)."""
    seq, at = record.metadata.get(TURN_SEQ_KEY), record.metadata.get(TURN_AT_KEY)
    if not isinstance(seq, int) or isinstance(seq, bool):
        return None
    return seq, str(record.metadata.get("source_id")), at if isinstance(at, str) else None


def _stored_seqs(
    memory: MemoryLike, session_id: str, turns: Sequence[Turn], floor: int | None
) -> tuple[set[int], int | None]:
    """The seqs of ``turns`` already archived in long-term memory, and the meta's
    :data:`_UNSTORED_KEY` (``floor``, or found where it is None): a few turns are looked
    up one by one, more (or any, to find the key) in one read of the session's archive."""
    if not turns:
        return set(), floor
    if floor is not None and len(turns) <= _ONE_BY_ONE:
        return {t.seq for t in turns if _is_stored(memory, session_id, t)}, floor
    found = _stored_turns(memory, session_id)
    return {t.seq for t in turns if found.holds(t)}, found.unstored_from if floor is None else floor


def _is_stored(memory: MemoryLike, session_id: str, turn: Turn) -> bool:
    """Whether ``turn`` is archived: one filtered read of its session's records."""
    seq, ref, at = _archive_key(turn)
    flt = Filter(include_invalid=True, metadata={TURN_SEQ_KEY: seq, "source_id": ref})
    found = memory.get_all(**scope_ids(None, None, session_id), filters=flt, limit=_PAGE)
    return any((key := _record_key(r)) is not None and key[2] in (at, None) for r in found)


def _unstored_from(meta: Mapping[str, Any]) -> int | None:
    """The meta's :data:`_UNSTORED_KEY`, None when it has none."""
    value = meta.get(_UNSTORED_KEY)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _stored_turns(memory: MemoryLike, session_id: str) -> _StoredTurns:
    """What the session's records in long-term memory say was archived: one read of
    them, every author's (closed ones too: one an update superseded was stored)."""
    flt, ids = Filter(include_invalid=True), scope_ids(None, None, session_id)
    keys: set[tuple[int, str, str | None]] = set()
    after: str | None = None
    while True:  # by key: another writer's delete between pages skips nothing
        page = memory.get_all(**ids, filters=flt, limit=_PAGE, after=after)
        keys.update(key for record in page if (key := _record_key(record)) is not None)
        if page.next_after is None:
            break
        after = page.next_after
    return _StoredTurns(frozenset(keys), max((k[0] for k in keys), default=-1) + 1)


def text_pieces(text: str) -> list[str]:
    """``text`` in pieces a memory may hold (``MAX_TEXT_CHARS``): a turn longer than
    that (a pasted document, a tool's dump) was refused by ``memory.add`` and could
    never be archived."""
    return [text[i : i + MAX_TEXT_CHARS] for i in range(0, len(text), MAX_TEXT_CHARS)] or [text]


def _archived_text(message: Message) -> str:
    """What a rotated turn is stored as: its text, or for an assistant turn that only
    called tools, the calls (``[called name(arguments)]``). Such a turn was skipped,
    so an archived tool result no longer said which call made it, and a run of them
    alone made ``memory.add`` refuse the whole archive."""
    if message.content.strip():
        return message.content
    return " ".join(f"[called {c.name}({c.arguments})]" for c in message.tool_calls)


#: Turn metadata an archived memory does not copy: the provider's wire form of the
#: message, verbatim tool results, signed thinking and server-side compaction blocks
#: (what resending the turn needs: the log keeps them), and the call's accounting.
#: Copied, a 70 KB tool result or a long thinking block passed a memory's metadata
#: limit, the archive was refused, and every later compaction retried it in vain.
WIRE_ONLY_KEYS = frozenset(
    {WIRE_KEY, TOOL_RESULTS_KEY, THINKING_KEY, "anthropic_compaction", "usage", "server_context"}
)
#: Turn metadata an archived memory does not copy either: the keys ``Memory.add``
#: writes into every memory of a session (``memory/ingest.py``; ``speaker`` only for a
#: message with a ``name``, which it is then made of), and the zone of its time
#: (``utc_offset``, made of the ``event_time`` the archive passes).
SAID_BY_KEYS = frozenset({"role", "seq", "speaker", "utc_offset"})
#: Turn metadata an archive drops because ``Memory.add`` reserves the key for its own
#: marks (a fact beside a turn, a turn stored with its facts): ``Session.add`` logs a
#: turn holding one, and every later offload of the session was refused on it (a review).
RESERVED_KEYS = frozenset({FACT_OF, TURN_FACTS})
#: Room left in a memory's metadata for what :func:`archive` adds to the turn's own.
_ARCHIVE_KEYS_BYTES = 1024


def archived_metadata(turn: Turn) -> dict[str, Any]:
    """The turn's metadata an archived memory keeps: all but :data:`WIRE_ONLY_KEYS`, or
    none of it when what is left is still too large for a memory (an application's own
    key holding a document): an archive must never be refused for its metadata, since
    the turn has already left the history and the log keeps the whole turn.

    Nor the keys ``Memory.add`` writes itself (:data:`SAID_BY_KEYS`: who said the turn
    and its place in the session), which it refuses from a caller with another value:
    an app's own ``{"role": "admin"}`` on its turns failed every offload, after the
    turns had left the history (a review). They were replaced by the add before. Nor
    the keys it reserves for its own marks (:data:`RESERVED_KEYS`)."""
    said_by = SAID_BY_KEYS if turn.message.name else SAID_BY_KEYS - {"speaker"}
    meta = {
        k: v
        for k, v in turn.message.metadata.items()
        if k not in WIRE_ONLY_KEYS and k not in said_by and k not in RESERVED_KEYS
    }
    if metadata_bytes(meta) > MAX_METADATA_BYTES - _ARCHIVE_KEYS_BYTES:
        return {}
    if metadata_depth(meta) > MAX_METADATA_DEPTH:
        return {}
    return meta


def archive(memory: MemoryLike, turns: Sequence[Turn], scope: Scope) -> list[MemoryRecord]:
    """Store rotated turns as episodic memories, keeping reference, seq and time.

    Each turn is stored in its own author's scope (``Turn.user_id``/``agent_id``, in
    ``scope``'s session) when the log names one, else in ``scope``: in a session two
    users share, a copy of one user's turn filed under the other (the compacting
    Session's user) survived ``forget`` of its author. Consecutive turns of one author
    go in one ``memory.add``, in log order; a turn longer than a memory may be is
    stored in pieces, each with the turn's reference. Each record keeps what
    identifies its turn (:data:`TURN_SEQ_KEY`, :data:`TURN_AT_KEY`) and its provenance
    (``source_id``: :func:`turn_ref`), and of the turn's metadata what
    :func:`archived_metadata` keeps.
    """
    out: list[MemoryRecord] = []
    run: list[Message] = []
    run_scope: Scope | None = None
    for t in turns:
        when = turn_time(t)
        meta = {
            **archived_metadata(t),
            TURN_SEQ_KEY: t.seq,
            TURN_AT_KEY: turn_at(t),
            "source_id": turn_ref(t),
        }
        if when is not None:
            # A turn's own time as given (its zone is the speaker's); a turn logged
            # without one on this process's calendar, as an add without a time is dated:
            # in UTC, a turn said at 21:00 in New York was the next day's (a review).
            logged = when is t.created_at
            meta["event_time"] = (on_local_calendar(when) if logged else when).isoformat()
        text = _archived_text(t.message)
        if not text or is_placeholder(t.message):
            # Nothing said (memory.add refuses a run of only empty messages), or only
            # images or documents, logged as "[image]": no memory, as a wrapped call
            # remembers none of them (an offload filled a user's memory with "[image]").
            continue
        author = _author(t, scope)
        if run and author != run_scope:
            out += memory.add(run, **cast(Scope, run_scope).ids())
            run = []
        run_scope = author
        # A turn logged before roles were checked may hold another ("bot"): archived as
        # the user's, as the providers' requests sent it, not refused by memory.add (the
        # session's every offload compaction failed on it).
        role = t.message.role if t.message.role in ROLES else "user"
        run += [replace(t.message, role=role, content=p, metadata=meta) for p in text_pieces(text)]
    if run:
        out += memory.add(run, **cast(Scope, run_scope).ids())
    return out


def finish_archive(
    memory: MemoryLike,
    scope: Scope,
    *,
    read_state: ReadState,
    save: SaveState,
    logged: ReadLogged,
    tries: int,
    claim: str | None = None,
    listed: frozenset[int] = frozenset(),
    clock: Callable[[], float] = time.time,
) -> int:
    """Store the turns the state lists as unarchived (those not stored yet), then
    confirm them with a compare-and-set; returns how many records were stored.

    They are held first (``HistoryState.archiver``, a lease of
    :data:`ARCHIVE_LEASE_S`; ``claim`` is a hold this caller already has): a hold
    by another that still runs (:func:`hold_runs`) means it is storing them, and this
    returns. A failure while storing (the store, the embedder) releases the hold
    before it propagates, so the next offload stores them at once.
    ``listed``: the turns ``claim``'s own save just listed, which no one can have
    stored before (see :func:`_store_owed`). Tried again on the fresh state when
    another writer changed it meanwhile, up to ``tries`` times. ``read_state``, ``save``
    and ``logged`` are the session's (``scope``'s): a
    :class:`~contextos.engine.session.Session` hands its own, and its store's ``clock``
    (``Store.clock``), which stamps and judges the hold."""
    claim = claim or archive_claim()
    stored = 0
    mine: set[int] = set()  # the turns this call stored
    for attempt in range(tries):
        if attempt:
            wait_before_retry(attempt - 1)
        state, meta, revision = read_state()
        if not state.unarchived:
            return stored
        if state.archiver != claim:
            listed = frozenset()  # held by another meanwhile: it may have stored them
            now = clock()
            if hold_runs(state, now):
                return stored  # another is storing them
            held = replace(state, archiver=claim, archiver_until=now + ARCHIVE_LEASE_S)
            if not save(held, meta, revision, None):
                continue
            state, meta, revision = read_state()
            if state.archiver != claim:
                continue
        try:
            count, unstored_from = _store_owed(memory, scope, state, meta, listed, mine, logged)
        except BaseException:
            _release(claim, read_state, save)
            raise
        stored += count
        top = max(state.archived_to, *state.unarchived)
        done = replace(state, unarchived=(), archived_to=top, archiver="", archiver_until=0.0)
        extra = {} if unstored_from is None else {_UNSTORED_KEY: unstored_from}
        if save(done, meta, revision, extra):
            return stored
    return stored  # still listed: the next offload confirms them


def _release(claim: str, read_state: ReadState, save: SaveState) -> None:
    """End ``claim``'s hold after its storing failed, so the next offload (this
    process's own next call) stores the turns at once, not after the lease; a failure
    is harmless (the lease ends it). The next holder looks every turn up: some may have
    been stored before the failure."""
    try:
        for _ in range(3):
            state, meta, revision = read_state()
            if state.archiver != claim:
                return
            if save(replace(state, archiver="", archiver_until=0.0), meta, revision, None):
                return
    except Exception:  # noqa: BLE001 - a busy or failing store: the lease ends the hold
        return


def _store_owed(
    memory: MemoryLike,
    scope: Scope,
    state: HistoryState,
    meta: Mapping[str, Any],
    listed: frozenset[int],
    mine: set[int],
    logged: ReadLogged,
) -> tuple[int, int | None]:
    """Store the turns ``state`` lists as unarchived that are not stored yet (``mine``:
    those this offload stored already, to which it adds); returns how many records
    were stored, and the meta's :data:`_UNSTORED_KEY` once they are confirmed (None
    when it is not known).

    Why not look every turn up: a look-up of a turn not stored yet (every turn an
    offload rotates) read the whole session archive, one read per turn: 2.7 ms a
    turn at 1,000 archived, 11 ms at 16,000. A turn in ``listed`` at or past the
    meta's :data:`_UNSTORED_KEY` was never handed to :func:`archive`: no holder
    stores a turn the state did not list, and this one's save listed it first. Any
    other (left by a holder that died or failed, or below that seq: a shared
    session's turn rotated again after ``forget``'s reset, a pinned one rotated
    late) is looked up (:func:`_stored_seqs`).
    """
    rotated = sorted(logged(set(state.unarchived)).values(), key=lambda t: t.seq)
    floor = _unstored_from(meta)
    trusted = {s for s in listed if floor is not None and s >= floor}
    doubt = [t for t in rotated if t.seq not in trusted and t.seq not in mine]
    stored, floor = _stored_seqs(memory, str(scope.session_id), doubt, floor)
    fresh = [t for t in rotated if t.seq not in mine and t.seq not in stored]
    records = archive(memory, fresh, scope)
    mine.update(t.seq for t in fresh)
    count = len(records) - _drop_erased(memory, records, fresh, logged)
    return count, None if floor is None else max(floor, max(state.unarchived) + 1)


def _drop_erased(
    memory: MemoryLike,
    records: Sequence[MemoryRecord],
    rotated: Sequence[Turn],
    logged: ReadLogged,
) -> int:
    """Purge the archived records whose turn an erasure removed from the log while
    they were written; returns how many.

    Why: ``forget`` may run after the save and before ``memory.add`` wrote the
    copies, which then hold erased text that nothing will erase again. Only the
    rotated turns' span of the log is read (``logged``), so this check does
    not read every turn of a long log per offload. A ``forget`` after this check
    erases the copies itself; one between the add and this check erased them
    already, and they count as dropped (its ``NotFound`` failed the compaction, and
    a wrapped client's call with it). Copies are told by their turn's seq, not
    their ``source_id``: two turns may share a caller's ``dia_id``.
    """
    if not records:
        return 0
    live = logged([t.seq for t in rotated])
    erased = {t.seq for t in rotated if t.seq not in live or not same_turn(live[t.seq], t)}
    copies = [r.id for r in records if r.metadata.get(TURN_SEQ_KEY) in erased]
    # In one call: one at a time, 8,000 purges took 436 s (a review). Those a forget
    # after the add erased with their turns are skipped, and count as dropped as well.
    if copies:
        memory.delete_many(copies, purge=True)
    return len(copies)


__all__ = [
    "ARCHIVE_LEASE_S",
    "TURN_AT_KEY",
    "TURN_SEQ_KEY",
    "archive",
    "archive_claim",
    "finish_archive",
    "hold_runs",
    "text_pieces",
    "turn_at",
]
