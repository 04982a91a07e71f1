"""Every query of the metrics service, and nowhere else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db.tables import Demand
from shared.events import DemandClassified


def _insert_ignoring_duplicates(
    session: AsyncSession, table: Any, rows: list[dict[str, Any]]
) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING: a redelivered event changes nothing."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).values(rows).on_conflict_do_nothing()


def demand_row(event: DemandClassified) -> dict[str, Any]:
    demand = event.demand
    return {
        "demand_id": demand.id,
        "customer_ref": demand.customer_ref,
        "case_ref": demand.case_ref,
        "channel": demand.channel.value,
        "source": demand.source,
        "team": demand.team,
        "occurred_at": demand.occurred_at,
        "received_at": demand.received_at,
        "purpose": event.purpose,
        "demand_type": event.demand_type.value,
        "failure_kind": event.failure_kind,
        "confidence": event.confidence,
        "method": event.method.value,
        "model_version": event.model_version,
        "caused_by_kind": event.caused_by.kind if event.caused_by else None,
        "caused_by_ref": event.caused_by.ref if event.caused_by else None,
        "classified_at": event.classified_at,
    }


async def add_classified_demands(session: AsyncSession, events: Sequence[DemandClassified]) -> None:
    rows = list({row["demand_id"]: row for row in map(demand_row, events)}.values())
    # Chunked: SQLite caps bound parameters per statement.
    for start in range(0, len(rows), 500):
        await session.execute(
            _insert_ignoring_duplicates(session, Demand, rows[start : start + 500])
        )


@dataclass(frozen=True)
class PurposeCounts:
    purpose: str
    volume: int
    value: int
    failure: int
    unknown: int

    @property
    def failure_share(self) -> float | None:
        known = self.value + self.failure
        return self.failure / known if known else None


async def purpose_counts(session: AsyncSession) -> list[PurposeCounts]:
    def count_of(demand_type: str) -> Any:
        return func.sum(case((Demand.demand_type == demand_type, 1), else_=0))

    statement = (
        select(
            Demand.purpose,
            func.count(),
            count_of("value"),
            count_of("failure"),
            count_of("unknown"),
        )
        .group_by(Demand.purpose)
        .order_by(func.count().desc(), Demand.purpose)
    )
    rows = (await session.execute(statement)).all()
    return [
        PurposeCounts(p, int(n), int(v or 0), int(f or 0), int(u or 0)) for p, n, v, f, u in rows
    ]
