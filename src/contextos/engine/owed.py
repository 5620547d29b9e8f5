"""Commits a wrapped call owes to memory, so that a later call does them if its process died.

A wrapped call logs its question (and what else it logs that its commit remembers:
``SessionContext._said_beside``) before the model is called, and its commit remembers
them after the reply, on a background thread by default. A process killed in between
(``kill -9``, an out-of-memory kill, a ``SIGTERM`` with no handler: Python's default
skips ``atexit``) lost the commit: the question stayed in the log, and nothing
remembered it ever after (a review: 27 of 90 questions of an app killed 0-100 ms after
its last call never reached memory).

So each turn a call logs that its commit will remember carries the call's hold in its
metadata (:data:`OWED_KEY`: the holder's name, :func:`~contextos.engine.holders.holder_claim`,
and the end of its lease). Why there: it is in the append the call makes anyway, so the
caller pays no write of its own. The log is append-only, so the mark is cleared where
it can be: the commit, once it has run to its end (remembered, or decided that nothing
is to be remembered: a branch, a retry already remembered), lists the hold as settled in
the session's meta (:data:`COMMITS_KEY`, on its background thread). Why explicitly:
memories are hard-deleted, so "no memory is marked with that turn" cannot tell a commit
that never ran from a memory the user deleted since; recovered, it came back.

A later call of the session (this process's next one, or the restarted app's) looks at
the marked turns of the conversation's last :data:`RECOVER_REACH` turns
(:meth:`Commits.find`): nothing to read while their holds are known settled (the common
case), one meta read otherwise. A hold neither settled nor running -- its process seen
dead on this machine, or its lease over by the store's clock for a holder elsewhere --
is owed: the later call's own commit takes it over (:meth:`Commits.take`, a
compare-and-set, so of two processes racing one remembers), remembers its turns still
logged and in the conversation, and settles it. A turn a branch cut is not in the
conversation, a session erased has no turns left, and ``remember=False`` marks nothing:
none of those is recovered.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from contextos.engine.holders import holder_claim, holder_died
from contextos.store.base import lease_runs
from contextos.store.records import ERASED_AT_KEY
from contextos.types import Message, Turn

if TYPE_CHECKING:  # the session module imports offload, which imports holders
    from contextos.engine.session import Session
    from contextos.store.base import Store

#: Turn metadata of a turn a call logged and its commit owes to memory:
#: ``[holder, until]`` (:func:`~contextos.engine.holders.holder_claim`; the lease's end
#: by the store's clock).
OWED_KEY = "owed_by"
#: The session meta's key for the holds that are done: ``{"settled": [[seq, holder],
#: ...], "taken": {holder: [taker, until]}}`` (``seq``: the newest turn it marked).
COMMITS_KEY = "commits"
#: Seconds a hold lasts for a process that cannot be seen dead (another machine): a call
#: holds its turns from before the model is called until its commit ends, so it must
#: outlast the longest call (the SDKs' default timeout is 10 minutes) plus the commit,
#: or a live call's question would be remembered twice. A dead holder on the same
#: machine is seen at once (:func:`~contextos.engine.holders.holder_died`).
OWED_LEASE_S = 1800.0
#: Seconds after an erasure's reset of the meta within which a hold still counts as made
#: before it (:meth:`_Book.ended`). Both are stamped by the store's clock, but a hold's
#: by a reading carried on by this host's monotonic clock (``_StoreClock``), which may
#: drift from it a little over a long-lived client.
ERASURE_SKEW_S = 5.0
#: How far back from the conversation's end (in turns) a call looks for owed turns.
#: Why a bound: the check must cost nothing for a long conversation, and the settled
#: list must stay small (:data:`SETTLED_KEEP`).
RECOVER_REACH = 16
#: Settled holds kept in the meta, the newest by seq. More than :data:`RECOVER_REACH`
#: (a hold marks at least one turn), so no hold in reach is dropped from it.
SETTLED_KEEP = 48
#: Tries of a compare-and-set on the meta while other writers change it.
_TRIES = 8
#: Holds this process knows are settled (process-wide: names are unique): what makes
#: the common check read nothing.
_KNOWN: OrderedDict[str, None] = OrderedDict()
_KNOWN_MAX = 4096
_KNOWN_LOCK = threading.Lock()


def _know(holders: Sequence[str]) -> None:
    with _KNOWN_LOCK:
        for h in holders:
            _KNOWN[h] = None
            _KNOWN.move_to_end(h)
        while len(_KNOWN) > _KNOWN_MAX:
            _KNOWN.popitem(last=False)


def _known(holder: str) -> bool:
    with _KNOWN_LOCK:
        return holder in _KNOWN


def mark_of(metadata: Mapping[str, Any]) -> tuple[str, float] | None:
    """The hold a logged turn's metadata carries (:data:`OWED_KEY`), or None."""
    mark = metadata.get(OWED_KEY)
    if (
        isinstance(mark, list)
        and len(mark) == 2
        and isinstance(mark[0], str)
        and isinstance(mark[1], int | float)
    ):
        return mark[0], float(mark[1])
    return None


def marked(message: Message, mark: Mapping[str, Any]) -> Message:
    """``message`` with ``mark`` (a call's :meth:`Commits.mark`) in its metadata."""
    if not mark:
        return message
    return replace(message, metadata={**message.metadata, **mark})


def unmarked(message: Message) -> Message:
    """``message`` without a hold (:data:`OWED_KEY`): what the app sees of a logged turn
    in a call's record, and what it may send, since a hold is only ever the log's own."""
    if OWED_KEY not in message.metadata:
        return message
    return replace(message, metadata={k: v for k, v in message.metadata.items() if k != OWED_KEY})


@dataclass(frozen=True)
class Owed:
    """A hold found neither settled nor running: its holder, its lease's end, and the
    turns it marked that are in the conversation (oldest first)."""

    holder: str
    until: float
    turns: tuple[Turn, ...]


@dataclass
class _Book:
    """The meta's :data:`COMMITS_KEY`, parsed (anything malformed reads as empty)."""

    settled: list[tuple[int, str]]
    taken: dict[str, tuple[str, float]]
    #: When an erasure last reset the meta (None: never), which took the book with it.
    erased_at: float | None = None

    @classmethod
    def of(cls, meta: Mapping[str, Any]) -> _Book:
        """The book of the session's ``meta``: its :data:`COMMITS_KEY`, and when an
        erasure last reset it (``ERASED_AT_KEY``)."""
        raw = meta.get(COMMITS_KEY)
        raw = raw if isinstance(raw, dict) else {}
        erased = meta.get(ERASED_AT_KEY)
        settled = [
            (int(e[0]), str(e[1]))
            for e in raw.get("settled") or []
            if isinstance(e, list) and len(e) == 2 and isinstance(e[0], int)
        ]
        taken = {
            str(k): (str(v[0]), float(v[1]))
            for k, v in (raw.get("taken") or {}).items()
            if isinstance(v, list) and len(v) == 2 and isinstance(v[1], int | float)
        }
        return cls(settled, taken, float(erased) if isinstance(erased, int | float) else None)

    def is_settled(self, holder: str) -> bool:
        return any(h == holder for _, h in self.settled)

    def ended(self, owed: Owed) -> bool:
        """Whether ``owed`` counts as done: settled, or made before the last erasure's
        reset (which dropped the book: whether it was settled is not known, and a
        memory the user deleted since must not come back; a dead call's turns are
        lost rather). Made up to :data:`ERASURE_SKEW_S` after it too (see there)."""
        if self.is_settled(owed.holder):
            return True
        made = owed.until - OWED_LEASE_S
        return self.erased_at is not None and made <= self.erased_at + ERASURE_SKEW_S

    def held(self, owed: Owed, now: float) -> bool:
        """Whether ``owed`` is being done: by a process that took it over, else by its
        own holder, whose lease runs and who is not seen dead."""
        holder, until = self.taken.get(owed.holder, (owed.holder, owed.until))
        return lease_runs(until, now, OWED_LEASE_S) and not holder_died(holder)

    def json(self) -> dict[str, Any]:
        newest = sorted(self.settled, reverse=True)[:SETTLED_KEEP]
        return {
            "settled": [[seq, h] for seq, h in newest],
            "taken": {k: [t, u] for k, (t, u) in self.taken.items()},
        }


class _StoreClock:
    """The store's clock (``Store.clock``) without a round trip a call: read once, then
    carried on by this host's monotonic clock. Why: a mark's lease is stamped on the
    caller's path, and on PostgreSQL each read is a query; the lease is long, so the
    drift of a monotonic clock does not matter, and a step of the host's wall clock
    (which ``time.time`` would follow) cannot move it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._base: tuple[float, float] | None = None

    def now(self) -> float:
        if self._base is None:
            self._base = (self.store.clock(), time.monotonic())
        at, mono = self._base
        return at + (time.monotonic() - mono)


class Commits:
    """The holds of one session's wrapped calls (see the module docstring)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._clock = _StoreClock(session.store)

    def mark(self) -> dict[str, Any]:
        """A new call's hold, as the metadata its owed turns carry."""
        return {OWED_KEY: [holder_claim(), self._clock.now() + OWED_LEASE_S]}

    def find(
        self, said: Sequence[Turn], own: str, author: tuple[str | None, str | None]
    ) -> tuple[Owed, ...]:
        """The holds owed among the conversation's last :data:`RECOVER_REACH` turns
        ``said`` (other than the calling call's, ``own``) on turns ``author`` (a user id
        and an agent id) logged: none without a read while every mark there is known
        settled."""
        if not said:
            return ()
        floor = said[-1].seq - RECOVER_REACH
        found: dict[str, tuple[float, list[Turn]]] = {}
        for turn in reversed(said):
            if turn.seq <= floor:
                break
            mark = mark_of(turn.message.metadata)
            if mark is None or mark[0] == own or _known(mark[0]):
                continue
            if (turn.user_id, turn.agent_id) != author:
                continue  # another's: done in their scope, by their next call
            found.setdefault(mark[0], (mark[1], []))[1].insert(0, turn)
        if not found:
            return ()
        book = _Book.of(self.session.store.session_meta(self.session.scope))
        _know([h for _, h in book.settled])
        owed = [Owed(h, until, tuple(turns)) for h, (until, turns) in found.items()]
        owed = [o for o in owed if not book.ended(o)]
        if not owed:
            return ()
        now = self.session.store.clock()
        return tuple(o for o in owed if not book.held(o, now))

    def take(self, owed: Owed, taker: str) -> bool:
        """Take ``owed`` over for ``taker`` (a compare-and-set on the session's meta):
        False when it was settled or taken by a running holder meanwhile."""
        clock = self.session.store.clock

        def taken(meta: Mapping[str, Any]) -> dict[str, Any] | None:
            book = _Book.of(meta)
            if book.ended(owed) or book.held(owed, clock()):
                return None
            book.taken[owed.holder] = (taker, clock() + OWED_LEASE_S)
            return book.json()

        return self.session.change_meta(COMMITS_KEY, taken, tries=_TRIES)

    def settle(self, holder: str, seq: int) -> None:
        """List ``holder`` as settled (its newest marked turn ``seq``): its turns are
        owed no more. Given up after :data:`_TRIES` refused writes: the hold's memories
        are found by their turn marks then (``SessionContext._remembered``)."""

        def settled(meta: Mapping[str, Any]) -> dict[str, Any]:
            book = _Book.of(meta)
            book.taken.pop(holder, None)
            if not book.is_settled(holder):
                book.settled.append((seq, holder))
            return book.json()

        if self.session.change_meta(COMMITS_KEY, settled, tries=_TRIES):
            _know([holder])


__all__ = [
    "COMMITS_KEY",
    "OWED_KEY",
    "OWED_LEASE_S",
    "RECOVER_REACH",
    "Commits",
    "Owed",
    "mark_of",
    "marked",
    "unmarked",
]
