"""Alembic environment of the auth database, with its own version table.

``alembic_version_auth`` rather than Alembic's default lets the api_keys table share one
PostgreSQL database with another service's migrations without the two fighting.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from shared.auth.engine import create_engine
from shared.auth.tables import AuthBase

VERSION_TABLE = "alembic_version_auth"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=AuthBase.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        literal_binds=True,
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
