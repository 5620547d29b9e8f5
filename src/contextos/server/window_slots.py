"""How many windows of one tenant the server builds at once: the HTTP window route, the
inspector's window routes, the MCP ``assemble_window`` tool, the compactions
(``POST /v1/sessions/{id}/compact``, MCP ``compact_session``), and the agents'
``conversation_search`` over MCP and HTTP (:data:`READS_LOG`). Apart from
:mod:`.windowing` because it needs no engine: ``contextos mcp`` makes its slots at start
and loads the engine on the first window."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import anyio.to_thread

#: How many windows of one tenant are built at once (:class:`WindowSlots`).
WINDOWS_PER_TENANT = 1
#: The tools whose cost grows with a session's log, run in the window slots too: the
#: window, ``compact_session`` (it reads and summarizes the history) and
#: ``conversation_search`` (it reads the whole log a page at a time).
READS_LOG = frozenset({"assemble_window", "compact_session", "conversation_search"})

#: How often a request waiting for its tenant's slot asks whether its client is still
#: connected (:meth:`WindowSlots.run`'s ``client_gone``).
GONE_POLL_S = 0.05

T = TypeVar("T")


class ClientGone(Exception):
    """The client of a request waiting for a window slot disconnected: nothing was built."""


class WindowSlots:
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
    """

    def __init__(self, per_tenant: int = WINDOWS_PER_TENANT) -> None:
        if per_tenant < 1:
            raise ValueError("per_tenant must be at least 1")
        self.per_tenant = per_tenant
        #: Each tenant's limiter with the number of calls holding or waiting for it: it
        #: goes when the last leaves. Why: kept for ever, they grew by ~700 bytes for
        #: every tenant that ever asked for a window (70 MB per 100,000; a review).
        self._limiters: dict[str, tuple[anyio.CapacityLimiter, int]] = {}
        self._lock = threading.Lock()

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

    def __len__(self) -> int:
        """Tenants with a window built or waited for now."""
        return len(self._limiters)

    async def run(
        self,
        tenant: str,
        build: Callable[[], T],
        *,
        client_gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> T:
        """``build()`` on a worker thread, once one of ``tenant``'s slots is free.

        ``client_gone`` (an HTTP route's ``Request.is_disconnected``) is asked while the
        request waits for a slot, and once more before the build starts: a request
        whose client disconnected leaves the queue, and :class:`ClientGone` is raised
        with nothing built. Why: the server does not cancel a route whose client went
        away, so a burst of window requests on a long log, each abandoned (a client's
        timeout, a reset connection), was built one after the other, and the tenant's
        next window from a live client waited for all of them (60 at 20,000 turns: 5.2 s
        instead of 0.07 s; a review). A build that has started runs to its end."""
        limiter = self._enter(tenant)
        try:
            return await self._run_in(limiter, build, client_gone)
        finally:
            self._leave(tenant)

    @staticmethod
    async def _run_in(
        limiter: anyio.CapacityLimiter,
        build: Callable[[], T],
        client_gone: Callable[[], Awaitable[bool]] | None,
    ) -> T:
        borrower = object()  # the slot's holder: the wait and the release are this call's
        if client_gone is None:
            await limiter.acquire_on_behalf_of(borrower)
        else:
            await _acquire_while_connected(limiter, borrower, client_gone)
        try:
            if client_gone is not None and await client_gone():
                raise ClientGone
            # The tenant's slot is the limit; the call's own limiter only gives it a thread.
            return await anyio.to_thread.run_sync(build, limiter=anyio.CapacityLimiter(1))
        finally:
            limiter.release_on_behalf_of(borrower)


async def _acquire_while_connected(
    limiter: anyio.CapacityLimiter, borrower: object, client_gone: Callable[[], Awaitable[bool]]
) -> None:
    """Take a slot of ``limiter`` for ``borrower``, or raise :class:`ClientGone` when the
    client disconnects first. The wait stays in the limiter's queue, in order (a wait
    cancelled and begun again would go to its end), while a watcher polls the client."""
    gone = acquired = False
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            nonlocal gone
            while not await client_gone():
                await anyio.sleep(GONE_POLL_S)
            gone = True
            group.cancel_scope.cancel()

        group.start_soon(watch)
        await limiter.acquire_on_behalf_of(borrower)
        acquired = True
        group.cancel_scope.cancel()  # the watcher's work is done
    if gone:
        if acquired:
            limiter.release_on_behalf_of(borrower)
        raise ClientGone


__all__ = ["READS_LOG", "WINDOWS_PER_TENANT", "ClientGone", "WindowSlots"]
