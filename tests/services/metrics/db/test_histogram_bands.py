"""A purpose's distribution of end-to-end times over whole days, counted off the bands
(case_time_days) and the one band each bucket's bound cuts, equals the count over every
time of the period (a period with a time of day) and domain/buckets.histogram, for times
on the bounds, under a second and past the last bound, by source, channel and team; on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from services.metrics.db import measures
from services.metrics.db.measures import Filters
from services.metrics.domain.buckets import END_TO_END_BUCKETS, histogram
from services.metrics.domain.windows import Period
from shared.database.engine import session_factory
from shared.events import Channel, Event
from tests.support.metrics_rows import fulfilled_case, stored

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
# On every bound, either side of some, under a second, and past the last bound.
SECONDS = [0.25, 1.0, *END_TO_END_BUCKETS, 299.5, 300.5, 3_601, 86_399, 100 * 86_400]


async def test_the_banded_distribution_equals_the_count_of_every_time(database_url: str) -> None:
    events: list[Event] = []
    for n, seconds in enumerate(SECONDS * 3):
        events += fulfilled_case(f"h-{n}", opened=T0 + timedelta(hours=n), seconds=seconds,
                                 purpose="repair", source="genesys" if n % 4 == 0 else "demo",
                                 channel=Channel.PHONE if n % 2 else Channel.EMAIL,
                                 team="north" if n % 3 else None)  # fmt: skip
    engine = await stored(database_url, events)
    try:
        async with session_factory(engine)() as session:
            start = datetime.combine(date(2026, 3, 1), time.min, UTC)
            for days in (3, 200):
                for extra in ({}, {"source": "demo"}, {"channel": "phone"}, {"team": "north"}):
                    period = Period(start, start + timedelta(days=days))
                    whole = Filters(period=period, **extra)
                    walked = Filters(period=Period(start + timedelta(seconds=0.5), period.end),
                                     **extra)  # fmt: skip
                    assert measures.whole_days(whole)
                    assert not measures.whole_days(walked)
                    banded = await measures.end_to_end_histogram(session, whole, purpose="repair")
                    every = await measures.end_to_end_histogram(session, walked, purpose="repair")
                    times = await measures.end_to_end_seconds(session, whole)
                    assert banded == every == histogram(times.get("repair", []))
                    if days == 200 and not extra:
                        assert sum(n for _bound, n in banded) == len(SECONDS) * 3
                        assert banded[-1][1] == 3  # past the last bound
    finally:
        await engine.dispose()
