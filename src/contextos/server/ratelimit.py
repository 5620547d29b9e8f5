"""Per-key rate limiting with token buckets.

Each API key gets a bucket holding up to ``burst`` tokens that refills at
``rate`` tokens per second; a request takes one token or is refused with the
time until one will be there (sent as ``Retry-After``). Buckets live in the
server process: with N replicas behind a balancer a key gets up to N times the
rate, which is the usual trade for keeping replicas stateless (put the limit
at the balancer when it must be global).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Buckets kept before full ones are forgotten.
MAX_BUCKETS = 65_536


@dataclass(frozen=True)
class RateLimit:
    """``rate`` requests per second sustained, ``burst`` at once; rate 0 turns it off."""

    rate: float = 50.0
    burst: int = 100

    def __post_init__(self) -> None:
        if self.rate < 0 or self.burst < 1:
            raise ValueError("rate must be >= 0 and burst >= 1")

    @property
    def enabled(self) -> bool:
        return self.rate > 0


class TokenBucketLimiter:
    """Thread-safe token buckets keyed by API key id."""

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def acquire(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when allowed, else seconds to wait (> 0)."""
        if not self.limit.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens = self._refilled(key, now)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > MAX_BUCKETS:
                self._prune(now)
            return (1.0 - tokens) / self.limit.rate

    def _refilled(self, key: str, now: float) -> float:
        """The tokens ``key`` holds at ``now``: what it had plus the refill since, capped at
        ``burst`` (a key never seen holds a full bucket)."""
        full = float(self.limit.burst)
        tokens, last = self._buckets.get(key, (full, now))
        return min(full, tokens + (now - last) * self.limit.rate)

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled (they equal a fresh one): keyed by client
        address, the table must not grow with every address that ever failed."""
        full = float(self.limit.burst)
        for key, (tokens, last) in list(self._buckets.items()):
            if tokens + (now - last) * self.limit.rate >= full:
                del self._buckets[key]

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token (0.0 when it has one now); takes none."""
        if not self.limit.enabled:
            return 0.0
        with self._lock:
            tokens = self._refilled(key, self._clock())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.limit.rate

    @staticmethod
    def retry_after_header(wait: float) -> str:
        """``Retry-After`` takes whole seconds; round up so a client that obeys succeeds."""
        return str(max(1, math.ceil(wait)))
