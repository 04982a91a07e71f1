"""Two metrics replicas on one PostgreSQL database: a label that one replica stores while
the other's insert of its demand is not yet committed is applied all the same (issue 13).
(SQLite has one writer at a time, so the two cannot overlap there.)"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics.db.migrate import upgrade
from services.metrics.db.tables import DemandFactRow
from services.metrics.ingest import apply_events
from shared.database.engine import create_engine, session_factory
from shared.events import DemandType, Event
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
