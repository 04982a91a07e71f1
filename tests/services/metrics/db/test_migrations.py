"""The Alembic migrations build exactly the tables the code declares, on both databases."""

from __future__ import annotations

import asyncio

import pytest

from services.metrics.db.migrate import VERSION_TABLE, upgrade
from services.metrics.db.tables import Base
from tests.support.migrations import schema_differences

pytestmark = pytest.mark.integration


async def test_migrations_match_the_declared_tables(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)

    assert await schema_differences(database_url, Base.metadata, VERSION_TABLE) == []
