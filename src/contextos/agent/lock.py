"""One writer at a time for an owner's core blocks or files, across processes.

A block or file edit reads the stored value, changes it and writes it back.
``Store.update`` has no version check, so two editors (threads of the server,
the server and the CLI on one SQLite file, two replicas on PostgreSQL) that
read the same value each wrote their own change over the other's: 16 parallel
appends kept 9. The one compare-and-set the Store offers is
:meth:`~contextos.store.base.Store.swap_session_meta`, so the lock is a lease
kept in the state of a reserved session of the owner: taking it is a swap from
a free (or expired) state to ``{"holder": token, "until": t}``, giving it back
a swap to ``{}``. A caller that cannot get it within :data:`WAIT_S` gets
:class:`OwnerBusy` (a StoreError: 503 + Retry-After over HTTP).

A holder renews the lease before each write (:func:`renew_lease`, once half of it has
passed), by compare-and-set on its own token, and stops with :class:`LeaseLost` when
the lease went to another editor meanwhile. Why: the lease was taken once and never
looked at again, so a holder paused past it (a VM pause, swap, SIGSTOP) went on
writing beside the editor that took it over, and a file both made was lost (a
review). The lease names its holder's host (with its PID namespace) and process: a
holder killed on this host (``kill -9``, an out-of-memory kill, a deploy) is seen dead
by the next caller here, who takes the lease at once; one that dies elsewhere leaves it to run out
(:data:`LEASE_S`). Why: the next command of that owner waited 30 s and told the
model the store was "busy or unavailable" (a review).

A waiter that finds the lease held takes the one place of next holder in the same
state (``next``, renewed while it waits, lost :data:`NEXT_S` after it stops), and a
free lease goes to the next holder only. Why: an editor that edits back to back took
the lease again straight after giving it back, while a waiter polled with backoff;
the waiter's tries fell in held periods, and one redaction waited 30 s for
``OwnerBusy`` while an appender made 471 edits (a review).

Every time in the state is the store's clock (``Store.clock``: PostgreSQL's server, one
SQLite host's), and a lease (or next place) ending further past it than a holder stamps
one counts as ended (``store.base.lease_runs``). Why: each process stamped and judged
``until`` by its own clock, so a host 30 s ahead took a lock another held (two holders
at once), and a clock stepped back kept a dead holder's lease for the step (a review).

The reserved session (``contextos.lock.<kind>.<digest>``) holds no turns; it
names the owner's user, so ``forget`` removes it with the user's other data.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import StoreError
from ..store.base import lease_runs
from ..store.records import LOCK_SESSION_PREFIX
from ..types import Scope

if TYPE_CHECKING:
    from ..store.base import Store

#: Seconds a lease lasts unless its holder renews it (it does before each write once
#: half of it passed): longer than any one step of an edit (a read, one write).
LEASE_S = 20.0
#: Seconds a caller waits for a busy lease before giving up with OwnerBusy.
WAIT_S = 30.0
#: Seconds a waiter's place as the next holder lasts unless it renews it (it does
#: while it waits): a waiter that died keeps others from a free lease this long at most.
NEXT_S = 2.0
#: Compare-and-set tries to give the lease (or a next place) back: a waiter renewing
#: its place may change the state between the read and the swap.
GIVE_BACK_TRIES = 10
LOCK_PREFIX = LOCK_SESSION_PREFIX  # left out of session listings


class OwnerBusy(StoreError):
    """Another editor held the owner's lock for longer than the caller would wait."""


class LeaseLost(StoreError):
    """The lease ran out while its holder was stopped, and another editor took it: the
    holder writes nothing more (what it wrote before stays)."""


@dataclass
class _Lease:
    """The lease a caller holds: where, its token, how long, and until when."""

    store: Store
    where: Scope
    token: str
    lease_s: float
    until: float  # by the store's clock
    #: When ``until`` was stamped, by this process's monotonic and wall clocks
    #: (:func:`_stamp`).
    renewed: tuple[float, float] = (0.0, 0.0)


def _stamp() -> tuple[float, float]:
    return time.monotonic(), time.time()


def _half_gone(held: _Lease) -> bool:
    """Whether half the lease has passed since it was stamped, by either clock of this
    process. Why both: the monotonic clock needs no read of the store's clock per write
    and a step of this host's clock does not move it, but it stands still while the
    machine sleeps, and a laptop that woke after its lease ran out would have gone on
    writing without renewing, past another holder (a review); the wall clock counts the
    sleep."""
    monotonic, wall = _stamp()
    half = held.lease_s / 2
    return monotonic >= held.renewed[0] + half or wall >= held.renewed[1] + half


_HELD: ContextVar[_Lease | None] = ContextVar("contextos_owner_lease", default=None)


def _process_space() -> str | None:
    """What names the space this process's ids are counted in: the host name and, on
    Linux, the PID namespace; None when that namespace cannot be read (no holder is then
    judged dead: its lease runs out).

    Why the namespace: two containers of one pod (or with host networking) share a host
    name, not their pids. A holder alive in one was judged dead by a process of the
    other, whose namespace had no process with its pid: both took the lock, and a file
    both created was lost (a review)."""
    host = socket.gethostname()
    if not sys.platform.startswith("linux"):
        return host
    try:
        return f"{host} {os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


_HOST = _process_space()


def lock_scope(scope: Scope, kind: str) -> Scope:
    """The reserved session whose state is the lock of ``kind`` for ``scope``'s owner.

    Why a digest: session ids are unique per tenant, so the id must name the owner
    (user and agent) without exceeding an id's length, whatever the owner's ids are.
    """
    owner = json.dumps([scope.user_id, scope.agent_id]).encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(owner).hexdigest()[:32]
    return Scope(
        tenant=scope.tenant,
        user_id=scope.user_id,
        agent_id=scope.agent_id,
        session_id=f"{LOCK_PREFIX}{kind}.{digest}",
    )


def _lease_of(meta: dict[str, object], default: float) -> float:
    """The length of the lease in ``meta``, as its holder took it (``default``: one
    taken by a version that did not write it)."""
    lease_s = meta.get("lease_s")
    return float(lease_s) if isinstance(lease_s, int | float) and lease_s > 0 else default


def _next_of(meta: dict[str, object], now: float) -> object:
    """The token of the waiter whose place as next holder is live, or None."""
    return meta.get("next") if lease_runs(meta.get("next_until"), now, NEXT_S) else None


def _holder_dead(meta: dict[str, object]) -> bool:
    """Whether the lease's holder is a process of this host (and PID namespace) that no
    longer runs."""
    pid = meta.get("pid")
    if _HOST is None or meta.get("host") != _HOST:
        return False
    if type(pid) is not int or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process (EPERM): it runs
        return False
    return False


def _try_take(store: Store, where: Scope, token: str, lease_s: float) -> float | None:
    """Take the lease if it is free (or expired, or its holder died on this host) and no
    other waiter is next: one compare-and-set on its revision; the time it lasts until,
    or None. Held, it takes (or renews) the next place."""
    meta, revision = store.session_meta_revision(where)
    now = store.clock()
    waiting = _next_of(meta, now)
    if lease_runs(meta.get("until"), now, _lease_of(meta, lease_s)) and not _holder_dead(meta):
        if waiting is None or (waiting == token and meta["next_until"] < now + NEXT_S / 2):
            place = {**meta, "next": token, "next_until": now + NEXT_S}
            store.swap_session_meta(where, place, revision=revision)
        return None
    if waiting not in (None, token):
        return None
    until = now + lease_s
    lease = {"holder": token, "until": until, "lease_s": lease_s, "host": _HOST, "pid": os.getpid()}
    return until if store.swap_session_meta(where, lease, revision=revision) else None


def renew_lease() -> None:
    """Before a write under :func:`owner_lock`: renew the lease once half of it passed
    (one compare-and-set on the holder's token); nothing outside a lock.

    Raises:
        LeaseLost: the lease ran out and another editor took it (this one was paused).
    """
    held = _HELD.get()
    if held is None or not _half_gone(held):
        return
    for _ in range(GIVE_BACK_TRIES):  # a waiter renewing its next place may swap between
        meta, revision = held.store.session_meta_revision(held.where)
        if meta.get("holder") != held.token:
            break
        stamped = _stamp()
        until = held.store.clock() + held.lease_s
        if held.store.swap_session_meta(held.where, {**meta, "until": until}, revision=revision):
            held.until, held.renewed = until, stamped
            return
    raise LeaseLost(
        "this owner's lock passed to another editor while this command was stopped for "
        "longer than its lease; it wrote nothing more: view the files again, then retry"
    )


def _leave(store: Store, where: Scope, token: str) -> None:
    """Give up this token's place as next holder, if it has it (a waiter giving up)."""
    _drop(store, where, ("next", "next_until"), while_=("next", token))


def _give_back(store: Store, where: Scope, token: str) -> None:
    """Free the lease if this token still holds it (an expired one may be another's),
    keeping a waiter's place as next holder."""
    _drop(store, where, ("holder", "until", "lease_s", "host", "pid"), while_=("holder", token))


def _drop(store: Store, where: Scope, keys: tuple[str, ...], *, while_: tuple[str, str]) -> None:
    """Remove ``keys`` from the lock's state, by compare-and-set, as long as its
    ``while_[0]`` is still ``while_[1]`` (tried again when another writer changed it)."""
    key, token = while_
    for _ in range(GIVE_BACK_TRIES):
        meta, revision = store.session_meta_revision(where)
        if meta.get(key) != token:
            return
        rest = {k: v for k, v in meta.items() if k not in keys}
        if store.swap_session_meta(where, rest, revision=revision):
            return


@contextmanager
def owner_lock(
    store: Store, scope: Scope, kind: str, *, lease_s: float = LEASE_S, wait_s: float = WAIT_S
) -> Iterator[None]:
    """Hold the owner's ``kind`` lock ("core", "files") while inside.

    Raises:
        OwnerBusy: another editor held it for all of ``wait_s``.
        StoreError: the store failed (busy, unreachable).
    """
    where = lock_scope(scope, kind)
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    pause = 0.005
    while True:
        taking = _stamp()  # before the lease is stamped: renewed never too late
        if (until := _try_take(store, where, token, lease_s)) is not None:
            break
        if time.monotonic() >= deadline:
            _leave(store, where, token)
            raise OwnerBusy(f"another editor holds the {kind} lock of this owner; retry")
        time.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(pause * 2, 0.1)
    held = _HELD.set(_Lease(store, where, token, lease_s, until, taking))
    try:
        yield
    finally:
        _HELD.reset(held)
        _give_back(store, where, token)


__all__ = [
    "LEASE_S",
    "LOCK_PREFIX",
    "WAIT_S",
    "LeaseLost",
    "OwnerBusy",
    "lock_scope",
    "owner_lock",
    "renew_lease",
]
