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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

from ..errors import StoreError

#: Writes that hold a thread at once (as many as the shared pool has).
WRITE_THREADS = 40
#: Seconds a write waits for a write thread at most (the SQLite store's busy timeout).
WRITE_THREAD_WAIT_S = 10.0

T = TypeVar("T")

#: The write threads' limiter, one per event loop (as anyio keeps its shared pool's).
_limiter: RunVar[anyio.CapacityLimiter] = RunVar("contextos_write_threads")


def _write_threads() -> anyio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(WRITE_THREADS)
        _limiter.set(limiter)
        return limiter


async def run_write(call: Callable[[], T]) -> T:
    """``call()``, a route's blocking write, on a write thread once one is free."""
    limiter = _write_threads()
    borrower = object()  # this call's token: taken and given back here
    try:
        with anyio.fail_after(WRITE_THREAD_WAIT_S):
            await limiter.acquire_on_behalf_of(borrower)
    except TimeoutError:
        raise StoreError(
            f"every write thread of the server was busy for {WRITE_THREAD_WAIT_S:g} s "
            "(writes waiting for the database's write lock)"
        ) from None
    try:
        # The token above is the limit; this call's own limiter only gives it a thread.
        return await anyio.to_thread.run_sync(call, limiter=anyio.CapacityLimiter(1))
    finally:
        limiter.release_on_behalf_of(borrower)


__all__ = ["WRITE_THREADS", "WRITE_THREAD_WAIT_S", "run_write"]
