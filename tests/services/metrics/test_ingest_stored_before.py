"""The live path's tail stitch takes a batch's demands from its own rows only when each
key is stored as its batch row; otherwise it reads them back (review D1, M1). Two ways a
key is not: another copy of it was stored before (on SQLite and PostgreSQL), and another
replica on the same SQLite file stores a copy between the batch's first read and its
insert. Either way the derived rows equal a full recomputation's, and demand_days counts
the demands stored."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics.db import sql
from services.metrics.db.migrate import upgrade
from services.metrics.ingest import apply_events, recompute_customers
from shared.database.engine import create_engine, session_factory
from shared.events import Event
from tests.support.factories import demand_classified

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
_TABLES = ("demand_facts", "cases", "demand_days", "case_days", "case_time_days")


def _demand(id: str, customer: str, hours: float, **fields: Any) -> Event:
    return demand_classified(
        id=id, source="s", customer_ref=customer, occurred_at=T0 + hours * HOUR, **fields
    )


async def _derived(sessions: async_sessionmaker[AsyncSession]) -> dict[str, set[Any]]:
    async with sessions() as session:
        return {
            table: {tuple(row) for row in (await session.execute(text(f"SELECT * FROM {table}")))}
            for table in _TABLES
        }


async def _assert_as_recomputed(
    sessions: async_sessionmaker[AsyncSession], customers: Sequence[tuple[str, str]]
) -> None:
    """The live rows are what a full recomputation makes, and demand_days counts each
    stored demand once (a recomputation moves demand_days by difference, so a count
    without a fact behind it would survive it)."""
    live = await _derived(sessions)
    async with sessions.begin() as session:
        await recompute_customers(session, list(customers))
    assert await _derived(sessions) == live
    async with sessions() as session:
        counted = (await session.execute(text("SELECT sum(demands) FROM demand_days"))).scalar()
        stored = (await session.execute(text("SELECT count(*) FROM demands"))).scalar()
    assert counted == stored


async def test_another_copy_of_a_stored_key_is_read_back_not_taken_from_the_batch(
    database_url: str,
) -> None:
    """A stored demand, then a batch with another copy of its key (later, other words:
    ignored by the insert) and a new demand of the same customer: the customer is
    recomputed, not stitched with the copy that was not stored (review M1). The copy keeps
    the purpose: one of another purpose makes stitch_tail decline anyway, which would hide
    a tail that took the copy."""
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        async with sessions.begin() as session:
            await apply_events(session, [_demand("k1", "C7", 0, purpose="billing")])
        batch = [_demand("k1", "C7", 9, text="other words"), _demand("b7", "C7", 9.5)]
        async with sessions.begin() as session:
            outcome = await apply_events(session, batch)
        assert (outcome.stitched_at_tail, outcome.recomputed) == (0, 1)
        await _assert_as_recomputed(sessions, [("s", "C7")])
    finally:
        await engine.dispose()


async def test_a_key_another_replica_stores_during_the_batch_is_read_back(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas on one SQLite file (as test_replicas runs them). Replica A applies b-dup
    of C9; replica B commits b-dup of C8 inside A's first read, which pysqlite runs before
    it opens the write transaction (at the INSERT). A's insert ignores its copy, so A must
    read the key back (it is C8's) and recompute C9, not stitch its own copy (review D1).
    Deterministic: B's whole batch runs in a thread A waits for."""
    await asyncio.to_thread(upgrade, sqlite_url)
    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)

    def replica_b() -> None:
        async def apply() -> None:
            other = create_engine(sqlite_url)
            try:
                async with session_factory(other).begin() as session:
                    await apply_events(session, [_demand("b-dup", "C8", 5)])
            finally:
                await other.dispose()

        asyncio.run(apply())

    hooked: list[str] = []
    rows = sql.SqliteDb.rows

    def rows_then_b(self: sql.SqliteDb, statement: str, params: Any = None) -> Any:
        found = rows(self, statement, params)
        if armed and not hooked:
            hooked.append(statement)
            b = threading.Thread(target=replica_b)
            b.start()
            b.join()
        return found

    armed = False
    monkeypatch.setattr(sql.SqliteDb, "rows", rows_then_b)
    try:
        async with sessions.begin() as session:
            await apply_events(session, [_demand("h9", "C9", 0)])
        armed = True
        async with sessions.begin() as session:
            outcome = await apply_events(session, [_demand("b-dup", "C9", 6)])
        assert hooked, "replica B did not run inside A's batch"
        assert (outcome.stitched_at_tail, outcome.recomputed) == (0, 1)
        async with sessions() as session:
            owner = await session.execute(
                text("SELECT customer_ref FROM demands WHERE demand_id = 'b-dup'")
            )
            assert owner.scalars().all() == ["C8"]
        await _assert_as_recomputed(sessions, [("s", "C8"), ("s", "C9")])
    finally:
        await engine.dispose()
