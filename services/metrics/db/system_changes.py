"""Recorded changes to the system, and the row counts a rebuild starts from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db.sql import as_utc, chunks, insert_ignoring_duplicates
from services.metrics.db.tables import (
    CaseEventRow,
    CaseRow,
    Demand,
    DemandFactRow,
    LabelRow,
    PurposeChangeRow,
)
from shared.events import SystemChanged


async def add_changes(session: AsyncSession, changes: Sequence[SystemChanged]) -> None:
    """Store recorded changes once each (by event id): a redelivered one changes nothing."""
    rows = [
        {
            "event_id": change.id,
            "purpose": change.purpose,
            "changed_at": as_utc(change.changed_at),
            "note": change.note,
            "recorded_at": as_utc(change.recorded_at),
            "recorded_by": change.recorded_by,
        }
        for change in changes
    ]
    for chunk in chunks(rows):
        await insert_ignoring_duplicates(session, PurposeChangeRow, chunk)


async def change_of_event(session: AsyncSession, event_id: str) -> PurposeChangeRow | None:
    statement = select(PurposeChangeRow).where(PurposeChangeRow.event_id == event_id)
    return (await session.scalars(statement)).one_or_none()


async def changes_of(session: AsyncSession, purpose: str) -> list[PurposeChangeRow]:
    statement = (
        select(PurposeChangeRow)
        .where(PurposeChangeRow.purpose == purpose)
        .order_by(PurposeChangeRow.changed_at, PurposeChangeRow.change_id)
    )
    return list((await session.scalars(statement)).all())


async def all_changes(session: AsyncSession) -> list[PurposeChangeRow]:
    statement: Any = select(PurposeChangeRow).order_by(PurposeChangeRow.change_id)
    return list((await session.scalars(statement)).all())


async def row_counts(session: AsyncSession) -> dict[str, int]:
    """How many rows each table holds: the rebuild checks it starts from nothing."""
    counts = {}
    for table in (Demand, CaseEventRow, LabelRow, DemandFactRow, CaseRow, PurposeChangeRow):
        counts[table.__tablename__] = int(
            (await session.execute(select(func.count()).select_from(table))).scalar_one()
        )
    return counts
