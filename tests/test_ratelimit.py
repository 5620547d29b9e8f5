"""The failed-authentication limiter keeps a bounded table without freeing attackers.

Why: keyed by client address, its table grew by one bucket per address that ever
failed to authenticate and was never pruned (only a refused call pruned it).
"""

from __future__ import annotations

import pytest

from contextos.server.auth import DEFAULT_AUTH_FAILURES
from contextos.server.ratelimit import MAX_BUCKETS, RateLimit, TokenBucketLimiter


def address(i: int) -> str:
    return f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"


def test_one_failure_from_each_of_many_addresses_keeps_the_table_bounded() -> None:
    now = [100.0]
    limiter = TokenBucketLimiter(DEFAULT_AUTH_FAILURES, clock=lambda: now[0])
    for i in range(MAX_BUCKETS + 5_000):
        assert limiter.acquire(address(i)) == 0.0  # each address's first failure is allowed
        now[0] += 0.0001
    assert limiter.buckets == MAX_BUCKETS
    # The newest addresses are still counted: the oldest buckets made room for them.
    last = address(MAX_BUCKETS + 4_999)
    assert limiter.wait(last) == 0.0
    for _ in range(DEFAULT_AUTH_FAILURES.burst - 1):
        limiter.acquire(last)
    assert limiter.wait(last) > 0


def test_an_attacker_cannot_reset_their_limit_by_spraying_addresses() -> None:
    now = [100.0]
    limiter = TokenBucketLimiter(DEFAULT_AUTH_FAILURES, clock=lambda: now[0])
    attacker = "203.0.113.9"
    while limiter.acquire(attacker) == 0.0:  # use up the burst of failed attempts
        pass
    refused_for = limiter.wait(attacker)
    assert refused_for > 0
    for i in range(MAX_BUCKETS + 5_000):  # then fail once from each of many addresses
        limiter.acquire(address(i))
    assert limiter.buckets <= MAX_BUCKETS
    assert limiter.wait(attacker) == refused_for  # still refused, as long as before
    # Once the attacker's bucket has refilled past one token it may make room, like any.
    now[0] += 60
    for i in range(MAX_BUCKETS, 2 * MAX_BUCKETS):
        limiter.acquire(address(i))
    assert limiter.buckets == MAX_BUCKETS


def test_the_least_recently_used_bucket_makes_room_not_a_busy_one() -> None:
    now = [100.0]
    limiter = TokenBucketLimiter(DEFAULT_AUTH_FAILURES, clock=lambda: now[0])
    busy = "198.51.100.7"
    for _ in range(5):
        limiter.acquire(busy)
    for i in range(MAX_BUCKETS - 1):  # the table is full
        limiter.acquire(address(i))
    limiter.acquire(busy)  # used again: now the most recent
    limiter.acquire(address(MAX_BUCKETS))  # makes room: address 0 goes, not ``busy``
    assert limiter.buckets == MAX_BUCKETS
    left = DEFAULT_AUTH_FAILURES.burst - 6
    assert [limiter.acquire(busy) for _ in range(left)] == [0.0] * left
    assert limiter.acquire(busy) > 0  # its count was kept


def test_fresh_addresses_share_one_bucket_while_the_table_is_full_of_refusals() -> None:
    # Every bucket still refusing (a spray of 65k addresses within a second): a new
    # address's failure could not be recorded, and each fresh address got tries of its
    # own without limit. They now share one bucket of ``burst`` tries.
    from contextos.server.ratelimit import RateLimit

    now = [100.0]
    limit = RateLimit(rate=0.01, burst=1)
    limiter = TokenBucketLimiter(limit, clock=lambda: now[0])
    for i in range(MAX_BUCKETS):
        limiter.acquire(address(i))  # its one try
        limiter.acquire(address(i))  # refused: every bucket is refusing
    fresh = [address(MAX_BUCKETS + i) for i in range(20)]
    assert [limiter.wait(a) == 0.0 for a in fresh[:1]] == [True]
    allowed = [limiter.acquire(a) == 0.0 for a in fresh]
    assert allowed.count(True) == limit.burst
    assert all(limiter.wait(a) > 0 for a in fresh)  # refused before the key is checked
    assert limiter.buckets == MAX_BUCKETS


@pytest.mark.parametrize("rate", [float("nan"), float("inf"), -1.0])
def test_a_rate_that_is_not_a_finite_non_negative_number_is_refused(rate: float) -> None:
    # nan passed the range check and then read as "off": no limit at all.
    with pytest.raises(ValueError, match="finite"):
        RateLimit(rate=rate)


@pytest.mark.parametrize("burst", [float("nan"), float("inf"), 2.5, True, 0])
def test_a_burst_that_is_not_a_positive_integer_is_refused(burst: object) -> None:
    # A nan burst refused every request with a 500 (Retry-After of nan seconds).
    with pytest.raises(ValueError, match="burst"):
        RateLimit(rate=1.0, burst=burst)  # type: ignore[arg-type]
