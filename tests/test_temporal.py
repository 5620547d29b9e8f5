"""Relative time expressions resolve against the session time; questions yield time ranges."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contextos.bench.locomo_data import load_locomo
from contextos.text import temporal
from contextos.text.temporal import (
    TimeRange,
    parse_session_time,
    question_time_cues,
    resolve,
    rewrite,
)

#: Monday 8 May 2023, 13:56 — LoCoMo's first session time.
ANCHOR = datetime(2023, 5, 8, 13, 56)

RESOLVE_CASES = [
    # text, expected start date, granularity, expected end date (exclusive)
    ("I went there yesterday", date(2023, 5, 7), "day", date(2023, 5, 8)),
    ("we talked today", date(2023, 5, 8), "day", date(2023, 5, 9)),
    ("the party is tonight", date(2023, 5, 8), "day", date(2023, 5, 9)),
    ("see you tomorrow", date(2023, 5, 9), "day", date(2023, 5, 10)),
    ("I slept badly last night", date(2023, 5, 7), "day", date(2023, 5, 8)),
    ("it rained this morning", date(2023, 5, 8), "day", date(2023, 5, 9)),
    ("the day before yesterday", date(2023, 5, 6), "day", date(2023, 5, 7)),
    ("the day after tomorrow", date(2023, 5, 10), "day", date(2023, 5, 11)),
    ("two days ago", date(2023, 5, 6), "day", date(2023, 5, 7)),
    ("3 days ago", date(2023, 5, 5), "day", date(2023, 5, 6)),
    ("a couple of days ago", date(2023, 5, 6), "day", date(2023, 5, 7)),
    ("a few days ago", date(2023, 5, 5), "day", date(2023, 5, 6)),
    ("couple weeks ago", date(2023, 4, 24), "week", date(2023, 5, 1)),
    ("we met earlier today", date(2023, 5, 8), "day", date(2023, 5, 9)),
    ("on the 4th of July", date(2023, 7, 4), "day", date(2023, 7, 5)),
    ("a week ago", date(2023, 5, 1), "week", date(2023, 5, 8)),
    ("two weeks ago", date(2023, 4, 24), "week", date(2023, 5, 1)),
    ("a month ago", date(2023, 4, 1), "month", date(2023, 5, 1)),
    ("two years ago", date(2021, 1, 1), "year", date(2022, 1, 1)),
    ("10 years ago", date(2013, 1, 1), "year", date(2014, 1, 1)),
    ("last week", date(2023, 5, 1), "week", date(2023, 5, 8)),
    ("this week", date(2023, 5, 8), "week", date(2023, 5, 15)),
    ("next week", date(2023, 5, 15), "week", date(2023, 5, 22)),
    ("the following week", date(2023, 5, 15), "week", date(2023, 5, 22)),
    ("last month", date(2023, 4, 1), "month", date(2023, 5, 1)),
    ("this month", date(2023, 5, 1), "month", date(2023, 6, 1)),
    ("next month", date(2023, 6, 1), "month", date(2023, 7, 1)),
    ("last year", date(2022, 1, 1), "year", date(2023, 1, 1)),
    ("earlier this year", date(2023, 1, 1), "year", date(2024, 1, 1)),
    ("next year", date(2024, 1, 1), "year", date(2025, 1, 1)),
    ("last weekend", date(2023, 5, 6), "weekend", date(2023, 5, 8)),
    ("this past weekend", date(2023, 5, 6), "weekend", date(2023, 5, 8)),
    ("this weekend", date(2023, 5, 13), "weekend", date(2023, 5, 15)),
    ("next weekend", date(2023, 5, 20), "weekend", date(2023, 5, 22)),
    ("I went camping over the weekend", date(2023, 5, 6), "weekend", date(2023, 5, 8)),
    ("we will go camping over the weekend", date(2023, 5, 13), "weekend", date(2023, 5, 15)),
    ("last Friday", date(2023, 5, 5), "day", date(2023, 5, 6)),
    ("last Monday", date(2023, 5, 1), "day", date(2023, 5, 2)),
    ("this Friday", date(2023, 5, 12), "day", date(2023, 5, 13)),
    ("next Friday", date(2023, 5, 19), "day", date(2023, 5, 20)),
    ("this coming Wednesday", date(2023, 5, 10), "day", date(2023, 5, 11)),
    ("I went hiking on Sunday", date(2023, 5, 7), "day", date(2023, 5, 8)),
    ("I'll go hiking on Sunday", date(2023, 5, 14), "day", date(2023, 5, 15)),
    ("we met Tuesday night", date(2023, 5, 2), "day", date(2023, 5, 3)),
    ("last summer", date(2022, 6, 1), "season", date(2022, 9, 1)),
    ("this summer", date(2023, 6, 1), "season", date(2023, 9, 1)),
    ("last winter", date(2022, 12, 1), "season", date(2023, 3, 1)),
    ("in two weeks", date(2023, 5, 22), "week", date(2023, 5, 29)),
    ("in 3 days", date(2023, 5, 11), "day", date(2023, 5, 12)),
    ("two months from now", date(2023, 7, 1), "month", date(2023, 8, 1)),
    ("in May 2023", date(2023, 5, 1), "month", date(2023, 6, 1)),
    ("on 7 May 2023", date(2023, 5, 7), "day", date(2023, 5, 8)),
    ("May 7, 2023", date(2023, 5, 7), "day", date(2023, 5, 8)),
    ("on the 7th of May", date(2023, 5, 7), "day", date(2023, 5, 8)),
    ("on June 3rd", date(2023, 6, 3), "day", date(2023, 6, 4)),
    ("2023-05-07", date(2023, 5, 7), "day", date(2023, 5, 8)),
    ("back in 2019", date(2019, 1, 1), "year", date(2020, 1, 1)),
    ("I visited Rome in June", date(2022, 6, 1), "month", date(2022, 7, 1)),
    ("I will visit Rome in June", date(2023, 6, 1), "month", date(2023, 7, 1)),
    ("I moved there in March", date(2023, 3, 1), "month", date(2023, 4, 1)),
    ("last May", date(2022, 5, 1), "month", date(2022, 6, 1)),
    # "<N> ago today" is that very day (an anniversary), one mention, not a year and today
    ("Two years ago today I got married", date(2021, 5, 8), "day", date(2021, 5, 9)),
    ("I met Tom one year ago today", date(2022, 5, 8), "day", date(2022, 5, 9)),
    ("a month ago today", date(2023, 4, 8), "day", date(2023, 4, 9)),
    ("a week ago today", date(2023, 5, 1), "day", date(2023, 5, 2)),
    ("3 days ago today", date(2023, 5, 5), "day", date(2023, 5, 6)),
]


@pytest.mark.parametrize(("text", "start", "granularity", "end"), RESOLVE_CASES)
def test_resolve(text: str, start: date, granularity: str, end: date) -> None:
    mentions = resolve(text, ANCHOR)
    assert len(mentions) == 1, mentions
    m = mentions[0]
    assert (m.start.date(), m.granularity, m.end.date()) == (start, granularity, end)
    assert text[m.span[0] : m.span[1]] == m.text


@pytest.mark.parametrize(
    "text",
    [
        "I may go there",
        "she stayed for two weeks",
        "I have 2 kids and 3 dogs",
        "it cost 2000 dollars",
        "we march on",
        "Fridays are the best",
        "last time we spoke",
        "May I ask you something?",
        "I am 25 years old",
        "",
    ],
)
def test_no_time_mentions(text: str) -> None:
    assert resolve(text, ANCHOR) == []


def test_several_mentions_in_order() -> None:
    text = "I started last year, quit two weeks ago and start again next month."
    assert [m.label() for m in resolve(text, ANCHOR)] == [
        "2022",
        "the week of 24 April 2023",
        "June 2023",
    ]


def test_ago_today_from_a_day_the_earlier_month_lacks() -> None:
    """29 February a year back, 31 March a month back: the month's last day."""
    leap = datetime(2024, 2, 29, 10, 0)
    assert rewrite("one year ago today", resolve("one year ago today", leap)) == (
        "on 28 February 2023"
    )
    march = datetime(2023, 3, 31, 10, 0)
    assert resolve("a month ago today", march)[0].start.date() == date(2023, 2, 28)


def test_weekend_from_a_sunday() -> None:
    sunday = datetime(2023, 5, 14, 10, 0)
    assert resolve("this weekend", sunday)[0].start.date() == date(2023, 5, 13)
    assert resolve("last weekend", sunday)[0].start.date() == date(2023, 5, 6)


def test_timezone_of_anchor_is_kept() -> None:
    anchor = datetime(2023, 5, 8, 23, 30, tzinfo=timezone(timedelta(hours=2)))
    m = resolve("yesterday", anchor)[0]
    assert m.start == datetime(2023, 5, 7, tzinfo=anchor.tzinfo)


def test_explicit_future_overrides_tense_guess() -> None:
    assert resolve("on Friday", ANCHOR, future=True)[0].start.date() == date(2023, 5, 12)
    assert resolve("on Friday", ANCHOR, future=False)[0].start.date() == date(2023, 5, 5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I went to a support group yesterday.", "I went to a support group on 7 May 2023."),
        ("I painted it last year!", "I painted it in 2022!"),
        ("We met last week", "We met in the week of 1 May 2023"),
        ("I have lived here since last year", "I have lived here since 2022"),
        ("We went hiking on Sunday", "We went hiking on 7 May 2023"),
        ("I visited Rome in June", "I visited Rome in June 2022"),
        ("Two days ago I ran a race", "on 6 May 2023 I ran a race"),
        ("Two years ago today I got married.", "on 8 May 2021 I got married."),
        ("It happened on 7 May 2023", "It happened on 7 May 2023"),
        ("Nothing to see here", "Nothing to see here"),
    ],
)
def test_rewrite(text: str, expected: str) -> None:
    assert rewrite(text, resolve(text, ANCHOR)) == expected


def test_rewrite_with_offset_into_a_longer_text() -> None:
    whole = "Hi! I went yesterday."
    sentence = whole[4:]
    assert rewrite(sentence, resolve(whole, ANCHOR), offset=4) == "I went on 7 May 2023."


QUESTION_CASES = [
    ("When did Caroline go to the LGBTQ support group?", None, None, True),
    ("What did Melanie do in May 2023?", datetime(2023, 5, 1), datetime(2023, 6, 1), False),
    ("What did Caroline do last year?", datetime(2022, 1, 1), datetime(2023, 1, 1), False),
    ("Did she move before 2022?", None, datetime(2022, 1, 1), False),
    ("What happened after June 2023?", datetime(2023, 7, 1), None, False),
    ("What has she painted since 2020?", datetime(2020, 1, 1), None, False),
    ("What did he buy by July 2023?", None, datetime(2023, 8, 1), False),
    (
        "What did they do between May 2023 and July 2023?",
        datetime(2023, 5, 1),
        datetime(2023, 8, 1),
        False,
    ),
    ("How long ago was Caroline's 18th birthday?", None, None, True),
    ("What year did John start surfing?", None, None, True),
    ("When did Melanie run a race last month?", datetime(2023, 4, 1), datetime(2023, 5, 1), True),
]


@pytest.mark.parametrize(("question", "start", "end", "asks_when"), QUESTION_CASES)
def test_question_time_cues(
    question: str, start: datetime | None, end: datetime | None, asks_when: bool
) -> None:
    assert question_time_cues(question, now=ANCHOR) == TimeRange(start, end, asks_when)


@pytest.mark.parametrize(
    "question", ["What is Caroline's favourite book?", "Who is Melanie's husband?", ""]
)
def test_questions_without_time_cues(question: str) -> None:
    assert question_time_cues(question, now=ANCHOR) is None


def test_question_time_cues_default_now_is_aware_utc() -> None:
    cue = question_time_cues("What happened last year?")
    assert cue is not None and cue.start is not None
    assert cue.start.tzinfo is not None
    assert cue.start.year == datetime.now(UTC).year - 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1:56 pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56)),
        ("10:37 am on 27 June, 2023", datetime(2023, 6, 27, 10, 37)),
        ("2023-05-08T13:56:00", datetime(2023, 5, 8, 13, 56)),
        ("8 May 2023", datetime(2023, 5, 8)),
        ("not a date", None),
        (None, None),
    ],
)
def test_parse_session_time(value: str | None, expected: datetime | None) -> None:
    assert parse_session_time(value) == expected


EXPRESSIONS = st.sampled_from(
    [
        "yesterday",
        "last week",
        "next month",
        "last Friday",
        "two days ago",
        "this weekend",
        "last year",
        "last summer",
        "next weekend",
        "in three weeks",
        "on Monday",
        "last winter",
    ]
)


@given(
    anchor=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)),
    expression=EXPRESSIONS,
)
def test_every_interval_is_non_empty_and_relative(anchor: datetime, expression: str) -> None:
    mentions = resolve(f"We did it {expression}.", anchor)
    assert len(mentions) == 1
    m = mentions[0]
    assert m.start < m.end and m.relative
    assert abs((m.start - anchor).days) <= 731


# The scan only tries positions where an expression can start (``_start_filter``): it
# must find exactly what the pattern finds when tried at every word.
_PLAIN = re.compile(r"\b" + temporal._EXPRESSIONS, re.IGNORECASE | re.VERBOSE)
_VOCABULARY = sorted(
    {w for w in re.findall(r"[A-Za-z]+", temporal._EXPRESSIONS) if len(w) > 1}
    | {"I", "went", "Sept.", "May,", "7th", "2023", "12", "1999-12-31", "%", "the", "a", "50%"}
)


def _matches(pattern: re.Pattern[str], text: str) -> list[tuple[int, int, str | None]]:
    return [(*m.span(), m.lastgroup) for m in pattern.finditer(text)]


@given(st.lists(st.sampled_from(_VOCABULARY), max_size=14).map(" ".join))
def test_the_start_filter_changes_no_match_in_any_word_sequence(text: str) -> None:
    assert _matches(temporal._PATTERN, text) == _matches(_PLAIN, text)


def test_the_start_filter_changes_no_match_in_the_resolve_cases() -> None:
    for text, *_ in RESOLVE_CASES:
        for said in (text, f"Well, {text}.", f"({text}) and then {text.upper()}"):
            assert _matches(temporal._PATTERN, said) == _matches(_PLAIN, said), said


def test_the_start_filter_changes_no_match_on_locomo(locomo_path: Path) -> None:
    texts = [
        text
        for conv in load_locomo(locomo_path)
        for text in [*(t.text for t in conv.turns), *(q.question for q in conv.qa)]
    ]
    differ = [t for t in texts if _matches(temporal._PATTERN, t) != _matches(_PLAIN, t)]
    assert not differ, differ[:3]
    assert sum(len(_matches(_PLAIN, t)) for t in texts) > 100  # the check saw matches


@pytest.mark.parametrize(
    ("text", "day"),
    [
        # the past, whatever the subject (only a pronoun counted: a review)
        ("My sister stayed with us until Sunday.", 3),
        ("Mom visited until Friday.", 1),
        ("The rain lasted until Saturday.", 2),
        ("We stayed there till Sunday.", 3),
        ("I was in Tokyo until Friday.", 1),
        # a state now, or the present: ahead
        ("The shop is closed until Monday.", 11),
        ("We're booked until Friday.", 8),
        ("I am in Tokyo until Friday.", 8),
        ("I need a break until Friday.", 8),
    ],
)
def test_until_a_weekday_is_behind_only_in_a_clause_in_the_past(text: str, day: int) -> None:
    monday = datetime(2024, 3, 4, 10, tzinfo=UTC)
    [mention] = resolve(text, monday)
    assert mention.start.date() == date(2024, 3, day)
