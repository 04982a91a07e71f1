"""Intake's migrations build exactly the ledger the code declares, on both databases, and
go down and up again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from services.intake.db.migrate import MIGRATIONS, upgrade
from services.intake.db.tables import IntakeBase
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
