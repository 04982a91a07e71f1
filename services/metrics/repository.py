"""Every query of the metrics service, and nowhere else."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db.tables import (
    CaseEventRow,
    CaseRow,
    Demand,
    DemandFactRow,
    LabelRow,
    PurposeChangeRow,
)
from services.metrics.domain.cases import (
    Case,
    CaseEventFact,
    DemandFact,
    LabelFact,
    StitchedCustomer,
)
from services.metrics.domain.windows import Period
from shared.events import CaseEvent, DemandClassified, DemandLabelled

# SQLite caps the bound parameters of one statement; stay well below it.
_CHUNK = 400


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything is stored in UTC, so say so."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


async def _insert_ignoring_duplicates(
    session: AsyncSession, table: Any, rows: Sequence[dict[str, Any]]
) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: a redelivered event changes nothing."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # executemany form: SQLAlchemy batches it ("insertmanyvalues") without compiling one
    # huge VALUES statement per chunk, which cost more than the database work itself.
    await session.execute(insert(table).on_conflict_do_nothing(), list(rows))


# --- received events ------------------------------------------------------------------------


def demand_row(event: DemandClassified) -> dict[str, Any]:
    demand = event.demand
    return {
        "demand_id": demand.id,
        "customer_ref": demand.customer_ref,
        "case_ref": demand.case_ref,
        "channel": demand.channel.value,
        "source": demand.source,
        "team": demand.team,
        "occurred_at": as_utc(demand.occurred_at),
        "received_at": as_utc(demand.received_at),
        "purpose": event.purpose,
        "demand_type": event.demand_type.value,
        "failure_kind": event.failure_kind,
        "confidence": event.confidence,
        "method": event.method.value,
        "model_version": event.model_version,
        "caused_by_kind": event.caused_by.kind if event.caused_by else None,
        "caused_by_ref": event.caused_by.ref if event.caused_by else None,
        "classified_at": as_utc(event.classified_at),
    }


def case_event_row(event: CaseEvent) -> dict[str, Any]:
    return {
        "event_id": event.id,
        "case_ref": event.case_ref,
        "customer_ref": event.customer_ref,
        "type": event.type.value,
        "occurred_at": as_utc(event.occurred_at),
        "purpose": event.purpose,
        "source": event.source,
    }


def label_row(event: DemandLabelled) -> dict[str, Any]:
    return {
        "label_id": event.id,
        "demand_id": event.demand_id,
        "demand_type": event.demand_type.value,
        "failure_kind": event.failure_kind,
        "purpose": event.purpose,
        "labelled_by": event.labelled_by,
        "labelled_at": as_utc(event.labelled_at),
    }


def _unique(rows: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return list({row[key]: row for row in rows}.values())


async def add_received_events(
    session: AsyncSession,
    *,
    demands: Sequence[DemandClassified],
    case_events: Sequence[CaseEvent],
    labels: Sequence[DemandLabelled],
) -> None:
    await _insert_ignoring_duplicates(
        session, Demand, _unique(map(demand_row, demands), "demand_id")
    )
    await _insert_ignoring_duplicates(
        session, CaseEventRow, _unique(map(case_event_row, case_events), "event_id")
    )
    await _insert_ignoring_duplicates(
        session, LabelRow, _unique(map(label_row, labels), "label_id")
    )


async def customers_of_demands(session: AsyncSession, demand_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(list(demand_ids)):
        rows = await session.execute(
            select(Demand.customer_ref).where(Demand.demand_id.in_(chunk)).distinct()
        )
        found.update(rows.scalars())
    return found


async def lock_customers(session: AsyncSession, customers: Sequence[str]) -> None:
    """Serialise recomputation of a customer across instances until this transaction ends.

    Two instances can hold one customer's events (labels are keyed by demand, and the
    topics are not co-partitioned): without the lock, each could recompute from a history
    lacking the other's uncommitted rows, and the last commit would win. PostgreSQL: one
    transaction-scoped advisory lock per customer, taken in hash order so two batches
    cannot deadlock. SQLite needs none: the batch's first INSERT already holds the single
    writer lock, and the history is read after it.
    """
    if session.get_bind().dialect.name != "postgresql" or not customers:
        return
    await session.execute(
        text(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(c, 0) AS h "
            "FROM unnest(CAST(:customers AS text[])) AS c ORDER BY h) AS ordered"
        ),
        {"customers": list(customers)},
    )


@dataclass(frozen=True)
class CustomerHistory:
    demands: list[DemandFact]
    case_events: list[CaseEventFact]
    labels: list[LabelFact]


async def customer_histories(
    session: AsyncSession, customers: Sequence[str]
) -> dict[str, CustomerHistory]:
    histories = {c: CustomerHistory([], [], []) for c in customers}
    demand_customer: dict[str, str] = {}
    for chunk in _chunks(list(customers)):
        for row in (
            await session.scalars(select(Demand).where(Demand.customer_ref.in_(chunk)))
        ).all():
            demand_customer[row.demand_id] = row.customer_ref
            histories[row.customer_ref].demands.append(
                DemandFact(
                    demand_id=row.demand_id,
                    customer_ref=row.customer_ref,
                    occurred_at=as_utc(row.occurred_at),
                    channel=row.channel,
                    team=row.team,
                    case_ref=row.case_ref,
                    purpose=row.purpose,
                    demand_type=row.demand_type,
                    failure_kind=row.failure_kind,
                    caused_by_kind=row.caused_by_kind,
                    caused_by_ref=row.caused_by_ref,
                )
            )
        events = await session.scalars(
            select(CaseEventRow).where(CaseEventRow.customer_ref.in_(chunk))
        )
        for event in events.all():
            histories[event.customer_ref].case_events.append(
                CaseEventFact(
                    event_id=event.event_id,
                    case_ref=event.case_ref,
                    customer_ref=event.customer_ref,
                    type=event.type,
                    occurred_at=as_utc(event.occurred_at),
                    purpose=event.purpose,
                )
            )
    for chunk in _chunks(list(demand_customer)):
        for label in (
            await session.scalars(select(LabelRow).where(LabelRow.demand_id.in_(chunk)))
        ).all():
            histories[demand_customer[label.demand_id]].labels.append(
                LabelFact(
                    label_id=label.label_id,
                    demand_id=label.demand_id,
                    demand_type=label.demand_type,
                    failure_kind=label.failure_kind,
                    purpose=label.purpose,
                    labelled_at=as_utc(label.labelled_at),
                )
            )
    return histories


@dataclass(frozen=True)
class FulfilledCase:
    customer_ref: str
    case_id: str
    purpose: str | None
    first_channel: str | None
    end_to_end_seconds: float | None


async def fulfilled_cases_of(
    session: AsyncSession, customers: Sequence[str]
) -> list[FulfilledCase]:
    found = []
    for chunk in _chunks(list(customers)):
        rows = await session.execute(
            select(
                CaseRow.customer_ref,
                CaseRow.case_id,
                CaseRow.purpose,
                CaseRow.first_channel,
                CaseRow.end_to_end_seconds,
            ).where(CaseRow.customer_ref.in_(chunk), CaseRow.end_to_end_seconds.is_not(None))
        )
        found += [FulfilledCase(*row) for row in rows.all()]
    return found


async def purposes_of(session: AsyncSession, customers: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(list(customers)):
        rows = await session.execute(
            select(DemandFactRow.purpose).where(DemandFactRow.customer_ref.in_(chunk)).distinct()
        )
        found.update(rows.scalars())
    return found


async def replace_derived(
    session: AsyncSession, stitched: dict[str, tuple[StitchedCustomer, list[DemandFact]]]
) -> None:
    """Swap each customer's derived rows for the freshly stitched ones, in one transaction."""
    customers = list(stitched)
    for chunk in _chunks(customers):
        await session.execute(delete(DemandFactRow).where(DemandFactRow.customer_ref.in_(chunk)))
        await session.execute(delete(CaseRow).where(CaseRow.customer_ref.in_(chunk)))
    fact_rows: list[dict[str, Any]] = []
    case_rows: list[dict[str, Any]] = []
    for result, demands in stitched.values():
        for demand in demands:
            fact_rows.append(
                {
                    "demand_id": demand.demand_id,
                    "customer_ref": demand.customer_ref,
                    "case_id": result.case_of_demand[demand.demand_id],
                    "purpose": demand.purpose,
                    "demand_type": demand.demand_type,
                    "failure_kind": demand.failure_kind,
                    "cause_purpose": result.cause_purpose_of_demand.get(demand.demand_id),
                    "channel": demand.channel,
                    "team": demand.team,
                    "occurred_at": demand.occurred_at,
                    "labelled": demand.labelled,
                }
            )
        case_rows += [case_row(c) for c in result.cases]
    await _insert_ignoring_duplicates(session, DemandFactRow, fact_rows)
    await _insert_ignoring_duplicates(session, CaseRow, case_rows)


def case_row(case: Case) -> dict[str, Any]:
    return {
        "customer_ref": case.customer_ref,
        "case_id": case.case_id,
        "case_ref": case.case_ref,
        "purpose": case.purpose,
        "status": case.status,
        "measured": case.measured,
        "started_at": case.started_at,
        "fulfilled_at": case.fulfilled_at,
        "end_to_end_seconds": case.end_to_end_seconds,
        "reopened": case.reopened,
        "contacts": case.contacts,
        "failure_contacts": case.failure_contacts,
        "channels": ",".join(case.channels),
        "first_channel": case.first_channel,
        "team": case.team,
        "one_stop": case.one_stop,
        "last_activity_at": case.last_activity_at,
    }


# --- reading the measures ------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    period: Period | None = None
    channel: str | None = None
    team: str | None = None


def _filter_demands(statement: Any, filters: Filters) -> Any:
    if filters.period is not None:
        statement = statement.where(
            DemandFactRow.occurred_at >= filters.period.start,
            DemandFactRow.occurred_at < filters.period.end,
        )
    if filters.channel is not None:
        statement = statement.where(DemandFactRow.channel == filters.channel)
    if filters.team is not None:
        statement = statement.where(DemandFactRow.team == filters.team)
    return statement


def _filter_cases(statement: Any, filters: Filters, *, by: Any) -> Any:
    if filters.period is not None:
        statement = statement.where(by >= filters.period.start, by < filters.period.end)
    if filters.channel is not None:
        statement = statement.where(CaseRow.first_channel == filters.channel)
    if filters.team is not None:
        statement = statement.where(CaseRow.team == filters.team)
    return statement


def _count_where(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


@dataclass(frozen=True)
class DemandCounts:
    key: str
    volume: int
    value: int
    failure: int
    unknown: int


async def demand_counts(
    session: AsyncSession, filters: Filters, *, by: str = "purpose", purpose: str | None = None
) -> list[DemandCounts]:
    """Volume by type, grouped by 'purpose' or 'channel', largest volume first."""
    column = DemandFactRow.purpose if by == "purpose" else DemandFactRow.channel
    # Grouping by (key, type) lets an index on (purpose, demand_type) answer on its own.
    statement: Any = select(column, DemandFactRow.demand_type, func.count())
    statement = _filter_demands(statement, filters)
    if purpose is not None:
        statement = statement.where(DemandFactRow.purpose == purpose)
    statement = statement.group_by(column, DemandFactRow.demand_type)
    by_key: dict[str, dict[str, int]] = {}
    for key, demand_type, count in (await session.execute(statement)).all():
        by_key.setdefault(key, {})[demand_type] = int(count)
    counts = [
        DemandCounts(
            key,
            sum(types.values()),
            types.get("value", 0),
            types.get("failure", 0),
            types.get("unknown", 0),
        )
        for key, types in by_key.items()
    ]
    return sorted(counts, key=lambda c: (-c.volume, c.key))


@dataclass(frozen=True)
class CaseCounts:
    purpose: str
    fulfilled: int
    contacts: int
    one_stop: int


async def fulfilled_case_counts(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> dict[str, CaseCounts]:
    statement: Any = select(
        CaseRow.purpose,
        func.count(),
        func.coalesce(func.sum(CaseRow.contacts), 0),
        _count_where(CaseRow.one_stop.is_(True)),
    ).where(CaseRow.measured.is_(True), CaseRow.status == "fulfilled")
    statement = _filter_cases(statement, filters, by=CaseRow.fulfilled_at)
    if purpose is not None:
        statement = statement.where(CaseRow.purpose == purpose)
    rows = (await session.execute(statement.group_by(CaseRow.purpose))).all()
    return {p: CaseCounts(p, int(n), int(c), int(o)) for p, n, c, o in rows}


async def end_to_end_percentiles(
    session: AsyncSession,
    filters: Filters,
    quantiles: Sequence[float],
    *,
    purpose: str | None = None,
) -> dict[str, dict[float, float]]:
    """Percentiles of the end-to-end times of the cases fulfilled in the period, per purpose,
    by linear interpolation between closest ranks (domain/percentiles.py), reading only the
    two values either side of each rank off the (purpose, end_to_end_seconds) index rather
    than every time: a million cases cost a few index seeks, not a million rows."""

    def fulfilled() -> Any:
        # A time is only ever set on a measured case (domain/cases.py), so no more filter.
        statement: Any = select(CaseRow.end_to_end_seconds).where(
            CaseRow.end_to_end_seconds.is_not(None)
        )
        return _filter_cases(statement, filters, by=CaseRow.fulfilled_at)

    counting: Any = select(CaseRow.purpose, func.count()).where(
        CaseRow.end_to_end_seconds.is_not(None)
    )
    counting = _filter_cases(counting, filters, by=CaseRow.fulfilled_at)
    if purpose is not None:
        counting = counting.where(CaseRow.purpose == purpose)
    sizes = (await session.execute(counting.group_by(CaseRow.purpose))).all()
    found: dict[str, dict[float, float]] = {}
    for case_purpose, size in sizes:
        found[case_purpose] = {}
        for q in quantiles:
            rank = (int(size) - 1) * q / 100
            below = math.floor(rank)
            rows = await session.execute(
                fulfilled()
                .where(CaseRow.purpose == case_purpose)
                .order_by(CaseRow.end_to_end_seconds)
                .limit(2)
                .offset(below)
            )
            values = [float(v) for v in rows.scalars()]
            above = values[1] if len(values) > 1 else values[0]
            found[case_purpose][q] = values[0] + (rank - below) * (above - values[0])
    return found


async def open_case_counts(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> dict[str, int]:
    """Cases open now, per purpose (the period does not apply: open is now)."""
    statement: Any = select(CaseRow.purpose, func.count()).where(
        CaseRow.measured.is_(True), CaseRow.status == "open"
    )
    statement = _filter_cases(statement, Filters(None, filters.channel, filters.team), by=None)
    if purpose is not None:
        statement = statement.where(CaseRow.purpose == purpose)
    rows = await session.execute(statement.group_by(CaseRow.purpose))
    return {p: int(n) for p, n in rows.all()}


async def end_to_end_seconds(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> dict[str, list[float]]:
    """End-to-end times of the cases fulfilled in the period, per purpose."""
    statement: Any = select(CaseRow.purpose, CaseRow.end_to_end_seconds).where(
        CaseRow.measured.is_(True), CaseRow.end_to_end_seconds.is_not(None)
    )
    statement = _filter_cases(statement, filters, by=CaseRow.fulfilled_at)
    if purpose is not None:
        statement = statement.where(CaseRow.purpose == purpose)
    values: dict[str, list[float]] = {}
    for case_purpose, seconds in (await session.execute(statement)).all():
        values.setdefault(case_purpose, []).append(float(seconds))
    return values


async def open_case_starts(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> dict[str, list[datetime]]:
    """When each case still open now started (the period does not apply: open is now)."""
    statement: Any = select(CaseRow.purpose, CaseRow.started_at).where(
        CaseRow.measured.is_(True), CaseRow.status == "open"
    )
    statement = _filter_cases(statement, Filters(None, filters.channel, filters.team), by=None)
    if purpose is not None:
        statement = statement.where(CaseRow.purpose == purpose)
    starts: dict[str, list[datetime]] = {}
    for case_purpose, started in (await session.execute(statement)).all():
        starts.setdefault(case_purpose, []).append(as_utc(started))
    return starts


async def failure_breakdown(
    session: AsyncSession, filters: Filters, *, purpose: str, by: str
) -> list[tuple[str, int]]:
    """Failure demands of a purpose by 'kind' or by 'cause' (the purpose they trace to)."""
    column = DemandFactRow.failure_kind if by == "kind" else DemandFactRow.cause_purpose
    statement: Any = select(column, func.count()).where(
        DemandFactRow.purpose == purpose, DemandFactRow.demand_type == "failure"
    )
    statement = _filter_demands(statement, filters).group_by(column)
    rows = (await session.execute(statement)).all()
    missing = "unspecified" if by == "kind" else "untraced"
    return sorted(((k or missing, int(n)) for k, n in rows), key=lambda kv: (-kv[1], kv[0]))


async def demand_moments(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> list[tuple[datetime, str]]:
    """(occurred_at, demand_type) of every demand, oldest first: for series over time."""
    statement: Any = select(DemandFactRow.occurred_at, DemandFactRow.demand_type)
    statement = _filter_demands(statement, filters)
    if purpose is not None:
        statement = statement.where(DemandFactRow.purpose == purpose)
    rows = (await session.execute(statement.order_by(DemandFactRow.occurred_at))).all()
    return [(as_utc(at), kind) for at, kind in rows]


async def fulfilment_series(
    session: AsyncSession, *, purpose: str, since: datetime | None
) -> list[tuple[datetime, float]]:
    """(fulfilled_at, end-to-end seconds) in order of fulfilment: the XmR series."""
    statement: Any = select(CaseRow.fulfilled_at, CaseRow.end_to_end_seconds).where(
        CaseRow.purpose == purpose,
        CaseRow.measured.is_(True),
        CaseRow.end_to_end_seconds.is_not(None),
    )
    if since is not None:
        statement = statement.where(CaseRow.fulfilled_at >= since)
    statement = statement.order_by(CaseRow.fulfilled_at, CaseRow.case_id)
    rows = (await session.execute(statement)).all()
    return [(as_utc(at), float(seconds)) for at, seconds in rows if at is not None]


async def all_purposes(session: AsyncSession) -> list[str]:
    rows = await session.execute(select(DemandFactRow.purpose).distinct())
    return sorted(rows.scalars())


# --- cases --------------------------------------------------------------------------------


async def find_cases(session: AsyncSession, case_id: str) -> list[CaseRow]:
    """A case by its id or by the source's case ref."""
    by_id = (await session.scalars(select(CaseRow).where(CaseRow.case_id == case_id))).all()
    if by_id:
        return list(by_id)
    return list((await session.scalars(select(CaseRow).where(CaseRow.case_ref == case_id))).all())


async def case_demands(session: AsyncSession, case: CaseRow) -> list[DemandFactRow]:
    statement = (
        select(DemandFactRow)
        .where(
            DemandFactRow.customer_ref == case.customer_ref, DemandFactRow.case_id == case.case_id
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
            CaseEventRow.customer_ref == case.customer_ref,
            CaseEventRow.case_ref == case.case_ref,
        )
        .order_by(CaseEventRow.occurred_at, CaseEventRow.event_id)
    )
    return list((await session.scalars(statement)).all())


# --- recorded changes ----------------------------------------------------------------------


async def add_change(
    session: AsyncSession, *, purpose: str, changed_at: datetime, note: str
) -> PurposeChangeRow:
    row = PurposeChangeRow(
        purpose=purpose, changed_at=as_utc(changed_at), note=note, recorded_at=datetime.now(UTC)
    )
    session.add(row)
    await session.flush()
    return row


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


async def copy_changes(session: AsyncSession, changes: Sequence[PurposeChangeRow]) -> None:
    for change in changes:
        session.add(
            PurposeChangeRow(
                purpose=change.purpose,
                changed_at=as_utc(change.changed_at),
                note=change.note,
                recorded_at=as_utc(change.recorded_at),
            )
        )


async def row_counts(session: AsyncSession) -> dict[str, int]:
    """How many rows each table holds: the rebuild checks it starts from nothing."""
    counts = {}
    for table in (Demand, CaseEventRow, LabelRow, DemandFactRow, CaseRow):
        counts[table.__tablename__] = int(
            (await session.execute(select(func.count()).select_from(table))).scalar_one()
        )
    return counts
