"""SIGTERM during a benchmark: unwind as Ctrl-C does.

``kill``, ``timeout``, a cancelled CI job, systemd or a closing tmux/ssh session stop a
process with SIGTERM, whose default action ends it on the spot: no ``finally`` runs. A
benchmark that was stopped that way left its ``contextos serve`` subprocess running
(re-parented to PID 1, still listening) and its temporary store in ``/tmp``; each
stopped run left one more. Under :func:`sigterm_unwinds` the signal raises
:class:`Terminated` in the main thread instead, a ``KeyboardInterrupt``, so everything
that cleans up after a Ctrl-C cleans up after it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

#: The exit status of a command stopped by SIGTERM (128 + 15, as a shell reports it).
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """A SIGTERM, raised where the main thread was, to unwind like Ctrl-C."""


#: The SIGTERMs received while a :func:`sigterm_unwinds` block runs (by its handler, or
#: by :func:`sigterm_cancels`' in an event loop).
_RECEIVED: list[int] = []


def stop_if_terminated() -> None:
    """Raise :class:`Terminated` when a SIGTERM came during :func:`sigterm_unwinds`: for
    a benchmark's loop to call at each step.

    Why: the handler raises where the main thread happens to be, and that may be code
    whose exceptions Python swallows (a ``gc.callbacks`` hook, a weakref callback,
    ``__del__``: "Exception ignored in ..."); the handler ignores every later SIGTERM, so
    ``bench wrap`` ran on with its 100,000 calls and was killed 90 s later (a fresh
    clone's suite, s56)."""
    if _RECEIVED:
        raise Terminated


@contextmanager
def sigterm_unwinds() -> Iterator[Callable[[], bool]]:
    """While the block runs, SIGTERM raises :class:`Terminated` (once: a second SIGTERM
    while the block cleans up is ignored, so it cannot cut the cleanup short). Yields
    whether a SIGTERM came: the exception that reaches the caller may be another one,
    raised by a cleanup that the interruption upset (a ROLLBACK after the COMMIT it
    interrupted had ended the transaction), after every ``finally`` ran all the same.

    Only the main thread can set a signal handler: elsewhere this does nothing."""
    _RECEIVED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield lambda: bool(_RECEIVED)
        return

    def terminate(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _RECEIVED.append(signum)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield lambda: bool(_RECEIVED)
    finally:
        signal.signal(signal.SIGTERM, previous)


async def sigterm_cancels(work: Awaitable[T]) -> T:
    """Await ``work`` in a running loop; a SIGTERM meanwhile cancels it (each task it
    gathered unwinds as on cancellation: its ``finally`` runs) and raises
    :class:`Terminated` once it has. Why: raised by :func:`sigterm_unwinds`'s handler,
    ``Terminated`` landed inside whichever client task was running, and the process
    ended printing "Task was destroyed but it is pending!" and a task's traceback after
    "terminated". The handler in place before is put back after (asyncio's removal
    would leave the default, which ends the process with no cleanup)."""
    loop = asyncio.get_running_loop()
    main = asyncio.ensure_future(work)
    got: list[bool] = []

    def cancel() -> None:
        got.append(True)
        _RECEIVED.append(signal.SIGTERM)
        main.cancel()

    before = signal.getsignal(signal.SIGTERM)
    try:
        loop.add_signal_handler(signal.SIGTERM, cancel)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, Windows
        return await main
    try:
        return await main
    except asyncio.CancelledError:
        if got:
            raise Terminated from None
        raise
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGTERM)
            # Once one came, another is ignored (it must not cut the cleanup short).
            signal.signal(signal.SIGTERM, signal.SIG_IGN if got else before)
