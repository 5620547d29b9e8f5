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

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: The exit status of a command stopped by SIGTERM (128 + 15, as a shell reports it).
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """A SIGTERM, raised where the main thread was, to unwind like Ctrl-C."""


@contextmanager
def sigterm_unwinds() -> Iterator[Callable[[], bool]]:
    """While the block runs, SIGTERM raises :class:`Terminated` (once: a second SIGTERM
    while the block cleans up is ignored, so it cannot cut the cleanup short). Yields
    whether a SIGTERM came: the exception that reaches the caller may be another one,
    raised by a cleanup that the interruption upset (a ROLLBACK after the COMMIT it
    interrupted had ended the transaction), after every ``finally`` ran all the same.

    Only the main thread can set a signal handler: elsewhere this does nothing."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: bool(got)
        return

    def terminate(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        got.append(signum)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield lambda: bool(got)
    finally:
        signal.signal(signal.SIGTERM, previous)
