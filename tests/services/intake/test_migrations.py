"""Intake's migrations build exactly the ledger the code declares, on both databases, and
go down and up again."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from services.intake.db.migrate import MIGRATIONS, upgrade
from services.intake.db.tables import IntakeBase
from services.intake.ledger import Claim, IdempotencyLedger, new_token
from shared.database.engine import create_engine
from shared.database.migrations import alembic_config

pytestmark = pytest.mark.integration

VERSION_TABLE = "alembic_version_intake"
TABLE = "intake_accepted_events"


async def _inspected(database_url: str) -> tuple[list[Any], list[str]]:
    """What autogenerate finds different from the declared tables, and the table's indexes."""
    engine = create_engine(database_url)

    def read(connection: Any) -> tuple[list[Any], list[str]]:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        indexes = [index["name"] for index in inspect(connection).get_indexes(TABLE)]
        return list(compare_metadata(context, IntakeBase.metadata)), indexes

    try:
        async with engine.connect() as connection:
            return await connection.run_sync(read)
    finally:
        await engine.dispose()


async def test_the_migrations_build_the_declared_ledger_and_go_down_and_up(
    database_url: str,
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    assert await _inspected(database_url) == ([], [])

    config = alembic_config(MIGRATIONS, database_url)
    await asyncio.to_thread(command.downgrade, config, "intake_0002")
    assert (await _inspected(database_url))[1] == ["ix_intake_accepted_events_claimed_at"]
    await asyncio.to_thread(command.downgrade, config, "base")
    await asyncio.to_thread(upgrade, database_url)
    assert await _inspected(database_url) == ([], [])


async def test_going_down_keeps_the_ids_a_token_published(database_url: str) -> None:
    """intake_0004's downgrade marks the rows its confirmations published as published,
    before it drops them: no acknowledged id is forgotten."""
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    ledger = IdempotencyLedger(engine, lease=timedelta(seconds=60))
    writer = asyncio.create_task(ledger.run())
    await asyncio.sleep(0)
    token, published, pending = new_token(), ("demand", "demo", "p"), ("demand", "demo", "q")
    assert await ledger.claim([published], token) == [Claim.CLAIMED]
    assert await ledger.claim([pending]) == [Claim.CLAIMED]
    ledger.confirm_soon([published], token)
    ledger.request_stop()
    await asyncio.wait_for(writer, 10)
    await engine.dispose()

    config = alembic_config(MIGRATIONS, database_url)
    await asyncio.to_thread(command.downgrade, config, "intake_0003")
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(f"SELECT event_id, state, published_at IS NOT NULL FROM {TABLE}")
            )
            assert sorted(tuple(row) for row in rows) == [
                ("p", "published", True),
                ("q", "pending", False),
            ]
    finally:
        await engine.dispose()
    await asyncio.to_thread(upgrade, database_url)
