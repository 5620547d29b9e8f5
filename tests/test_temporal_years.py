"""A number from 1900 to 2099 is a year only where it reads as one.

Why (a review of ``contextos chat``): every such number was a year, so "I bought 1999
shares" was remembered as a fact of 1 January 1999, "my pin code is 1987" of 1987. A
count ("1999 shares") and a number that names a thing ("flat number 2010", "pin code
is 1987") are not years; a year after "in", "since" and the like is one, whatever
follows it, and so is a year that starts a sentence ("2019 was a good year").
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contextos.text.temporal import resolve

SAID = datetime(2026, 12, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "I bought 1999 shares of ACME",
        "He scored 1950 points in the final",
        "I have 2000 followers now",
        "My flat is number 2010 on Main street",
        "My pin code is 1987",
        "Room 1204, please",
        "Take bus 1905 to the port",
    ],
)
def test_a_count_or_a_numbered_thing_is_no_year(text: str) -> None:
    assert [m.text for m in resolve(text, SAID)] == []


@pytest.mark.parametrize(
    ("text", "year"),
    [
        ("I was born in 1987", 1987),
        ("In 2019 things changed for us", 2019),
        ("Since 2016 friends visit every May", 2016),
        ("2019 was a great year", 2019),
        ("2019 looks like the year we met", 2019),
        ("We moved in summer 2021", 2021),
    ],
)
def test_a_year_is_still_a_year(text: str, year: int) -> None:
    found = resolve(text, SAID)
    assert found and found[0].start.year == year, [(m.text, m.start) for m in found]
