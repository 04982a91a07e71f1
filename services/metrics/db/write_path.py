"""The one write path: received events stored, each touched customer's derived rows
(demand facts, cases) replaced, and the daily aggregates moved by the difference."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db.aggregates import (
    CASE_DAY_COLUMNS,
    CaseDayKey,
    CaseTimeKey,
    DayKey,
    Received,
    apply_case_day_deltas,
    apply_case_time_deltas,
    apply_day_deltas,
    count_case,
    count_case_time,
    day_key,
    old_day_contributions,
)
from services.metrics.db.sql import Customer, DemandKey, as_utc, chunks, insert_ignoring_duplicates
from services.metrics.db.tables import (
    CaseEventRow,
    CaseRow,
    Demand,
    DemandFactRow,
    LabelRow,
)
from services.metrics.domain.audit import StratumKey, week_start
from services.metrics.domain.cases import (
    Case,
    CaseEventFact,
    DemandFact,
    LabelFact,
    StitchedCustomer,
)
from shared.events import CaseEvent, DemandClassified, DemandLabelled


def demand_row(event: DemandClassified) -> dict[str, Any]:
    demand = event.demand
    cause = event.caused_by
    if cause is not None and cause.source not in (None, demand.source):
        # Refs are unique within a source, and a customer is one source's: a cause in
        # another source is not this customer's, so it stitches nothing.
        cause = None
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
        "caused_by_kind": cause.kind if cause else None,
        "caused_by_ref": cause.ref if cause else None,
        "classified_at": as_utc(event.classified_at),
        "handling_seconds": handling_seconds(demand.attributes),
        "needs_review": event.needs_review,
        "week_start": week_start(as_utc(demand.occurred_at)),
    }


def handling_seconds(attributes: dict[str, str]) -> float | None:
    """The staff seconds a source reports in the demand's ``handling_seconds`` attribute: a
    number from 0 to a week, else nothing (the channel's average stands in, figures.py)."""
    try:
        seconds = float(attributes.get("handling_seconds", ""))
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 7 * 86400 else None


def case_event_row(event: CaseEvent) -> dict[str, Any]:
    return {
        "event_id": event.id,
        "case_ref": event.case_ref,
        "customer_ref": event.customer_ref,
        "type": event.type.value,
        "occurred_at": as_utc(event.occurred_at),
        "purpose": event.purpose,
        "source": event.source or "",
    }


def label_row(event: DemandLabelled) -> dict[str, Any]:
    return {
        "label_id": event.id,
        "demand_id": event.demand_id,
        # An old label names no source: kept with the empty one (see customer_histories).
        "demand_source": event.demand_source or "",
        "demand_type": event.demand_type.value,
        "failure_kind": event.failure_kind,
        "purpose": event.purpose,
        "labelled_by": event.labelled_by,
        "labelled_at": as_utc(event.labelled_at),
        "reason": event.reason,
    }


def _unique(rows: Iterable[dict[str, Any]], *key: str) -> list[dict[str, Any]]:
    return list({tuple(row[k] for k in key): row for row in rows}.values())


async def add_received_events(
    session: AsyncSession,
    *,
    demands: Sequence[DemandClassified],
    case_events: Sequence[CaseEvent],
    labels: Sequence[DemandLabelled],
) -> None:
    await insert_ignoring_duplicates(
        session, Demand, _unique(map(demand_row, demands), "source", "demand_id")
    )
    await insert_ignoring_duplicates(
        session, CaseEventRow, _unique(map(case_event_row, case_events), "source", "event_id")
    )
    await insert_ignoring_duplicates(
        session, LabelRow, _unique(map(label_row, labels), "demand_source", "label_id")
    )


async def customers_of_labels(
    session: AsyncSession, labels: Sequence[DemandLabelled]
) -> set[Customer]:
    """The customers whose demands these labels name: by (source, id), or for an old label
    without a source, every demand of its id (whether it applies is decided on stitching)."""
    keys = sorted(
        {(label.demand_source, label.demand_id) for label in labels if label.demand_source}
    )
    legacy = sorted({label.demand_id for label in labels if not label.demand_source})
    found: set[Customer] = set()
    for chunk in chunks(keys):
        rows = await session.execute(
            select(Demand.source, Demand.customer_ref)
            .where(tuple_(Demand.source, Demand.demand_id).in_(chunk))
            .distinct()
        )
        found.update((source, customer) for source, customer in rows.all())
    for chunk in chunks(legacy):
        rows = await session.execute(
            select(Demand.source, Demand.customer_ref).where(Demand.demand_id.in_(chunk)).distinct()
        )
        found.update((source, customer) for source, customer in rows.all())
    return found


async def lock_customers(session: AsyncSession, customers: Sequence[Customer]) -> None:
    """Serialise recomputation of a customer across instances until this transaction ends.

    Two instances can hold one customer's events (labels are keyed by demand, and the
    topics are not co-partitioned): without the lock, each could recompute from a history
    lacking the other's uncommitted rows, and the last commit would win. PostgreSQL: one
    transaction-scoped advisory lock per customer, taken in hash order so two batches
    cannot deadlock. SQLite needs none: the batch's first INSERT already holds the single
    writer lock, and the history is read after it.
    """
    await _advisory_locks(session, [f"{source}|{customer}" for source, customer in customers])


async def lock_strata(session: AsyncSession, strata: Iterable[StratumKey]) -> None:
    """Serialise the audit's upkeep of a stratum across instances, like ``lock_customers``:
    a stratum's size is counted, and its sample drawn, by one transaction at a time, so the
    last to commit has counted every demand. Taken before the customers' locks, always."""
    await _advisory_locks(session, [f"audit|{p}|{w.isoformat()}" for p, w in strata])


async def lock_demands(session: AsyncSession, demands: Iterable[DemandKey]) -> None:
    """Serialise a demand's insert with a label of it across instances, until this
    transaction ends. A label finds its customer through the demand's row: without the
    lock, a label committed by one instance while another's insert of the demand is not
    yet committed finds no customer, and the insert recomputed the customer before the label
    was there, so neither applies it. With it, whichever commits second sees the other's
    row. Taken first of all the batch's locks (then strata, then customers)."""
    await _advisory_locks(
        session, [f"demand|{source}|{demand_id}" for source, demand_id in demands]
    )


async def _advisory_locks(session: AsyncSession, keys: Sequence[str]) -> None:
    if session.get_bind().dialect.name != "postgresql" or not keys:
        return
    await session.execute(
        text(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(c, 0) AS h "
            "FROM unnest(CAST(:keys AS text[])) AS c ORDER BY h) AS ordered"
        ),
        {"keys": list(keys)},
    )


@dataclass(frozen=True)
class CustomerHistory:
    demands: list[DemandFact]
    case_events: list[CaseEventFact]
    labels: list[LabelFact]


async def customer_histories(
    session: AsyncSession, customers: Sequence[Customer]
) -> dict[Customer, CustomerHistory]:
    histories = {c: CustomerHistory([], [], []) for c in customers}
    demand_customer: dict[DemandKey, Customer] = {}
    for chunk in chunks(list(customers)):
        for row in (
            await session.scalars(
                select(Demand).where(tuple_(Demand.source, Demand.customer_ref).in_(chunk))
            )
        ).all():
            demand_customer[(row.source, row.demand_id)] = (row.source, row.customer_ref)
            histories[(row.source, row.customer_ref)].demands.append(
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
            select(CaseEventRow).where(
                tuple_(CaseEventRow.source, CaseEventRow.customer_ref).in_(chunk)
            )
        )
        for event in events.all():
            histories[(event.source, event.customer_ref)].case_events.append(
                CaseEventFact(
                    event_id=event.event_id,
                    case_ref=event.case_ref,
                    customer_ref=event.customer_ref,
                    type=event.type,
                    occurred_at=as_utc(event.occurred_at),
                    purpose=event.purpose,
                )
            )
    for label in await _labels_of(session, sorted(demand_customer)):
        customer = demand_customer.get((label.demand_source, label.demand_id))
        if customer is not None:
            histories[customer].labels.append(
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


async def _labels_of(session: AsyncSession, demands: Sequence[DemandKey]) -> list[LabelRow]:
    """The labels of these demands, by (source, id). A label written before labels named
    their demand's source applies only when exactly one demand (of any source) has its id:
    it is returned as that demand's, and for an id several sources used, for none."""
    found: list[LabelRow] = []
    for chunk in chunks(list(demands)):
        found += (
            await session.scalars(
                select(LabelRow).where(
                    tuple_(LabelRow.demand_source, LabelRow.demand_id).in_(chunk)
                )
            )
        ).all()
    source_of = dict(((demand_id, source) for source, demand_id in demands))
    for chunk in chunks(sorted(source_of)):
        legacy = (
            await session.scalars(
                select(LabelRow).where(LabelRow.demand_source == "", LabelRow.demand_id.in_(chunk))
            )
        ).all()
        if not legacy:
            continue
        sole = await session.execute(
            select(Demand.demand_id)
            .where(Demand.demand_id.in_({label.demand_id for label in legacy}))
            .group_by(Demand.demand_id)
            .having(func.count() == 1)
        )
        unique_ids = set(sole.scalars())
        for label in legacy:
            if label.demand_id in unique_ids:
                session.expunge(label)  # read, never written back
                label.demand_source = source_of[label.demand_id]
                found.append(label)
    return found


@dataclass(frozen=True)
class FulfilledCase:
    source: str
    customer_ref: str
    case_id: str
    purpose: str | None
    first_channel: str | None
    end_to_end_seconds: float | None


async def fulfilled_cases_of(
    session: AsyncSession, customers: Sequence[Customer]
) -> list[FulfilledCase]:
    found = []
    for chunk in chunks(list(customers)):
        rows = await session.execute(
            select(
                CaseRow.source,
                CaseRow.customer_ref,
                CaseRow.case_id,
                CaseRow.purpose,
                CaseRow.first_channel,
                CaseRow.end_to_end_seconds,
            ).where(
                tuple_(CaseRow.source, CaseRow.customer_ref).in_(chunk),
                CaseRow.end_to_end_seconds.is_not(None),
            )
        )
        found += [FulfilledCase(*row) for row in rows.all()]
    return found


async def purposes_of(session: AsyncSession, customers: Sequence[Customer]) -> set[str]:
    found: set[str] = set()
    for chunk in chunks(list(customers)):
        rows = await session.execute(
            select(DemandFactRow.purpose)
            .where(tuple_(DemandFactRow.source, DemandFactRow.customer_ref).in_(chunk))
            .distinct()
        )
        found.update(rows.scalars())
    return found


async def replace_derived(
    session: AsyncSession, stitched: dict[Customer, tuple[StitchedCustomer, list[DemandFact]]]
) -> None:
    """Swap each customer's derived rows for the freshly stitched ones, in one transaction,
    and move the daily aggregates (demand_days) by the difference (see _day_deltas)."""
    customers = list(stitched)
    received: dict[DemandKey, Received] = {}
    deltas: Counter[DayKey] = Counter()
    case_deltas: dict[CaseDayKey, list[int]] = {}
    time_deltas: Counter[CaseTimeKey] = Counter()
    measured: Counter[DayKey] = Counter()
    micros: Counter[DayKey] = Counter()
    for chunk in chunks(customers):
        await old_day_contributions(session, chunk, received, deltas, measured, micros)
        old_cases = await session.execute(
            select(*(getattr(CaseRow, c) for c in CASE_DAY_COLUMNS)).where(
                tuple_(CaseRow.source, CaseRow.customer_ref).in_(chunk)
            )
        )
        for old in old_cases.all():
            old_case = dict(zip(CASE_DAY_COLUMNS, old, strict=True))
            count_case(case_deltas, old_case, -1)
            count_case_time(time_deltas, old_case, -1)
        await session.execute(
            delete(DemandFactRow).where(
                tuple_(DemandFactRow.source, DemandFactRow.customer_ref).in_(chunk)
            )
        )
        await session.execute(
            delete(CaseRow).where(tuple_(CaseRow.source, CaseRow.customer_ref).in_(chunk))
        )
    fact_rows: list[dict[str, Any]] = []
    case_rows: list[dict[str, Any]] = []
    for (source, _customer), (result, demands) in stitched.items():
        for demand in demands:
            fact_rows.append(
                {
                    "source": source,
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
        case_rows += [case_row(c, source) for c in result.cases]
    for row in fact_rows:
        machine = received.get((row["source"], row["demand_id"]))
        if machine is not None:
            key = day_key(row, machine)
            deltas[key] += 1
            if machine.handling_micros is not None:
                measured[key] += 1
                micros[key] += machine.handling_micros
    await insert_ignoring_duplicates(session, DemandFactRow, fact_rows)
    await insert_ignoring_duplicates(session, CaseRow, case_rows)
    for row in case_rows:
        count_case(case_deltas, row, +1)
        count_case_time(time_deltas, row, +1)
    await apply_day_deltas(session, deltas, measured, micros)
    await apply_case_day_deltas(session, case_deltas)
    await apply_case_time_deltas(session, time_deltas)


def case_row(case: Case, source: str) -> dict[str, Any]:
    return {
        "source": source,
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
