"""One line a message, and a message repeated within seconds written once: the filter of
the server's handler for a chatty library's log lines (psycopg_pool's during an outage).

Why: while PostgreSQL is unreachable, psycopg_pool logs every connection try and every
reconnection attempt of each pool ("error connecting in 'contextos': connection failed:
...", followed by libpq's tab-indented hint on a line of its own), about 13 lines a
second for each server process (193 in a 15 s outage, a review). Written bare they broke
the server's log format and buried its own lines. This writes each distinct message once
per :data:`WINDOW_S` seconds, on one line, and says how many like it were left out.
"""

from __future__ import annotations

import logging
import threading
import time

#: Seconds within which the same message is written once.
WINDOW_S = 10.0

#: Distinct messages remembered at most; older ones are forgotten first (a flood of
#: distinct messages must not grow the filter without bound).
REMEMBERED = 256


class OneLineQuietRepeats(logging.Filter):
    """Rewrites a record's message to one line and drops a warning or worse when the same
    message was written less than ``window_s`` seconds ago. The next one written after
    the window ends with the number dropped in between (repeats after the last one
    written are not counted anywhere). Lines under warning, which only a lower
    ``--log-level`` shows, are all written."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        super().__init__()
        self.window_s = window_s
        self._lock = threading.Lock()
        #: message -> (when it was last written, how many were dropped since)
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = " ".join(record.getMessage().split())
        if record.levelno < logging.WARNING:  # asked for (--log-level info, debug): all
            record.msg, record.args = message, None
            return True
        now = time.monotonic()
        with self._lock:
            written, dropped = self._seen.get(message, (float("-inf"), 0))
            if now - written < self.window_s:
                self._seen[message] = (written, dropped + 1)
                return False
            self._seen.pop(message, None)
            self._seen[message] = (now, 0)
            while len(self._seen) > REMEMBERED:
                del self._seen[next(iter(self._seen))]
        if dropped:
            message += f" ({dropped} more like it in the last {self.window_s:g} s)"
        record.msg, record.args = message, None
        return True
