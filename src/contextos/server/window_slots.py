"""Per-tenant slots (:class:`TenantSlots`): how many calls of one tenant the server runs
at once on threads of their own, the others waiting without a thread.

One mechanism, two uses. :class:`WindowSlots`: how many windows of one tenant the server
builds at once: the HTTP window route, the inspector's window routes, the MCP
``assemble_window`` tool, the compactions (``POST /v1/sessions/{id}/compact``, MCP
``compact_session``), and the agents' ``conversation_search`` over MCP and HTTP
(:data:`READS_LOG`). And the write threads (:mod:`.write_threads`): how many writes of
one tenant hold a write thread at once. Apart from :mod:`.windowing` because it needs no
engine: ``contextos mcp`` makes its slots at start and loads the engine on the first
window."""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

#: How many windows of one tenant are built at once (:class:`WindowSlots`).
WINDOWS_PER_TENANT = 1
#: How many windows of all tenants are built at once (:class:`WindowSlots`): twice the
#: cores, at least four. A build is Python work under the interpreter lock, its query's
#: embedding and its reads aside, so more at once than that finish no sooner and each
#: holds its working set (its session's log, read whole when cold).
WINDOWS_AT_ONCE = max(4, 2 * (os.cpu_count() or 1))
#: The tools whose cost grows with a session's log, run in the window slots too: the
#: window, ``compact_session`` (it reads and summarizes the history) and
#: ``conversation_search`` (it reads the whole log a page at a time).
READS_LOG = frozenset({"assemble_window", "compact_session", "conversation_search"})

#: How often a request waiting for its tenant's slot asks whether its client is still
#: connected (:meth:`TenantSlots.run`'s ``client_gone``).
GONE_POLL_S = 0.05

T = TypeVar("T")


class ClientGone(Exception):
    """The client of a request waiting for a slot disconnected: nothing was run."""


class SlotWaitExpired(Exception):
    """No slot was free within the wait :meth:`TenantSlots.run` was given: nothing was run."""


class TenantSlots:
    """Runs blocking calls on threads of their own, at most ``per_tenant`` of one tenant
    at once and, with ``total``, at most ``total`` of all tenants; the others wait,
    without a thread, until one is done.

    Why per tenant: a pool that every tenant's calls share in arrival order lets one
    tenant that sends many slow calls at once (windows on a long log, large writes) hold
    all of it, and another tenant's call waits for all of them. Here one tenant's calls
    queue behind each other only: another tenant's call waits for at most ``per_tenant``
    of them that are running.
    """

    def __init__(self, per_tenant: int, *, total: int | None = None) -> None:
        if per_tenant < 1:
            raise ValueError("per_tenant must be at least 1")
        if total is not None and total < 1:
            raise ValueError("total must be at least 1")
        self.per_tenant = per_tenant
        self.total = total
        #: Each tenant's limiter with the number of calls holding or waiting for it: it
        #: goes when the last leaves. Why: kept for ever, they grew by ~700 bytes for
        #: every tenant that ever asked for a window (70 MB per 100,000; a review).
        self._limiters: dict[str, tuple[anyio.CapacityLimiter, int]] = {}
        self._lock = threading.Lock()
        #: The slots of all tenants together (``total``), one limiter per event loop,
        #: made on first use in it (as anyio keeps its shared pool's). Why per loop: a
        #: limiter waited on from two loops at once (an app served by two test clients
        #: on threads of their own) lost its wake-ups, and the windows hung (a review).
        self._all: RunVar[anyio.CapacityLimiter] = RunVar(f"contextos_slots_{id(self)}")

    def _enter(self, tenant: str) -> anyio.CapacityLimiter:
        with self._lock:
            limiter, users = self._limiters.get(tenant, (None, 0))
            if limiter is None:
                limiter = anyio.CapacityLimiter(self.per_tenant)
            self._limiters[tenant] = (limiter, users + 1)
            return limiter

    def _leave(self, tenant: str) -> None:
        with self._lock:
            limiter, users = self._limiters[tenant]
            if users == 1:
                del self._limiters[tenant]
            else:
                self._limiters[tenant] = (limiter, users - 1)

    def _shared(self) -> list[anyio.CapacityLimiter]:
        """The limiter of all tenants' slots, when there is a ``total``."""
        if self.total is None:
            return []
        try:
            return [self._all.get()]
        except LookupError:
            limiter = anyio.CapacityLimiter(self.total)
            self._all.set(limiter)
            return [limiter]

    def __len__(self) -> int:
        """Tenants with a call running or waited for now."""
        return len(self._limiters)

    async def run(
        self,
        tenant: str | None,
        call: Callable[[], T],
        *,
        client_gone: Callable[[], Awaitable[bool]] | None = None,
        wait_s: float | None = None,
    ) -> T:
        """``call()`` on a worker thread, once one of ``tenant``'s slots is free (and one
        of ``total``; a ``tenant`` of None takes that one only).

        ``client_gone`` (an HTTP route's ``Request.is_disconnected``) is asked while the
        request waits for a slot, and once more before the call starts: a request
        whose client disconnected leaves the queue, and :class:`ClientGone` is raised
        with nothing run. Why: the server does not cancel a route whose client went
        away, so a burst of window requests on a long log, each abandoned (a client's
        timeout, a reset connection), was built one after the other, and the tenant's
        next window from a live client waited for all of them (60 at 20,000 turns: 5.2 s
        instead of 0.07 s; a review). A call that has started runs to its end.
        ``wait_s``: the longest the wait for the slots may take; then
        :class:`SlotWaitExpired`, with nothing run."""
        if tenant is None:
            return await self._run_in(self._shared(), call, client_gone, wait_s)
        limiter = self._enter(tenant)
        try:
            return await self._run_in([limiter, *self._shared()], call, client_gone, wait_s)
        finally:
            self._leave(tenant)

    @staticmethod
    async def _run_in(
        limiters: Sequence[anyio.CapacityLimiter],
        call: Callable[[], T],
        client_gone: Callable[[], Awaitable[bool]] | None,
        wait_s: float | None,
    ) -> T:
        borrower = object()  # the slots' holder: the wait and the release are this call's
        await _take(limiters, borrower, client_gone, wait_s)
        try:
            if client_gone is not None and await client_gone():
                raise ClientGone
            # The slots are the limit; the call's own limiter only gives it a thread.
            return await anyio.to_thread.run_sync(call, limiter=anyio.CapacityLimiter(1))
        finally:
            for limiter in reversed(limiters):
                limiter.release_on_behalf_of(borrower)


class WindowSlots(TenantSlots):
    """Builds windows on threads of their own, at most ``per_tenant`` of one tenant at
    once; the others wait, without a thread, until one is done.

    Why: a session's first window in a process reads its log whole, and an uncompacted
    log costs every window in proportion (every turn of it is placed or listed as left
    out, until a compaction bounds it): about 0.3 s at 20,000 turns, 2 to 4 s
    at 80,000. Built in the thread pool that every route shares (40 threads), 40 windows
    that one tenant sent at once on a 20,000-turn log held every thread and the
    interpreter lock for 44 s: another tenant's ``GET /v1/memories`` went from 50 ms to
    p50 700 ms, max 4 to 6 s. Now one tenant's windows queue behind each other only, and
    never hold more than ``per_tenant`` threads.

    And at most ``total`` of all tenants at once (:data:`WINDOWS_AT_ONCE`). Why: with a
    bound per tenant only, 300 tenants asking at once had 300 builds on 306 threads:
    835 MB at the peak (293 MB one after another), kept after the burst, and another
    tenant's ``GET /v1/memories`` took up to 9.4 s (a review, s49). The others wait
    without a thread, their clients' disconnects still heard.
    """

    def __init__(
        self, per_tenant: int = WINDOWS_PER_TENANT, *, total: int = WINDOWS_AT_ONCE
    ) -> None:
        super().__init__(per_tenant, total=total)


async def _take(
    limiters: Sequence[anyio.CapacityLimiter],
    borrower: object,
    client_gone: Callable[[], Awaitable[bool]] | None,
    wait_s: float | None,
) -> None:
    """A slot of each of ``limiters``, in order, for ``borrower``; or none of them, and
    :class:`ClientGone` when the client disconnects first, :class:`SlotWaitExpired` when
    ``wait_s`` passes first. Each wait stays in its limiter's queue, in order (a wait
    cancelled and begun again would go to its end)."""
    taken: list[anyio.CapacityLimiter] = []
    try:
        with anyio.fail_after(wait_s):
            if client_gone is None:
                await _take_each(limiters, borrower, taken)
            else:
                await _take_while_connected(limiters, borrower, taken, client_gone)
    except TimeoutError:
        _give_back(taken, borrower)
        raise SlotWaitExpired from None
    except BaseException:
        _give_back(taken, borrower)
        raise


async def _take_each(
    limiters: Sequence[anyio.CapacityLimiter],
    borrower: object,
    taken: list[anyio.CapacityLimiter],
) -> None:
    """Wait for a slot of each limiter in turn; ``taken`` lists those held so far (a
    cancelled acquire holds nothing)."""
    for limiter in limiters:
        await limiter.acquire_on_behalf_of(borrower)
        taken.append(limiter)


async def _take_while_connected(
    limiters: Sequence[anyio.CapacityLimiter],
    borrower: object,
    taken: list[anyio.CapacityLimiter],
    client_gone: Callable[[], Awaitable[bool]],
) -> None:
    """:func:`_take_each` while a watcher polls the client; :class:`ClientGone` when it
    disconnects first (what was taken stays in ``taken``, for the caller to give back)."""
    gone = False
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            nonlocal gone
            while not await client_gone():
                await anyio.sleep(GONE_POLL_S)
            gone = True
            group.cancel_scope.cancel()

        group.start_soon(watch)
        await _take_each(limiters, borrower, taken)
        group.cancel_scope.cancel()  # the watcher's work is done
    if gone:
        raise ClientGone


def _give_back(taken: list[anyio.CapacityLimiter], borrower: object) -> None:
    for limiter in reversed(taken):
        limiter.release_on_behalf_of(borrower)


__all__ = [
    "READS_LOG",
    "WINDOWS_PER_TENANT",
    "ClientGone",
    "SlotWaitExpired",
    "TenantSlots",
    "WindowSlots",
]
