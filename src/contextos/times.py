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
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name} {value!r} is not an ISO-8601 date") from None
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime or an ISO-8601 string")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"{name} {value.isoformat()} is outside years 1-9999 in UTC") from None


def opt_utc(value: object, name: str = "time") -> datetime | None:
    """:func:`utc`, passing ``None`` through."""
    return None if value is None else utc(value, name)


def opt_local(value: object, name: str = "time") -> datetime | None:
    """``value`` checked as :func:`utc` checks it, but kept in the zone it was given in
    (naive: UTC); ``None`` passed through. Why: what a relative date means depends on
    the speaker's calendar, not UTC's ("yesterday" said at 20:00 in Los Angeles on 8
    May is 7 May, which is already 9 May in UTC; a review)."""
    if value is None:
        return None
    instant = utc(value, name)
    given = datetime.fromisoformat(value) if isinstance(value, str) else value
    return given if isinstance(given, datetime) and given.tzinfo is not None else instant


#: The widest offset from UTC a zone may have, in minutes (as Python's ``timezone``).
MAX_OFFSET_MINUTES = 24 * 60 - 1


def offset_minutes(value: datetime | None) -> int:
    """Minutes east of UTC of the zone ``value`` was given in (0 for naive, for UTC and
    for none, and for an offset of seconds, which no calendar date depends on)."""
    offset = value.utcoffset() if value is not None else None
    seconds = int(offset.total_seconds()) if offset is not None else 0
    return seconds // 60 if seconds % 60 == 0 else 0


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
