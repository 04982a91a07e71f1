"""The queries behind the capacity and failure-flow figures (services/metrics/figures.py).

Beside db/measures.py, with the same filters, so that these figures could be added without
touching the queries the rest of the service relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db.measures import (
    Filters,
    as_date,
    demand_day_counts,
    filter_days,
    filter_demands,
    whole_days,
)
from services.metrics.db.sql import as_utc
from services.metrics.db.tables import Demand, DemandDayRow, DemandFactRow, QueueTextRow

UNTRACED = "untraced"


@dataclass(frozen=True)
class FailureHandling:
    """The failure demands of one purpose, channel and UTC day, and the staff time their
    sources reported (``measured`` of them sent one, adding up to ``measured_seconds``)."""

    purpose: str
    channel: str
    day: date
    demands: int
    measured: int
    measured_seconds: float


def _utc_day(session: AsyncSession) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", DemandFactRow.occurred_at))
    return func.date(DemandFactRow.occurred_at)  # SQLite stores UTC text: its first 10 chars


async def failure_handling(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> list[FailureHandling]:
    """Failure demands in the filter per purpose, channel and UTC day, with the staff time
    their sources reported: summed by the database, so a million demands are a few rows."""
    if whole_days(filters):
        statement: Any = select(
            DemandDayRow.purpose,
            DemandDayRow.channel,
            DemandDayRow.day,
            func.sum(DemandDayRow.demands),
            func.sum(DemandDayRow.handling_measured),
            func.sum(DemandDayRow.handling_micros),
        ).where(DemandDayRow.demand_type == "failure")
        statement = filter_days(statement, filters)
        if purpose is not None:
            statement = statement.where(DemandDayRow.purpose == purpose)
        statement = statement.group_by(DemandDayRow.purpose, DemandDayRow.channel, DemandDayRow.day)
        return [
            FailureHandling(str(p), str(c), as_date(d), int(n), int(m), int(micros) / 1_000_000)
            for p, c, d, n, m, micros in (await session.execute(statement)).all()
        ]
    day = _utc_day(session)
    statement = (
        select(
            DemandFactRow.purpose,
            DemandFactRow.channel,
            day,
            func.count(),
            func.count(Demand.handling_seconds),
            func.coalesce(func.sum(Demand.handling_seconds), 0.0),
        )
        .join(
            Demand,
            and_(
                Demand.source == DemandFactRow.source, Demand.demand_id == DemandFactRow.demand_id
            ),
        )
        .where(DemandFactRow.demand_type == "failure")
    )
    statement = filter_demands(statement, filters)
    if purpose is not None:
        statement = statement.where(DemandFactRow.purpose == purpose)
    statement = statement.group_by(DemandFactRow.purpose, DemandFactRow.channel, day)
    return [
        FailureHandling(
            str(p),
            str(c),
            d if isinstance(d, date) else date.fromisoformat(str(d)),
            int(n),
            int(m),
            float(seconds),
        )
        for p, c, d, n, m, seconds in (await session.execute(statement)).all()
    ]


async def demand_days(
    session: AsyncSession, filters: Filters, *, purpose: str
) -> list[tuple[date, str, int]]:
    """(UTC day, demand type, demands) of one purpose: counted by the database."""
    if whole_days(filters):
        return await demand_day_counts(session, filters, purpose=purpose)
    day = _utc_day(session)
    statement: Any = select(day, DemandFactRow.demand_type, func.count()).where(
        DemandFactRow.purpose == purpose
    )
    statement = filter_demands(statement, filters).group_by(day, DemandFactRow.demand_type)
    return [
        (d if isinstance(d, date) else date.fromisoformat(str(d)), str(kind), int(n))
        for d, kind, n in (await session.execute(statement)).all()
    ]


async def failure_flow(session: AsyncSession, filters: Filters) -> list[tuple[str, str, int]]:
    """(cause purpose, failure demand's purpose, count): which purpose breeds which failure."""
    if whole_days(filters):
        day_cause = func.coalesce(func.nullif(DemandDayRow.cause_purpose, ""), UNTRACED)
        by_days: Any = select(
            day_cause, DemandDayRow.purpose, func.sum(DemandDayRow.demands)
        ).where(DemandDayRow.demand_type == "failure")
        by_days = filter_days(by_days, filters).group_by(day_cause, DemandDayRow.purpose)
        found = (await session.execute(by_days)).all()
        return [(str(c), str(p), int(n)) for c, p, n in found if n]
    cause = func.coalesce(DemandFactRow.cause_purpose, UNTRACED)
    statement: Any = select(cause, DemandFactRow.purpose, func.count()).where(
        DemandFactRow.demand_type == "failure"
    )
    statement = filter_demands(statement, filters).group_by(cause, DemandFactRow.purpose)
    rows = (await session.execute(statement)).all()
    return [(str(c), str(p), int(n)) for c, p, n in rows]


@dataclass(frozen=True)
class FlowExample:
    source: str
    demand_id: str
    case_id: str
    occurred_at: datetime
    channel: str
    failure_kind: str | None


async def failure_flow_examples(
    session: AsyncSession, filters: Filters, *, cause: str, purpose: str, limit: int
) -> list[FlowExample]:
    """The latest failure demands of ``purpose`` traced to ``cause`` ('untraced': to none)."""
    statement: Any = select(
        DemandFactRow.source,
        DemandFactRow.demand_id,
        DemandFactRow.case_id,
        DemandFactRow.occurred_at,
        DemandFactRow.channel,
        DemandFactRow.failure_kind,
    ).where(DemandFactRow.demand_type == "failure", DemandFactRow.purpose == purpose)
    if cause == UNTRACED:
        statement = statement.where(DemandFactRow.cause_purpose.is_(None))
    else:
        statement = statement.where(DemandFactRow.cause_purpose == cause)
    statement = filter_demands(statement, filters)
    statement = statement.order_by(DemandFactRow.occurred_at.desc(), DemandFactRow.demand_id).limit(
        limit
    )
    rows = (await session.execute(statement)).all()
    return [FlowExample(s, d, c, as_utc(at), ch, k) for s, d, c, at, ch, k in rows]


async def words_of(
    session: AsyncSession, demands: list[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The customer's redacted words of these demands ((source, id)), where they are still
    retained (the review and audit queues keep them for a while; the figures' tables never
    hold them)."""
    if not demands:
        return {}
    rows = await session.execute(
        select(QueueTextRow.source, QueueTextRow.demand_id, QueueTextRow.text).where(
            tuple_(QueueTextRow.source, QueueTextRow.demand_id).in_(demands)
        )
    )
    return {(str(s), str(d)): str(t) for s, d, t in rows.all()}
