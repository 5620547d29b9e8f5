"""A stopping server process ends, whatever its threads are blocked on.

Why: a request's thread blocked on a database that stopped answering (a frozen
PostgreSQL host) is no daemon thread, and the embedding worker's last query may hang
the same way; the interpreter waits for such threads at exit. A server told to stop
printed "contextos stopped (store closed)" and ran on for as long as the database
stayed frozen (90 s in a review, whatever ``--shutdown-timeout`` said), until its
supervisor killed it; with ``serve --workers N`` each worker process did the same.

:func:`exit_when_stuck` is started with the server; its :class:`ShutdownClock` begins
at the signal that stops it (:func:`begin_on_signals`). Once the store is closed the
process has :data:`AFTER_CLOSE_S` to end by itself, and in any case the clock's limit
(:func:`limit_for`) from the signal; then it exits 0, saying why. The wait for requests
in flight (``--shutdown-timeout``), the embedding drain and the store's close share
that limit. Why from the signal: the watch began once uvicorn had waited for requests
in flight, so a server stopped on a frozen PostgreSQL took 30 s of that wait, 30 s of
drain and 15 s of a hung close: 75 s, where the docs promised 45 (a review). The
clients of the requests left behind have had their answer (the shutdown cut them off),
and nothing written is lost: every write is its own transaction.

Only a process that serves (``contextos serve`` and its workers) starts it: an app an
application serves in its own process (or a test) is never ended from under it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("contextos.server")

#: Seconds a process may take to end once its store is closed.
AFTER_CLOSE_S = 5.0
#: Seconds from the start of a shutdown (its signal) to the process's end at most, with
#: the default ``--shutdown-timeout`` (30 s) of which they leave 15 s after the wait
#: for requests in flight.
SHUTDOWN_LIMIT_S = 45.0
#: Seconds the limit leaves after the wait for requests in flight: a longer
#: ``--shutdown-timeout`` moves the limit on (requests in flight are given their time).
AFTER_REQUESTS_S = 15.0
#: Seconds of the limit the embedding drain leaves to closing the store.
CLOSE_RESERVE_S = 5.0
#: The signals that stop a server (uvicorn's).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

Handler = Callable[[int, FrameType | None], Any]


def limit_for(requests_s: float | None) -> float:
    """Seconds from a shutdown's signal to the process's end at most, when requests in
    flight are waited for ``requests_s`` (None: unknown)."""
    if requests_s is None:
        return SHUTDOWN_LIMIT_S
    return max(SHUTDOWN_LIMIT_S, requests_s + AFTER_REQUESTS_S)


class ShutdownClock:
    """When a server's shutdown began, and what is left of its limit: every step of
    the shutdown takes its share of one limit, not a limit of its own."""

    def __init__(self, limit_s: float = SHUTDOWN_LIMIT_S) -> None:
        self.limit_s = limit_s
        self.began = threading.Event()
        self._at = 0.0

    def begin(self) -> None:
        """The shutdown begins now, unless it began already (at its signal)."""
        if not self.began.is_set():
            self._at = time.monotonic()
            self.began.set()

    def left(self) -> float:
        """Seconds left of the limit (0 once it has passed)."""
        return max(0.0, self._at + self.limit_s - time.monotonic())

    def share(self, most_s: float, *, leave_s: float) -> float:
        """Seconds a step may take: at most ``most_s``, leaving ``leave_s`` of the limit
        to the steps after it."""
        return max(0.0, min(most_s, self.left() - leave_s))


def begin_on_signals(clock: ShutdownClock) -> None:
    """Begin ``clock`` at the first stop signal the server handles, and set its limit
    from the server's wait for requests in flight. Called once the server has taken
    the signals (an app's startup, in uvicorn), on the main thread (elsewhere nothing
    can be done: the clock then begins when the app is shut down). uvicorn puts its
    own handlers back when it stops serving, which drops these."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        handler = signal.getsignal(sig)
        if callable(handler):
            clock.limit_s = limit_for(_requests_wait(handler))
            signal.signal(sig, _noting(clock, handler))


def _requests_wait(handler: Handler) -> float | None:
    """``--shutdown-timeout``, as the uvicorn server whose signal handler this is
    waits for requests in flight (``Server.handle_exit`` is a bound method; its
    ``config`` is the one ``serve`` built); None when it cannot be told."""
    config = getattr(getattr(handler, "__self__", None), "config", None)
    wait = getattr(config, "timeout_graceful_shutdown", None)
    return float(wait) if isinstance(wait, (int, float)) else None


def _noting(clock: ShutdownClock, handler: Handler) -> Handler:
    def noted(signum: int, frame: FrameType | None) -> Any:
        clock.begin()
        return handler(signum, frame)

    return noted


def exit_when_stuck(
    clock: ShutdownClock,
    closed: threading.Event,
    *,
    after_close_s: float = AFTER_CLOSE_S,
) -> threading.Thread:
    """Start the watch (a daemon thread, which dies with a process that ends in time):
    once ``clock`` began, exit ``after_close_s`` after ``closed`` is set, and in any
    case when the clock's limit is reached."""

    def watch() -> None:
        clock.began.wait()
        if closed.wait(clock.left()):
            threading.Event().wait(min(after_close_s, clock.left()))
        stuck = [t.name for t in threading.enumerate() if t.is_alive() and not t.daemon]
        log.warning(
            "the server stopped but %d thread(s) still wait (for the database?): %s; "
            "exiting without them",
            max(0, len(stuck) - 1),
            ", ".join(n for n in stuck if n != "MainThread") or "none",
        )
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe
                stream.flush()
        logging.shutdown()
        os._exit(0)

    thread = threading.Thread(target=watch, name="contextos-stop-watch", daemon=True)
    thread.start()
    return thread
