"""A case and its demands and events, for the timeline."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db.tables import (
    CaseEventRow,
    CaseRow,
    DemandFactRow,
)


async def find_cases(
    session: AsyncSession, case_id: str, *, source: str | None = None
) -> list[CaseRow]:
    """A case by its id or by the source's case ref; ``source``: that source's cases only."""
    mine = [] if source is None else [CaseRow.source == source]
    by_id = (await session.scalars(select(CaseRow).where(CaseRow.case_id == case_id, *mine))).all()
    if by_id:
        return list(by_id)
    return list(
        (await session.scalars(select(CaseRow).where(CaseRow.case_ref == case_id, *mine))).all()
    )


async def case_demands(session: AsyncSession, case: CaseRow) -> list[DemandFactRow]:
    statement = (
        select(DemandFactRow)
        .where(
            DemandFactRow.source == case.source,
            DemandFactRow.customer_ref == case.customer_ref,
            DemandFactRow.case_id == case.case_id,
        )
        .order_by(DemandFactRow.occurred_at, DemandFactRow.demand_id)
    )
    return list((await session.scalars(statement)).all())


async def case_events_of(session: AsyncSession, case: CaseRow) -> list[CaseEventRow]:
    if case.case_ref is None:
        return []
    statement = (
        select(CaseEventRow)
        .where(
            CaseEventRow.source == case.source,
            CaseEventRow.customer_ref == case.customer_ref,
            CaseEventRow.case_ref == case.case_ref,
        )
        .order_by(CaseEventRow.occurred_at, CaseEventRow.event_id)
    )
    return list((await session.scalars(statement)).all())
