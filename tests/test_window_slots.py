"""The server's per-tenant window slots (``server.window_slots.WindowSlots``) keep a
tenant's limiter only while a window of it is built or waited for. A review saw one
kept for every tenant that ever asked for a window (~700 bytes each, 70 MB per
100,000 tenants on a long-running server), revoked keys' tenants included."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import anyio
import pytest

from contextos.server.window_slots import WINDOWS_AT_ONCE, ClientGone, WindowSlots


def test_a_tenants_limiter_goes_with_its_last_window() -> None:
    slots = WindowSlots()

    async def main() -> None:
        for i in range(2_000):
            assert await slots.run(f"tenant-{i}", lambda i=i: i) == i
        assert len(slots) == 0

    anyio.run(main)


class Builds:
    """A stand-in window build that counts how many run at once (``most``), on which
    threads, and what ``seen`` returns while each runs."""

    def __init__(self, seconds: float, seen: Callable[[], int] = lambda: 0) -> None:
        self._seconds, self._seen = seconds, seen
        self._guard = threading.Lock()
        self._running = 0
        self.most = 0
        self.threads: set[int] = set()
        self.seen_while_busy: list[int] = []

    def __call__(self) -> None:
        with self._guard:
            self._running += 1
            self.most = max(self.most, self._running)
            self.threads.add(threading.get_ident())
        self.seen_while_busy.append(self._seen())
        time.sleep(self._seconds)
        with self._guard:
            self._running -= 1


def test_the_limit_holds_while_windows_of_one_tenant_wait() -> None:
    slots = WindowSlots(per_tenant=1)
    build = Builds(0.02, seen=lambda: len(slots))

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for tenant in ("a", "a", "a", "b", "b"):
                group.start_soon(slots.run, tenant, build)
        assert len(slots) == 0

    anyio.run(main)
    assert build.most == 2  # one of "a" and one of "b" at a time
    assert max(build.seen_while_busy) == 2 and min(build.seen_while_busy) >= 1


def test_a_window_whose_client_left_leaves_no_limiter() -> None:
    slots = WindowSlots()

    async def gone() -> bool:
        return True

    async def main() -> None:
        with pytest.raises(ClientGone):
            await slots.run("a", lambda: None, client_gone=gone)
        assert len(slots) == 0

    anyio.run(main)


def test_windows_of_many_tenants_are_built_a_bounded_number_at_once() -> None:
    # Bounded per tenant only, 300 tenants' windows sent at once were 300 builds on 306
    # threads, 835 MB at the peak against 293 MB one after another (a review, s49).
    slots = WindowSlots()
    build = Builds(0.01)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for i in range(60):
                group.start_soon(slots.run, f"tenant-{i}", build)
        assert len(slots) == 0

    anyio.run(main)
    assert build.most == WINDOWS_AT_ONCE
    assert len(build.threads) <= WINDOWS_AT_ONCE + 2  # (a thread may end as the next starts)


def test_one_slots_object_serves_several_event_loops_at_once() -> None:
    # An app driven from several threads, each with a loop of its own (a test client used
    # without `with`): a limiter of all tenants shared by the loops lost its wake-ups,
    # and 12 threads' windows hung after 4 (a review, s49).
    slots = WindowSlots()
    done: list[int] = []
    errors: list[BaseException] = []

    def thread(n: int) -> None:
        try:
            for i in range(20):
                anyio.run(slots.run, f"t{n}-{i}", lambda: time.sleep(0.002))
                done.append(n)
        except BaseException as exc:  # the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=thread, args=(n,), daemon=True) for n in range(12)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not errors, errors
    assert len(done) == 12 * 20, f"{len(done)} windows built; the others hung"
