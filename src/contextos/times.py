"""One rule for every time contextos accepts: an instant that can be written as UTC
within years 1 to 9999.

Why: ``datetime(1, 1, 1, tzinfo=+01:00)`` is a valid Python value but lies in
year 0 once converted to UTC. Stored as epoch seconds it could never be read back,
and one such row used to stop the embedding worker for every tenant. Every edge
(Python API, HTTP, MCP, CLI) normalises times with :func:`utc` and refuses what
it cannot represent with a ``ValueError``; reading old rows uses
:func:`from_epoch`, which clamps instead of failing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import overload

from .errors import quoted

#: The first and last instants a time may take.
MIN_TIME = datetime.min.replace(tzinfo=UTC)
MAX_TIME = datetime.max.replace(tzinfo=UTC)  # 9999-12-31T23:59:59.999999

#: The same as UTC epoch seconds, as the SQLite store keeps times (a float). Why it
#: matters: a float of that size is exact to about 30 us only, and MAX_TIME's rounds up
#: to 253402300800.0, the first instant of year 10000; :func:`from_epoch` reads it back
#: as ``MAX_TIME``. (A clamp at 23:59:59 read 23:59:59.999999 back as 23:59:59.)
MIN_EPOCH = MIN_TIME.timestamp()
MAX_EPOCH = MAX_TIME.timestamp()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(value: object, name: str = "time") -> datetime:
    """``value`` as an aware UTC datetime; naive datetimes are taken as UTC.

    Accepts a ``datetime`` or an ISO-8601 string. Raises ``TypeError`` for other
    types and ``ValueError`` when the instant falls outside years 1-9999 in UTC.
    """
    if type(value) is datetime and value.tzinfo is UTC:
        return value  # already UTC: the common case when decoding and filtering records
    if isinstance(value, str):
        text = value
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name} {quoted(text)} is not an ISO-8601 date") from None
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime or an ISO-8601 string")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"{name} {value.isoformat()} is outside years 1-9999 in UTC") from None


def iso(value: datetime) -> str:
    """``value`` as the ISO-8601 text every surface writes: UTC as ``Z``
    (``2024-05-02T10:00:00.690560Z``), as pydantic writes the HTTP API's times.

    Why one: the HTTP API and MCP ``memory_history`` wrote ``Z`` where the CLI's
    ``--json`` and MCP's records wrote ``+00:00``, so a client comparing an
    ``updated_at`` read on two surfaces saw a change where there was none (a review)."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def opt_utc(value: object, name: str = "time") -> datetime | None:
    """:func:`utc`, passing ``None`` through."""
    return None if value is None else utc(value, name)


def opt_local(value: object, name: str = "time") -> datetime | None:
    """:func:`local`, passing ``None`` through."""
    return None if value is None else local(value, name)


def local(value: object, name: str = "time") -> datetime:
    """``value`` checked as :func:`utc` checks it, but kept in the zone it was given in
    (naive: UTC), as the fixed offset it had then (:func:`fixed_zone`). Why the zone:
    what a relative date means depends on the speaker's calendar, not UTC's
    ("yesterday" said at 20:00 in Los Angeles on 8 May is 7 May, which is already 9 May
    in UTC; a review). Why fixed: that offset is what a memory keeps
    (``render.UTC_OFFSET``) and renders its dates in; a ``ZoneInfo`` time in winter
    read "4 July" at midnight in summer time, which rendered as 3 July (a review)."""
    instant = utc(value, name)
    given = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(given, datetime) or given.tzinfo is None:
        return instant
    tz = fixed_zone(given)
    try:
        return instant if tz is None else instant.astimezone(tz)
    except (OverflowError, ValueError):  # a minute past year 9999 there: as the instant
        return instant


#: The widest offset from UTC a zone may have, in minutes (as Python's ``timezone``).
MAX_OFFSET_MINUTES = 24 * 60 - 1


def offset_minutes(value: datetime | None) -> int:
    """Minutes east of UTC of the zone ``value`` was given in (0 for naive, for UTC and
    for none). An offset with seconds (a zone's local mean time before 1883 in New
    York, -04:56:02) is kept as the whole minute nearest it that gives ``value`` the
    same calendar date (one of the two beside it always does): that is what a
    memory's date depends on, and the key holds minutes (a review: such a zone was
    dropped, and the memory indexed on its local day but rendered on UTC's)."""
    offset = value.utcoffset() if value is not None else None
    if value is None or offset is None:
        return 0
    minute = timedelta(minutes=1)
    below = offset // minute
    if offset % minute == timedelta(0):
        return below
    nearest = [below, below + 1] if offset % minute < minute / 2 else [below + 1, below]
    for minutes in nearest:
        try:
            same_day = (value + (minutes * minute - offset)).date() == value.date()
        except OverflowError:  # past year 9999 or before year 1: no date to keep
            same_day = False
        if same_day and abs(minutes) <= MAX_OFFSET_MINUTES:
            return minutes
    return max(-MAX_OFFSET_MINUTES, min(MAX_OFFSET_MINUTES, nearest[0]))


def fixed_zone(value: datetime) -> timezone | None:
    """The fixed zone of :func:`offset_minutes` of ``value``: the one a memory keeps of
    it (None: UTC, or naive)."""
    return zone(offset_minutes(value))


def local_now() -> datetime:
    """Now on this process's calendar: in the fixed offset its zone (``TZ``) has now,
    UTC where it has none (and exactly ``datetime.now(UTC)`` there).

    Why: "yesterday" said without a time was read against UTC's calendar whatever the
    process's zone, so a New York user who said it at 20:30 (00:30 UTC) got today's
    date, and a question's "yesterday" at 21:00 there boosted that day's memories (a
    review). A time given with its zone still wins; a server whose users live in other
    zones passes each one's (``event_time`` with its offset)."""
    return on_local_calendar(datetime.now(UTC))


def on_local_calendar(instant: datetime) -> datetime:
    """``instant`` in the fixed offset this process's zone (``TZ``) had at it; as it is
    where that is UTC. A time logged in UTC (a session turn's) then dates what was said
    by the day the process's user lived in, as :func:`local_now` dates an add."""
    tz = fixed_zone(instant.astimezone())
    return instant if tz is None else instant.astimezone(tz)


def zone(minutes: object) -> timezone | None:
    """The fixed zone ``minutes`` east of UTC, or None when ``minutes`` is no whole
    number of minutes a zone may have (0 included: UTC, what times are stored in).
    Lenient: it reads what metadata holds, which an update may have set to anything."""
    if type(minutes) is not int or not 0 < abs(minutes) <= MAX_OFFSET_MINUTES:
        return None
    return timezone(timedelta(minutes=minutes))


def to_epoch(value: datetime) -> float:
    """UTC epoch seconds (naive datetimes are taken as UTC)."""
    return utc(value).timestamp()


def opt_epoch(value: datetime | None) -> float | None:
    return None if value is None else to_epoch(value)


@overload
def from_epoch(value: float) -> datetime: ...
@overload
def from_epoch(value: None) -> None: ...
def from_epoch(value: float | None) -> datetime | None:
    """The datetime of stored epoch seconds, clamped to years 1-9999, so a row written
    before times were validated can still be read (and deleted) rather than failing."""
    if value is None:
        return None
    if MIN_EPOCH < value < MAX_EPOCH:  # the common case, unclamped: a search decodes
        return _EPOCH + timedelta(seconds=value)  # five times of each of its 50 candidates
    if value >= MAX_EPOCH:
        return MAX_TIME
    if value <= MIN_EPOCH:
        return MIN_TIME
    return _EPOCH + timedelta(seconds=value)  # NaN: ValueError, as timedelta says
