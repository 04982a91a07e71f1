"""Two metrics replicas on one database (issue 13): a label that one replica stores while the
other's insert of its demand is not yet committed is applied all the same (PostgreSQL; SQLite
has one writer at a time, so the two writes cannot overlap there, though a batch's first read
runs before its write transaction opens and another replica may commit in between: see
test_ingest_stored_before), and both replicas' scrapes show the same per-purpose gauges."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics.db.migrate import upgrade
from services.metrics.db.tables import DemandFactRow
from services.metrics.ingest import apply_events
from services.metrics.metrics import MetricsServiceMetrics
from services.metrics.publisher import PurposeMetricsPublisher
from services.metrics.service import ChartSettings
from shared.database.engine import create_engine, session_factory
from shared.events import DemandType, Event
from shared.kafka.codec import OutboundRecord
from tests.support.factories import demand_classified, demand_labelled
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


async def _applied(engine: AsyncEngine, events: Sequence[Event]) -> None:
    async with session_factory(engine).begin() as session:
        await apply_events(session, events)


async def _waiting_on_a_lock(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        waiting = await connection.scalar(
            text("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'advisory'")
        )
    return int(waiting or 0)


async def test_a_label_stored_while_another_replica_inserts_its_demand_is_applied(
    fresh_postgres_url: str,
) -> None:
    await asyncio.to_thread(upgrade, fresh_postgres_url)
    replica_a, replica_b = create_engine(fresh_postgres_url), create_engine(fresh_postgres_url)
    observer = create_engine(fresh_postgres_url)
    demand = demand_classified(demand_type=DemandType.VALUE)
    label = demand_labelled(
        demand_id=demand.demand.id,
        demand_source=demand.demand.source,
        demand_type=DemandType.FAILURE,
        failure_kind="repeat",
    )
    try:
        async with session_factory(replica_b)() as inserting:
            await apply_events(inserting, [demand])  # B's insert, not yet committed
            labelling = asyncio.create_task(_applied(replica_a, [label]))
            # A either finishes without B's row (the label then lost) or waits for B's commit.
            await wait_until(
                lambda: _waiting_on_a_lock(observer),
                accept=lambda waiting: waiting > 0 or labelling.done(),
                what="replica A to store the label or wait for replica B",
            )
            await inserting.commit()
        await asyncio.wait_for(labelling, timeout=30)
        async with session_factory(observer)() as session:
            row = (await session.scalars(select(DemandFactRow))).one()
    finally:
        for engine in (replica_a, replica_b, observer):
            await engine.dispose()
    assert (row.demand_id, row.demand_type, row.labelled) == (demand.demand.id, "failure", True)


async def test_a_label_stored_before_its_demand_is_applied_when_the_demand_arrives(
    fresh_postgres_url: str,
) -> None:
    """Labels are rows of their own, applied when a customer is recomputed: the order in
    which the two replicas commit does not matter."""
    await asyncio.to_thread(upgrade, fresh_postgres_url)
    replica_a, replica_b = create_engine(fresh_postgres_url), create_engine(fresh_postgres_url)
    demand = demand_classified(demand_type=DemandType.VALUE)
    label = demand_labelled(
        demand_id=demand.demand.id,
        demand_source=demand.demand.source,
        demand_type=DemandType.FAILURE,
        failure_kind="repeat",
    )
    try:
        await _applied(replica_a, [label])
        await _applied(replica_b, [demand])
        async with session_factory(replica_a)() as session:
            row = (await session.scalars(select(DemandFactRow))).one()
    finally:
        await replica_a.dispose()
        await replica_b.dispose()
    assert (row.demand_type, row.labelled) == ("failure", True)


GAUGES = (
    "demandscope_metrics_failure_demand_share",
    "demandscope_metrics_open_cases",
    "demandscope_metrics_capability_limit",
)


def _publisher(engine: AsyncEngine, registry: CollectorRegistry) -> PurposeMetricsPublisher:
    async def sent(records: list[OutboundRecord]) -> None:
        return None

    return PurposeMetricsPublisher(
        sessions=session_factory(engine),
        send=sent,
        topic="purpose.metrics",
        source="test",
        metrics=MetricsServiceMetrics(registry),
        chart_settings=ChartSettings(baseline_points=4, chart_points=50),
        window_days=28,
        debounce_s=0.01,
        gauge_cache_s=0,  # every scrape reads the database
    )


def _gauges(registry: CollectorRegistry) -> list[str]:
    return sorted(
        line for line in generate_latest(registry).decode().splitlines() if line.startswith(GAUGES)
    )


async def test_two_replicas_scraped_show_one_truth_per_purpose(database_url: str) -> None:
    """Each replica publishes the purposes its own batches touched: between publications
    their gauges differ. A scrape reads them from the shared database on both."""
    await asyncio.to_thread(upgrade, database_url)
    purpose = "billing / pay my bill"
    engine_a, engine_b = create_engine(database_url), create_engine(database_url)
    registry_a, registry_b = CollectorRegistry(), CollectorRegistry()
    replica_a, replica_b = _publisher(engine_a, registry_a), _publisher(engine_b, registry_b)
    try:
        await _applied(engine_a, [demand_classified(purpose=purpose) for _ in range(4)])
        replica_a.mark_changed({purpose})
        await replica_a.publish_dirty()
        failures = [
            demand_classified(
                purpose=purpose, demand_type=DemandType.FAILURE, failure_kind="repeat"
            )
            for _ in range(4)
        ]
        await _applied(engine_b, failures)  # B's batch: only B publishes the new figures
        replica_b.mark_changed({purpose})
        await replica_b.publish_dirty()
        assert _gauges(registry_a) != _gauges(registry_b)  # two truths, until scraped

        await replica_a.refresh_gauges()
        await replica_b.refresh_gauges()
    finally:
        await engine_a.dispose()
        await engine_b.dispose()
    assert _gauges(registry_a) == _gauges(registry_b)
    assert f'demandscope_metrics_failure_demand_share{{owner="ops",purpose="{purpose}"}} 0.5' in (
        _gauges(registry_a)
    )
