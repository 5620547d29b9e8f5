"""A relative date rewritten after a preposition reads as one phrase: the mention's own
preposition is kept, and one just before a mention that has none ("for Saturday") is not
followed by a second ("for on 12 December 2026": a review)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contextos.memory.extract import OfflineExtractor
from contextos.text.temporal import resolve, rewrite
from contextos.types import Message

#: Sunday 6 December 2026, the review's session time.
SUNDAY = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)

#: (preposition, how a day after it reads, how a week after it reads). The prepositions
#: the pattern reads as part of the mention keep their own ("by", "until", ...); the
#: locative ones become "on"/"in" as the date's size needs; the others are followed by
#: the date alone.
PREPOSITIONS = [
    # not part of the mention: the date alone follows
    ("for", "for 12 December 2026", "for the week of 7 December 2026"),
    ("to", "to 12 December 2026", "to the week of 7 December 2026"),
    ("as of", "as of 12 December 2026", "as of the week of 7 December 2026"),
    ("around", "around 12 December 2026", "around the week of 7 December 2026"),
    # part of the mention, kept
    ("by", "by 12 December 2026", "by the week of 7 December 2026"),
    ("until", "until 12 December 2026", "until the week of 7 December 2026"),
    ("till", "till 12 December 2026", "till the week of 7 December 2026"),
    ("from", "from 12 December 2026", "from the week of 7 December 2026"),
    ("since", "since 12 December 2026", "since the week of 7 December 2026"),
    ("before", "before 12 December 2026", "before the week of 7 December 2026"),
    ("after", "after 12 December 2026", "after the week of 7 December 2026"),
    ("through", "through 12 December 2026", "through the week of 7 December 2026"),
    # part of the mention, locative: "on" a day, "in" a week
    ("on", "on 12 December 2026", "in the week of 7 December 2026"),
    ("in", "on 12 December 2026", "in the week of 7 December 2026"),
    ("during", "on 12 December 2026", "in the week of 7 December 2026"),
    ("over", "on 12 December 2026", "in the week of 7 December 2026"),
    # no preposition: one is supplied
    ("", "on 12 December 2026", "in the week of 7 December 2026"),
]


@pytest.mark.parametrize(("prep", "day", "week"), PREPOSITIONS)
def test_a_date_after_each_preposition_reads_as_one_phrase(prep: str, day: str, week: str) -> None:
    for mention, expected in (("Saturday", day), ("next week", week)):
        text = f"I will book a table {prep} {mention}.".replace("  ", " ")
        assert rewrite(text, resolve(text, SUNDAY)) == f"I will book a table {expected}."


@pytest.mark.parametrize("prep", ["For", "TO", "Around"])
def test_the_preposition_is_read_in_any_case(prep: str) -> None:
    text = f"Book it {prep} tomorrow."
    assert rewrite(text, resolve(text, SUNDAY)) == f"Book it {prep} 7 December 2026."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Stay until after tomorrow.", "Stay until after 7 December 2026."),
        ("Wait for on tomorrow.", "Wait for on 7 December 2026."),  # as written: its own "on"
        ("Done by before tomorrow.", "Done by before 7 December 2026."),
    ],
)
def test_a_mention_with_its_own_preposition_keeps_it_after_another(
    text: str, expected: str
) -> None:
    assert rewrite(text, resolve(text, SUNDAY)) == expected


def test_the_extractor_stores_the_review_sentences_without_a_second_preposition() -> None:
    turns = [
        Message("user", "Plan a birthday cake for Saturday"),
        Message("user", "I will book a table for Friday"),
    ]
    facts = OfflineExtractor().extract(turns, session_time=SUNDAY)
    assert [f.text for f in facts] == [
        "User: Plan a birthday cake for 12 December 2026",
        "User will book a table for 11 December 2026",
    ]
    assert [f.event_time for f in facts] == [
        datetime(2026, 12, 12, tzinfo=UTC),
        datetime(2026, 12, 11, tzinfo=UTC),
    ]
