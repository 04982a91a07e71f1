"""The audit sample's strata and items, and the machine and audited counts the
estimates are made of."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, delete, func, literal, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db.measures import Filters, as_date, filter_days, whole_days
from services.metrics.db.sql import (
    DemandKey,
    as_utc,
    chunks,
    insert_ignoring_duplicates,
    same_demand,
)
from services.metrics.db.tables import (
    AuditItemRow,
    AuditStratumRow,
    Demand,
    DemandDayRow,
    LabelRow,
    QueueTextRow,
)
from services.metrics.domain.audit import MachineCount, StratumKey


async def first_classifications(
    session: AsyncSession, demands: Sequence[DemandKey]
) -> list[Demand]:
    """The demands as first classified (the first DemandClassified of a (source, id) is the
    one kept)."""
    found: list[Demand] = []
    for chunk in chunks(sorted(set(demands))):
        found += (
            await session.scalars(
                select(Demand).where(tuple_(Demand.source, Demand.demand_id).in_(chunk))
            )
        ).all()
    return found


async def stratum_sizes(
    session: AsyncSession, strata: Iterable[StratumKey]
) -> dict[StratumKey, int]:
    """How many demands each stratum (first machine purpose, ISO week) holds now."""
    wanted = set(strata)
    sizes = dict.fromkeys(wanted, 0)
    purposes = sorted({purpose for purpose, _ in wanted})
    weeks = sorted({week for _, week in wanted})
    for chunk in chunks(purposes):
        statement = (
            select(Demand.purpose, Demand.week_start, func.count())
            .where(Demand.purpose.in_(chunk), Demand.week_start.in_(weeks))
            .group_by(Demand.purpose, Demand.week_start)
        )
        for purpose, week, count in (await session.execute(statement)).all():
            if (purpose, week) in wanted:
                sizes[(purpose, week)] = int(count)
    return sizes


async def save_strata(session: AsyncSession, strata: dict[StratumKey, tuple[int, float]]) -> None:
    """Record each stratum's size and inclusion probability (replacing what was there)."""
    if not strata:
        return
    rows = [
        {"purpose": p, "week_start": w, "population": n, "inclusion_probability": prob}
        for (p, w), (n, prob) in sorted(strata.items())
    ]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(AuditStratumRow)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["purpose", "week_start"],
            set_={
                "population": statement.excluded.population,
                "inclusion_probability": statement.excluded.inclusion_probability,
            },
        ),
        rows,
    )


async def shrink_audit(
    session: AsyncSession, stratum: StratumKey, probability: float
) -> list[DemandKey]:
    """Drop the stratum's audit items whose draw is no longer below its probability; the
    demands dropped (they may wait for review again)."""
    purpose, week = stratum
    leaving = (
        AuditItemRow.purpose == purpose,
        AuditItemRow.week_start == week,
        AuditItemRow.draw >= probability,
    )
    dropped = [
        (source, demand_id)
        for source, demand_id in (
            await session.execute(
                select(AuditItemRow.source, AuditItemRow.demand_id).where(*leaving)
            )
        ).all()
    ]
    if dropped:
        await session.execute(delete(AuditItemRow).where(*leaving))
    return dropped


async def add_audit_items(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await insert_ignoring_duplicates(session, AuditItemRow, rows)


async def add_queue_texts(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await insert_ignoring_duplicates(session, QueueTextRow, rows)


async def audit_strata(session: AsyncSession) -> list[AuditStratumRow]:
    statement = select(AuditStratumRow).order_by(
        AuditStratumRow.purpose, AuditStratumRow.week_start
    )
    return list((await session.scalars(statement)).all())


async def audit_items(session: AsyncSession) -> list[AuditItemRow]:
    statement = select(AuditItemRow).order_by(AuditItemRow.source, AuditItemRow.demand_id)
    return list((await session.scalars(statement)).all())


def _filter_received(statement: Any, filters: Filters) -> Any:
    """The API's filters on the demands as received (and first classified)."""
    if filters.source is not None:
        statement = statement.where(Demand.source == filters.source)
    if filters.period is not None:
        statement = statement.where(
            Demand.occurred_at >= filters.period.start, Demand.occurred_at < filters.period.end
        )
    if filters.channel is not None:
        statement = statement.where(Demand.channel == filters.channel)
    if filters.team is not None:
        statement = statement.where(Demand.team == filters.team)
    return statement


Grouping = Literal["purpose", "channel", "all"]


def _group_column(by: Grouping) -> Any:
    if by == "purpose":
        return Demand.purpose
    if by == "channel":
        return Demand.channel
    return literal("all")


async def machine_counts(
    session: AsyncSession, filters: Filters, *, by: Grouping, purpose: str | None = None
) -> list[MachineCount]:
    """The machine's first labels counted per group, stratum and type: the estimate's
    population (grouped on the (purpose, week_start, demand_type) index)."""
    if whole_days(filters):
        found: Counter[tuple[Hashable, StratumKey, str]] = Counter()
        for day, key, stratum_purpose, kind, n in await _machine_days(
            session, filters, by=by, purpose=purpose
        ):
            found[(key, (stratum_purpose, _monday(day)), kind)] += n
        return [
            MachineCount(key, stratum, kind, n) for (key, stratum, kind), n in found.items() if n
        ]
    group = _group_column(by)
    statement: Any = select(
        group, Demand.purpose, Demand.week_start, Demand.demand_type, func.count()
    )
    statement = _filter_received(statement, filters)
    if purpose is not None:
        statement = statement.where(Demand.purpose == purpose)
    if by == "all":
        statement = statement.group_by(Demand.purpose, Demand.week_start, Demand.demand_type)
    else:
        statement = statement.group_by(group, Demand.purpose, Demand.week_start, Demand.demand_type)
    return [
        MachineCount(key, (p, w), kind, int(n))
        for key, p, w, kind, n in (await session.execute(statement)).all()
    ]


def _monday(day: date) -> date:
    """The ISO week's Monday: the stratum's week_start (domain/audit.py's week_start)."""
    return day - timedelta(days=day.weekday())


async def _machine_days(
    session: AsyncSession, filters: Filters, *, by: Grouping, purpose: str | None = None
) -> list[tuple[date, str, str, str, int]]:
    """(day, group, machine purpose, machine type, demands) off demand_days."""
    group: Any = {
        "purpose": DemandDayRow.machine_purpose,
        "channel": DemandDayRow.channel,
        "all": literal("all"),
    }[by]
    statement: Any = select(
        DemandDayRow.day,
        group,
        DemandDayRow.machine_purpose,
        DemandDayRow.machine_type,
        func.sum(DemandDayRow.demands),
    )
    statement = filter_days(statement, filters)
    if purpose is not None:
        statement = statement.where(DemandDayRow.machine_purpose == purpose)
    keys = [DemandDayRow.day, DemandDayRow.machine_purpose, DemandDayRow.machine_type]
    statement = statement.group_by(*keys) if by == "all" else statement.group_by(group, *keys)
    return [
        (as_date(d), str(g), str(p), str(kind), int(n))
        for d, g, p, kind, n in (await session.execute(statement)).all()
    ]


async def machine_day_counts(
    session: AsyncSession, filters: Filters
) -> list[tuple[date, StratumKey, str, int]]:
    """(UTC day, stratum, first machine type, demands): for estimates per period."""
    if not whole_days(filters):
        counts: Counter[tuple[date, StratumKey, str]] = Counter(
            (at.date(), stratum, kind)
            for at, stratum, kind in await machine_labels_over_time(session, filters)
        )
        return [(day, stratum, kind, n) for (day, stratum, kind), n in counts.items()]
    return [
        (day, (p, _monday(day)), kind, n)
        for day, _all, p, kind, n in await _machine_days(session, filters, by="all")
        if n
    ]


async def machine_labels_over_time(
    session: AsyncSession, filters: Filters
) -> list[tuple[datetime, StratumKey, str]]:
    """(occurred_at, stratum, first machine type) of every demand: for estimates per period."""
    statement: Any = select(
        Demand.occurred_at, Demand.purpose, Demand.week_start, Demand.demand_type
    )
    rows = (await session.execute(_filter_received(statement, filters))).all()
    return [(as_utc(at), (p, w), kind) for at, p, w, kind in rows]


@dataclass(frozen=True)
class AuditedRow:
    demand_id: str
    stratum: StratumKey
    channel: str
    occurred_at: datetime
    machine: str
    person: str


async def audited(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> list[AuditedRow]:
    """The completed audit pairs of the demands the filters select: the machine's first
    label and the latest label made for the audit (labels made for any other reason are
    not an audit: they never enter the estimate)."""
    statement: Any = (
        select(
            AuditItemRow.source,
            AuditItemRow.demand_id,
            AuditItemRow.purpose,
            AuditItemRow.week_start,
            Demand.channel,
            Demand.occurred_at,
            AuditItemRow.machine_demand_type,
            LabelRow.demand_type,
            LabelRow.labelled_at,
            LabelRow.label_id,
        )
        .join(Demand, same_demand(Demand, AuditItemRow))
        .join(
            LabelRow,
            and_(
                same_demand(LabelRow, AuditItemRow, source="demand_source"),
                LabelRow.reason == "audit",
            ),
        )
    )
    statement = _filter_received(statement, filters)
    if purpose is not None:
        statement = statement.where(AuditItemRow.purpose == purpose)
    latest: dict[DemandKey, tuple[tuple[datetime, str], AuditedRow]] = {}
    for row in (await session.execute(statement)).all():
        source, demand_id, p, w, channel, occurred, machine, person, labelled_at, label_id = row
        order = (as_utc(labelled_at), label_id)
        key = (source, demand_id)
        if key not in latest or order > latest[key][0]:
            latest[key] = (
                order,
                AuditedRow(demand_id, (p, w), channel, as_utc(occurred), machine, person),
            )
    return [row for _, (_, row) in sorted(latest.items(), key=lambda item: item[0])]
