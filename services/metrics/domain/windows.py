"""Time windows: UTC days and periods, zero-filled counts, ISO period filters.

Everything is bucketed on the UTC calendar, so a figure does not depend on the server's or
the reader's time zone. Naive datetimes are refused: their day is ambiguous.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum


class Granularity(StrEnum):
    DAY = "day"
    WEEK = "week"  # ISO weeks, starting on Monday
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open UTC interval [start, end)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"a period must end after it starts: {self.start} / {self.end}")

    def contains(self, moment: datetime) -> bool:
        return self.start <= to_utc(moment) < self.end


class OutOfRange(ValueError):
    """A moment with no UTC equivalent: year 1 at +14:00 is 31 December of year 0 in UTC."""


def to_utc(moment: datetime) -> datetime:
    """``moment`` in UTC, how everything is stored; ``OutOfRange`` when UTC cannot hold it."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: a time zone is required")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise OutOfRange(
            f"{moment.isoformat()} is outside the dates that can be stored (years 1 to 9999 in UTC)"
        ) from None


def utc_day(moment: datetime) -> date:
    return to_utc(moment).date()


def period_start(moment: datetime, granularity: Granularity) -> date:
    """The first UTC day of the bucket holding `moment`."""
    return bucket_of(utc_day(moment), granularity)


def bucket_of(day: date, granularity: Granularity) -> date:
    if granularity is Granularity.DAY:
        return day
    if granularity is Granularity.WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_bucket(bucket: date, granularity: Granularity) -> date:
    if granularity is Granularity.DAY:
        return bucket + timedelta(days=1)
    if granularity is Granularity.WEEK:
        return bucket + timedelta(weeks=1)
    return _first_of_next_month(bucket)


def period_counts(
    timestamps: Iterable[datetime], start: date, end: date, granularity: Granularity
) -> list[tuple[date, int]]:
    """Count per bucket from the bucket of `start` to the bucket of `end`, both included.

    Empty buckets are listed with 0: an XmR chart of volume needs the quiet periods too.
    Timestamps outside the range are ignored.
    """
    first, last = bucket_of(start, granularity), bucket_of(end, granularity)
    if last < first:
        raise ValueError(f"end {end} is before start {start}")
    counts = Counter(period_start(moment, granularity) for moment in timestamps)
    buckets = []
    bucket = first
    while bucket <= last:
        buckets.append((bucket, counts[bucket]))
        bucket = next_bucket(bucket, granularity)
    return buckets


def daily_counts(timestamps: Iterable[datetime], start: date, end: date) -> list[tuple[date, int]]:
    """Count per UTC day from `start` to `end` inclusive, with the zero days."""
    return period_counts(timestamps, start, end, Granularity.DAY)


_YEAR = re.compile(r"^(\d{4})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DURATION = re.compile(r"^P(?:(\d+)W|(\d+)D)$")


def parse_period(text: str) -> Period:
    """Parse an ISO 8601 period filter into a UTC period.

    Accepted: a year `2024`, a month `2024-05`, an ISO week `2024-W19`, a day `2024-05-06`,
    or an interval `<start>/<end>` or `<start>/P<n>D` / `<start>/P<n>W`. Interval ends are
    instants: a bare date means the start of that UTC day, so `2024-05-01/2024-06-01` is
    May; datetimes must carry an offset.
    """
    text = text.strip()
    try:
        return _parse_period(text)
    except OverflowError as error:  # 9999-W52 ends in year 10000
        raise ValueError(
            f"invalid period {text!r}: it reaches outside the years 1 to 9999"
        ) from error


def _parse_period(text: str) -> Period:
    if "/" in text:
        return _parse_interval(text)
    try:
        if match := _YEAR.match(text):
            year = int(match[1])
            return _days(date(year, 1, 1), date(year + 1, 1, 1))
        if match := _MONTH.match(text):
            first = date(int(match[1]), int(match[2]), 1)
            return _days(first, _first_of_next_month(first))
        if match := _WEEK.match(text):
            monday = date.fromisocalendar(int(match[1]), int(match[2]), 1)
            return _days(monday, monday + timedelta(weeks=1))
        if _DAY.match(text):
            day = date.fromisoformat(text)
            return _days(day, day + timedelta(days=1))
    except ValueError as error:
        raise ValueError(f"invalid period {text!r}: {error}") from error
    raise ValueError(
        f"unrecognised period {text!r}: expected YYYY, YYYY-MM, YYYY-Www, YYYY-MM-DD "
        "or an ISO 8601 interval start/end"
    )


def _parse_interval(text: str) -> Period:
    start_text, _, end_text = text.partition("/")
    start = _parse_instant(start_text)
    if match := _DURATION.match(end_text):
        weeks, days = match[1], match[2]
        length = timedelta(weeks=int(weeks)) if weeks else timedelta(days=int(days))
        return Period(start, start + length)
    return Period(start, _parse_instant(end_text))


def _parse_instant(text: str) -> datetime:
    try:
        if _DAY.match(text):
            return _midnight(date.fromisoformat(text))
        return to_utc(datetime.fromisoformat(text))
    except ValueError as error:
        raise ValueError(f"invalid instant {text!r} in period: {error}") from error


def _days(first: date, after_last: date) -> Period:
    return Period(_midnight(first), _midnight(after_last))


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _first_of_next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)
