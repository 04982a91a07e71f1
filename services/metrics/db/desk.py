"""A person's desk (pages/desk.py): the review and audit decisions they can still edit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db.tables import (
    DeskStateRow,
)


async def desk_state(session: AsyncSession, username: str) -> str | None:
    """A person's desk (pages/desk.py) as stored, or None before their first decision."""
    statement = select(DeskStateRow.state).where(DeskStateRow.username == username)
    return (await session.execute(statement)).scalar_one_or_none()


async def save_desk_state(session: AsyncSession, username: str, state: str, now: datetime) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(DeskStateRow).values(username=username, state=state, updated_at=now)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["username"],
            set_={"state": statement.excluded.state, "updated_at": statement.excluded.updated_at},
        )
    )
