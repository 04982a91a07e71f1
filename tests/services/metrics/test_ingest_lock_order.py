"""One lock order for every batch (ingest.py's LOCK ORDER), on PostgreSQL: a batch that
holds a recorded change's insert and then needs a customer cannot deadlock with a batch of
the same change and a demand of that customer, since the latter inserts the change before
it locks the customer (it used to lock the customer first: PostgreSQL then aborted one of
the two with a deadlock)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics.db.migrate import upgrade
from services.metrics.db.tables import CaseRow, PurposeChangeRow
from services.metrics.ingest import apply_events
from shared.database.engine import create_engine, session_factory
from shared.events import Event
from tests.support.factories import case_event, demand_classified, system_changed, unique
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


async def _applied(engine: AsyncEngine, events: Sequence[Event]) -> None:
    async with session_factory(engine).begin() as session:
        await apply_events(session, events)


async def _waiting(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        waiting = await connection.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))
    return int(waiting or 0)


async def test_a_batch_without_labels_stores_its_changes_before_it_locks_its_customers(
    fresh_postgres_url: str,
) -> None:
    await asyncio.to_thread(upgrade, fresh_postgres_url)
    replica_a, replica_b = create_engine(fresh_postgres_url), create_engine(fresh_postgres_url)
    observer = create_engine(fresh_postgres_url)
    customer = unique("C")
    change = system_changed()
    demand = demand_classified(customer_ref=customer)
    opened = case_event(customer_ref=customer)
    try:
        async with session_factory(replica_b)() as holding:
            await apply_events(holding, [change])  # B's insert of the change, uncommitted
            other = asyncio.create_task(_applied(replica_a, [demand, change]))
            # A (no labels) waits on B's change: before its customer's lock, not after.
            await wait_until(
                lambda: _waiting(observer),
                accept=lambda waiting: waiting > 0 or other.done(),
                what="batch A to wait for B's insert of the change",
            )
            assert not other.done()
            await apply_events(holding, [opened])  # B now locks the same customer
            await holding.commit()
        await asyncio.wait_for(other, timeout=30)  # a deadlock aborted one of the two
        async with session_factory(observer)() as session:
            changes = (await session.scalars(select(PurposeChangeRow))).all()
            cases = (await session.scalars(select(CaseRow))).all()
    finally:
        for engine in (replica_a, replica_b, observer):
            await engine.dispose()
    assert [c.event_id for c in changes] == [change.id]
    assert {c.customer_ref for c in cases} == {customer}
