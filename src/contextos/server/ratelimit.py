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
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: Buckets kept at most. Past it, a new key's bucket replaces the least recently used one
#: (see ``TokenBucketLimiter._make_room``).
MAX_BUCKETS = 65_536

#: The smallest rate on (requests per second): one request a day. Why: a tiny positive
#: rate (``--rate 1e-320``) made the wait for a token infinite, and every refused request
#: a 500 ``OverflowError`` (a review); a wait of more than a day is no rate limit anyone
#: means. So the longest ``Retry-After`` a bucket asks for is a day too.
MIN_RATE = 1 / 86_400
#: The longest ``Retry-After`` sent, in seconds (a day: ``1 / MIN_RATE``).
MAX_RETRY_AFTER_S = 86_400


def check_rate(rate: float) -> None:
    """Raise ValueError unless ``rate`` is 0 (no limit) or a finite number of requests
    per second of at least :data:`MIN_RATE` (``serve --rate`` checks it too)."""
    if not math.isfinite(rate) or rate < 0:
        raise ValueError("rate must be a finite number >= 0")
    if 0 < rate < MIN_RATE:
        raise ValueError(
            f"rate must be 0 (no limit) or at least one request per day "
            f"({MIN_RATE:.3g} per second), not {rate:g}"
        )


@dataclass(frozen=True)
class RateLimit:
    """``rate`` requests per second sustained, ``burst`` at once; rate 0 turns it off."""

    rate: float = 50.0
    burst: int = 100

    def __post_init__(self) -> None:
        # nan passed ``rate < 0`` and then read as "off" (nan > 0 is false); a nan
        # burst refused every request with a 500 (Retry-After of nan seconds).
        check_rate(self.rate)
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError("burst must be an integer >= 1")

    @property
    def enabled(self) -> bool:
        return self.rate > 0


class TokenBucketLimiter:
    """Thread-safe token buckets keyed by API key id (or, for failed authentications,
    by client address), at most ``MAX_BUCKETS`` of them."""

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        #: key -> (tokens, last refill), least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        #: The bucket every key shares while the table is full of refusing buckets
        #: (see ``_make_room``): (tokens, last refill).
        self._overflow = (float(limit.burst), 0.0)

    @property
    def buckets(self) -> int:
        """How many buckets are kept. (A property, not ``__len__``: an empty limiter
        must not be falsy, or ``limiter or default`` silently swaps it out.)"""
        return len(self._buckets)

    def acquire(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when allowed, else seconds to wait (> 0)."""
        if not self.limit.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            own = key in self._buckets or self._make_room(now)
            tokens = self._refilled(key, now) if own else self._full_refill(self._overflow, now)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            if own:
                self._keep(key, tokens, now)
            else:
                self._overflow = (tokens, now)
            return 0.0 if allowed else (1.0 - tokens) / self.limit.rate

    def _refilled(self, key: str, now: float) -> float:
        """The tokens ``key`` holds at ``now``: what it had plus the refill since, capped at
        ``burst`` (a key never seen holds a full bucket)."""
        return self._full_refill(self._buckets.get(key, (float(self.limit.burst), now)), now)

    def _full_refill(self, bucket: tuple[float, float], now: float) -> float:
        tokens, last = bucket
        return min(float(self.limit.burst), tokens + (now - last) * self.limit.rate)

    def _keep(self, key: str, tokens: float, now: float) -> None:
        if key in self._buckets:
            self._buckets.move_to_end(key)
        self._buckets[key] = (tokens, now)

    def _make_room(self, now: float) -> bool:
        """Room for one more bucket: forget least recently used ones while the table is
        full, unless that one is still over its limit; whether there is room now.

        Why: keyed by client address, the table grew by one bucket per address that ever
        failed to authenticate, forever. Forgetting a bucket gives its key a full one
        again, so a bucket still refusing its key is never forgotten: an attacker cannot
        reset their own limit by spraying other addresses. Such buckets are the most
        recently used ones (a bucket refills a token within ``1 / rate`` seconds), so the
        oldest is over its limit only when all ``MAX_BUCKETS`` keys were refused within
        that time; the new key is then charged to one bucket all such keys share
        (``_overflow``), so spraying fresh addresses gains ``burst`` tries in all, not
        ``burst`` each. A forgotten bucket that still
        had tokens gives its key at most ``burst`` tries again, what any fresh address
        gets. Each bucket is forgotten at most once, so this costs O(1) per call,
        amortised.
        """
        while len(self._buckets) >= MAX_BUCKETS:
            if self._full_of_refusals(now):
                return False
            del self._buckets[next(iter(self._buckets))]
        return True

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token (0.0 when it has one now); takes none."""
        if not self.limit.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            if key in self._buckets or not self._full_of_refusals(now):
                tokens = self._refilled(key, now)
            else:
                tokens = self._full_refill(self._overflow, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.limit.rate

    def _full_of_refusals(self, now: float) -> bool:
        """Whether a new key would be charged to the shared overflow bucket: the table
        is full and its least recently used bucket is still refusing (``_make_room``)."""
        if len(self._buckets) < MAX_BUCKETS:
            return False
        return self._full_refill(next(iter(self._buckets.values())), now) < 1.0

    @staticmethod
    def retry_after_header(wait: float) -> str:
        """``Retry-After`` takes whole seconds; round up so a client that obeys succeeds.
        At most :data:`MAX_RETRY_AFTER_S`, whatever ``wait`` is (``inf`` or ``nan``
        included): ``math.ceil(inf)`` raised, and the request was answered 500."""
        if not wait <= MAX_RETRY_AFTER_S:  # nan too
            return str(MAX_RETRY_AFTER_S)
        return str(max(1, math.ceil(wait)))
