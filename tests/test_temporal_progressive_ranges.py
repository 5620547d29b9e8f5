"""Ranges of months in the present progressive (session 46)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contextos.text.temporal import resolve, rewrite

SAID = datetime(2024, 5, 15, 12, 0, tzinfo=UTC)  # a Wednesday in May


def written(text: str) -> str:
    return rewrite(text, resolve(text, SAID))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Going on now: since the last March (it was placed from the next, in 2025).
        (
            "I'm working remotely from March until August.",
            "I'm working remotely from March 2024 until August 2024.",
        ),
        # Ahead of now in the progressive, or said with a word of the future: the next.
        (
            "I'm moving to Lisbon from March to April.",
            "I'm moving to Lisbon from March 2025 to April 2025.",
        ),
        (
            "I'm going to work remotely from March until August.",
            "I'm going to work remotely from March 2025 until August 2025.",
        ),
        (
            "I'm flying to Japan from June to July.",
            "I'm flying to Japan from June 2024 to July 2024.",
        ),
        # A year named, or "next": the plan it says (a review).
        (
            "Next year I'm working remotely from March until August.",
            "in 2025 I'm working remotely from March 2025 until August 2025.",
        ),
        (
            "In 2025 I'm working remotely from March until August.",
            "In 2025 I'm working remotely from March 2025 until August 2025.",
        ),
        # A word of the future in another clause leaves the range's own reading.
        (
            "I'm working remotely from March until August, and I'll visit you in September.",
            "I'm working remotely from March 2024 until August 2024, and I'll visit you in"
            " September 2024.",
        ),
        # Weekdays in the progressive stay a plan: next week.
        (
            "I'm working from the office between Monday and Friday.",
            "I'm working from the office between 20 May 2024 and 24 May 2024.",
        ),
    ],
)
def test_a_range_of_months_going_on_now_started_before_it(text: str, expected: str) -> None:
    assert written(text) == expected
