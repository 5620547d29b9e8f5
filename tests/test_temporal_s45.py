"""Bare weekdays and months in plans, recurrences, ranges and "the week before last" (the
s45 review of the offline extractor, sections 1, 2, 3 and 7): each said on Wednesday 15
May 2024."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.text.temporal import is_recurring, question_time_cues, resolve, rewrite

#: Wednesday 15 May 2024, noon: the review's session time.
SAID = datetime(2024, 5, 15, 12, 0, tzinfo=UTC)


def written(text: str) -> str:
    return rewrite(text, resolve(text, SAID))


# 1. A bare weekday or month is ahead unless its clause is in the past tense.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I have a job interview on Friday.", "I have a job interview on 17 May 2024."),
        ("My exam is on Friday.", "My exam is on 17 May 2024."),
        ("The party is on Saturday.", "The party is on 18 May 2024."),
        ("We fly out on Thursday.", "We fly out on 16 May 2024."),
        ("My flight leaves Friday.", "My flight leaves on 17 May 2024."),
        ("Remind me on Friday to pay rent.", "Remind me on 17 May 2024 to pay rent."),
        ("I need to file the report by Friday.", "I need to file the report by 17 May 2024."),
        ("I have to submit my thesis by Monday.", "I have to submit my thesis by 20 May 2024."),
        # a word of what must be done outweighs a past verb in its clause
        (
            "I need to return the book I borrowed by Friday.",
            "I need to return the book I borrowed by 17 May 2024.",
        ),
        ("My lease ends in July.", "My lease ends in July 2024."),
        ("The kids start school in September.", "The kids start school in September 2024."),
        (
            "I need to renew my passport before June.",
            "I need to renew my passport before June 2024.",
        ),
        ("Any plans for the weekend?", "Any plans for the weekend of 18 May 2024?"),
        ("I'm so excited for Saturday!", "I'm so excited for 18 May 2024!"),
    ],
)
def test_a_bare_time_in_a_clause_not_in_the_past_is_ahead(text: str, expected: str) -> None:
    assert written(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I saw the doctor on Friday", "I saw the doctor on 10 May 2024"),
        ("I was sick from Friday until Sunday", "I was sick from 10 May 2024 until 12 May 2024"),
        (
            "I went to a concert on Saturday, it was great",
            "I went to a concert on 11 May 2024, it was great",
        ),
        # the time comes before its verb: the words after it tell
        ("On Saturday we went hiking.", "on 11 May 2024 we went hiking."),
        ("On Saturday, I went hiking.", "on 11 May 2024, I went hiking."),
        ("The concert on Saturday was amazing.", "The concert on 11 May 2024 was amazing."),
        ("My family visited on Sunday.", "My family visited on 12 May 2024."),
        ("I got so excited on Friday.", "I got so excited on 10 May 2024."),
        ("I visited Rome in June.", "I visited Rome in June 2023."),
        ("I've started a new job in March.", "I've started a new job in March 2024."),
        ("I've been here since Monday.", "I've been here since 13 May 2024."),
        # a past clause is past whatever the rest of the text says
        (
            "I saw him on Friday and I'll see him again soon.",
            "I saw him on 10 May 2024 and I'll see him again soon.",
        ),
        ("Last Friday I went out.", "on 10 May 2024 I went out."),
        # a plan seen from the past
        (
            "I was going to go on Friday, but it rained.",
            "I was going to go on 10 May 2024, but it rained.",
        ),
        # no verb in its sentence: the text's tense
        ("Yeah, on Friday. It was awesome.", "Yeah, on 10 May 2024. It was awesome."),
    ],
)
def test_a_bare_time_in_a_past_clause_stays_past(text: str, expected: str) -> None:
    assert written(text) == expected


# 2. "every/each <weekday|month>" recurs: no date, the words kept.


@pytest.mark.parametrize(
    "text",
    [
        "I go swimming every Friday.",
        "I play tennis every Friday evening with Marco.",
        "I visit my grandmother every Sunday.",
        "We have a team standup each Monday at 9am.",
        "Every Friday I order pizza.",
        "She visits us every other Sunday.",
        "We meet on every Monday.",
        "Every June we go camping in the Alps.",
        "I work Monday through Friday.",
    ],
)
def test_a_recurring_weekday_or_month_is_no_date(text: str) -> None:
    assert resolve(text, SAID) == []
    assert written(text) == text
    assert is_recurring(text)


@pytest.mark.parametrize(
    "text",
    [
        "I have a job interview on Friday.",
        "I saw the doctor on Friday and every day since.",
        "I'm working from the office between Monday and Friday.",
        "Every day is a gift.",
        "",
    ],
)
def test_a_dated_or_timeless_text_is_not_recurring(text: str) -> None:
    assert not is_recurring(text)


def test_a_plural_weekday_is_recurring() -> None:
    assert is_recurring("On Fridays I go to the gym.")


def test_a_recurring_weekday_beside_a_date_leaves_the_date() -> None:
    text = "I went to yoga on Monday and I go every Friday."
    assert written(text) == "I went to yoga on 13 May 2024 and I go every Friday."


def test_a_question_about_a_recurrence_has_no_time_cue() -> None:
    assert question_time_cues("What does Caroline do every Friday?", now=SAID) is None


# 3. The two ends of a range, in order.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "I was in the hospital from Monday to Thursday last week.",
            "I was in the hospital from 6 May 2024 to 9 May 2024.",
        ),
        (
            "I'm off from Monday to Wednesday next week.",
            "I'm off from 20 May 2024 to 22 May 2024.",
        ),
        (
            "I'm working from the office between Monday and Friday.",
            "I'm working from the office between 20 May 2024 and 24 May 2024.",
        ),
        ("I was sick from Tuesday to Thursday.", "I was sick from 7 May 2024 to 9 May 2024."),
        ("I'll be in Japan from May to July.", "I'll be in Japan from May 2024 to July 2024."),
        ("I was in Japan from May to July.", "I was in Japan from May 2023 to July 2023."),
        (
            "I'll be in Rome from December to February.",
            "I'll be in Rome from December 2024 to February 2025.",
        ),
        ("I'm going to Spain in May and June.", "I'm going to Spain in May 2024 and June 2024."),
        ("I'll be in Japan in May.", "I'll be in Japan in May 2024."),
        ("I saw him on Friday last week.", "I saw him on 10 May 2024."),
        ("I'll see you on Tuesday next week.", "I'll see you on 21 May 2024."),
    ],
)
def test_a_range_is_placed_end_after_start(text: str, expected: str) -> None:
    assert written(text) == expected


def test_a_weekday_and_its_week_are_one_mention() -> None:
    [start, end] = resolve("I was in the hospital from Monday to Thursday last week.", SAID)
    assert (start.text, start.start.date()) == ("from Monday", date(2024, 5, 6))
    assert (end.text, end.start.date(), end.end.date()) == (
        "Thursday last week",
        date(2024, 5, 9),
        date(2024, 5, 10),
    )


# 4. "the week before last", "the weekend after next": the whole phrase.


@pytest.mark.parametrize(
    ("text", "mention", "start", "granularity"),
    [
        (
            "I saw my dentist the week before last.",
            "the week before last",
            date(2024, 4, 29),
            "week",
        ),
        (
            "We're camping the weekend after next.",
            "the weekend after next",
            date(2024, 5, 25),
            "weekend",
        ),
        ("We met the weekend before last.", "the weekend before last", date(2024, 5, 4), "weekend"),
        ("I'll start the week after next.", "the week after next", date(2024, 5, 27), "week"),
        ("We moved the year before last.", "the year before last", date(2022, 1, 1), "year"),
        ("It opens the month after next.", "the month after next", date(2024, 7, 1), "month"),
    ],
)
def test_before_last_and_after_next(text: str, mention: str, start: date, granularity: str) -> None:
    [m] = resolve(text, SAID)
    assert (m.text, m.start.date(), m.granularity) == (mention, start, granularity)


def test_before_last_and_after_next_are_rewritten_whole() -> None:
    assert written("We're camping the weekend after next.") == (
        "We're camping on the weekend of 25 May 2024."
    )
    assert written("I saw my dentist the week before last.") == (
        "I saw my dentist in the week of 29 April 2024."
    )


# End to end: what ``add(infer=True)`` stores.


def _stored(tmp_path: Path, text: str) -> list[tuple[str, date | None]]:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        records = m.add(
            [{"role": "user", "content": text}], user_id="u", infer=True, event_time=SAID
        )
        return [(r.text, r.event_time.date() if r.event_time else None) for r in records]


def test_a_plan_is_stored_on_the_day_ahead(tmp_path: Path) -> None:
    assert _stored(tmp_path, "I have a job interview on Friday.") == [
        ("User has a job interview on 17 May 2024.", date(2024, 5, 17))
    ]


def test_a_range_last_week_is_stored_in_that_week(tmp_path: Path) -> None:
    assert _stored(tmp_path, "I was in the hospital from Monday to Thursday last week.") == [
        ("User was in the hospital from 6 May 2024 to 9 May 2024.", date(2024, 5, 6))
    ]


def test_a_recurrence_is_stored_as_written(tmp_path: Path) -> None:
    [(text, _)] = _stored(tmp_path, "I go swimming every Friday.")
    assert text == "User goes swimming every Friday."
