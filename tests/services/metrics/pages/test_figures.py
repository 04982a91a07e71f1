"""The figures added for the pages, on SQLite and PostgreSQL: staff hours on failure demand
(a demand's own handling time where its source sent one, else its channel's average), a
purpose over time, and the failure flow from the purpose that caused it."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest

from services.metrics import figures
from services.metrics.db.measures import Filters
from services.metrics.db.migrate import upgrade
from services.metrics.domain.windows import Granularity
from services.metrics.ingest import apply_events
from shared.database.engine import create_engine, session_factory
from shared.events import Channel, DemandType
from shared.events.classification import CausedBy
from tests.support.factories import case_event, demand_classified

pytestmark = pytest.mark.integration

MONDAY = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)  # late, so a non-UTC day would differ
AVERAGES = {"phone": 600.0, "email": 300.0, "other": 60.0}


async def test_capacity_purpose_over_time_and_flow(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    events = [
        demand_classified(id="v1", customer_ref="c1", case_ref="k1", occurred_at=MONDAY,
                          purpose="report a repair"),
        case_event(id="o1", customer_ref="c1", case_ref="k1", occurred_at=MONDAY),
        # chasing the repair: a phone call that took 15 minutes, traced to the case
        demand_classified(id="f1", customer_ref="c1", occurred_at=MONDAY + timedelta(days=1),
                          purpose="report a repair", demand_type=DemandType.FAILURE,
                          failure_kind="progress_chasing", channel=Channel.PHONE,
                          attributes={"handling_seconds": "900"},
                          caused_by=CausedBy(kind="case", ref="k1")),
        # an e-mail about the bill the repair caused, without a handling time: the average
        demand_classified(id="f2", customer_ref="c1", occurred_at=MONDAY + timedelta(days=2),
                          purpose="query a bill", demand_type=DemandType.FAILURE,
                          failure_kind="not_done_right", channel=Channel.EMAIL,
                          caused_by=CausedBy(kind="case", ref="k1")),
        # next week, a phone call whose handling time is nonsense: the average again
        demand_classified(id="f3", customer_ref="c2", occurred_at=MONDAY + timedelta(days=7),
                          purpose="report a repair", demand_type=DemandType.FAILURE,
                          channel=Channel.PHONE, attributes={"handling_seconds": "-5"}),
    ]  # fmt: skip
    engine = create_engine(database_url)
    try:
        async with session_factory(engine).begin() as session:
            await apply_events(session, events)
        async with session_factory(engine)() as session:
            weekly = await figures.capacity(session, Filters(), Granularity.WEEK, AVERAGES)
            overall = await figures.capacity(session, Filters(), Granularity.MONTH, AVERAGES)
            trend = await figures.purpose_over_time(
                session, Filters(), Granularity.WEEK, purpose="report a repair"
            )
            flow = await figures.failure_flow(session, Filters())
    finally:
        await engine.dispose()

    assert [(r.purpose, r.period_start, r.failure_demands, r.measured_demands) for r in weekly] == [
        ("report a repair", date(2026, 3, 2), 1, 1),
        ("query a bill", date(2026, 3, 2), 1, 0),
        ("report a repair", date(2026, 3, 9), 1, 0),
    ]
    assert [(r.measured_hours, r.estimated_hours) for r in weekly] == [
        (0.25, 0.0), (0.0, round(300 / 3600, 2)), (0.0, round(600 / 3600, 2)),
    ]  # fmt: skip
    repair = next(r for r in overall if r.purpose == "report a repair")
    assert repair.hours == pytest.approx(0.25 + 600 / 3600, abs=0.01)
    assert [(r.period_start, r.value, r.failure) for r in trend] == [
        (date(2026, 3, 2), 1, 1),
        (date(2026, 3, 9), 0, 1),
    ]
    assert {(c.cause, c.purpose, c.failure) for c in flow} == {
        ("report a repair", "report a repair", 1),
        ("report a repair", "query a bill", 1),
        ("untraced", "report a repair", 1),
    }
