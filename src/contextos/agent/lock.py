"""One writer at a time for an owner's core blocks or files, across processes.

A block or file edit reads the stored value, changes it and writes it back.
``Store.update`` has no version check, so two editors (threads of the server,
the server and the CLI on one SQLite file, two replicas on PostgreSQL) that
read the same value each wrote their own change over the other's: 16 parallel
appends kept 9. The one compare-and-set the Store offers is
:meth:`~contextos.store.base.Store.swap_session_meta`, so the lock is a lease
kept in the state of a reserved session of the owner: taking it is a swap from
a free (or expired) state to ``{"holder": token, "until": t}``, giving it back
a swap to ``{}``. A holder that dies leaves the lease to run out
(:data:`LEASE_S`); a caller that cannot get it within :data:`WAIT_S` gets
:class:`OwnerBusy` (a StoreError: 503 + Retry-After over HTTP).

A waiter that finds the lease held takes the one place of next holder in the same
state (``next``, renewed while it waits, lost :data:`NEXT_S` after it stops), and a
free lease goes to the next holder only. Why: an editor that edits back to back took
the lease again straight after giving it back, while a waiter polled with backoff;
the waiter's tries fell in held periods, and one redaction waited 30 s for
``OwnerBusy`` while an appender made 471 edits (a review).

The reserved session (``contextos.lock.<kind>.<digest>``) holds no turns; it
names the owner's user, so ``forget`` removes it with the user's other data.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import StoreError
from ..store.records import LOCK_SESSION_PREFIX
from ..types import Scope

if TYPE_CHECKING:
    from ..store.base import Store

#: Seconds a lease lasts: longer than any one edit (a read, a write, an inline embed).
LEASE_S = 60.0
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


def _live(until: object, now: float) -> bool:
    return isinstance(until, int | float) and until > now


def _next_of(meta: dict[str, object], now: float) -> object:
    """The token of the waiter whose place as next holder is live, or None."""
    return meta.get("next") if _live(meta.get("next_until"), now) else None


def _try_take(store: Store, where: Scope, token: str, lease_s: float) -> bool:
    """Take the lease if it is free (or expired) and no other waiter is next: one
    compare-and-set on its revision. Held, it takes (or renews) the next place."""
    meta, revision = store.session_meta_revision(where)
    now = time.time()
    waiting = _next_of(meta, now)
    if _live(meta.get("until"), now):
        if waiting is None or (waiting == token and meta["next_until"] < now + NEXT_S / 2):
            place = {**meta, "next": token, "next_until": now + NEXT_S}
            store.swap_session_meta(where, place, revision=revision)
        return False
    if waiting not in (None, token):
        return False
    lease = {"holder": token, "until": now + lease_s}
    return store.swap_session_meta(where, lease, revision=revision)


def _leave(store: Store, where: Scope, token: str) -> None:
    """Give up this token's place as next holder, if it has it (a waiter giving up)."""
    _drop(store, where, ("next", "next_until"), while_=("next", token))


def _give_back(store: Store, where: Scope, token: str) -> None:
    """Free the lease if this token still holds it (an expired one may be another's),
    keeping a waiter's place as next holder."""
    _drop(store, where, ("holder", "until"), while_=("holder", token))


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
    while not _try_take(store, where, token, lease_s):
        if time.monotonic() >= deadline:
            _leave(store, where, token)
            raise OwnerBusy(f"another editor holds the {kind} lock of this owner; retry")
        time.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(pause * 2, 0.1)
    try:
        yield
    finally:
        _give_back(store, where, token)


__all__ = ["LEASE_S", "LOCK_PREFIX", "WAIT_S", "OwnerBusy", "lock_scope", "owner_lock"]
