"""A period that is not whole UTC days (the publisher's trailing window) is counted as its
whole days off the daily aggregates plus its partial days' rows, or a partial day's row less
its rows outside the period (measures.split_window): the same counts, per purpose and
filter, as counting every row of the period, at random windows over random demands, cases
and relabels, on SQLite and PostgreSQL. Windows start and end at random instants, at
midnight, on a demand's or a fulfilment's very instant and a microsecond either side; the
present (which only chooses how a partial day is read) before, inside and after them."""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db import audit_sample, measures
from services.metrics.db.measures import Filters, split_window
from services.metrics.db.migrate import upgrade
from services.metrics.db.sql import as_utc
from services.metrics.domain.windows import Period
from services.metrics.ingest import apply_events
from shared.database.engine import create_engine, session_factory
from shared.events import CaseEventType, CausedBy, Channel, DemandType, Event
from tests.support.factories import case_event, demand_classified, demand_labelled
from tests.support.query_plans import reads_recorded, sqlite_plans

FIRST_DAY = date(2026, 3, 2)
DAYS = 5
PURPOSES = ("billing", "repair", "move home")
MICRO = timedelta(microseconds=1)
QUANTILES = (0.0, 10.0, 50.0, 85.0, 95.0, 100.0)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


def _instant(rng: random.Random) -> datetime:
    """Often a midnight or a microsecond either side of one, else anywhere in the days."""
    day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
    if rng.random() < 0.25:
        return _midnight(day) + rng.choice((-MICRO, timedelta(0), timedelta(0), MICRO))
    return _midnight(day) + timedelta(
        seconds=rng.randrange(86_400), microseconds=rng.choice((0, rng.randrange(10**6)))
    )


def _events(seed: int) -> list[list[Event]]:
    """Batches of demands over DAYS days (failures with kinds and causes, two sources, both
    channels, a team or none), fulfilments at random instants, and later relabels moving
    demands between purposes and types."""
    rng = random.Random(seed)
    demands: list[Event] = []
    for n in range(90):
        customer = n % 23
        kind = rng.choice(list(DemandType))
        demands.append(
            demand_classified(
                id=f"d-{n}", source="alpha" if n % 4 else "beta",
                customer_ref=f"C-{customer}", case_ref=f"K-{customer}",
                occurred_at=_instant(rng),
                channel=Channel.PHONE if rng.random() < 0.6 else Channel.EMAIL,
                team=rng.choice(("north", "south", None)),
                purpose=rng.choice(PURPOSES), demand_type=kind,
                failure_kind=rng.choice(("repeat", "not_done_right", None))
                if kind is DemandType.FAILURE else None,
                caused_by=CausedBy(kind="demand", ref=f"d-{n - 23}")
                if kind is DemandType.FAILURE and n >= 23 and rng.random() < 0.7 else None,
            )
        )  # fmt: skip
    sources = {e.demand.id: e.demand.source for e in demands}  # type: ignore[attr-defined]
    cases: list[Event] = [
        case_event(
            id=f"e-{c}", source="alpha" if c % 4 else "beta", customer_ref=f"C-{c}",
            case_ref=f"K-{c}", type=CaseEventType.FULFILLED, occurred_at=_instant(rng),
            purpose=rng.choice(PURPOSES),
        )
        for c in range(23)
        if c % 5
    ]  # fmt: skip
    labels: list[Event] = [
        demand_labelled(
            id=f"l-{n}", demand_id=f"d-{n}", demand_source=sources[f"d-{n}"],
            labelled_at=_midnight(FIRST_DAY + timedelta(days=DAYS + 1)),
            purpose=rng.choice(PURPOSES), demand_type=rng.choice(list(DemandType)),
        )
        for n in rng.sample(range(90), 25)
    ]  # fmt: skip
    everything = demands + cases + labels
    rng.shuffle(everything)
    return [everything[i : i + 17] for i in range(0, len(everything), 17)]


def _windows(seed: int, moments: list[datetime]) -> list[Period]:
    """Random windows: random instants, midnights, a stored row's instant and a microsecond
    either side, inside one day, whole days, empty ones before and after the data."""
    rng = random.Random(seed)

    def boundary() -> datetime:
        if rng.random() < 0.5:
            return _instant(rng)
        return rng.choice(moments) + rng.choice((-MICRO, timedelta(0), timedelta(0), MICRO))

    found = [
        Period(_midnight(FIRST_DAY) - timedelta(days=3, hours=5), _midnight(FIRST_DAY)),
        Period(_midnight(FIRST_DAY) + timedelta(hours=7), _midnight(FIRST_DAY + timedelta(2))),
        Period(_midnight(FIRST_DAY + timedelta(DAYS)), _midnight(FIRST_DAY) + timedelta(9, 3)),
    ]
    while len(found) < 30:
        a, b = boundary(), boundary()
        if len(found) % 5 == 0:  # inside one day
            b = a + timedelta(seconds=rng.randrange(1, 86_400))
        if a != b:
            found.append(Period(min(a, b), max(a, b)))
    return found


def _moment(value: Any) -> datetime:
    """A time as read by plain SQL: text on SQLite."""
    return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)


def _in(period: Period | None, moment: Any) -> bool:
    assert period is not None
    return moment is not None and period.contains(_moment(moment))


class Oracle:
    """Every count recounted row by row from the stored rows, as the measures define it."""

    def __init__(self, facts: list[Any], demands: list[Any], cases: list[Any]) -> None:
        self.facts, self.demands, self.cases = facts, demands, cases

    @staticmethod
    def _kept(row: Any, filters: Filters) -> bool:
        return (
            (filters.source is None or row.source == filters.source)
            and (filters.channel is None or row.channel == filters.channel)
            and (filters.team is None or row.team == filters.team)
        )

    def demand_counts(self, filters: Filters, purpose: str, by: str) -> list[Any]:
        types: dict[str, Counter[str]] = {}
        for f in self.facts:
            if f.purpose == purpose and self._kept(f, filters) and _in(filters.period, f.at):
                types.setdefault(f.purpose if by == "purpose" else f.channel, Counter())[
                    f.demand_type
                ] += 1
        counts = [
            measures.DemandCounts(k, t.total(), t["value"], t["failure"], t["unknown"])
            for k, t in types.items()
        ]
        return sorted(counts, key=lambda c: (-c.volume, c.key))

    def failure_breakdown(self, filters: Filters, purpose: str, by: str) -> list[Any]:
        found: Counter[str] = Counter()
        for f in self.facts:
            kept = self._kept(f, filters) and _in(filters.period, f.at)
            if kept and (f.purpose, f.demand_type) == (purpose, "failure"):
                key = f.failure_kind if by == "kind" else f.cause_purpose
                found[key or ("unspecified" if by == "kind" else "untraced")] += 1
        return sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))

    def machine_counts(self, filters: Filters, purpose: str, by: str) -> Counter[Any]:
        found: Counter[Any] = Counter()
        for d in self.demands:
            if d.purpose == purpose and self._kept(d, filters) and _in(filters.period, d.at):
                key = {"purpose": d.purpose, "channel": d.channel, "all": "all"}[by]
                found[(key, (d.purpose, measures.as_date(d.week)), d.demand_type)] += 1
        return found

    def fulfilled(self, filters: Filters, purpose: str) -> dict[str, Any]:
        found: dict[str, list[int]] = {}
        for c in self.cases:
            if (c.purpose, c.status, bool(c.measured)) != (purpose, "fulfilled", True):
                continue
            if self._kept(c, filters) and _in(filters.period, c.at):
                n = found.setdefault(purpose, [0, 0, 0])
                n[0], n[1], n[2] = n[0] + 1, n[1] + c.contacts, n[2] + int(bool(c.one_stop))
        return {p: measures.CaseCounts(p, *n) for p, n in found.items()}

    def percentiles(
        self, filters: Filters, purpose: str, quantiles: Iterable[float]
    ) -> dict[str, dict[float, float]]:
        """Between the closest ranks, as the measures interpolate."""
        times = sorted(
            float(c.e2e)
            for c in self.cases
            if c.purpose == purpose and c.e2e is not None and self._kept(c, filters)
            if _in(filters.period, c.at)
        )
        if not times:
            return {}
        found = {}
        for q in quantiles:
            rank = (len(times) - 1) * q / 100
            below = math.floor(rank)
            above = times[min(below + 1, len(times) - 1)]
            found[q] = times[below] + (rank - below) * (above - times[below])
        return {purpose: found}


async def _oracle(session: AsyncSession) -> Oracle:
    async def rows(sql: str) -> list[Any]:
        return list((await session.execute(text(sql))).all())

    facts = await rows(
        "SELECT source, channel, team, purpose, demand_type, failure_kind, cause_purpose, "
        "occurred_at AS at FROM demand_facts"
    )
    demands = await rows(
        "SELECT source, channel, team, purpose, demand_type, week_start AS week, "
        "occurred_at AS at FROM demands"
    )
    cases = await rows(
        "SELECT source, first_channel AS channel, team, purpose, status, measured, "
        "contacts, one_stop, fulfilled_at AS at, end_to_end_seconds AS e2e FROM cases"
    )
    return Oracle(facts, demands, cases)


async def _machine(
    session: AsyncSession, filters: Filters, purpose: str, by: Any, now: Any
) -> Counter[Any]:
    found = await audit_sample.machine_counts(session, filters, by=by, purpose=purpose, now=now)
    counted = Counter(
        {
            (m.group, (m.stratum[0], measures.as_date(m.stratum[1])), m.demand_type): m.count
            for m in found
        }
    )
    assert len(counted) == len(found), "a group once"
    return counted


def _presents(period: Period, rng: random.Random) -> Iterable[datetime]:
    """The publisher's (the window's end), and one inside the window or long after it."""
    inside = period.start + (period.end - period.start) * rng.random()
    return (period.end, rng.choice((inside, period.end + timedelta(days=rng.randrange(1, 30)))))


@pytest.mark.integration
async def test_a_split_window_counts_what_every_row_of_it_counts(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    rng = random.Random(5)
    ways: Counter[str] = Counter()
    fulfilled = 0
    try:
        sessions = session_factory(engine)
        for batch in _events(seed=3):
            async with sessions.begin() as session:
                assert not (await apply_events(session, batch)).refused
        async with sessions() as session:
            oracle = await _oracle(session)
            assert {f.demand_type for f in oracle.facts} == {"value", "failure", "unknown"}
            assert any(c.status == "fulfilled" and c.measured for c in oracle.cases)
            moments = [_moment(f.at) for f in oracle.facts] + [
                _moment(c.at) for c in oracle.cases if c.at is not None
            ]
            for n, window in enumerate(_windows(seed=9, moments=moments)):
                for now in _presents(window, rng):
                    split = split_window(window, now=now)
                    ways["days" if split.days else "no days"] += 1
                    ways.update("less" if s < 0 else "rows" for _p, s in split.rows)
                    filters = [
                        Filters(period=window),
                        Filters(period=window, channel="phone", team="north"),
                        Filters(period=window, source="beta"),
                    ][n % 3]
                    # Every purpose's percentiles, from every time of the window (or
                    # its bands when it is whole days).
                    every = await measures.end_to_end_percentiles(session, filters, QUANTILES)
                    fulfilled += len(every)
                    for purpose in (*PURPOSES, "none such")[: 3 + (n % 4 == 0)]:
                        for by in ("purpose", "channel"):
                            assert await measures.demand_counts(
                                session, filters, by=by, purpose=purpose, now=now
                            ) == oracle.demand_counts(filters, purpose, by), (window, now, by)
                        for by in ("kind", "cause"):
                            assert await measures.failure_breakdown(
                                session, filters, purpose=purpose, by=by, now=now
                            ) == oracle.failure_breakdown(filters, purpose, by), (window, now)
                        for grouping in ("purpose", "channel", "all"):
                            assert await _machine(
                                session, filters, purpose, grouping, now
                            ) == oracle.machine_counts(filters, purpose, grouping), (window, now)
                        assert await measures.fulfilled_case_counts(
                            session, filters, purpose=purpose, now=now
                        ) == oracle.fulfilled(filters, purpose), (window, now)
                        found = await measures.end_to_end_percentiles(
                            session, filters, QUANTILES, purpose=purpose, now=now
                        )
                        assert found == oracle.percentiles(filters, purpose, QUANTILES)
                        assert found == {k: v for k, v in every.items() if k == purpose}
    finally:
        await engine.dispose()
    # Every way of reading a partial day was taken: its rows, and a day row less its rows.
    assert ways["rows"] > 10, ways
    assert ways["less"] > 10, ways
    assert ways["days"] > 10, ways
    assert fulfilled > 30, "windows with cases fulfilled in them"


_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
# The steps that read rows (not a daily table) of the facts, the demands or the cases.
_ON_ROWS = re.compile(r"^(SCAN|SEARCH) (demand_facts|demands|cases)\b")


async def test_a_purposes_window_reads_its_partial_days_rows_only(tmp_path: Path) -> None:
    """The publisher's counts of a purpose over a trailing window (five days, ending at a
    time of day), and its percentiles' bands, read the facts, demands and cases off their
    (purpose, time) indexes, and only those of the window's first and last days: not the
    rows of the days between, which the daily aggregates answer for."""
    path = tmp_path / "metrics.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    now = _midnight(FIRST_DAY + timedelta(days=4)) + timedelta(hours=13)
    window = Period(now - timedelta(days=4), now)
    try:
        sessions = session_factory(engine)
        for batch in _events(seed=3):
            async with sessions.begin() as session:
                assert not (await apply_events(session, batch)).refused
        filters = Filters(period=window)
        with reads_recorded(engine) as statements:
            async with sessions() as session:
                counted = await measures.demand_counts(session, filters, purpose="billing", now=now)
                await measures.failure_breakdown(
                    session, filters, purpose="billing", by="kind", now=now
                )
                await audit_sample.machine_counts(
                    session, filters, by="purpose", purpose="billing", now=now
                )
                await measures.fulfilled_case_counts(session, filters, purpose="billing", now=now)
        # The percentiles' bands (their seeks read a band's times off the time index).
        with reads_recorded(engine, touching="case_time_days") as banded:
            async with sessions() as session:
                times = await measures.end_to_end_percentiles(
                    session, filters, (50.0,), purpose="billing", now=now
                )
    finally:
        await engine.dispose()
    assert counted, "the window holds billing demands"
    assert times, "and billing cases fulfilled"
    assert len(statements) == 4, "one statement a count"
    assert len(banded) == 1, banded
    statements += banded
    plans = sqlite_plans(path, statements)
    steps = [step for plan in plans for step in plan if _ON_ROWS.match(step)]
    assert len(steps) >= 4, plans
    for step in steps:
        assert step.startswith("SEARCH"), plans
        assert re.search(r"\(purpose=\? AND (occurred_at|fulfilled_at)>\? AND \1<\?\)", step), step
    edges = (window.start.date(), window.end.date())
    # Each part of a statement reads one range of times, [from, to): within one day, the
    # window's first or last.
    ranges = [
        [
            datetime.fromisoformat(value).replace(tzinfo=UTC)
            for value in parameters
            if isinstance(value, str) and _TIME.match(value)
        ]
        for _sql, parameters in statements
    ]
    assert all(len(times) % 2 == 0 for times in ranges), ranges
    pairs = [(times[i], times[i + 1]) for times in ranges for i in range(0, len(times), 2)]
    assert len(pairs) >= 4, ranges
    for lower, upper in pairs:
        assert lower < upper <= lower + timedelta(days=1), (lower, upper)
        assert lower.date() == (upper - MICRO).date(), (lower, upper)
        assert lower.date() in edges, (lower, upper)
