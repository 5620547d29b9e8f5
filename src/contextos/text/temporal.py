"""Time expressions: turn "yesterday" into 7 May 2023.

A memory that says "I went to a support group yesterday" is useless a month
later unless "yesterday" is pinned to the day the words were said. This module
finds time expressions in text and resolves them against an anchor (the
session's time) into absolute intervals, and reads the time cues of a question
("When did ...", "in May 2023", "last year") so retrieval can filter by time.

It is one precompiled regular expression plus small handlers, pure Python and
cheap enough to run on every turn. Conventions where English is ambiguous:
weeks run Monday to Sunday; "last Friday" is the latest Friday strictly before
the anchor's day; "next Friday" is the Friday of next week; a bare "Friday" or
"the weekend" is read as past unless the sentence speaks of the future
("will", "going to", "plan", ...), or it ends a span ("until/till/through Friday")
in a clause not in the past tense (``_ahead``); seasons are northern-hemisphere meteorological
seasons; intervals are half-open ``[start, end)`` in the anchor's timezone. A month
named without a day or year is a date only in a date context ("in June", "last June",
"the end of June"), as month words are also names and other languages' words ("Jan
called", "Mar del Plata"); when in doubt, the text is not a time (``_dated_month``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Granularity = Literal["day", "weekend", "week", "month", "season", "year"]


@dataclass(frozen=True)
class TimeMention:
    """A time expression found in text and the interval it denotes.

    ``span`` is the (start, end) character offset in the text, including a
    preposition the expression owns ("on Friday"); ``end`` is exclusive.
    ``relative`` is False for complete dates written out ("7 May 2023"), True
    when the anchor supplied something (a day, a year), so rewriting helps.
    """

    span: tuple[int, int]
    start: datetime
    end: datetime
    granularity: Granularity
    text: str = ""
    relative: bool = True

    def label(self) -> str:
        """The interval as plain English: "7 May 2023", "May 2023", "the week of 1 May 2023"."""
        return describe(self.start, self.granularity)


@dataclass(frozen=True)
class TimeRange:
    """The time a question is about. ``None`` bounds are open.

    ``asks_when`` is True for questions that ask for a time ("When did ...",
    "How long ago ..."), even when they name no interval themselves.
    """

    start: datetime | None = None
    end: datetime | None = None
    asks_when: bool = False


_MONTH_NAMES = re.findall(
    r"\w+", "january february march april may june july august september october november december"
)
_MONTHS = {name: i + 1 for i, name in enumerate(_MONTH_NAMES)}
_MONTHS.update({name[:3]: i + 1 for i, name in enumerate(_MONTH_NAMES)} | {"sept": 9})
_WEEKDAYS = {
    day: i
    for i, day in enumerate(
        re.findall(r"\w+", "monday tuesday wednesday thursday friday saturday sunday")
    )
}
_NUMBERS = {
    word: i + 1
    for i, word in enumerate(
        re.findall(r"\w+", "one two three four five six seven eight nine ten eleven twelve")
    )
}
_NUMBERS.update({"a": 1, "an": 1, "couple": 2, "few": 3, "several": 3})
_SEASON_START = {"spring": 3, "summer": 6, "fall": 9, "autumn": 9, "winter": 12}
#: Word before a period -> offset in periods (last week = -1).
_OFFSETS = dict.fromkeys(
    ("last", "past", "previous", "this past", "the past", "the previous", "the last"), -1
)
_OFFSETS.update(dict.fromkeys(("this", "earlier this", "later this"), 0))
_OFFSETS.update(
    dict.fromkeys(("next", "coming", "the coming", "this coming", "the following", "the next"), 1)
)
_AMBIGUOUS_MONTHS = {"may", "march", "mar", "jan", "dec", "sept", "sep", "oct", "nov", "aug"}

_NUM = (
    r"(?:\d{1,3}|a\s+couple\s+of|a\s+couple|couple\s+of|couple|a\s+few|few|several|an?|one|two"
    r"|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
)
_UNIT = r"(?:day|week|month|year)s?"
_WD = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_MONTH = (
    r"(?:january|february|march|april|may|june|july|august|september|october|november"
    r"|december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\.?"
)
_PERIOD = r"(?:weekend|week|month|year|summer|winter|spring|fall|autumn)"
_MOD = (
    r"(?:earlier\s+this|later\s+this|this\s+past|this\s+coming|the\s+past|the\s+previous"
    r"|the\s+following|the\s+coming|the\s+next|the\s+last|last|next|this|past|previous"
    r"|coming)"
)
_DAY = r"\d{1,2}(?:st|nd|rd|th)?\b"

_EXPRESSIONS = rf"""(?:(?P<prep>on|in|during|over|since|until|till|through|thru|by|before|after
    |from)\s+)?(?:
      (?P<dby>(?:the\s+)?day\s+before\s+yesterday)
    | (?P<dat>(?:the\s+)?day\s+after\s+tomorrow)
    | (?P<relday>yesterday|today|tonight|tomorrow|last\s+night
        |this\s+(?:morning|afternoon|evening))
    | (?P<ago>(?P<agon>{_NUM})\s+(?P<agou>{_UNIT})\s+ago(?P<agotoday>\s+today)?)
    | (?P<later>(?P<latn>{_NUM})\s+(?P<latu>{_UNIT})(?P<fromnow>\s+from\s+now)?)
    | (?P<relper>(?P<permod>{_MOD})\s+(?P<per>{_PERIOD}))
    | (?P<relwd>(?P<wdmod>{_MOD})\s+(?P<wd1>{_WD}))
    | (?P<iso>(?P<isoy>\d{{4}})-(?P<isom>\d{{2}})-(?P<isod>\d{{2}}))
    | (?P<dmy>(?P<dmyd>{_DAY})\s+(?:of\s+)?(?P<dmym>{_MONTH}),?(?:\s+(?P<dmyy>\d{{4}}))?)
    | (?P<mdy>(?P<mdym>{_MONTH})\s+(?P<mdyd>{_DAY}),?(?:\s+(?P<mdyy>\d{{4}}))?)
    | (?P<my>(?P<mym>{_MONTH}),?\s+(?:of\s+)?(?P<myy>\d{{4}}))
    | (?P<relmonth>(?:(?P<mmod>last|next|this)\s+)?(?P<mon>{_MONTH}))
    | (?P<wd>{_WD})(?:\s+(?:morning|afternoon|evening|night))?
    | (?P<weekend>the\s+weekend)
    | (?P<year>(?:the\s+year\s+)?(?P<yy>(?:19|20)\d{{2}}))(?![\d%]|\s*(?:%|dollars|bucks|usd))
    )\b"""


def _start_filter(expressions: str) -> str:
    """A lookahead that lets a match start only at a digit or at a word that appears
    in ``expressions``.

    Why: Python's ``re`` tries every alternative of the pattern at every word of a
    text, and that scan was most of a search's temporal rerank (~40 us a short
    turn, ~110 us a LoCoMo turn, for each candidate not yet cached). Each
    alternative starts with a digit or a literal word of the pattern, so skipping
    the other words changes no match and makes the scan about 3x faster
    (docs/benchmarks.md). The words are read from the pattern itself, so a new
    alternative is covered as long as it starts with a word or a digit."""
    plain = re.sub(r"\\[A-Za-z]|\?P<\w+>", " ", expressions)  # no escapes, no group names
    words = sorted({w.lower() for w in re.findall(r"[A-Za-z]+", plain)}, key=lambda w: (-len(w), w))
    initials = "".join(sorted({w[0] for w in words}))
    return rf"(?=[\d{initials}])(?=\d|(?:{'|'.join(words)})\b)"


#: The time expressions, tried only where one can start (``_start_filter``).
_PATTERN = re.compile(
    r"\b" + _start_filter(_EXPRESSIONS) + _EXPRESSIONS, re.IGNORECASE | re.VERBOSE
)
_FUTURE = re.compile(
    r"\b(?:will|shall|gonna|going\s+to|plan(?:s|ning)?|hope\s+to|hoping|can't\s+wait"
    r"|looking\s+forward|upcoming|intend|wanna|want\s+to|about\s+to)\b|'ll\b"
    r"|(?:'m|'re|\bam|\bare)\s+\w+ing\b",
    re.IGNORECASE,
)
#: Prepositions that end a span: a bare time after them is its end, ahead of a clause in
#: the present ("I'm in Tokyo until Friday", said on a Monday: the Friday to come).
_ENDS_SPAN = {"until", "till", "through", "thru"}
#: A past auxiliary ("I was in Tokyo until Friday").
_PAST_AUX = re.compile(r"\b(?:was|were|had|did)(?:n't)?\b", re.IGNORECASE)
#: A past verb, regular or among the common irregular ones, with the word before it
#: (``_in_past`` reads that word: "is closed", "we're booked" are states now).
_PAST_VERB = re.compile(
    r"(?:\b(\w+)\s+)?\b(\w{3,}ed|went|came|left|slept|kept|stood|sat|ran|met|spent|took"
    r"|saw|drove|rode|flew|stuck|held|lay)\b",
    re.IGNORECASE,
)
#: Words before a participle that make it a state now, not a past event.
_STATE_NOW = frozenset(
    [
        "is",
        "are",
        "am",
        "be",
        "been",
        "being",
        "get",
        "gets",
        "getting",
        "m",
        "re",
        "s",
        "ve",
        "has",
        "have",
        "remains",
        "remain",
        "stays",
    ]
)
#: Words in -ed that are no past verb.
_NOT_PAST = frozenset(
    ["hundred", "sacred", "naked", "wicked", "beloved", "ragged", "rugged", "crooked"]
)
#: Where a clause ends, looking back from a mention.
_CLAUSE_END = re.compile(r"[.!?;,:\n]")
_LOCATIVE = {"on", "in", "during", "over"}
#: Every expression the pattern knows contains one of these substrings.
_TRIGGERS = (
    "yesterday",
    "today",
    "tonight",
    "tomorrow",
    "ago",
    "day",
    "week",
    "month",
    "year",
    "night",
    "morning",
    "afternoon",
    "evening",
    "summer",
    "winter",
    "spring",
    "fall",
    "autumn",
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
    "19",
    "20",
)


def describe(start: datetime, granularity: Granularity) -> str:
    """An interval start as English at its granularity ("7 May 2023", "summer 2023")."""
    if granularity == "day":
        return f"{start.day} {start:%B} {start.year}"
    if granularity == "week":
        return f"the week of {start.day} {start:%B} {start.year}"
    if granularity == "weekend":
        return f"the weekend of {start.day} {start:%B} {start.year}"
    if granularity == "month":
        return f"{start:%B} {start.year}"
    if granularity == "season":
        name = {3: "spring", 6: "summer", 9: "fall", 12: "winter"}[start.month]
        return f"{name} {start.year}"
    return str(start.year)


def _day(anchor: datetime, offset: int = 0) -> datetime:
    base = anchor.replace(hour=0, minute=0, second=0, microsecond=0)
    return base + timedelta(days=offset)


def _month_start(year: int, month: int, tz: object) -> datetime:
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    return datetime(year, month, 1, tzinfo=tz)  # type: ignore[arg-type]


def _interval(start: datetime, gran: Granularity) -> tuple[datetime, datetime]:
    if gran == "day":
        return start, start + timedelta(days=1)
    if gran == "weekend":
        return start, start + timedelta(days=2)
    if gran == "week":
        return start, start + timedelta(days=7)
    if gran == "month":
        return start, _month_start(start.year, start.month + 1, start.tzinfo)
    if gran == "season":
        return start, _month_start(start.year, start.month + 3, start.tzinfo)
    return start, start.replace(year=start.year + 1)


def _count(word: str) -> int:
    words = [w for w in word.lower().split() if w not in ("a", "of")] or ["a"]
    return int(words[-1]) if words[-1].isdigit() else _NUMBERS.get(words[-1], 1)


def _shift(anchor: datetime, n: int, unit: str) -> tuple[datetime, Granularity]:
    """Anchor moved by ``n`` units (negative = past), at that unit's granularity."""
    unit = unit.lower().rstrip("s")
    if unit == "day":
        return _day(anchor, n), "day"
    if unit == "week":
        day = _day(anchor, 7 * n)
        return day - timedelta(days=day.weekday()), "week"
    if unit == "month":
        return _month_start(anchor.year, anchor.month + n, anchor.tzinfo), "month"
    return datetime(anchor.year + n, 1, 1, tzinfo=anchor.tzinfo), "year"


def _same_day(anchor: datetime, n: int, unit: str) -> datetime:
    """The anchor's day ``n`` units on (negative = past): "two years ago today" said on 4
    March 2024 is 4 March 2022. Why not :func:`_shift`: it gives the unit's start (2022),
    and "today" was then resolved alone, so a fact held both dates (a review). A day the
    month lacks (29 February a year on) is that month's last."""
    unit = unit.lower().rstrip("s")
    if unit in ("day", "week"):
        return _day(anchor, n * (7 if unit == "week" else 1))
    months = anchor.month - 1 + n * (12 if unit == "year" else 1)
    year, month = anchor.year + months // 12, months % 12 + 1
    last = (_month_start(year, month + 1, anchor.tzinfo) - timedelta(days=1)).day
    return _day(anchor).replace(year=year, month=month, day=min(anchor.day, last))


def _weekend(anchor: datetime, offset: int) -> datetime:
    """Saturday of: the weekend being lived or coming (0), the one before (-1) or after (+1)."""
    today = _day(anchor)
    this_sat = today + timedelta(days=5 - today.weekday())
    if offset < 0:
        return this_sat - timedelta(days=7)
    return this_sat + timedelta(days=7 * offset)


def _season(anchor: datetime, name: str, offset: int) -> datetime:
    """Start of the season ``name``: the current/last (-1), this year's (0) or next (+1) one."""
    month = _SEASON_START[name.lower()]
    start = datetime(anchor.year, month, 1, tzinfo=anchor.tzinfo)
    if month == 12 and anchor.month < 3:
        start = start.replace(year=anchor.year - 1)
    end = _interval(start, "season")[1]
    if offset < 0 and end > anchor:
        start = start.replace(year=start.year - 1)
    elif offset > 0 and start <= anchor:
        start = start.replace(year=start.year + 1)
    return start


def _period(anchor: datetime, mod: str, period: str) -> tuple[datetime, Granularity]:
    offset = _OFFSETS[" ".join(mod.lower().split())]
    period = period.lower()
    if period == "weekend":
        return _weekend(anchor, offset), "weekend"
    if period in _SEASON_START:
        return _season(anchor, period, offset), "season"
    return _shift(anchor, offset, period)


def _weekday(anchor: datetime, weekday: int, mod: str | None, future: bool) -> datetime:
    today = _day(anchor)
    monday = today - timedelta(days=today.weekday())
    mod = " ".join((mod or "").lower().split())
    if mod in ("this", "earlier this", "later this"):
        return monday + timedelta(days=weekday)
    if mod in ("next", "the following", "the next"):
        return monday + timedelta(days=7 + weekday)
    if mod in ("coming", "this coming", "the coming") or (not mod and future):
        return today + timedelta(days=(weekday - today.weekday()) % 7 or 7)
    return today - timedelta(days=(today.weekday() - weekday) % 7 or 7)


def _month_name(word: str) -> int:
    return _MONTHS[word.lower().rstrip(".")]


def _bare_month(anchor: datetime, month: int, mod: str | None, future: bool) -> datetime:
    year = anchor.year
    mod = (mod or "").lower()
    if mod == "last" or (not mod and not future):
        year = anchor.year if month <= anchor.month else anchor.year - 1
        if mod == "last" and month == anchor.month:
            year -= 1
    elif mod == "next" or future:
        year = anchor.year if month > anchor.month else anchor.year + 1
    return datetime(year, month, 1, tzinfo=anchor.tzinfo)


def _date(year: str | None, month: int, day: str, anchor: datetime) -> datetime | None:
    d = int(re.sub(r"\D", "", day))
    try:
        return datetime(int(year) if year else anchor.year, month, d, tzinfo=anchor.tzinfo)
    except ValueError:
        return None


_Resolved = tuple[datetime, Granularity, bool] | None

#: What makes a month named alone (no day, no year beside it) a date when it has no
#: preposition or "last/next/this" of its own: a word of time just before it ("early
#: June", "mid-June", "the end of June", "the second week of November", "between June
#: and August", "every June", "around June").
_MONTH_CUE = re.compile(
    r"(?:\b(?:early|late|mid|every|each|between|through|throughout|around|towards?"
    r"|(?:week|weekend|end|beginning|start|middle|rest|half|month)\s+of)\s+|\bmid-)$",
    re.IGNORECASE,
)
#: A month joined to the one before it ("June to August", "June and July", "June-July"):
#: a date when that one is.
_MONTH_CHAIN = re.compile(
    rf"\b(?P<prev>{_MONTH})\s*(?:,\s*|\s+(?:and|or)\s+|(?P<range>\s+(?:to|through|thru)\s+"
    r"|\s*[-\u2013]\s*))$",
    re.IGNORECASE,
)
#: Prepositions before which a month is as often a person ("a call from June", "a
#: painting by August Strindberg"): "from" needs the end of a range after the month,
#: the others no capitalised name after it.
_WEAK_PREPOSITIONS = {"from", "by", "before", "after", "over"}
_RANGE_AFTER = re.compile(
    r"\s*(?:(?:to|till|until|through|thru|onwards?)\b|on\s*(?:[,.;!?]|$)|[-\u2013])",
    re.IGNORECASE,
)
_NAME_AFTER = re.compile(r"\s+(?!I\b)[A-Z]")
#: The words before a month that make it a date when it begins a range ("from June to
#: August"): the pattern's prepositions and "last/next/this".
_PREPOSITIONS_OF_TIME = frozenset(
    re.findall(r"\w+", "on in during over since until till by before after from last next this")
)
#: After a month word, what makes it a name's part: a possessive ("June's") or a
#: hyphenated name ("Mar-a-Lago", "Jan-Erik"; not "June-July").
_PART_OF_NAME = re.compile(rf"['\u2019]s\b|-(?!{_MONTH}\b)\w", re.IGNORECASE)
#: Just before and after a year-like number, what makes it an amount: a currency or a
#: unit ("2023 Euro", "$2000", "2000 metres"), in a few languages.
_AMOUNT_BEFORE = frozenset("$\u20ac\u00a3\u00a5\u20b9\u20bd\u20a9")
_AMOUNT_AFTER = re.compile(
    r"\s*(?:[$\u20ac\u00a3\u00a5\u20b9\u20bd\u20a9]|(?:euros?|eur|dollars?|usd|bucks|pounds?|gbp"
    r"|quid|yen|jpy|yuan|rmb|cny|francs?|chf|pesos?|reais|rupees?|inr|rubles?|roubles?|rub"
    r"|kr|sek|nok|dkk|kronor|kroner|kronen|z\u0142oty|zloty|pln|lira|lire|baht|dinars?"
    r"|dirhams?|riyals?|shekels?|cents?|km|kms|kilomet(?:er|re)s?|kilom\u00e8tres?"
    r"|kil\u00f3metros?|meters?|metres?|m\u00e8tres?|metros?|meter|miles?|m|kg|kilos?"
    r"|grams?|g|lbs?|ft|feet|steps|calories|kcal)\b)",
    re.IGNORECASE,
)


def _dated_month(m: re.Match[str]) -> bool:
    """Whether the month ``m`` names alone is a date: it has "last/next/this", a
    preposition of time or a word of time before it, and nothing after it that makes
    it a name.

    Why: any capitalised month word was read as a month, rewritten into the fact as
    "in <Month> <year>" and given that month as its time, so names and other languages'
    words were lost: "Jan called me" -> "In January 2024 called Ana", "Fuimos a Mar del
    Plata" -> "Fuimos a in March 2024 del Plata", French "Sept amis", Swedish "God Jul"
    (a review). When in doubt, the text is left as written."""
    text, start, end = m.string, m.start("mon"), m.end("mon")
    if _PART_OF_NAME.match(text, end):
        return False
    abbreviated = m.group("mon").lower() not in _MONTH_NAMES
    if abbreviated and text[end - 1] != "." and _NAME_AFTER.match(text, end):
        return False  # "in Nov Sad", "with Jan Smith": a name
    if m.group("mmod"):
        return True
    prep = (m.group("prep") or "").lower()
    if prep in _WEAK_PREPOSITIONS:
        if prep == "from":
            return _RANGE_AFTER.match(text, end) is not None
        return _NAME_AFTER.match(text, end) is None
    return bool(prep) or _month_cue(text, start)


def _month_cue(text: str, start: int, depth: int = 0) -> bool:
    """A word of time before the month word at ``start``, or a month before it that is
    a date ("from June to August")."""
    window = max(0, start - 40)
    if _MONTH_CUE.search(text, window, start):
        return True
    chain = _MONTH_CHAIN.search(text, window, start)
    if chain is None or depth >= 3:
        return False
    prev = chain.start("prev")
    before = text[max(0, prev - 40) : prev].lower().split()
    word = before[-1] if before else ""
    if word == "from":  # "from June to August"; not "a card from June and August"
        return chain.group("range") is not None
    return word in _PREPOSITIONS_OF_TIME or _month_cue(text, prev, depth + 1)


def _an_amount(text: str, start: int, end: int) -> bool:
    """Whether the year-like number at ``text[start:end]`` is an amount ("2023 Euro")."""
    return (start > 0 and text[start - 1] in _AMOUNT_BEFORE) or bool(_AMOUNT_AFTER.match(text, end))


def _relative(m: re.Match[str], anchor: datetime, future: Callable[[], bool]) -> _Resolved:
    """Expressions whose meaning depends on the anchor (and, for a bare weekday or "the
    weekend", on ``future()``: see :func:`resolve`)."""
    g = m.group
    if g("dby") or g("dat"):
        return _day(anchor, -2 if g("dby") else 2), "day", True
    if g("relday"):
        word = g("relday").lower()
        offset = -1 if word.startswith(("yesterday", "last")) else int(word == "tomorrow")
        return _day(anchor, offset), "day", True
    if g("ago"):
        if g("agotoday"):  # an anniversary: that very day, not the unit it lies in
            return _same_day(anchor, -_count(g("agon")), g("agou")), "day", True
        start, gran = _shift(anchor, -_count(g("agon")), g("agou"))
        return start, gran, True
    if g("later"):
        if not g("fromnow") and (g("prep") or "").lower() != "in":
            return None  # "for two weeks" is a duration, not a time
        start, gran = _shift(anchor, _count(g("latn")), g("latu"))
        return start, gran, True
    if g("relper"):
        start, gran = _period(anchor, g("permod"), g("per"))
        return start, gran, True
    if g("relwd") or g("wd"):
        name = (g("wd1") or g("wd")).lower()
        return _weekday(anchor, _WEEKDAYS[name], g("wdmod"), future()), "day", True
    if g("weekend"):
        return _weekend(anchor, 0 if future() else -1), "weekend", True
    return None


def _absolute(m: re.Match[str], anchor: datetime, future: Callable[[], bool]) -> _Resolved:
    """Dates written out; a missing year comes from the anchor."""
    g = m.group
    start: datetime | None = None
    inferred = False
    if g("iso"):
        start = (
            _date(g("isoy"), int(g("isom")), g("isod"), anchor) if 0 < int(g("isom")) < 13 else None
        )
    elif g("dmy"):
        start = _date(g("dmyy"), _month_name(g("dmym")), g("dmyd"), anchor)
        inferred = not g("dmyy")
    elif g("mdy"):
        start = _date(g("mdyy"), _month_name(g("mdym")), g("mdyd"), anchor)
        inferred = not g("mdyy")
    elif g("my"):
        return (
            datetime(int(g("myy")), _month_name(g("mym")), 1, tzinfo=anchor.tzinfo),
            "month",
            False,
        )
    elif g("relmonth"):
        word = g("mon")
        if word.lower().rstrip(".") in _AMBIGUOUS_MONTHS and not word[0].isupper():
            return None  # "may" the verb, "march" the walk
        if not _dated_month(m):
            return None  # "Jan called", "June is my friend", "Mar del Plata", "Sept amis"
        month = _bare_month(anchor, _month_name(word), g("mmod"), future())
        return month, "month", True
    elif g("year"):
        if not g("year").lower().startswith("the") and _an_amount(m.string, *m.span("yy")):
            return None  # "2023 Euro", "$2000", "2000 metres"
        return datetime(int(g("yy")), 1, 1, tzinfo=anchor.tzinfo), "year", False
    return (start, "day", inferred) if start else None


def resolve(text: str, anchor: datetime, *, future: bool | None = None) -> list[TimeMention]:
    """Find the time expressions in ``text`` and pin them to absolute intervals.

    ``future`` says how to read bare weekdays and months ("on Friday"); by
    default it is guessed from the text's tense markers.

    Example:
        >>> m = resolve("I went there yesterday", datetime(2023, 5, 8, 13, 56))[0]
        >>> (m.label(), m.granularity)
        ('7 May 2023', 'day')
    """
    low = text.lower()
    if not any(word in low for word in _TRIGGERS):
        return []  # most turns name no time; the full pattern is 30x slower than this check
    # The tense is guessed only for a mention that needs it (a bare weekday or month,
    # "the weekend"): its pattern scan was a fifth of the cost of a short turn.
    tense = functools.cache(
        (lambda: _FUTURE.search(text) is not None) if future is None else (lambda: future)
    )
    mentions: list[TimeMention] = []
    for m in _PATTERN.finditer(text):
        ahead: Callable[[], bool] = tense
        if future is None and (m.group("prep") or "").lower() in _ENDS_SPAN:
            ahead = functools.partial(_ahead, m, tense)
        try:
            resolved = _relative(m, anchor, ahead) or _absolute(m, anchor, ahead)
            if resolved is None:
                continue
            start, gran, relative = resolved
            begin, end = _interval(start, gran)
        except (OverflowError, ValueError):
            # Past the years 1-9999 a datetime holds ("next year" said in 9999, "31
            # December 9999", "last year" dated year 1): no time it can name. Raised,
            # it failed every time-cued search of the memory's owner (a review).
            continue
        mentions.append(TimeMention(m.span(), begin, end, gran, m.group(0), relative))
    return mentions


def _ahead(m: re.Match[str], tense: Callable[[], bool]) -> bool:
    """Whether a bare time that ends a span ("until Friday", ``_ENDS_SPAN``) lies ahead:
    when the text speaks of the future (``tense``), or its clause, up to the mention, is
    not in the past tense (:func:`_in_past`).

    Why: "I am in Tokyo until Friday", said on Monday 4 March, was stored as "in Tokyo
    until 1 March", a date already past when it was said, as any bare weekday without a
    word of the future was read as past (a review); "I was in Tokyo until Friday" is."""
    if tense():
        return True
    text, end = m.string, m.start()
    window = max(0, end - 200)
    ends = [c.end() for c in _CLAUSE_END.finditer(text, window, end)]
    return not _in_past(text[ends[-1] if ends else window : end])


def _in_past(clause: str) -> bool:
    """Whether ``clause`` is in the past tense: a past auxiliary, or a past verb whose
    subject is any noun ("My sister stayed with us until Sunday", "Mom visited until
    Friday": only a pronoun subject counted, and these Sundays came out ahead: a review),
    not a participle after a present form of "be" or "have" ("the shop is closed until
    Monday")."""
    if _PAST_AUX.search(clause):
        return True
    for verb in _PAST_VERB.finditer(clause):
        before, word = (verb.group(1) or "").lower(), verb.group(2).lower()
        if before in _STATE_NOW or word.endswith("eed") or word in _NOT_PAST:
            continue
        return True
    return False


def rewrite(text: str, mentions: list[TimeMention], offset: int = 0) -> str:
    """``text`` with each relative mention replaced by its absolute date.

    "I went yesterday" -> "I went on 7 May 2023"; "since last year" -> "since
    2022". Absolute mentions are left as written. ``offset`` is where ``text``
    starts inside the string the mentions were found in.
    """
    out: list[str] = []
    pos = 0
    for mention in mentions:
        begin, end = mention.span[0] - offset, mention.span[1] - offset
        if not mention.relative or begin < pos or end > len(text) or begin < 0:
            continue
        out.append(text[pos:begin])
        out.append(_phrase(mention, text[begin:end], text[max(0, begin - 40) : begin]))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _phrase(mention: TimeMention, original: str, before: str = "") -> str:
    """The words that replace ``original``: its preposition (or "on"/"in") and the date;
    the date alone for a month after a word of time ("the end of June" -> "the end of
    June 2023", not "the end of in June 2023"), and for a mention just after a
    preposition the pattern leaves out of it (:data:`_GOVERNS`: "a cake for
    Saturday" -> "a cake for 12 December 2026", not "for on 12 December 2026")."""
    first = original.split(None, 1)[0].lower()
    label = mention.label()
    if (
        mention.granularity == "month"
        and first.rstrip(".") in _MONTHS
        and (_MONTH_CUE.search(before) or _MONTH_CHAIN.search(before))
    ):
        return label
    if first not in _PREPOSITIONS and _GOVERNS.search(before):
        return label
    if first in _LOCATIVE or first not in _PREPOSITIONS:
        prep = "on" if mention.granularity in ("day", "weekend") else "in"
        return f"{prep} {label}"
    return f"{original.split(None, 1)[0]} {label}"


_PREPOSITIONS = set(
    re.findall(r"\w+", "on in during over since until till through thru by before after from")
)
#: Prepositions before a date that the pattern does not read as part of the mention
#: ("a cake for Saturday", "moved to Friday", "as of tomorrow", "around next week"): the
#: date is their object, and "on"/"in" before it would be a second preposition.
_GOVERNS = re.compile(r"\b(?:for|to|of|around|about|between|til)\s+$", re.IGNORECASE)
_ASKS_WHEN = re.compile(
    r"^\s*(?:when\b|what\s+(?:date|day|time|year|month|week)\b|which\s+(?:date|day|year|month"
    r"|week)\b|how\s+long\s+ago\b|in\s+what\s+(?:year|month)\b)|\bwhat\s+year\b",
    re.IGNORECASE,
)


def question_time_cues(question: str, now: datetime | None = None) -> TimeRange | None:
    """The time a question asks about, or None when it has no time cue.

    Relative cues ("last year") resolve against ``now`` (default: the current
    UTC time). "before X" / "after X" / "since X" / "until X" open one bound.

    Example:
        >>> r = question_time_cues("What did Caroline do in May 2023?")
        >>> (r.start.month, r.end.month, r.asks_when)
        (5, 6, False)
    """
    asks_when = _ASKS_WHEN.search(question) is not None
    anchor = now or datetime.now(UTC)
    mentions = resolve(question, anchor, future=False)
    if not mentions:
        return TimeRange(asks_when=True) if asks_when else None
    start: datetime | None = min(m.start for m in mentions)
    end: datetime | None = max(m.end for m in mentions)
    prep = mentions[0].text.split(None, 1)[0].lower()
    if prep in ("before", "until", "till", "by") and len(mentions) == 1:
        start = None
        end = mentions[0].start if prep == "before" else mentions[0].end
    elif prep in ("after", "since", "from") and len(mentions) == 1:
        start, end = (mentions[0].end if prep == "after" else mentions[0].start), None
    return TimeRange(start, end, asks_when)


_SESSION_FORMATS: tuple[str, ...] = ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y")
_SESSION_FORMATS += ("%d %B %Y", "%d %B, %Y", "%B %d, %Y", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def parse_session_time(value: str | datetime | None) -> datetime | None:
    """A session time from ISO text or LoCoMo's "1:56 pm on 8 May, 2023"; None if unreadable
    (a value that is not text either: a number or list read from a JSON file)."""
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for fmt in _SESSION_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None
