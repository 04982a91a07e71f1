"""demand_days, case_days and case_time_days, the daily aggregates the figures read,
equal a recount from the facts and cases after live batches with redelivery, relabels, a
late case event and demands moving between days' groups, and after a rebuild of the same
events in one batch (ingest.apply_events is the one write path of both); percentiles off
the bands equal the walk over every time, and so do the distribution counted by the database
a capability chart of the series' ends and the open cases' ages read off the index; on SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from services.metrics.capability import END_TO_END, SIGNAL_LOOKBACK, xmr_chart
from services.metrics.db import measures
from services.metrics.db.aggregates import time_band
from services.metrics.db.measures import Filters
from services.metrics.db.migrate import upgrade
from services.metrics.db.sql import as_utc
from services.metrics.db.tables import CaseRow, CaseTimeDayRow
from services.metrics.domain.buckets import histogram
from services.metrics.domain.percentiles import percentile
from services.metrics.domain.windows import Period
from services.metrics.ingest import apply_events, derive_everything
from shared.database.engine import create_engine, session_factory
from shared.events import CaseEventType, Channel, DemandLabelled, DemandType, Event
from tests.support.factories import case_event, demand_classified, demand_labelled, varied_demands

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)  # late in the day: demands fall on two days
HOUR = timedelta(hours=1)


def _events() -> list[Event]:
    events: list[Event] = [*varied_demands(12, customers=5, start=T0)]
    events.append(
        case_event(
            id="e-1",
            customer_ref="C-1",
            case_ref="K-1",
            type=CaseEventType.FULFILLED,
            occurred_at=T0 + 30 * HOUR,
            purpose="billing",
        )
    )
    # d-1 relabelled twice (the later label wins), d-4 once: its facts move groups.
    events += [
        demand_labelled(id="l-1", demand_id="d-1", labelled_at=T0 + 40 * HOUR,
                        purpose="move home", demand_type=DemandType.VALUE),
        demand_labelled(id="l-2", demand_id="d-1", labelled_at=T0 + 41 * HOUR,
                        purpose="billing", demand_type=DemandType.FAILURE,
                        failure_kind="not_done_right"),
        demand_labelled(id="l-3", demand_id="d-4", labelled_at=T0 + 42 * HOUR,
                        purpose="billing", demand_type=DemandType.FAILURE),
    ]  # fmt: skip
    return events


_RECOUNT = """
    SELECT {day} AS day, f.source, f.channel, coalesce(f.team, '') AS team, f.purpose,
           f.demand_type, coalesce(f.failure_kind, '') AS failure_kind,
           coalesce(f.cause_purpose, '') AS cause_purpose, d.purpose AS machine_purpose,
           d.demand_type AS machine_type, count(*) AS demands,
           count(d.handling_seconds) AS handling_measured,
           coalesce(sum(CAST(round(d.handling_seconds * 1000000) AS BIGINT)), 0) AS micros
    FROM demand_facts f JOIN demands d ON d.source = f.source AND d.demand_id = f.demand_id
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
"""
_CASES_RECOUNT = """
    SELECT {day} AS day, source, coalesce(purpose, ''), coalesce(first_channel, ''),
           coalesce(team, ''), count(*), sum(contacts), sum(CASE WHEN one_stop THEN 1 ELSE 0 END)
    FROM cases WHERE status = 'fulfilled' AND measured AND fulfilled_at IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5
"""
_CASES_STORED = """
    SELECT day, source, purpose, channel, team, fulfilled, contacts, one_stop FROM case_days
"""
_STORED = """
    SELECT day, source, channel, team, purpose, demand_type, failure_kind, cause_purpose,
           machine_purpose, machine_type, demands, handling_measured, handling_micros
    FROM demand_days
"""


def _row(row: Sequence[Any]) -> tuple[Any, ...]:
    """The key as text, the measures as integers (PostgreSQL's sum is a numeric)."""
    return tuple(str(v) for v in row[:10]) + tuple(int(v) for v in row[10:])


def _case_row(row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(str(v) for v in row[:5]) + tuple(int(v) for v in row[5:])


async def _apply_and_compare(url: str, batches: Sequence[Sequence[Event]]) -> set[Any]:
    engine = create_engine(url)
    try:
        sessions = session_factory(engine)
        for batch in batches:
            async with sessions() as session, session.begin():
                outcome = await apply_events(session, batch)
                assert not outcome.refused
        async with sessions() as session:
            day = (
                "date(timezone('UTC', f.occurred_at))"
                if engine.dialect.name == "postgresql"
                else "date(f.occurred_at)"
            )
            recounted = {
                _row(row) for row in (await session.execute(text(_RECOUNT.format(day=day)))).all()
            }
            stored = {_row(row) for row in (await session.execute(text(_STORED))).all()}
            fulfilled_day = day.replace("f.occurred_at", "fulfilled_at")
            cases_recounted = {
                _case_row(row)
                for row in (
                    await session.execute(text(_CASES_RECOUNT.format(day=fulfilled_day)))
                ).all()
            }
            cases_stored = {
                _case_row(row) for row in (await session.execute(text(_CASES_STORED))).all()
            }
            times = await session.execute(
                select(
                    CaseRow.fulfilled_at, CaseRow.source, CaseRow.purpose, CaseRow.first_channel,
                    CaseRow.team, CaseRow.end_to_end_seconds,
                ).where(CaseRow.end_to_end_seconds.is_not(None))
            )  # fmt: skip
            times_recounted = Counter(
                (as_utc(at).date(), s, p or "", c or "", t or "", time_band(e2e))
                for at, s, p, c, t, e2e in times.all()
                if at is not None and e2e is not None  # a time is set only on a fulfilled case
            )
            stored_times = await session.execute(
                select(
                    CaseTimeDayRow.day, CaseTimeDayRow.source, CaseTimeDayRow.purpose,
                    CaseTimeDayRow.channel, CaseTimeDayRow.team, CaseTimeDayRow.band,
                    CaseTimeDayRow.cases,
                )
            )  # fmt: skip
            times_stored = Counter({tuple(row[:6]): int(row[6]) for row in stored_times.all()})
    finally:
        await engine.dispose()
    assert stored == recounted
    assert cases_stored == cases_recounted
    assert times_stored == times_recounted
    assert cases_stored, "some cases were fulfilled"
    return stored | {("cases", *row) for row in cases_stored}


async def test_the_daily_aggregates_equal_a_recount_after_redelivery_and_after_a_rebuild(
    database_url: str, tmp_path: Any
) -> None:
    events = _events()
    await asyncio.to_thread(upgrade, database_url)
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)
    # Live: small batches in another order, then everything again (redelivery), the labels
    # in reverse order once more.
    live_batches = [shuffled[i : i + 3] for i in range(0, len(shuffled), 3)]
    live_batches += [events, [e for e in reversed(events) if isinstance(e, DemandLabelled)]]
    live = await _apply_and_compare(database_url, live_batches)
    days = {row[0] for row in live if row[0] != "cases"}
    assert len(days) == 2, "the demands fall on two UTC days"
    demand_rows = [row for row in live if row[0] != "cases"]
    assert any(row[4] == "billing" and row[6] == "not_done_right" for row in demand_rows)
    assert not any(row[10] == 0 for row in demand_rows), "a group left empty is dropped"
    # Rebuild: the same set of events into an empty database in one batch.
    rebuilt_url = f"sqlite+aiosqlite:///{tmp_path / 'rebuilt.db'}"
    await asyncio.to_thread(upgrade, rebuilt_url)
    rebuilt = await _apply_and_compare(rebuilt_url, [events])
    assert rebuilt == live


_DERIVED = {
    "demand_facts": "SELECT source, demand_id, customer_ref, case_id, purpose, demand_type, "
    "failure_kind, cause_purpose, channel, team, occurred_at, labelled FROM demand_facts",
    "cases": "SELECT source, customer_ref, case_id, case_ref, purpose, status, measured, "
    "started_at, fulfilled_at, end_to_end_seconds, reopened, contacts, failure_contacts, "
    "channels, first_channel, team, one_stop, last_activity_at FROM cases",
}


async def _derived(url: str) -> dict[str, set[tuple[Any, ...]]]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            found = {
                table: {tuple(row) for row in (await session.execute(text(query))).all()}
                for table, query in _DERIVED.items()
            }
            # The facts' times are written by the write path's own SQL (sqlite3 itself on
            # SQLite), the demands' through SQLAlchemy: stored alike, they compare equal.
            differing = await session.execute(
                text(
                    "SELECT count(*) FROM demand_facts f JOIN demands d "
                    "ON d.source = f.source AND d.demand_id = f.demand_id "
                    "WHERE f.occurred_at <> d.occurred_at"
                )
            )
            assert differing.scalar_one() == 0
    finally:
        await engine.dispose()
    return found


async def test_a_bulk_load_computed_once_at_the_end_equals_live_batches(
    database_url: str, tmp_path: Any
) -> None:
    """A rebuild's mode: events stored batch by batch without deriving, then every customer
    computed once (paged two at a time, so the paging is crossed), ends where live does:
    the same facts, cases and daily aggregates, a customer with only case events included."""
    events = [
        *_events(),
        case_event(id="e-only", customer_ref="C-none", case_ref="K-none",
                   type=CaseEventType.FULFILLED, occurred_at=T0 + 3 * HOUR),
    ]  # fmt: skip
    shuffled = events[:]
    random.Random(11).shuffle(shuffled)
    batches = [shuffled[i : i + 4] for i in range(0, len(shuffled), 4)]
    live_url = f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"
    await asyncio.to_thread(upgrade, live_url)
    live = await _apply_and_compare(live_url, batches)
    # The bulk load on each database (derive_everything's paging SQL on both).
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    try:
        sessions = session_factory(engine)
        for batch in batches:
            async with sessions.begin() as session:
                await apply_events(session, batch, derive=False)
        assert await derive_everything(sessions, customers_per_transaction=2) == 6
    finally:
        await engine.dispose()
    bulk = await _apply_and_compare(database_url, [])
    assert bulk == live
    live_rows, bulk_rows = await _derived(live_url), await _derived(database_url)
    assert {row[1] for row in bulk_rows["cases"]} >= {"C-none", "C-1"}
    if "postgresql" not in database_url:
        assert bulk_rows == live_rows
    else:  # the same rows, read back as each database types them
        assert {t: len(rows) for t, rows in bulk_rows.items()} == {
            t: len(rows) for t, rows in live_rows.items()
        }


async def test_percentiles_off_the_bands_equal_the_walk_over_every_time(
    database_url: str,
) -> None:
    """Whole-day filters read the bands (case_time_days); a period with a time of day walks
    every time of the period, as before: the same percentiles, by purpose and channel."""
    await asyncio.to_thread(upgrade, database_url)
    events: list[Event] = []
    for n in range(90):
        opened = T0 + n * 7 * HOUR
        # Times from seconds to weeks, some equal, across many bands and days.
        seconds = [0.5, 30, 30, 3_600, 86_400 * 3, 86_400 * 20][n % 6] + (n % 7) * 1_000
        events += [
            demand_classified(id=f"p-{n}", customer_ref=f"P-{n}", case_ref=f"KP-{n}",
                              occurred_at=opened, purpose="billing" if n % 3 else "repair",
                              channel=Channel.PHONE if n % 2 else Channel.EMAIL),
            case_event(id=f"pe-{n}", customer_ref=f"P-{n}", case_ref=f"KP-{n}",
                       type=CaseEventType.FULFILLED, purpose="billing" if n % 3 else "repair",
                       occurred_at=opened + timedelta(seconds=seconds)),
        ]  # fmt: skip
    engine = create_engine(database_url)
    quantiles = [0.0, 10.0, 50.0, 85.0, 95.0, 100.0]
    try:
        async with session_factory(engine)() as session, session.begin():
            await apply_events(session, events)
        async with session_factory(engine)() as session:
            for channel in (None, "phone"):
                for first_day, days in ((date(2026, 3, 1), 60), (T0.date(), 9)):
                    start = datetime.combine(first_day, time.min, UTC)
                    end = start + timedelta(days=days)
                    whole = Filters(period=Period(start, end), channel=channel)
                    # Half a second later: not whole days, so the walk over every time; no
                    # case was fulfilled in that half second, so the same cases.
                    walked = Filters(
                        period=Period(start + timedelta(seconds=0.5), end), channel=channel
                    )
                    assert measures.whole_days(whole)
                    assert not measures.whole_days(walked)
                    from_bands = await measures.end_to_end_percentiles(session, whole, quantiles)
                    from_walk = await measures.end_to_end_percentiles(session, walked, quantiles)
                    assert from_bands == from_walk
                    assert set(from_bands) == {"billing", "repair"}
                    # The distribution counted by the database, a time on a bound (1 h, 3 d)
                    # in that bound's bucket, as domain/buckets.py counts every time.
                    times = await measures.end_to_end_seconds(session, whole)
                    for purpose in ("billing", "repair"):
                        counted = await measures.end_to_end_histogram(
                            session, whole, purpose=purpose
                        )
                        assert counted == histogram(times[purpose])
            everything = await measures.end_to_end_percentiles(session, Filters(), quantiles)
            assert everything["repair"][0.0] == 0.5  # band -1: under a second (n = 42)
    finally:
        await engine.dispose()


async def test_a_chart_of_the_series_ends_equals_the_chart_of_every_point(
    database_url: str,
) -> None:
    """The capability chart of end-to-end time reads only the baseline's points and the
    latest ones (with what the signal rules look back at): the same chart, signals and all,
    as from every case since the baseline started."""
    await asyncio.to_thread(upgrade, database_url)
    events: list[Event] = []
    for n in range(160):
        opened = T0 + n * HOUR
        # A shift up after case 100 and a spike: runs, limits and moving-range signals.
        seconds = 3_600 + (n % 5) * 600 + (4_000 if n > 100 else 0) + (50_000 if n == 130 else 0)
        events += [
            demand_classified(id=f"s-{n}", customer_ref=f"S-{n}", case_ref=f"KS-{n}",
                              occurred_at=opened, purpose="repair"),
            case_event(id=f"se-{n}", customer_ref=f"S-{n}", case_ref=f"KS-{n}",
                       type=CaseEventType.FULFILLED, purpose="repair",
                       occurred_at=opened + timedelta(seconds=seconds)),
        ]  # fmt: skip
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            await apply_events(session, events)
        async with session_factory(engine)() as session:
            every = await measures.fulfilment_series(session, purpose="repair", since=None)
            for baseline, shown in ((20, 30), (20, 130), (100, 100)):
                ends = await measures.fulfilment_series(
                    session, purpose="repair", since=None,
                    ends=(baseline, shown + SIGNAL_LOOKBACK),
                )  # fmt: skip
                full = xmr_chart(END_TO_END, every, baseline_points=baseline, shown_points=shown)
                part = xmr_chart(END_TO_END, ends, baseline_points=baseline, shown_points=shown)
                assert full is not None
                assert part == full
                assert full.signals, "the chart has signals to keep"
            assert len(every) == 160
    finally:
        await engine.dispose()


async def test_open_case_ages_off_the_index_equal_the_ages_of_every_open_case(
    database_url: str,
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    events: list[Event] = [
        demand_classified(id=f"o-{n}", customer_ref=f"O-{n}", case_ref=f"KO-{n}",
                          occurred_at=T0 + (n * n % 37) * HOUR, purpose="repair",
                          channel=Channel.PHONE if n % 2 else Channel.EMAIL)
        for n in range(41)
    ]  # fmt: skip
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            await apply_events(session, events)
        async with session_factory(engine)() as session:
            # Now after every start, and now in the middle (some ages are 0: not yet begun).
            for now in (T0 + timedelta(days=10), T0 + 18 * HOUR):
                for channel in (None, "phone"):
                    filters = Filters(channel=channel)
                    starts = (await measures.open_case_starts(session, filters))["repair"]
                    ages = [max(0.0, (now - start).total_seconds()) for start in starts]
                    count, found, oldest = await measures.open_case_ages(
                        session, filters, purpose="repair", now=now, quantiles=(50.0, 85.0)
                    )
                    assert count == len(ages) > 10
                    assert found == {q: percentile(ages, q) for q in (50.0, 85.0)}
                    assert oldest == max(ages)
    finally:
        await engine.dispose()


async def test_a_batch_that_fails_leaves_nothing_of_it(database_url: str) -> None:
    """The write path's own statements (sqlite3 itself on SQLite) are in the batch's
    transaction: a batch that fails after them stores no event and no derived row."""
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    tables = ("demands", "case_events", "demand_labels", "demand_facts", "cases", "demand_days")
    try:
        sessions = session_factory(engine)

        async def failing_batch() -> None:
            async with sessions.begin() as session:
                await apply_events(session, _events())
                raise RuntimeError("after the write path")

        with pytest.raises(RuntimeError, match="after the write path"):
            await failing_batch()
        async with sessions() as session:
            counts = {
                table: (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
                for table in tables
            }
    finally:
        await engine.dispose()
    assert counts == dict.fromkeys(tables, 0)
