"""What Alembic's autogenerate finds different between a migrated database and the tables
the code declares: a service's migration tests assert it is nothing."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData

from shared.database.engine import create_engine


async def schema_differences(
    database_url: str, metadata: MetaData, version_table: str
) -> list[Any]:
    """Autogenerate's differences of the database at ``database_url`` from ``metadata``
    (Alembic's own bookkeeping in ``version_table`` left out)."""
    engine = create_engine(database_url)

    def read(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"version_table": version_table})
        return list(compare_metadata(context, metadata))

    try:
        async with engine.connect() as connection:
            return await connection.run_sync(read)
    finally:
        await engine.dispose()
