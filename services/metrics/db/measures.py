"""Reading the measures: counts, percentiles, distributions and series, behind every
figure the API and the pages show."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import case, func, literal_column, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db import open_cases
from services.metrics.db.aggregates import band_floor, time_band
from services.metrics.db.sql import SyncDb, as_utc, run_sync
from services.metrics.db.tables import (
    CaseDayRow,
    CaseRow,
    CaseTimeDayRow,
    DemandDayRow,
    DemandFactRow,
)
from services.metrics.domain.buckets import END_TO_END_BUCKETS
from services.metrics.domain.windows import Period


@dataclass(frozen=True)
class Filters:
    period: Period | None = None
    channel: str | None = None
    team: str | None = None
    # One source's data only: what a source's own key reads (ApiKeyRecord.reach). None is
    # the organisation's every source (a sources:all key, a signed-in person).
    source: str | None = None


def filter_demands(statement: Any, filters: Filters) -> Any:
    if filters.source is not None:
        statement = statement.where(DemandFactRow.source == filters.source)
    if filters.period is not None:
        statement = statement.where(
            DemandFactRow.occurred_at >= filters.period.start,
            DemandFactRow.occurred_at < filters.period.end,
        )
    if filters.channel is not None:
        statement = statement.where(DemandFactRow.channel == filters.channel)
    if filters.team is not None:
        statement = statement.where(DemandFactRow.team == filters.team)
    return statement


def _filter_cases(statement: Any, filters: Filters, *, by: Any) -> Any:
    if filters.source is not None:
        statement = statement.where(CaseRow.source == filters.source)
    if filters.period is not None:
        statement = statement.where(by >= filters.period.start, by < filters.period.end)
    if filters.channel is not None:
        statement = statement.where(CaseRow.first_channel == filters.channel)
    if filters.team is not None:
        statement = statement.where(CaseRow.team == filters.team)
    return statement


def whole_days(filters: Filters) -> bool:
    """The filter selects whole UTC days (or all time): demand_days can answer it."""
    period = filters.period
    if period is None:
        return True
    return all(as_utc(moment).time() == time.min for moment in (period.start, period.end))


DayTable = type[DemandDayRow] | type[CaseDayRow] | type[CaseTimeDayRow]


def filter_days(statement: Any, filters: Filters, table: DayTable = DemandDayRow) -> Any:
    """The filters on a daily table (only when whole_days(filters)); each has the same
    source, day, channel and team columns."""
    if filters.source is not None:
        statement = statement.where(table.source == filters.source)
    if filters.period is not None:
        statement = statement.where(
            table.day >= as_utc(filters.period.start).date(),
            table.day < as_utc(filters.period.end).date(),
        )
    if filters.channel is not None:
        statement = statement.where(table.channel == filters.channel)
    if filters.team is not None:
        statement = statement.where(table.team == filters.team)
    return statement


# --- whole days in plain SQL, for sql.run_sync ---------------------------------------------
#
# The reads of whole days (every period the API and the pages ask for) written once for both
# databases with ``:name`` parameters, run on the session's connection: nothing for
# SQLAlchemy to build and compile per call (the first call of a process compiled each
# statement and configured the mappers, most of its time), and a caller with several of
# them to make (service.purpose_summaries) makes them all in one hop to SQLite's thread.


def _where(conditions: Sequence[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def filter_conditions(
    filters: Filters,
    params: dict[str, Any],
    *,
    period: tuple[str, Callable[[datetime], Any]],
    channel: str = "channel",
    table: str = "",
) -> list[str]:
    """The filters as SQL conditions on one table's source, channel and team columns and the
    ``period`` column (its name, and how a bound is written for it), the values in ``params``
    (``:<column>_from`` and ``:<column>_to`` for the period). ``table``: an alias, for a join."""
    conditions = []
    if filters.source is not None:
        conditions.append(f"{table}source = :source")
        params["source"] = filters.source
    if filters.period is not None:
        column, bound = period
        conditions += [f"{table}{column} >= :{column}_from", f"{table}{column} < :{column}_to"]
        params[f"{column}_from"] = bound(as_utc(filters.period.start))
        params[f"{column}_to"] = bound(as_utc(filters.period.end))
    if filters.channel is not None:
        conditions.append(f"{table}{channel} = :channel")
        params["channel"] = filters.channel
    if filters.team is not None:
        conditions.append(f"{table}team = :team")
        params["team"] = filters.team
    return conditions


def day_conditions(db: SyncDb, filters: Filters, params: dict[str, Any]) -> list[str]:
    """filter_days as SQL on a daily table (source, day, channel and team columns)."""
    return filter_conditions(filters, params, period=("day", lambda at: db.day(at.date())))


def _case_conditions(db: SyncDb, filters: Filters, params: dict[str, Any]) -> list[str]:
    """_filter_cases by fulfilled_at, as SQL on the cases."""
    return filter_conditions(
        filters, params, period=("fulfilled_at", db.time), channel="first_channel"
    )


def _grouped(
    db: SyncDb, statement: str, params: dict[str, Any], counts: int
) -> list[tuple[bool, tuple[Any, ...]]]:
    """A grouped count off a daily table, in window_counts' form (the counts integers:
    PostgreSQL's sum of a bigint is a numeric)."""
    found = []
    for row in db.rows(statement, params):
        keys, numbers = row[: len(row) - counts], row[len(row) - counts :]
        found.append((True, (*keys, *(int(v or 0) for v in numbers))))
    return found


def demand_counts_of_days(
    db: SyncDb, filters: Filters, *, by: str = "purpose", purpose: str | None = None
) -> list[tuple[bool, tuple[Any, ...]]]:
    """demand_counts' counts of whole days, off demand_days: (key, demand type, demands)."""
    params: dict[str, Any] = {}
    conditions = day_conditions(db, filters, params)
    if purpose is not None:
        conditions.append("purpose = :purpose")
        params["purpose"] = purpose
    column = "purpose" if by == "purpose" else "channel"
    return _grouped(
        db,
        f"SELECT {column}, demand_type, sum(demands) FROM demand_days{_where(conditions)} "
        f"GROUP BY {column}, demand_type",
        params,
        1,
    )


def case_counts_of_days(
    db: SyncDb, filters: Filters, purpose: str | None = None
) -> list[tuple[bool, tuple[Any, ...]]]:
    """fulfilled_case_counts' counts of whole days, off case_days: (purpose, fulfilled,
    contacts, one-stop)."""
    params: dict[str, Any] = {}
    conditions = day_conditions(db, filters, params)
    if purpose is not None:
        conditions.append("purpose = :purpose")
        params["purpose"] = purpose
    return _grouped(
        db,
        "SELECT purpose, sum(fulfilled), sum(contacts), sum(one_stop) "
        f"FROM case_days{_where(conditions)} GROUP BY purpose",
        params,
        3,
    )


def percentiles_of_days(
    db: SyncDb, filters: Filters, quantiles: Sequence[float], *, purpose: str | None = None
) -> dict[str, dict[float, float]]:
    """end_to_end_percentiles of whole days: the bands' counts off case_time_days, then the
    seeks (_banded_percentiles)."""
    params: dict[str, Any] = {}
    conditions = day_conditions(db, filters, params)
    if purpose is not None:
        conditions.append("purpose = :purpose")
        params["purpose"] = purpose
    bands = bands_of(
        _grouped(
            db,
            f"SELECT purpose, band, sum(cases) FROM case_time_days{_where(conditions)} "
            "GROUP BY purpose, band",
            params,
            1,
        )
    )
    return _banded_percentiles(db, filters, quantiles, bands)


def _none_if_empty(value: str | None) -> str | None:
    return value or None


_DAY = timedelta(days=1)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


@dataclass(frozen=True)
class WindowSplit:
    """A period that is not whole UTC days, counted as whole days off a daily table and the
    rows of its partial days: the days in ``days`` (a whole-day period, or None) are summed
    from the daily table, and each (period, sign) of ``rows`` adds (1) or takes away (-1)
    the rows in that period."""

    days: Period | None
    rows: tuple[tuple[Period, int], ...]


def split_window(period: Period, *, now: datetime | None = None) -> WindowSplit:
    """``period`` as its whole UTC days and its partial first and last days (or its one
    partial day). A partial day [a, b) of day D is read either as its rows in [a, b), or as
    D's day row less D's rows in [D, a) and [b, D + 1): the same count, since a day row
    holds exactly the rows of its day, both in one statement (one snapshot). Whichever side
    has less time elapsed by ``now`` is read (rows occur up to now, so the time left of
    today holds almost none: the publisher's window ending now is today's day row less
    nothing). ``now`` only chooses; the counts do not depend on it."""
    start, end = as_utc(period.start), as_utc(period.end)
    present = datetime.now(UTC) if now is None else as_utc(now)

    def elapsed(a: datetime, b: datetime) -> timedelta:
        return max(min(b, present) - a, timedelta(0))

    first, last = start.date(), end.date()
    pieces: list[tuple[date, datetime, datetime]] = []  # (day, from, to) within the day
    if first == last:
        pieces.append((first, start, end))
        whole = (first, first)
    else:
        whole = (first, last)
        if start != _midnight(first):
            pieces.append((first, start, _midnight(first) + _DAY))
            whole = (first + _DAY, last)
        if end != _midnight(last):
            pieces.append((last, _midnight(last), end))
    day_from, day_to = whole
    rows: list[tuple[Period, int]] = []
    for day, a, b in pieces:
        opens = _midnight(day)
        closes = opens + _DAY if day < date.max else opens  # no day after the last
        if closes == opens or elapsed(opens, a) + elapsed(b, closes) >= elapsed(a, b):
            rows.append((Period(a, b), 1))
            continue
        # The day row less the day's rows outside the period: next to the whole days.
        day_from, day_to = min(day_from, day), max(day_to, day + _DAY)
        rows += [(Period(x, y), -1) for x, y in ((opens, a), (b, closes)) if x < y]
    days = Period(_midnight(day_from), _midnight(day_to)) if day_from < day_to else None
    return WindowSplit(days, tuple(rows))


async def window_counts(
    session: AsyncSession,
    filters: Filters,
    *,
    days: Callable[[Filters], Any],
    rows: Callable[[Filters], Any],
    counts: int,
    by_range: bool,
    now: datetime | None = None,
) -> list[tuple[bool, tuple[Any, ...]]]:
    """A grouped count over the filters' period, each row (from a daily table?, the row):
    ``days(filters)`` is the statement off a daily table (whole days only), ``rows(filters)``
    the same counts from the rows one by one; the last ``counts`` columns of each are counts.
    Whole days read the daily table; another period, when its rows can be read by range
    (``by_range``: an index on the time), is split (split_window) and read in one statement,
    the rows taken away negated; else every row of the period is counted. The same groups
    may come more than once (from each part), and a group may add up to 0: callers sum."""

    def counted(values: tuple[Any, ...], sign: int = 1) -> tuple[Any, ...]:
        # Integers, signed (PostgreSQL's sum of a bigint is a numeric).
        keys, numbers = values[: len(values) - counts], values[len(values) - counts :]
        return (*keys, *(sign * int(v or 0) for v in numbers))

    if whole_days(filters):
        found = await session.execute(days(filters))
        return [(True, counted(tuple(row))) for row in found.all()]
    if not by_range or filters.period is None:
        found = await session.execute(rows(filters))
        return [(False, counted(tuple(row))) for row in found.all()]
    split = split_window(filters.period, now=now)
    parts: list[Any] = []
    signs: list[tuple[bool, int]] = []
    if split.days is not None:
        parts.append(days(replace(filters, period=split.days)))
        signs.append((True, 1))
    for period, sign in split.rows:
        parts.append(rows(replace(filters, period=period)))
        signs.append((False, sign))
    # Each part tagged with its number, so a row's sign and origin are known.
    tagged = [part.add_columns(literal_column(str(n))) for n, part in enumerate(parts)]
    statement: Any = tagged[0] if len(tagged) == 1 else union_all(*tagged)
    split_found: list[tuple[bool, tuple[Any, ...]]] = []
    for row in (await session.execute(statement)).all():
        values: tuple[Any, ...] = tuple(row)
        from_days, sign = signs[int(values[-1])]
        split_found.append((from_days, counted(values[:-1], sign)))
    return split_found


def _count_where(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


@dataclass(frozen=True)
class DemandCounts:
    key: str
    volume: int
    value: int
    failure: int
    unknown: int


async def demand_counts(
    session: AsyncSession,
    filters: Filters,
    *,
    by: str = "purpose",
    purpose: str | None = None,
    now: datetime | None = None,
) -> list[DemandCounts]:
    """Volume by type, grouped by 'purpose' or 'channel', largest volume first. A purpose's
    counts over a period that is not whole days are split (window_counts); ``now`` only
    chooses how its partial days are read."""

    def days(whole: Filters) -> Any:
        day_column = DemandDayRow.purpose if by == "purpose" else DemandDayRow.channel
        statement: Any = select(
            day_column, DemandDayRow.demand_type, func.sum(DemandDayRow.demands)
        )
        statement = filter_days(statement, whole)
        if purpose is not None:
            statement = statement.where(DemandDayRow.purpose == purpose)
        return statement.group_by(day_column, DemandDayRow.demand_type)

    def rows(some: Filters) -> Any:
        column = DemandFactRow.purpose if by == "purpose" else DemandFactRow.channel
        # Grouping by (key, type) lets an index on (purpose, demand_type) answer on its own.
        statement: Any = select(column, DemandFactRow.demand_type, func.count())
        statement = filter_demands(statement, some)
        if purpose is not None:
            statement = statement.where(DemandFactRow.purpose == purpose)
        return statement.group_by(column, DemandFactRow.demand_type)

    if whole_days(filters):
        found = await run_sync(
            session, lambda db: demand_counts_of_days(db, filters, by=by, purpose=purpose)
        )
    else:
        found = await window_counts(
            session, filters, days=days, rows=rows, counts=1, by_range=purpose is not None, now=now
        )
    return demand_counts_of(found)


def demand_counts_of(found: Sequence[tuple[bool, tuple[Any, ...]]]) -> list[DemandCounts]:
    """demand_counts' figures from its grouped counts (window_counts' form)."""
    by_key: dict[str, Counter[str]] = {}
    for _from_days, (key, demand_type, count) in found:
        by_key.setdefault(key, Counter())[demand_type] += count
    counts = [
        DemandCounts(
            key,
            sum(types.values()),
            types.get("value", 0),
            types.get("failure", 0),
            types.get("unknown", 0),
        )
        for key, types in by_key.items()
        if any(types.values())  # a split may add a group up to none
    ]
    return sorted(counts, key=lambda c: (-c.volume, c.key))


@dataclass(frozen=True)
class CaseCounts:
    purpose: str
    fulfilled: int
    contacts: int
    one_stop: int


async def fulfilled_case_counts(
    session: AsyncSession,
    filters: Filters,
    *,
    purpose: str | None = None,
    now: datetime | None = None,
) -> dict[str, CaseCounts]:
    """The measured cases fulfilled in the period, their contacts and one-stop count, per
    purpose (case_days for whole days; a purpose's other periods split, as demand_counts)."""

    def days(whole: Filters) -> Any:
        statement: Any = select(
            CaseDayRow.purpose,
            func.sum(CaseDayRow.fulfilled),
            func.sum(CaseDayRow.contacts),
            func.sum(CaseDayRow.one_stop),
        )
        statement = filter_days(statement, whole, CaseDayRow)
        if purpose is not None:
            statement = statement.where(CaseDayRow.purpose == purpose)
        return statement.group_by(CaseDayRow.purpose)

    def rows(some: Filters) -> Any:
        statement: Any = select(
            CaseRow.purpose,
            func.count(),
            func.coalesce(func.sum(CaseRow.contacts), 0),
            _count_where(CaseRow.one_stop.is_(True)),
        ).where(CaseRow.measured.is_(True), CaseRow.status == "fulfilled")
        statement = _filter_cases(statement, some, by=CaseRow.fulfilled_at)
        if purpose is not None:
            statement = statement.where(CaseRow.purpose == purpose)
        return statement.group_by(CaseRow.purpose)

    if whole_days(filters):
        found = await run_sync(session, lambda db: case_counts_of_days(db, filters, purpose))
    else:
        found = await window_counts(
            session, filters, days=days, rows=rows, counts=3, by_range=purpose is not None, now=now
        )
    return case_counts_of(found)


def case_counts_of(found: Sequence[tuple[bool, tuple[Any, ...]]]) -> dict[str, CaseCounts]:
    """fulfilled_case_counts' figures from its grouped counts (window_counts' form)."""
    # A case without a purpose is kept as '' in case_days and, as from the cases, counted
    # under none.
    sums: dict[Any, list[int]] = {}
    for _from_days, (case_purpose, *numbers) in found:
        total = sums.setdefault(case_purpose or None, [0, 0, 0])
        for i, n in enumerate(numbers):
            total[i] += n
    return {p: CaseCounts(p, n, c, o) for p, (n, c, o) in sums.items() if n}


async def end_to_end_percentiles(
    session: AsyncSession,
    filters: Filters,
    quantiles: Sequence[float],
    *,
    purpose: str | None = None,
    now: datetime | None = None,
) -> dict[str, dict[float, float]]:
    """Percentiles of the end-to-end times of the cases fulfilled in the period, per purpose,
    by linear interpolation between closest ranks (domain/percentiles.py), reading only the
    two values either side of each rank off the (purpose, end_to_end_seconds) index rather
    than every time: a million cases cost a few index seeks, not a million rows. The bands'
    counts come from case_time_days for whole days, and for a purpose's other periods
    (the publisher's trailing window) from its whole days and its partial days' times
    (window_counts; ``now`` only chooses how)."""

    def fulfilled() -> Any:
        # A time is only ever set on a measured case (domain/cases.py), so no more filter.
        statement: Any = select(CaseRow.end_to_end_seconds).where(
            CaseRow.end_to_end_seconds.is_not(None)
        )
        return _filter_cases(statement, filters, by=CaseRow.fulfilled_at)

    if whole_days(filters):
        return await run_sync(
            session, lambda db: percentiles_of_days(db, filters, quantiles, purpose=purpose)
        )
    if purpose is not None:
        bands = await _period_bands(session, filters, purpose, now)
        return await run_sync(
            session, lambda db: _banded_percentiles(db, filters, quantiles, bands)
        )
    counting: Any = select(CaseRow.purpose, func.count()).where(
        CaseRow.end_to_end_seconds.is_not(None)
    )
    counting = _filter_cases(counting, filters, by=CaseRow.fulfilled_at)
    if purpose is not None:
        counting = counting.where(CaseRow.purpose == purpose)
    sizes = (await session.execute(counting.group_by(CaseRow.purpose))).all()
    found: dict[str, dict[float, float]] = {}
    for case_purpose, size in sizes:
        found[case_purpose] = {}
        for q in quantiles:
            rank = (int(size) - 1) * q / 100
            below = math.floor(rank)
            rows = await session.execute(
                fulfilled()
                .where(CaseRow.purpose == case_purpose)
                .order_by(CaseRow.end_to_end_seconds)
                .limit(2)
                .offset(below)
            )
            values = [float(v) for v in rows.scalars()]
            above = values[1] if len(values) > 1 else values[0]
            found[case_purpose][q] = values[0] + (rank - below) * (above - values[0])
    return found


async def _period_bands(
    session: AsyncSession, filters: Filters, purpose: str | None, now: datetime | None
) -> dict[str, list[tuple[int, int]]]:
    """How many of the period's fulfilled cases' times lie in each band, per purpose as
    case_time_days keeps it ('' for none): off case_time_days for whole days, else split
    (a purpose's partial days' times banded here, as the write path bands them)."""

    def days(whole: Filters) -> Any:
        statement: Any = select(
            CaseTimeDayRow.purpose, CaseTimeDayRow.band, func.sum(CaseTimeDayRow.cases)
        )
        statement = filter_days(statement, whole, CaseTimeDayRow)
        if purpose is not None:
            statement = statement.where(CaseTimeDayRow.purpose == purpose)
        return statement.group_by(CaseTimeDayRow.purpose, CaseTimeDayRow.band)

    def rows(some: Filters) -> Any:
        # Each time once, not grouped: grouped by the time, SQLite walked the purpose's
        # every time on the (purpose, time) index rather than the part of a day's cases on
        # the (purpose, fulfilled_at) one.
        statement: Any = select(CaseRow.purpose, CaseRow.end_to_end_seconds, literal_column("1"))
        statement = statement.where(
            CaseRow.purpose == purpose, CaseRow.end_to_end_seconds.is_not(None)
        )
        return _filter_cases(statement, some, by=CaseRow.fulfilled_at)

    return bands_of(
        await window_counts(
            session, filters, days=days, rows=rows, counts=1, by_range=True, now=now
        )
    )


def bands_of(found: Sequence[tuple[bool, tuple[Any, ...]]]) -> dict[str, list[tuple[int, int]]]:
    """Per purpose, the (band, count) of the period's times, from window_counts' form: a
    daily table's rows carry a band, the cases' rows a time to band."""
    counted: Counter[tuple[str, int]] = Counter()
    for from_days, (band_purpose, value, n) in found:
        band = int(value) if from_days else time_band(float(value))
        counted[(band_purpose or "", band)] += n
    bands: dict[str, list[tuple[int, int]]] = {}
    for (band_purpose, band), n in counted.items():
        if n:
            bands.setdefault(band_purpose, []).append((band, n))
    return bands


def _banded_percentiles(
    db: SyncDb,
    filters: Filters,
    quantiles: Sequence[float],
    bands: dict[str, list[tuple[int, int]]],
) -> dict[str, dict[float, float]]:
    """end_to_end_percentiles off the period's bands (_period_bands, _bands_of_days): the
    bands' counts say which band holds each rank and how many times lie below it; the two
    times either side of the rank are then read from that band on, off the cases' index (a
    few seeks, not the whole period). The same times as the full walk, so the same
    percentiles."""
    # Every seek (purpose, quantile) in one statement: a UNION ALL of each seek's two
    # times, tagged with its number (one round trip, not one per seek). The cases' filters
    # are the same for every seek: bound once.
    params: dict[str, Any] = {}
    filtered = _case_conditions(db, filters, params)
    seeks: list[tuple[Any, float, float, int]] = []  # purpose, quantile, rank, below
    parts: list[str] = []

    def part(conditions: list[str], order: str, limit: int, offset: int) -> None:
        parts.append(
            f"SELECT {len(seeks)}, s.end_to_end_seconds FROM (SELECT end_to_end_seconds "
            f"FROM cases WHERE {' AND '.join(conditions)} ORDER BY end_to_end_seconds {order} "
            f"LIMIT {limit} OFFSET {offset}) s"
        )

    purposes: dict[str, str] = {}  # purpose -> its parameter's name
    for band_purpose, counts in bands.items():
        key: Any = band_purpose or None  # a case without a purpose, as the cases hold it
        if key is None:
            of_purpose = "purpose IS NULL"
        else:
            name = purposes.setdefault(key, f"p{len(purposes)}")
            params[name] = key
            of_purpose = f"purpose = :{name}"
        counts.sort()
        size = sum(n for _band, n in counts)
        for q in quantiles:
            rank = (size - 1) * q / 100
            below = math.floor(rank)
            band, before, in_band = _band_of(counts, below)
            conditions = ["end_to_end_seconds IS NOT NULL", *filtered, of_purpose]
            floor = band_floor(band)
            ceiling = None if band == _TOP_BAND else band_floor(band + 1)
            if floor is not None:
                params[f"b{band}"] = floor
                conditions.append(f"end_to_end_seconds >= :b{band}")
            # The OFFSET walks the band's times of all time, those out of the period too:
            # a rank past the band's middle is read from the band's top down instead (the
            # band's count in the period says where that is), so a seek walks at most half
            # of its band, not all of it.
            offset = below - before
            if ceiling is None or offset < in_band // 2:
                part(conditions, "", 2, offset)
            else:
                params[f"b{band + 1}"] = ceiling
                within = [*conditions, f"end_to_end_seconds < :b{band + 1}"]
                if offset + 1 < in_band:  # both times in this band
                    part(within, "DESC", 2, in_band - 2 - offset)
                else:  # the band's last time, and the first of the bands above it
                    part(within, "DESC", 1, 0)
                    above_band = [
                        "end_to_end_seconds IS NOT NULL",
                        *filtered,
                        of_purpose,
                        f"end_to_end_seconds >= :b{band + 1}",
                    ]
                    part(above_band, "", 1, 0)
            seeks.append((key, q, rank, below))
    times: dict[int, list[float]] = {}
    for start in range(0, len(parts), _SEEKS_PER_STATEMENT):
        chunk = parts[start : start + _SEEKS_PER_STATEMENT]
        for i, seconds in db.rows(" UNION ALL ".join(chunk), params):
            times.setdefault(int(i), []).append(float(seconds))
    found: dict[Any, dict[float, float]] = {key: {} for key, *_ in seeks}
    for i, (key, q, rank, below) in enumerate(seeks):
        values = sorted(times[i])  # the seek's two times, in order
        above = values[1] if len(values) > 1 else values[0]
        found[key][q] = values[0] + (rank - below) * (above - values[0])
    return found


# SQLite allows 500 terms in a compound SELECT (a seek is one or two).
_SEEKS_PER_STATEMENT = 100
_TOP_BAND = time_band(math.inf)  # no bound above it


def _band_of(counts: Sequence[tuple[int, int]], below: int) -> tuple[int, int, int]:
    """The band (of (band, count) in order) holding the time at 0-based rank ``below``, how
    many times lie in the bands before it, and how many in it."""
    before = 0
    for band, n in counts:
        if below < before + n:
            return band, before, n
        before += n
    return counts[-1][0], before - counts[-1][1], counts[-1][1]


async def open_case_counts(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> dict[str, int]:
    """Cases open now, per purpose (the period does not apply: open is now), off the counts
    the write path keeps (db/open_cases.py) rather than a count of every open case."""
    found = await open_cases.counts(
        session,
        source=filters.source,
        channel=filters.channel,
        team=filters.team,
        purposes=None if purpose is None else [purpose],
    )
    return found  # type: ignore[return-value]  # None for a case without a purpose, as before


async def end_to_end_seconds(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> dict[str, list[float]]:
    """End-to-end times of the cases fulfilled in the period, per purpose."""
    statement: Any = select(CaseRow.purpose, CaseRow.end_to_end_seconds).where(
        CaseRow.measured.is_(True), CaseRow.end_to_end_seconds.is_not(None)
    )
    statement = _filter_cases(statement, filters, by=CaseRow.fulfilled_at)
    if purpose is not None:
        statement = statement.where(CaseRow.purpose == purpose)
    values: dict[str, list[float]] = {}
    for case_purpose, seconds in (await session.execute(statement)).all():
        values.setdefault(case_purpose, []).append(float(seconds))
    return values


async def end_to_end_histogram(
    session: AsyncSession, filters: Filters, *, purpose: str
) -> list[tuple[float | None, int]]:
    """domain/buckets.histogram of the end-to-end times of the purpose's cases fulfilled in
    the period, counted by the database per bucket (a few rows, not every time)."""
    if whole_days(filters):
        return await _banded_histogram(session, filters, purpose)
    bucket = case(
        *((CaseRow.end_to_end_seconds <= bound, i) for i, bound in enumerate(END_TO_END_BUCKETS)),
        else_=len(END_TO_END_BUCKETS),
    )
    statement: Any = select(bucket, func.count()).where(
        CaseRow.purpose == purpose,
        CaseRow.measured.is_(True),
        CaseRow.end_to_end_seconds.is_not(None),
    )
    statement = _filter_cases(statement, filters, by=CaseRow.fulfilled_at).group_by(bucket)
    counts = [0] * (len(END_TO_END_BUCKETS) + 1)
    for index, count in (await session.execute(statement)).all():
        counts[int(index)] = int(count)
    bounds: list[float | None] = [*END_TO_END_BUCKETS, None]
    return list(zip(bounds, counts, strict=True))


async def _banded_histogram(
    session: AsyncSession, filters: Filters, purpose: str
) -> list[tuple[float | None, int]]:
    """end_to_end_histogram off case_time_days, as the percentiles are: the times at or
    under a bucket's bound are the bands wholly under it, counted per day, and those of the
    one band the bound cuts, at or under the bound, counted off the cases' index (one
    band's times, not the period's). The same counts as the full count."""
    statement: Any = select(CaseTimeDayRow.band, func.sum(CaseTimeDayRow.cases)).where(
        CaseTimeDayRow.purpose == purpose
    )
    statement = filter_days(statement, filters, CaseTimeDayRow).group_by(CaseTimeDayRow.band)
    bands = {int(band): int(n) for band, n in (await session.execute(statement)).all() if n}
    total = sum(bands.values())
    cut = [time_band(bound) for bound in END_TO_END_BUCKETS]

    def in_cut_band(band: int, bound: float) -> tuple[Any, bool]:
        """The count of the band's times at or under the bound, or (True) of those above it
        when the bound lies in the band's upper half: the count walks the band's times of
        all time from one end to the bound, so from the nearer end."""
        floor, ceiling = band_floor(band), None if band == _TOP_BAND else band_floor(band + 1)
        query: Any = select(func.count()).where(
            CaseRow.purpose == purpose, CaseRow.end_to_end_seconds.is_not(None)
        )
        from_top = floor is not None and ceiling is not None and bound > math.sqrt(floor * ceiling)
        if from_top:
            query = query.where(
                CaseRow.end_to_end_seconds > bound, CaseRow.end_to_end_seconds < ceiling
            )
        else:
            query = query.where(CaseRow.end_to_end_seconds <= bound)
            if floor is not None:
                query = query.where(CaseRow.end_to_end_seconds >= floor)
        return _filter_cases(query, filters, by=CaseRow.fulfilled_at).scalar_subquery(), from_top

    counted = {
        i: (band, *in_cut_band(band, bound))
        for i, (band, bound) in enumerate(zip(cut, END_TO_END_BUCKETS, strict=True))
        if bands.get(band)
    }
    exact: dict[int, int] = {}
    if counted:
        row = (await session.execute(select(*(q for _b, q, _t in counted.values())))).one()
        for (i, (band, _query, from_top)), n in zip(counted.items(), row, strict=True):
            exact[i] = bands[band] - int(n or 0) if from_top else int(n or 0)
    at_or_under = [
        sum(n for b, n in bands.items() if b < band) + exact.get(i, 0) for i, band in enumerate(cut)
    ]
    counts = [n - (at_or_under[i - 1] if i else 0) for i, n in enumerate(at_or_under)] + [
        total - (at_or_under[-1] if at_or_under else 0)
    ]
    bounds: list[float | None] = [*END_TO_END_BUCKETS, None]
    return list(zip(bounds, counts, strict=True))


async def open_case_ages(
    session: AsyncSession,
    filters: Filters,
    *,
    purpose: str,
    now: datetime,
    quantiles: Sequence[float],
    open_count: int | None = None,
) -> tuple[int, dict[float, float], float | None]:
    """How many of the purpose's cases are open now, their ages' percentiles (seconds, as
    domain/percentiles.percentile interpolates) and the oldest age: the count kept by the
    write path (db/open_cases.py) and a few seeks on the (purpose, status, measured,
    started_at) index, each from the nearer end, not every open case. An age is never below
    0 (a case started after ``now``). ``open_count``: the purpose's open cases under these
    filters when the caller has read them already (open_case_counts), not read again."""
    statement: Any = select(CaseRow.started_at).where(
        CaseRow.purpose == purpose, CaseRow.measured.is_(True), CaseRow.status == "open"
    )
    statement = _filter_cases(
        statement, Filters(None, filters.channel, filters.team, filters.source), by=None
    )
    size = open_count
    if size is None:
        counted = await open_cases.counts(
            session,
            source=filters.source,
            channel=filters.channel,
            team=filters.team,
            purposes=[purpose],
        )
        size = counted.get(purpose, 0)
    if not size:
        return 0, {}, None
    # Ages in ascending order are the cases youngest first; an OFFSET walks the index, so a
    # rank past the middle is read from the oldest end instead.
    youngest_first = statement.order_by(CaseRow.started_at.desc())
    oldest_first = statement.order_by(CaseRow.started_at)

    async def ages(offset: int, limit: int) -> list[float]:
        """Ages at ranks offset .. offset + limit - 1, youngest first."""
        if offset + limit / 2 <= size / 2:
            rows = await session.execute(youngest_first.limit(limit).offset(offset))
            found = list(rows.scalars())
        else:
            last = min(offset + limit, size) - 1
            rows = await session.execute(
                oldest_first.limit(last - offset + 1).offset(size - 1 - last)
            )
            found = list(reversed(rows.scalars().all()))
        return [max(0.0, (now - as_utc(at)).total_seconds()) for at in found]

    found: dict[float, float] = {}
    for q in quantiles:
        rank = (size - 1) * q / 100
        below = math.floor(rank)
        pair = await ages(below, 2)
        above = pair[1] if len(pair) > 1 else pair[0]
        found[q] = pair[0] + (rank - below) * (above - pair[0])
    (oldest,) = await ages(size - 1, 1)
    return size, found, oldest


async def open_case_starts(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> dict[str, list[datetime]]:
    """When each case still open now started (the period does not apply: open is now)."""
    statement: Any = select(CaseRow.purpose, CaseRow.started_at).where(
        CaseRow.measured.is_(True), CaseRow.status == "open"
    )
    statement = _filter_cases(
        statement, Filters(None, filters.channel, filters.team, filters.source), by=None
    )
    if purpose is not None:
        statement = statement.where(CaseRow.purpose == purpose)
    starts: dict[str, list[datetime]] = {}
    for case_purpose, started in (await session.execute(statement)).all():
        starts.setdefault(case_purpose, []).append(as_utc(started))
    return starts


async def failure_breakdown(
    session: AsyncSession,
    filters: Filters,
    *,
    purpose: str,
    by: str,
    now: datetime | None = None,
) -> list[tuple[str, int]]:
    """Failure demands of a purpose by 'kind' or by 'cause' (the purpose they trace to);
    a period that is not whole days split, as demand_counts."""

    def days(whole: Filters) -> Any:
        day_column = DemandDayRow.failure_kind if by == "kind" else DemandDayRow.cause_purpose
        statement: Any = select(day_column, func.sum(DemandDayRow.demands)).where(
            DemandDayRow.purpose == purpose, DemandDayRow.demand_type == "failure"
        )
        return filter_days(statement, whole).group_by(day_column)

    def rows(some: Filters) -> Any:
        column = DemandFactRow.failure_kind if by == "kind" else DemandFactRow.cause_purpose
        statement: Any = select(column, func.count()).where(
            DemandFactRow.purpose == purpose, DemandFactRow.demand_type == "failure"
        )
        return filter_demands(statement, some).group_by(column)

    found = await window_counts(
        session, filters, days=days, rows=rows, counts=1, by_range=True, now=now
    )
    missing = "unspecified" if by == "kind" else "untraced"
    counted: Counter[str] = Counter()
    for _from_days, (key, n) in found:
        counted[key or missing] += n  # none is kept as '' in demand_days
    return sorted(((k, n) for k, n in counted.items() if n), key=lambda kv: (-kv[1], kv[0]))


async def demand_day_counts(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> list[tuple[date, str, int]]:
    """(UTC day, demand type, demands) as they count now, oldest day first: for series over
    time, off demand_days when the filter is whole days."""
    if not whole_days(filters):
        counts: Counter[tuple[date, str]] = Counter(
            (at.date(), kind)
            for at, kind in await demand_moments(session, filters, purpose=purpose)
        )
        return [(day, kind, n) for (day, kind), n in sorted(counts.items())]
    statement: Any = select(
        DemandDayRow.day, DemandDayRow.demand_type, func.sum(DemandDayRow.demands)
    )
    statement = filter_days(statement, filters)
    if purpose is not None:
        statement = statement.where(DemandDayRow.purpose == purpose)
    statement = statement.group_by(DemandDayRow.day, DemandDayRow.demand_type)
    rows = (await session.execute(statement)).all()
    return sorted((as_date(d), str(kind), int(n)) for d, kind, n in rows if n)


def as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


async def demand_moments(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> list[tuple[datetime, str]]:
    """(occurred_at, demand_type) of every demand, oldest first: for series over time."""
    statement: Any = select(DemandFactRow.occurred_at, DemandFactRow.demand_type)
    statement = filter_demands(statement, filters)
    if purpose is not None:
        statement = statement.where(DemandFactRow.purpose == purpose)
    rows = (await session.execute(statement.order_by(DemandFactRow.occurred_at))).all()
    return [(as_utc(at), kind) for at, kind in rows]


async def fulfilment_series(
    session: AsyncSession,
    *,
    purpose: str,
    since: datetime | None,
    source: str | None = None,
    ends: tuple[int, int] | None = None,
) -> list[tuple[datetime, float]]:
    """(fulfilled_at, end-to-end seconds) in order of fulfilment: the XmR series. With
    ``ends`` (first, last), only the first and the last so many points (all of them when
    there are no more): what a chart of a baseline and its latest points needs, read off
    the (purpose, fulfilled_at) index instead of every case since the baseline started."""
    statement: Any = select(CaseRow.fulfilled_at, CaseRow.end_to_end_seconds).where(
        CaseRow.purpose == purpose,
        CaseRow.measured.is_(True),
        CaseRow.end_to_end_seconds.is_not(None),
        # Said outright (a time is only set on a fulfilled case), the read starts past the
        # open cases, which sort first on the (purpose, fulfilled_at) index: without it the
        # first points were found after looking up each open case of the purpose.
        CaseRow.fulfilled_at.is_not(None),
    )
    if since is not None:
        statement = statement.where(CaseRow.fulfilled_at >= since)
    if source is not None:
        statement = statement.where(CaseRow.source == source)

    async def read(ordered: Any, limit: int | None) -> list[tuple[datetime, float]]:
        rows = (await session.execute(ordered.limit(limit))).all()
        return [(as_utc(at), float(seconds)) for at, seconds in rows if at is not None]

    in_order = statement.order_by(CaseRow.fulfilled_at, CaseRow.case_id)
    if ends is None:
        return await read(in_order, None)
    first, last = ends
    head = await read(in_order, first + last)
    if len(head) < first + last:
        return head  # every point
    latest = statement.order_by(CaseRow.fulfilled_at.desc(), CaseRow.case_id.desc())
    return head[:first] + list(reversed(await read(latest, last)))


async def all_purposes(session: AsyncSession, *, source: str | None = None) -> list[str]:
    statement: Any = select(DemandDayRow.purpose).distinct()
    if source is not None:
        statement = statement.where(DemandDayRow.source == source)
    rows = await session.execute(statement)
    return sorted(rows.scalars())
