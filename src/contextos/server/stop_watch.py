"""A stopping server process ends, whatever its threads are blocked on.

Why: a request's thread blocked on a database that stopped answering (a frozen
PostgreSQL host) is no daemon thread, and the embedding worker's last query may hang
the same way; the interpreter waits for such threads at exit. A server told to stop
printed "contextos stopped (store closed)" and ran on for as long as the database
stayed frozen (90 s in a review, whatever ``--shutdown-timeout`` said), until its
supervisor killed it; with ``serve --workers N`` each worker process did the same.

:func:`exit_when_stuck` is started when the server's shutdown begins: once the store
is closed the process has :data:`AFTER_CLOSE_S` to end by itself, and in any case
:data:`SHUTDOWN_LIMIT_S` from the start of the shutdown; then it exits 0, saying why.
The clients of the requests left behind have had their answer (the shutdown cut them
off), and nothing written is lost: every write is its own transaction.

Only a process that serves (``contextos serve`` and its workers) starts it: an app an
application serves in its own process (or a test) is never ended from under it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

log = logging.getLogger("contextos.server")

#: Seconds a process may take to end once its store is closed.
AFTER_CLOSE_S = 5.0
#: Seconds from the start of a shutdown to the process's end at most: the embedding
#: drain (30 s) and some for closing.
SHUTDOWN_LIMIT_S = 45.0


def exit_when_stuck(
    closed: threading.Event,
    *,
    after_close_s: float = AFTER_CLOSE_S,
    limit_s: float = SHUTDOWN_LIMIT_S,
) -> threading.Thread:
    """Start the watch (a daemon thread, which dies with a process that ends in time):
    exit ``after_close_s`` after ``closed`` is set, or ``limit_s`` from now."""

    def watch() -> None:
        if closed.wait(limit_s):
            threading.Event().wait(after_close_s)
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
