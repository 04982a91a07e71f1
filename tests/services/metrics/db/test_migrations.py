"""The Alembic migrations build exactly the tables the code declares, on both databases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.metrics.db.migrate import VERSION_TABLE, upgrade
from services.metrics.db.tables import Base
from shared.database.engine import create_engine

pytestmark = pytest.mark.integration


async def test_migrations_match_the_declared_tables(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)

    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return list(compare_metadata(context, Base.metadata))

    try:
        async with engine.connect() as connection:
            diff = await connection.run_sync(differences)
    finally:
        await engine.dispose()

    assert diff == []
