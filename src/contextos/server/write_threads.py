"""The threads the server's write routes run on: a pool of their own, apart from the one
every other route shares.

Why: a route's blocking call runs on a worker thread, by default from one pool of 40
that every route shares. A write holds its thread while it waits for the database's
write lock, up to the store's busy timeout (10 s on SQLite), and another process may hold
that lock for longer (``contextos vacuum``, a long ``forget``, a backup, a ``sqlite3``
shell inside a transaction). Forty waiting writes took every thread, and a plain
``GET /v1/memories``, which needs no lock, waited for the whole hold (25 s in a review).

Now the write routes (add, update, delete, forget, append turns) run here: at most
:data:`WRITE_THREADS` writes hold a thread, threads of their own, and the shared pool stays
for reads and everything else whatever the writes wait for. A write that finds every
write thread taken waits for one without holding a thread, for at most
:data:`WRITE_THREAD_WAIT_S`; then it is answered as a busy store is (503, retry).

And at most :data:`WRITES_PER_TENANT` writes of one tenant hold a write thread at once
(the per-tenant slots of :class:`~.window_slots.TenantSlots`, as the windows'). Why: one
tenant's import of 99 adds of ~900 KB each, within the default rate limit, took every
write thread, and another tenant's 2-byte add waited 10 s for one, was answered 503, and
waited again after the ``Retry-After`` (stored after 17 s; a review). More threads
would not have written faster: SQLite writes one transaction at a time, and each
thread beyond the one writing waits for the store's write lock, which is not handed
out in order, so another tenant's write waited behind up to all of them there too.
Now a tenant's other writes wait for its slots, without a thread, and another tenant's
write waits for at most :data:`WRITES_PER_TENANT` of them. A write whose client
disconnected while it waited is not run (``ClientGone``: 499 in the access log).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from anyio.lowlevel import RunVar

from ..errors import StoreError
from .window_slots import SlotWaitExpired, TenantSlots

#: Writes that hold a thread at once (as many as the shared pool has).
WRITE_THREADS = 40
#: Writes of one tenant that hold a write thread at once. Not one: a write's own work
#: (chunking, hashing, the keyword index's text) runs while another holds the store's
#: write lock. Four, not two: with two, ``bench serve --clients 50`` (one tenant, half
#: adds) had an add p95 of 109 ms where 40 shared threads gave 36 and four give 43-46;
#: another tenant's add behind a burst of 900 KB adds waits about 1 s (17 s with 40).
WRITES_PER_TENANT = 4
#: Seconds a write waits for a write thread at most (the SQLite store's busy timeout).
WRITE_THREAD_WAIT_S = 10.0

T = TypeVar("T")

#: The write threads' slots, one per event loop (as anyio keeps its shared pool's).
_slots: RunVar[TenantSlots] = RunVar("contextos_write_threads")


def _write_slots() -> TenantSlots:
    try:
        return _slots.get()
    except LookupError:
        slots = TenantSlots(WRITES_PER_TENANT, total=WRITE_THREADS)
        _slots.set(slots)
        return slots


async def run_write(
    call: Callable[[], T],
    *,
    tenant: str | None = None,
    client_gone: Callable[[], Awaitable[bool]] | None = None,
) -> T:
    """``call()``, a route's blocking write, on a write thread once one is free and one
    of ``tenant``'s :data:`WRITES_PER_TENANT` is (a write of no tenant waits for a write
    thread only). ``client_gone`` (the route's ``Request.is_disconnected``): a write
    whose client disconnected before it began is not run (``ClientGone``)."""
    try:
        return await _write_slots().run(
            tenant, call, client_gone=client_gone, wait_s=WRITE_THREAD_WAIT_S
        )
    except SlotWaitExpired:
        raise StoreError(
            f"no write thread was free for {WRITE_THREAD_WAIT_S:g} s (this tenant's "
            f"{WRITES_PER_TENANT} writes, or every write thread, still running: waiting "
            "for the store, SQLite's write lock or a PostgreSQL connection or lock, or "
            "doing long writes)"
        ) from None


__all__ = ["WRITES_PER_TENANT", "WRITE_THREADS", "WRITE_THREAD_WAIT_S", "run_write"]
