"""A rate limit slower than one request a day is refused when the server starts.

A review found ``serve --rate 1e-320 --burst 1`` accepted: the wait for a token was
infinite, and every rate-limited request was answered 500 ``OverflowError`` (a traceback
in the log) instead of 429; ``--rate 1e-300`` sent a ``Retry-After`` of 301 digits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from contextos.cli.main import cli
from contextos.server.ratelimit import MIN_RATE, RateLimit, TokenBucketLimiter
from server_support import app_client, assert_error, auth, issue_key


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--rate", "1e-320"],
        ["serve", "--rate", "1e-300", "--burst", "1"],
        ["mcp", "--transport", "streamable-http", "--rate", "0.00001"],
    ],
)
def test_a_rate_under_one_request_a_day_is_refused_at_start(
    tmp_path: Path, args: list[str]
) -> None:
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "r.db"), *args])
    assert result.exit_code == 2, result.output
    assert "at least one request per day" in result.output
    assert "serving on" not in result.output
    assert not (tmp_path / "r.db").exists()  # refused before anything was opened


def test_a_rate_limit_in_python_refuses_it_too() -> None:
    with pytest.raises(ValueError, match="at least one request per day"):
        RateLimit(rate=1e-320)
    assert RateLimit(rate=0).enabled is False  # 0 still turns it off


def test_the_slowest_rate_is_a_429_with_a_retry_after_of_a_day(tmp_path: Path) -> None:
    with app_client(tmp_path / "slow.db", rate_limit=RateLimit(rate=MIN_RATE, burst=1)) as c:
        headers = auth(issue_key(c, "acme"))
        assert c.get("/v1/memories", params={"user_id": "u"}, headers=headers).status_code == 200
        refused = c.get("/v1/memories", params={"user_id": "u"}, headers=headers)
    assert_error(refused, 429, "RateLimited")
    assert refused.headers["Retry-After"] == "86400"


@pytest.mark.parametrize("wait", [float("inf"), float("nan"), 1e300])
def test_a_retry_after_header_is_at_most_a_day_whatever_the_wait(wait: float) -> None:
    # math.ceil(inf) raised OverflowError inside the error handler: a 500.
    assert TokenBucketLimiter.retry_after_header(wait) == "86400"
    assert TokenBucketLimiter.retry_after_header(0.2) == "1"
