"""The end-to-end percentiles of many purposes at once, their seeks sent in several
statements (a compound SELECT holds at most 500 terms in SQLite), equal the walk over every
time of the period; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from services.metrics.db import measures
from services.metrics.db.measures import Filters
from services.metrics.domain.percentiles import percentile
from services.metrics.domain.windows import Period
from shared.database.engine import session_factory
from shared.events import Event
from tests.support.metrics_rows import fulfilled_case, stored

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
PURPOSES = [f"purpose {n:02}" for n in range(45)]  # 45 x 3 quantiles: two statements


async def test_the_seeks_of_many_purposes_equal_the_walk(database_url: str) -> None:
    events: list[Event] = []
    for n in range(len(PURPOSES) * 4):
        purpose = PURPOSES[n % len(PURPOSES)]
        opened = T0 + timedelta(minutes=n)
        events += fulfilled_case(f"s-{n}", opened=opened, seconds=60 + 977 * n, purpose=purpose)
    engine = await stored(database_url, events)
    try:
        async with session_factory(engine)() as session:
            start = datetime.combine(date(2026, 3, 1), time.min, UTC)
            period = Period(start, start + timedelta(days=30))
            quantiles = [50.0, 85.0, 95.0]
            banded = await measures.end_to_end_percentiles(
                session, Filters(period=period), quantiles
            )
            walked = await measures.end_to_end_percentiles(
                session,
                Filters(period=Period(start + timedelta(seconds=0.5), period.end)),
                quantiles,
            )
    finally:
        await engine.dispose()
    assert set(banded) == set(PURPOSES)
    assert banded == walked


async def test_seeks_from_a_bands_top_equal_the_walk(database_url: str) -> None:
    """Ranks in the upper half of a band are read from the band's top down, and a rank on a
    band's last time reads the next band's first: many times in two bands, ties, the same
    bands' times fulfilled before the period, every twentieth quantile."""
    events: list[Event] = []
    # 1,000-1,059 s: bands 79 (under 1,024 s) and 80; every third case before the period.
    layout = {"dense": [1_000 + (n * 7) % 60 for n in range(240)], "single": [1_500],
              "pair": [1_010, 1_030], "one band": [1_000 + n % 5 for n in range(9)]}  # fmt: skip
    for purpose, times in layout.items():
        for n, seconds in enumerate(times):
            opened = T0 - timedelta(days=20) if n % 3 == 2 else T0 + timedelta(minutes=n)
            ref = f"t-{purpose.replace(' ', '_')}-{n}"
            events += fulfilled_case(ref, opened=opened, seconds=seconds, purpose=purpose)
    engine = await stored(database_url, events)
    try:
        async with session_factory(engine)() as session:
            start = datetime.combine(date(2026, 3, 1), time.min, UTC)
            period = Period(start, start + timedelta(days=30))
            quantiles = [float(q) for q in range(0, 101, 5)] + [33.3, 66.7, 99.0]
            banded = await measures.end_to_end_percentiles(
                session, Filters(period=period), quantiles
            )
            walked = await measures.end_to_end_percentiles(
                session,
                Filters(period=Period(start + timedelta(seconds=0.5), period.end)),
                quantiles,
            )
            every = await measures.end_to_end_seconds(session, Filters(period=period))
            one = await measures.end_to_end_percentiles(
                session, Filters(period=period), quantiles, purpose="dense"
            )
    finally:
        await engine.dispose()
    assert set(banded) == set(layout) == set(every)
    assert banded == walked
    assert one == {"dense": banded["dense"]}
    for purpose, found in banded.items():
        assert found == {q: pytest.approx(percentile(every[purpose], q)) for q in quantiles}
