"""The open cases' counts the write path keeps (db/open_cases.py) equal a recount of the
open cases after live batches in any order, redelivery, relabels that move a case between
purposes and case events that fulfil and reopen cases; the figures read off them are what
counting the cases gave (open_case_counts by every filter, a purpose's open-case ages);
migration 0016 fills them from the cases stored before. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics import service
from services.metrics.db import measures
from services.metrics.db.measures import Filters
from services.metrics.db.migrate import upgrade
from services.metrics.db.sql import as_utc
from services.metrics.db.tables import CaseRow, OpenCaseCountRow
from services.metrics.domain.percentiles import percentile
from services.metrics.ingest import apply_events
from services.metrics.schemas import OpenCaseAge
from services.metrics.service import ChartSettings
from shared.database.engine import create_engine, session_factory
from shared.events import CaseEventType, Channel, DemandType, Event
from tests.support.factories import case_event, demand_classified, demand_labelled

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
NOW = T0 + 200 * HOUR
PURPOSES = ("billing", "move home", "repairs")


def _events() -> list[Event]:
    events: list[Event] = []
    for n in range(40):
        events.append(
            demand_classified(
                id=f"d-{n}",
                source="genesys" if n % 7 == 0 else "demo",
                customer_ref=f"C-{n % 13}",
                case_ref=f"K-{n % 9}" if n % 4 else None,
                occurred_at=T0 + n * HOUR,
                channel=Channel.PHONE if n % 2 else Channel.EMAIL,
                team="north" if n % 3 else None,
                purpose=PURPOSES[n % 3],
                demand_type=DemandType.FAILURE if n % 5 == 1 else DemandType.VALUE,
                failure_kind="repeat" if n % 5 == 1 else None,
            )
        )
    for n in range(0, 9, 2):  # some cases fulfilled, one of them reopened
        events.append(
            case_event(id=f"e-f{n}", source="demo", customer_ref=f"C-{n}", case_ref=f"K-{n}",
                       type=CaseEventType.FULFILLED, occurred_at=T0 + (60 + n) * HOUR)
        )  # fmt: skip
    events.append(
        case_event(id="e-r", source="demo", customer_ref="C-2", case_ref="K-2",
                   type=CaseEventType.REOPENED, occurred_at=T0 + 90 * HOUR)
    )  # fmt: skip
    events += [  # relabels: cases move between purposes
        demand_labelled(id=f"l-{n}", demand_id=f"d-{n}", demand_source="demo",
                        purpose=PURPOSES[(n + 1) % 3], labelled_at=T0 + 100 * HOUR)
        for n in (1, 5, 10, 22)
    ]  # fmt: skip
    return events


async def _scanned_open(session: AsyncSession, filters: Filters, purpose: str | None) -> Any:
    """open_case_counts as it was (measures.open_case_counts at 47c10c1): every open case."""
    statement: Any = select(CaseRow.purpose, func.count()).where(
        CaseRow.measured.is_(True), CaseRow.status == "open"
    )
    if filters.source is not None:
        statement = statement.where(CaseRow.source == filters.source)
    if filters.channel is not None:
        statement = statement.where(CaseRow.first_channel == filters.channel)
    if filters.team is not None:
        statement = statement.where(CaseRow.team == filters.team)
    if purpose is not None:
        statement = statement.where(CaseRow.purpose == purpose)
    rows = await session.execute(statement.group_by(CaseRow.purpose))
    return {p: int(n) for p, n in rows.all()}


async def _compare(url: str) -> dict[tuple[str, str, str, str], int]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            recount = await session.execute(
                text(
                    "SELECT source, coalesce(purpose, ''), coalesce(first_channel, ''), "
                    "coalesce(team, ''), count(*) FROM cases WHERE status = 'open' AND measured "
                    "GROUP BY 1, 2, 3, 4"
                )
            )
            recounted = {tuple(row[:4]): int(row[4]) for row in recount.all()}
            kept = await session.execute(select(OpenCaseCountRow))
            stored = {(r.source, r.purpose, r.channel, r.team): r.cases for r in kept.scalars()}
            assert {k: n for k, n in stored.items() if n} == recounted
            assert all(n >= 0 for n in stored.values())
            for filters in (
                Filters(),
                Filters(source="demo"),
                Filters(source="genesys", channel="email"),
                Filters(channel="phone", team="north"),
            ):
                for purpose in (None, *PURPOSES):
                    assert await measures.open_case_counts(
                        session, filters, purpose=purpose
                    ) == await _scanned_open(session, filters, purpose), (filters, purpose)
                for purpose in PURPOSES:
                    count, ages, oldest = await measures.open_case_ages(
                        session, filters, purpose=purpose, now=NOW, quantiles=(0.0, 50.0, 85.0)
                    )
                    starts = await measures.open_case_starts(session, filters, purpose=purpose)
                    every = sorted(
                        max(0.0, (NOW - as_utc(at)).total_seconds())
                        for at in starts.get(purpose, [])
                    )
                    assert count == len(every)
                    assert oldest == (every[-1] if every else None)
                    assert ages == (
                        {q: percentile(every, q) for q in (0.0, 50.0, 85.0)} if every else {}
                    )
                    # The purpose's page and API: the ages with the summary's open count.
                    detail = await service.purpose_detail(
                        session, purpose, filters, settings=ChartSettings(), now=NOW
                    )
                    assert detail is not None or not every
                    if detail is not None:
                        assert detail.summary.open_cases == len(every)
                        assert detail.open_case_age == OpenCaseAge(
                            count=len(every),
                            p50_seconds=percentile(every, 50.0) if every else None,
                            p85_seconds=percentile(every, 85.0) if every else None,
                            oldest_seconds=every[-1] if every else None,
                        )
    finally:
        await engine.dispose()
    assert recounted, "some cases are open"
    return recounted


async def test_the_counts_equal_a_recount_in_any_order_and_on_redelivery(
    database_url: str,
) -> None:
    events = _events()
    await asyncio.to_thread(upgrade, database_url)
    shuffled = events[:]
    random.Random(3).shuffle(shuffled)
    engine = create_engine(database_url)
    try:
        sessions = session_factory(engine)
        for batch in [shuffled[i : i + 5] for i in range(0, len(shuffled), 5)] + [events]:
            async with sessions.begin() as session:
                assert not (await apply_events(session, batch)).refused
    finally:
        await engine.dispose()
    counted = await _compare(database_url)
    assert {purpose for _s, purpose, _c, _t in counted} == set(PURPOSES)
    assert {source for source, *_ in counted} == {"demo", "genesys"}


async def test_migration_0016_counts_the_cases_stored_before(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url, "0015")
    engine = create_engine(database_url)
    try:
        async with session_factory(engine).begin() as session:
            for n, (status, measured, purpose, channel) in enumerate(
                [("open", True, "billing", "phone"), ("open", True, "billing", "phone"),
                 ("open", True, None, None), ("open", False, "billing", "phone"),
                 ("fulfilled", True, "billing", "phone")]
            ):  # fmt: skip
                session.add(
                    CaseRow(
                        source="demo", customer_ref=f"C{n}", case_id=f"K{n}", case_ref=None,
                        purpose=purpose, status=status, measured=measured, started_at=T0,
                        fulfilled_at=None, end_to_end_seconds=None, reopened=0, contacts=1,
                        failure_contacts=0, channels="phone", first_channel=channel,
                        team=None, one_stop=False, last_activity_at=T0,
                    )
                )  # fmt: skip
    finally:
        await engine.dispose()
    await asyncio.to_thread(upgrade, database_url)
    counted = await _compare(database_url)
    assert counted == {("demo", "billing", "phone", ""): 2, ("demo", "", "", ""): 1}
