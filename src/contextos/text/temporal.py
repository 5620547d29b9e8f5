"""Time expressions: turn "yesterday" into 7 May 2023.

A memory that says "I went to a support group yesterday" is useless a month
later unless "yesterday" is pinned to the day the words were said. This module
finds time expressions in text and resolves them against an anchor (the
session's time) into absolute intervals, and reads the time cues of a question
("When did ...", "in May 2023", "last year") so retrieval can filter by time.

It is one precompiled regular expression plus small handlers, pure Python and
cheap enough to run on every turn. Conventions where English is ambiguous:
weeks run Monday to Sunday; "last Friday" is the latest Friday strictly before
the anchor's day; "next Friday" is the Friday of next week; a bare "Friday", month or
"the weekend" is ahead unless its clause is in the past tense (``_clause_tense``: "I have
an interview on Friday" is the Friday to come, "I saw the doctor on Friday" the one
gone); after "every/each" it recurs and is no date (``is_recurring``); the end of a
range lies at or after its start (``_join``); seasons are northern-hemisphere
meteorological seasons; intervals are half-open ``[start, end)`` in the anchor's timezone. A month
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

from .sentences import reads_foreign

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
    | (?P<rel2>(?:the\s+)?(?P<rel2p>weekend|week|month|year)
        \s+(?P<rel2d>before\s+last|after\s+next))
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
#: Words of the future, and of what must be done ("I need to file it by Friday", "I have
#: to submit it by Monday": a time ahead).
_SAID_AHEAD = (
    r"\b(?:will|shall|gonna|going\s+to|plan(?:s|ning)?|hope\s+to|hoping|can't\s+wait"
    r"|looking\s+forward|upcoming|intend|wanna|want\s+to|about\s+to|needs?\s+to"
    r"|ha(?:ve|s)\s+to|gotta|must(?!\s+have\b)|remind\s+me|don't\s+forget)\b|'ll\b"
    r"|\bwon't\b|\bwo\s+not\b"
)
#: The present progressive, a plan before a time ("I'm flying out on Friday"), or what is
#: going on now ("I'm working remotely from March until August").
_PROGRESSIVE = r"(?:'m|'re|\bam|\bare)\s+\w+ing\b"
_FUTURE = re.compile(f"{_SAID_AHEAD}|{_PROGRESSIVE}", re.IGNORECASE)
#: A word that puts a clause ahead of now, the progressive left out.
_FUTURE_WORD = re.compile(_SAID_AHEAD, re.IGNORECASE)
#: A future seen from the past ("I was going to go on Friday, but ..."): the past.
_FUTURE_IN_PAST = re.compile(
    r"\b(?:was|were)(?:n't)?\s+(?:\w+\s+)?(?:going\s+to|gonna|planning|hoping|about\s+to"
    r"|supposed\s+to)\b",
    re.IGNORECASE,
)
#: Prepositions that end a span: a bare time after them is its end, ahead of a clause in
#: the present ("I'm in Tokyo until Friday", said on a Monday: the Friday to come).
_ENDS_SPAN = {"until", "till", "through", "thru"}
#: A past auxiliary ("I was in Tokyo until Friday").
_PAST_AUX = re.compile(r"\b(?:(?:was|were|had|did)(?:n't)?|couldn't)\b", re.IGNORECASE)
#: Common irregular past forms that are no present form too ("read", "put" are).
_IRREGULAR_PAST = (
    r"went|came|left|slept|kept|stood|sat|ran|met|spent|took|saw|drove|rode|flew|stuck|held"
    r"|lay|got|made|bought|brought|thought|taught|caught|fought|found|gave|told|sold|said|felt"
    r"|began|wrote|heard|won(?!'t)|lost|ate|swam|sang|drank|became|fell|broke|chose|built|sent|paid"
    r"|knew|grew|threw|wore|woke|spoke|forgot|understood|meant|hid|shook|dug|fed|blew|sank"
    r"|drew|hung|led|slid|stole|struck|swore|tore|rang|froze|shrank|spun|dealt|leapt|learnt"
    r"|burnt|sought|lent|fled|stung|swung|forgave|overslept|withdrew|sprang|clung"
)
#: A past verb, regular or among the common irregular ones (``_in_past`` reads the words
#: before it: "is closed", "we're booked" are states now).
_IRREGULAR = frozenset(re.findall(r"[a-z]+", _IRREGULAR_PAST.replace("(?!'t)", "")))
_A_WORD = re.compile(r"\w+")


def _past_form(word: str) -> bool:
    """Whether the lowercase ``word`` is a past form: regular in -ed or irregular (a set
    look-up: a 130-word regex alternation was most of ``resolve``'s time on a long text)."""
    return (len(word) > 3 and word.endswith("ed")) or word in _IRREGULAR


#: A perfect ("I've started a new job in March"): a time named with it is past, but not
#: "have got" (a possession now) nor "have to" (an obligation).
_PERFECT = re.compile(
    r"(?:\b(?:have|has)|'ve)\s+(?:(?:just|already|finally|recently|never|also|only|actually)"
    rf"\s+)?(?:\w{{3,}}ed|been\s+to|gone|done|seen|taken|given|eaten|written|(?!got\b)"
    rf"(?:{_IRREGULAR_PAST}))\b",
    re.IGNORECASE,
)
#: A finite verb or its subject: a clause with one of these and no past or future is in
#: the present ("My exam is on Friday", "I have an interview on Friday").
_FINITE = re.compile(
    r"\b(?:am|is|are|have|has|do|does|don't|doesn't|can|need|needs)\b|'(?:m|re|ve)\b"
    r"|\b(?:it|he|she|that|there|here|what|who|where|everything|everyone|nothing|this)'s\b"
    r"|\b\w+'s\s+(?:not\s+)?(?:going|coming|leaving|flying|arriving|visiting|starting|moving"
    r"|staying|getting|due|back|away|off|busy|free|home|out)\b",
    re.IGNORECASE,
)
_WORDS = re.compile(r"[a-z']+")
_PRONOUNS = frozenset(["i", "you", "we", "they"])
_SINGULAR = frozenset(["he", "she", "it", "who", "which", "that"])
_POSSESSORS = frozenset(["my", "the", "our", "his", "her", "their", "your"])
_ADVERBS = frozenset(
    re.findall(r"\w+", "also usually always often sometimes never just still only normally")
)


def _after_adverbs(words: list[str], n: int) -> str:
    """The word at ``words[n]``, past adverbs of frequency ("I usually start")."""
    while n < len(words) and words[n] in _ADVERBS:
        n += 1
    return words[n] if n < len(words) else ""


def _a_verb(word: str, *, lexical: bool) -> bool:
    """Whether ``word`` after a subject reads as a present verb: any word after "I/you/
    we/they" (``lexical``), else one in -s ("leaves", "opens"); not a verb whose past is
    the same word, nor a past form."""
    if not word.isalpha() or word in _INVARIANT or word in _NOT_VERBS:
        return False
    if _past_form(word) and word not in _NOT_PAST:
        return False
    return lexical or (word.endswith("s") and not word.endswith(("ss", "us", "is", "'s")))


#: Verbs whose past is the same word: their tense is not readable ("I quit on Monday").
_INVARIANT = frozenset(
    re.findall(
        r"\w+",
        "quit cut hit put read let set hurt shut cast cost burst bet spread split fit beat rid"
        " upset",
    )
)
#: Words after a subject that are no verb.
_NOT_VERBS = frozenset(
    re.findall(
        r"\w+",
        "and or but so to of in on at for with from by as the a an my your this that than"
        " then too not",
    )
)
#: An obligation or need denied in the past ("I didn't have to work on Saturday").
_PAST_OBLIGATION = re.compile(
    r"\b(?:didn't|did\s+not|wasn't|weren't|had)\s+(?:\w+\s+)?(?:have|need|want|ha[ds])\s+to\b",
    re.IGNORECASE,
)
#: Where a clause begins inside a sentence: a conjunction or a relative word ("a class
#: that starts on Monday").
_CONJUNCTION = re.compile(
    r"\b(?:and|but|so|because|cause|that|which|who|where|when|while|then|although|though|if)\b",
    re.IGNORECASE,
)
#: Where a sentence ends, looking back or on from a mention.
_SENTENCE_END = re.compile(r"[.!?;\n]")
#: Words between a participle and what makes it a state ("I'm so excited", "a really
#: tired dog"): skipped when reading the word before it.
_INTENSIFIERS = frozenset(
    re.findall(
        r"\w+",
        "so very really too super pretty quite just all kinda kind of bit little still also"
        " not t totally absolutely incredibly extremely truly completely fully already always"
        " now",
    )
)
#: Words before a participle that make it an adjective, not a past verb ("a scheduled
#: call", "the planned trip").
_DETERMINERS = frozenset(
    re.findall(r"\w+", "a an the my your his her our their its this these those")
)
#: Participles that are feelings, as good as never a past verb ("excited for Saturday").
_FEELINGS = frozenset(
    re.findall(
        r"\w+",
        "excited interested thrilled pleased delighted stressed bored tired exhausted overwhelmed"
        " pumped stoked psyched obsessed blessed relieved determined dedicated committed",
    )
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
        "feel",
        "feels",
        "feeling",
        "seem",
        "seems",
        "look",
        "looks",
    ]
)
#: Feelings left by an event ("tired from Saturday", "exhausted after Saturday's race").
_WORN_OUT = frozenset(
    re.findall(r"\w+", "tired exhausted sore drained hungover recovering recovered wrecked")
)
#: Words in -ed that are no past verb.
_NOT_PAST = frozenset(
    ["hundred", "sacred", "naked", "wicked", "beloved", "ragged", "rugged", "crooked", "shed"]
    + ["sled", "bred", "shred", "embed", "infrared", "sped", "wed", "red", "bed"]
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
    elif mod == "next":
        year = anchor.year if month > anchor.month else anchor.year + 1
    elif future:  # the month being lived is still ahead ("I'll be in Japan in May", in May)
        year = anchor.year if month >= anchor.month else anchor.year + 1
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
#: and August", "around June"). Not "every/each": "every June" recurs (``_RECURS``).
_MONTH_CUE = re.compile(
    r"(?:\b(?:early|late|mid|between|through|throughout|around|towards?"
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


#: Words that name a numbered thing, before a number: "flat number 2010", "pin code is
#: 1987", "room 1204", "Cyberpunk 2077" is left alone (a title).
_NUMBERED_BEFORE = re.compile(
    r"(?:\b(?:number|no|nr|pin|code|password|room|flat|apartment|apt|unit|suite|page|route"
    r"|bus|flight|model|version|item|order|ticket|line|chapter|episode|level|platform|gate"
    r"|seat|house|door|box|id|turn)\b\.?(?:\s*(?:is|was|:|#))?|#)\s*$",
    re.IGNORECASE,
)
#: A count after a number: a plural word ("1999 shares", "2010 votes"), not a verb or
#: a small word that ends in "s" ("2019 was a good year").
_COUNTED_AFTER = re.compile(
    r"\s+(?!(?:was|is|has|does|goes|says|gets|seems|looks|this|his|its|us|as|thus|plus"
    r"|always|perhaps|unless|besides|whereas|yes)\b)[a-z]+[a-rt-z]s\b"
)
#: Before a year, the words that make it one whatever follows ("in 2019 things changed").
_YEAR_BEFORE = re.compile(
    r"\b(?:in|since|until|till|by|from|of|during|before|after|around|circa|through"
    r"|throughout|early|late|mid|summer|winter|spring|fall|autumn)\s+$",
    re.IGNORECASE,
)


def _an_amount(text: str, start: int, end: int) -> bool:
    """Whether the year-like number at ``text[start:end]`` is an amount or a count ("2023
    Euro", "1999 shares") or names a thing ("flat number 2010", "my pin is 1987"), not a
    year. Why: every number from 1900 to 2099 was read as a year, so "I bought 1999 shares"
    was a fact of 1 January 1999 (a review)."""
    if (start > 0 and text[start - 1] in _AMOUNT_BEFORE) or _AMOUNT_AFTER.match(text, end):
        return True
    before = text[max(0, start - 40) : start]
    if _NUMBERED_BEFORE.search(before):
        return True
    return bool(_COUNTED_AFTER.match(text, end)) and not _YEAR_BEFORE.search(before)


def _relative(m: re.Match[str], anchor: datetime, future: Callable[[], bool]) -> _Resolved:
    """Expressions whose meaning depends on the anchor (and, for a bare weekday or "the
    weekend", on ``future()``: see :func:`resolve`)."""
    g = m.group
    if g("dby") or g("dat"):
        return _day(anchor, -2 if g("dby") else 2), "day", True
    if g("rel2"):  # "the week before last", "the weekend after next"
        unit, later = g("rel2p").lower(), g("rel2d").lower().startswith("after")
        if unit == "weekend":  # "next weekend" is _weekend(anchor, 1): the one after it
            return (
                _weekend(anchor, 2) if later else _weekend(anchor, -1) - timedelta(days=7),
                ("weekend"),
                True,
            )
        start, gran = _shift(anchor, 2 if later else -2, unit)
        return start, gran, True
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


#: In the clause before a year-less date told in the past, what makes the date a plan's
#: (left in the anchor's year): a present or future told after the past ("they told me
#: the wedding is on Sept 9"), or a verb of arranging ("I booked flights for Dec 20",
#: "I bought tickets for the show on Aug 2").
_A_PLAN = re.compile(
    r"\b(?:is|are|will|shall|going\s+to|gonna|book(?:s|ed|ing)?|reserv(?:e|es|ed|ing)"
    r"|(?:re)?schedul(?:e|es|ed|ing)|plann?(?:ed|ing)?|arrang(?:e|es|ed|ing)|tickets?"
    r"|sign(?:s|ed)?\s+up|register(?:s|ed)?|postpon(?:e|es|ed)|invit(?:e|es|ed))\b"
    r"|['\u2019](?:re|ll)\b",
    re.IGNORECASE,
)
#: The last word before a date (past "on"/"the") that makes it a target ("for Dec 20",
#: "until June 3", "to Sept 10").
_TARGET = frozenset({"for", "until", "till", "to", "by"})


def _told_in_the_past(day: datetime, anchor: datetime, m: re.Match[str]) -> datetime:
    """A day named without a year (dated in the anchor's year), moved to the year before
    when it is after the anchor and told in the past tense (read from its clause, else
    the words after it): "I went to Paris on Dec 5", "Dec 5 the concert was amazing",
    said in May 2024, are in December 2023, not 2024 (a review, s55). Left in the
    anchor's year when the clause before it tells a plan (:data:`_A_PLAN`, a target
    preposition just before it: :data:`_TARGET`), when no tense is read, and in a
    sentence in another language."""
    if day.date() <= anchor.date():
        return day
    before, after, sentence = _segments(m.string, m.start(), m.end())
    if reads_foreign(sentence):
        return day
    # Not through ``_tense``'s cache: it would keep the memory's words (tests/test_text_cache.py).
    tense = _tense.__wrapped__(before, True) or _tense.__wrapped__(after, True)
    if tense != "past" or _A_PLAN.search(before) or _target_before(before):
        return day
    try:
        return day.replace(year=day.year - 1)
    except ValueError:  # 29 February, in a year before without one
        return day


def _target_before(before: str) -> bool:
    """Whether the last word before a date (past "on" and "the") is a target's."""
    words = re.findall(r"[a-z]+", before.lower())
    while words and words[-1] in ("on", "the"):
        words.pop()
    return bool(words) and words[-1] in _TARGET


def _absolute(m: re.Match[str], anchor: datetime, future: Callable[[], bool]) -> _Resolved:
    """Dates written out; a missing year comes from the anchor."""
    g = m.group
    start: datetime | None = None
    inferred = False
    if g("iso"):
        start = (
            _date(g("isoy"), int(g("isom")), g("isod"), anchor) if 0 < int(g("isom")) < 13 else None
        )
    elif g("dmy") or g("mdy"):
        order = "dmy" if g("dmy") else "mdy"
        year = g(f"{order}y")
        start = _date(year, _month_name(g(f"{order}m")), g(f"{order}d"), anchor)
        inferred = not year
        if inferred and start is not None:
            start = _told_in_the_past(start, anchor, m)
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

    ``future`` says how to read bare weekdays and months ("on Friday"); by default
    it is read from the mention's clause (:func:`_clause_tense`): ahead when that clause
    has a present or future verb the reader knows, past when it has a past one, else
    the whole text's tense (ahead only if it speaks of the future). A weekday or month
    after "every/each" recurs and is no date (:func:`is_recurring`); the two ends of a
    range are placed in order ("from Monday to Thursday last week", :func:`_join`).

    Example:
        >>> m = resolve("I went there yesterday", datetime(2023, 5, 8, 13, 56))[0]
        >>> (m.label(), m.granularity)
        ('7 May 2023', 'day')
    """
    return [
        TimeMention(f.span, f.start, f.end, f.gran, text[f.span[0] : f.span[1]], f.relative)
        for f in _scan(text, anchor, future)[0]
    ]


@dataclass
class _Found:
    """A mention while :func:`resolve` places it: ``bare`` when it is a weekday, month or
    "the weekend" named without last/next/this, so its place came from ``tense`` (the
    clause's tense, :func:`_clause_tense`; None when ``future`` was given)."""

    match: re.Match[str]
    span: tuple[int, int]
    start: datetime
    gran: Granularity
    relative: bool
    kind: str  # "weekday", "month", "weekend" or ""
    bare: bool
    tense: str | None

    @property
    def end(self) -> datetime:
        return _interval(self.start, self.gran)[1]

    @property
    def ahead(self) -> bool:
        return self.tense != "past"


def _scan(text: str, anchor: datetime, future: bool | None) -> tuple[list[_Found], bool]:
    """The mentions :func:`resolve` returns, and whether the text names a weekday range
    as a habit ("I work Monday through Friday", :func:`_join`)."""
    low = text.lower()
    if not any(word in low for word in _TRIGGERS):
        return [], False  # most turns name no time; the full pattern is 30x slower
    found: list[_Found] = []
    for m in _PATTERN.finditer(text):
        if _RECURS.search(text, max(0, m.start() - 40), m.start()):
            continue  # "every Friday", "each June": a habit, not a date
        item = _resolve_one(m, anchor, future)
        if item is not None:
            found.append(item)
    if len(found) < 2:
        return found, False
    try:
        return _join(text, anchor, found)
    except (OverflowError, ValueError):
        return found, False


class _TenseUnknown(Exception):
    """A bare weekday, month or weekend in a sentence in another language ("Tengo
    examen el Friday"): whether it lies ahead or behind is said in words these rules do
    not read, so it names no date (a plan was dated the Friday before; a review, s55)."""


def _resolve_one(m: re.Match[str], anchor: datetime, future: bool | None) -> _Found | None:
    """One mention placed against ``anchor``; None when it names no time."""
    g = m.group
    # The tense is read only for a mention that needs it (a bare weekday or month, "the
    # weekend"): its pattern scans were a fifth of the cost of a short turn.
    guessed: list[str] = []

    def ahead() -> bool:
        if future is not None:
            return future
        if not guessed:
            guessed.append(_clause_tense(m))
        if guessed[0] == "unknown":
            raise _TenseUnknown
        return guessed[0] != "past"

    try:
        resolved = _relative(m, anchor, ahead) or _absolute(m, anchor, ahead)
        if resolved is None:
            return None
        start, gran, relative = resolved
        _interval(start, gran)
    except (OverflowError, ValueError):
        # Past the years 1-9999 a datetime holds ("next year" said in 9999, "31
        # December 9999", "last year" dated year 1): no time it can name. Raised,
        # it failed every time-cued search of the memory's owner (a review).
        return None
    except _TenseUnknown:
        return None
    kind = (
        "weekday"
        if g("wd") or g("relwd")
        else "month"
        if g("relmonth")
        else "weekend"
        if g("weekend")
        else ""
    )
    bare = bool(g("wd") or g("weekend") or (g("relmonth") and not g("mmod")))
    return _Found(m, m.span(), start, gran, relative, kind, bare, guessed[0] if guessed else None)


#: Before a weekday, month or weekend, what makes it a recurrence ("every Friday", "each
#: June", "every other Sunday", "on every Monday", "every last Friday of the month").
_RECURS = re.compile(
    r"\b(?:every|each)(?:\s+(?:other|single|second))?"
    r"\s+(?:(?:first|second|third|fourth|last)\s+)?$",
    re.IGNORECASE,
)
#: A weekday or month named as a recurrence (:func:`is_recurring`).
_RECURRING = re.compile(
    rf"\b(?:every|each)(?:\s+(?:other|single|second))?\s+(?:(?:first|second|third|fourth|last)"
    rf"\s+)?(?:{_WD}|{_MONTH}(?!\w)|weekend)|\b{_WD}s\b",
    re.IGNORECASE,
)


def is_recurring(text: str) -> bool:
    """Whether ``text`` names a weekday, month or weekend as a recurrence: after
    "every/each" ("I go swimming every Friday", "Every June we go camping"), in the
    plural ("on Fridays"), or a weekday range in the present tense ("I work Monday
    through Friday"). :func:`resolve` gives these no date; a fact that holds one is a
    habit, not an event on a day (the text may name a dated event as well)."""
    if _RECURRING.search(text):
        return True
    return _scan(text, datetime(2000, 1, 3, tzinfo=UTC), None)[1]


#: Between the two ends of a range: "Monday to Friday", "May-July", "June through August".
_RANGE_GAP = re.compile(r"\s*[-\u2013\u2014]\s*|\s+(?:to|through|thru|till|til)\s+", re.IGNORECASE)
_BETWEEN = re.compile(r"\bbetween\s+$", re.IGNORECASE)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
#: Between a weekday and the week it is in ("Thursday last week", "Friday of next week").
_OF_WEEK = re.compile(r"\s+(?:of\s+)?", re.IGNORECASE)


def _join(text: str, anchor: datetime, found: list[_Found]) -> tuple[list[_Found], bool]:
    """Mentions read together: a weekday followed by its week ("Thursday last week") is
    that week's day, one mention; the end of a range ("from X to|till|through Y",
    "between X and Y", "X-Y") lies at or after its start, of the same kind; a weekday
    range in a present clause is a habit ("I work Monday through Friday"): no dates.

    Why: each mention was placed alone, so "from Monday to Thursday last week" said on a
    Wednesday was "from 13 May to 9 May in the week of 6 May", and "I'll be in Japan from
    May to July" was May 2025 to July 2024 (a review)."""
    found = _in_their_week(text, anchor, found)
    habit: set[int] = set()
    for i in range(len(found) - 1):
        x, y = found[i], found[i + 1]
        if not x.kind or x.kind != y.kind or not (x.bare or y.bare) or not _paired(text, x, y):
            continue
        if x.kind == "weekday" and x.bare and y.bare and _a_habit(text, x):
            habit.update((i, i + 1))
        elif x.bare and y.bare and _said_as_now(text, x):
            # a range said in the present holds now or is coming: its end ahead, its
            # start at the latest before it ("I'm in Japan from April to June", in May;
            # "I'm working remotely from March until August", in May: since March)
            while x.start > y.start:
                x.start = _step(x.start, x.kind, -1)
        elif y.bare and (not x.bare or x.ahead):
            while y.start < x.start:
                y.start = _step(y.start, y.kind, 1)
        elif x.bare:
            while x.start > y.start:
                x.start = _step(x.start, x.kind, -1)
    return [f for i, f in enumerate(found) if i not in habit], bool(habit)


def _said_as_now(text: str, x: _Found) -> bool:
    """Whether a range starting at ``x`` is said in the present: its clause's tense is
    the present, or, for a range of months, the present progressive with no word of the
    future in its sentence ("I'm working remotely from March until August"; not "I'm
    going to work ...").

    Why: the progressive reads as a plan ("I'm flying out on Friday"), so, said in May,
    that stay was placed from the next March, in 2027, though it began two months ago.
    The word of the future is looked for in the range's own clause ("I'm working remotely
    from March until August, and I'll visit you in September": the stay is this year's),
    and a sentence that names a year or "next" keeps the plan ("Next year I'm working
    remotely from March until August").
    A range of weekdays in the progressive stays a plan: "I'm working from the office
    between Monday and Friday", said on a Wednesday, is next week."""
    if x.tense == "present":
        return True
    if x.tense != "future" or x.kind != "month":
        return False
    clause, _, sentence = _segments(text, *x.span)
    return _FUTURE_WORD.search(clause) is None and _YEAR_NAMED.search(sentence) is None


#: A year the sentence names, or "next ...": the range's year is said, not now's ("Next
#: year I'm working remotely from March until August"; a review).
_YEAR_NAMED = re.compile(r"\bnext\b|\b(?:19|20)\d\d\b", re.IGNORECASE)


#: A form of "be" before a range: a stay or a plan, dated ("I'm off Monday to Wednesday").
_COPULA = re.compile(r"\b(?:am|is|are|be|being)\b|'(?:m|re|s)\b", re.IGNORECASE)


def _a_habit(text: str, x: _Found) -> bool:
    """Whether a weekday range starting at ``x`` is a habit: a present simple verb, not
    "be", and no "from"/"between" ("I work Monday through Friday"; not "I'm off from
    Monday to Wednesday", nor "I'm in Berlin from Tuesday to Friday": a review)."""
    start = x.span[0]
    if x.tense != "present" or (x.match.group("prep") or "").lower() in ("from", "between"):
        return False
    if _BETWEEN.search(text, max(0, start - 10), start):
        return False
    before = _segments(text, start, x.span[1])[0]
    return not _COPULA.search(before)


def _in_their_week(text: str, anchor: datetime, found: list[_Found]) -> list[_Found]:
    """A bare weekday followed by "last/this/next week" becomes that week's day, its span
    taking the week in; so does the start of a range ending at it ("from Monday to
    Thursday last week")."""
    out: list[_Found] = []
    skip = False
    for i, f in enumerate(found):
        if skip:
            skip = False
            continue
        week = found[i + 1] if i + 1 < len(found) else None
        out.append(f)
        if not (
            f.kind == "weekday"
            and f.bare
            and week is not None
            and week.match.group("relper")
            and week.match.group("per").lower() == "week"
            and _OF_WEEK.fullmatch(text, f.span[1], week.span[0])
        ):
            continue
        monday = week.start
        prev = out[-2] if len(out) > 1 else None
        ends = [f]
        if prev is not None and prev.kind == "weekday" and prev.bare and _paired(text, prev, f):
            ends.insert(0, prev)
        for day in ends:
            name = (day.match.group("wd1") or day.match.group("wd")).lower()
            day.start, day.bare = monday + timedelta(days=_WEEKDAYS[name]), False
        f.span = (f.span[0], week.span[1])
        skip = True
    return out


def _paired(text: str, x: _Found, y: _Found) -> bool:
    """Whether ``x`` and ``y`` are the two ends of a range."""
    gap_start, gap_end = x.span[1], y.span[0]
    if _RANGE_GAP.fullmatch(text, gap_start, gap_end):
        return True
    y_prep = (y.match.group("prep") or "").lower()
    if y_prep in _ENDS_SPAN and not text[gap_start:gap_end].strip():
        return True  # "from Friday until Sunday"
    return (
        not x.match.group("prep")
        and _AND.fullmatch(text, gap_start, gap_end) is not None
        and _BETWEEN.search(text, max(0, x.span[0] - 10), x.span[0]) is not None
    )


def _step(start: datetime, kind: str, n: int) -> datetime:
    """``start`` moved by ``n`` of what repeats it: a week for a day, a year for a month."""
    if kind == "month":
        return start.replace(year=start.year + n)
    return start + timedelta(days=7 * n)


def _clause_tense(m: re.Match[str]) -> str:
    """The tense a bare time's clause is in: "past", "future" or "present"; "unknown" in
    a sentence in another language (``sentences.reads_foreign``).

    Read from the clause up to the mention ("I saw the doctor on Friday"); when that
    has no verb, the words after it ("On Saturday we went hiking", "The party on
    Saturday was great"), then the sentence; when that has none the reader knows ("My dog
    died", "I quit", "Best day ever on Saturday!"), the whole text: ahead if it speaks of
    the future, else past (the rule before s45: a past event dated ahead was a review's
    regression). "since Friday" is past unless the clause speaks of
    the future. A perfect counts as past ("I've started a new job in March") except
    before a span's end ("until").

    Why: the tense was read from the whole text, past unless a word of the future was in
    it, so "I have a job interview on Friday", said on a Wednesday, was stored as the
    Friday before, and "My lease ends in July" as last July (a review)."""
    text, start, end = m.string, m.start(), m.end()
    segments = _segments(text, start, end)
    if reads_foreign(segments[2]):
        return "unknown"  # its tense is in words these rules do not read (_TenseUnknown)
    prep = (m.group("prep") or "").lower()
    if prep in ("from", "after") and _word_before(text, start) in _WORN_OUT:
        return "past"  # "I'm still tired from Saturday": what tired you is behind you
    perfect = prep not in _ENDS_SPAN
    for segment in segments:
        tense = _tense(segment, perfect)
        if tense is not None:
            return "past" if prep == "since" and tense == "present" else tense
    return "past" if prep == "since" else _text_tense(text)


def _segments(text: str, start: int, end: int) -> list[str]:
    """Around a mention at ``text[start:end]``: the clause up to it, the clause after it,
    its sentence."""
    # Every scan is bounded, so resolve stays linear in the text (it was quadratic on a
    # long sentence of ranges: a review). The sentence's bounds lie on a grid, so the
    # mentions of one long sentence share it (``_tense`` is cached).
    window = max(0, (start - _LOOK_AHEAD) // _GRID * _GRID)
    ends = [e.end() for e in _SENTENCE_END.finditer(text, window, start)]
    sentence_start = ends[-1] if ends else window
    clause_start = max(sentence_start, start - _CLAUSE_MAX)
    cuts = [c.end() for c in _CLAUSE_END.finditer(text, clause_start, start)]
    cuts += [c.end() for c in _CONJUNCTION.finditer(text, clause_start, start)]
    before = text[max(cuts, default=clause_start) : start]
    limit = min(len(text), (end + _LOOK_AHEAD) // _GRID * _GRID + _GRID)
    stop = _SENTENCE_END.search(text, end, limit)
    sentence_end = stop.start() if stop else limit
    after = ""
    for piece in re.split(r"[,:]", text[end : min(sentence_end, end + _CLAUSE_MAX)]):
        if _WORD.search(piece):  # the first clause with words ("On Saturday, we went")
            # "See you Friday then!": only conjunctions after it, no clause
            after = next((p for p in _CONJUNCTION.split(piece) if _WORD.search(p)), "")
            break
    return [before, after, text[sentence_start:sentence_end]]


_WORD = re.compile(r"\w")
#: How far around a mention its sentence is read (at least), on a grid of ``_GRID``.
_LOOK_AHEAD = 300
_GRID = 256
#: How far around a mention its clause is read.
_CLAUSE_MAX = 120


@functools.lru_cache(maxsize=256)
def _text_tense(text: str) -> str:
    """The tense of a whole text, for a bare time whose own clause has no verb the
    reader knows: ahead if it speaks of the future, else past (the pre-s45 rule, read
    once per text: per mention it made ``resolve`` quadratic, a review)."""
    return "future" if _FUTURE.search(text) else "past"


@functools.lru_cache(maxsize=1024)
def _tense(segment: str, perfect: bool) -> str | None:
    """The tense of ``segment`` ("past", "future", "present"); None when it has no verb."""
    if _FUTURE_IN_PAST.search(segment) or _PAST_OBLIGATION.search(segment):
        return "past"  # "I was going to ...", "I didn't have to work on Saturday"
    if _FUTURE.search(segment):
        return "future"
    if _in_past(segment) or (perfect and _PERFECT.search(segment)):
        return "past"
    return "present" if _present(segment) else None


def _present(segment: str) -> bool:
    """Whether ``segment`` has a present finite verb the reader knows: a form of "be",
    "have", "do" or a modal ("My exam is on Friday"), "'s" after a pronoun, or a verb after
    its subject ("We fly out", "My flight leaves"), not one whose past is the same word
    ("I quit on Monday"). A possessive is no verb ("Tom's party on Saturday was fun")."""
    if _FINITE.search(segment):
        return True
    words = _WORDS.findall(segment.lower())
    for k, word in enumerate(words):
        if word in _PRONOUNS:  # "we fly", "I usually start"
            if _a_verb(_after_adverbs(words, k + 1), lexical=True):
                return True
        elif word in _SINGULAR:  # "it opens", "who lives"
            if _a_verb(_after_adverbs(words, k + 1), lexical=False):
                return True
        elif word in _POSSESSORS:  # "my flight leaves", "the new shop opens", "the kids start"
            for n in (k + 2, k + 3):
                plural = n - 1 < len(words) and words[n - 1].endswith("s")
                plural = plural and not words[n - 1].endswith("'s")  # not "my cat's"
                if _a_verb(_after_adverbs(words, n), lexical=plural):
                    return True
    return False


def _in_past(clause: str) -> bool:
    """Whether ``clause`` is in the past tense: a past auxiliary, or a past verb whose
    subject is any noun ("My sister stayed with us until Sunday", "Mom visited until
    Friday": only a pronoun subject counted, and these Sundays came out ahead: a review),
    not a participle after a present form of "be" or "have" ("the shop is closed until
    Monday", "I'm so excited"), after an article ("a scheduled call") nor a feeling
    ("Excited for Saturday!")."""
    if _PAST_AUX.search(clause):
        return True
    for verb in _A_WORD.finditer(clause):
        word = verb.group().lower()
        if not _past_form(word) or (word == "won" and clause.startswith("'t", verb.end())):
            continue
        if word.endswith("eed") or word in _NOT_PAST or word in _FEELINGS:
            continue
        before = _word_before(clause, verb.start())
        if before in _STATE_NOW or before in _DETERMINERS:
            continue
        return True
    return False


def _word_before(clause: str, pos: int) -> str:
    """The word before ``pos`` in ``clause``, past adverbs of degree ("so", "really")."""
    words: list[str] = re.findall(r"\w+", clause[max(0, pos - 60) : pos].lower())
    for word in reversed(words):
        if word not in _INTENSIFIERS:
            return word
    return ""


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
        out.append(_phrase(mention, text[begin:end], text[max(0, begin - 80) : begin]))
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
    if first not in _PREPOSITIONS and (_GOVERNS.search(before) or _BETWEEN_AND.search(before)):
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
#: The second end of "between X and Y": governed by "between" too ("between 20 May 2024
#: and 24 May 2024", not "and on 24 May 2024").
_BETWEEN_AND = re.compile(r"\bbetween\s+\S.{0,60}?\s+and\s+$", re.IGNORECASE | re.DOTALL)
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
