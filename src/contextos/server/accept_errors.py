"""Keep a server's log readable while it has no file descriptor left to accept with.

At the process's limit of open files (``ulimit -n``; every connection holds one),
each failed ``accept()`` makes asyncio log an error with its traceback, and it tries
again every tenth of a second per listening socket: a client holding connections at the
limit wrote about 3 MB of log a second, enough to fill a disk (a review). The server
itself recovers once connections close; what must not run away is the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

#: Seconds between two "accept failed" records that are let through.
EVERY_S = 10.0
#: What asyncio's record of a failed ``accept()`` starts with (``selector_events.py``).
_ACCEPT_FAILED = "socket.accept() out of system resource"


class AcceptErrorThrottle(logging.Filter):
    """Lets one "accept failed" record of asyncio through every ``every`` seconds,
    saying how many it held back since the last; every other record passes."""

    def __init__(self, every: float = EVERY_S, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._every = every
        self._clock = clock
        self._next = 0.0
        self._held = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(_ACCEPT_FAILED):
            return True
        with self._lock:
            now = self._clock()
            if now < self._next:
                self._held += 1
                return False
            held, self._held, self._next = self._held, 0, now + self._every
        record.exc_info = None  # the traceback says nothing the message does not
        record.exc_text = None
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {self._every:g} s)"
        return True


def throttle_accept_errors() -> None:
    """Install :class:`AcceptErrorThrottle` on asyncio's logger (once per process)."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, AcceptErrorThrottle) for f in logger.filters):
        logger.addFilter(AcceptErrorThrottle())
