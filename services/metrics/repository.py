"""Every query of the metrics service, and nowhere else."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import and_, case, delete, exists, func, literal, not_, or_, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db.tables import (
    AuditItemRow,
    AuditStratumRow,
    CaseDayRow,
    CaseEventRow,
    CaseRow,
    CaseTimeDayRow,
    Demand,
    DemandDayRow,
    DemandFactRow,
    DeskStateRow,
    LabelRow,
    PurposeChangeRow,
    QueueTextRow,
)
from services.metrics.domain.audit import MachineCount, StratumKey, week_start
from services.metrics.domain.buckets import END_TO_END_BUCKETS
from services.metrics.domain.cases import (
    Case,
    CaseEventFact,
    DemandFact,
    LabelFact,
    StitchedCustomer,
)
from services.metrics.domain.windows import Period
from shared.events import CaseEvent, DemandClassified, DemandLabelled, SystemChanged

# SQLite caps the bound parameters of one statement; stay well below it.
_CHUNK = 400

# A customer is the source's own reference: (source, customer_ref). A demand is (source, id).
Customer = tuple[str, str]
DemandKey = tuple[str, str]


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
    await _insert_ignoring_duplicates(
        session, Demand, _unique(map(demand_row, demands), "source", "demand_id")
    )
    await _insert_ignoring_duplicates(
        session, CaseEventRow, _unique(map(case_event_row, case_events), "source", "event_id")
    )
    await _insert_ignoring_duplicates(
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
    for chunk in _chunks(keys):
        rows = await session.execute(
            select(Demand.source, Demand.customer_ref)
            .where(tuple_(Demand.source, Demand.demand_id).in_(chunk))
            .distinct()
        )
        found.update((source, customer) for source, customer in rows.all())
    for chunk in _chunks(legacy):
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
    for chunk in _chunks(list(customers)):
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
    for chunk in _chunks(list(demands)):
        found += (
            await session.scalars(
                select(LabelRow).where(
                    tuple_(LabelRow.demand_source, LabelRow.demand_id).in_(chunk)
                )
            )
        ).all()
    source_of = dict(((demand_id, source) for source, demand_id in demands))
    for chunk in _chunks(sorted(source_of)):
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
    for chunk in _chunks(list(customers)):
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
    for chunk in _chunks(list(customers)):
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
    received: dict[DemandKey, _Received] = {}
    deltas: Counter[DayKey] = Counter()
    case_deltas: dict[CaseDayKey, list[int]] = {}
    time_deltas: Counter[CaseTimeKey] = Counter()
    measured: Counter[DayKey] = Counter()
    micros: Counter[DayKey] = Counter()
    for chunk in _chunks(customers):
        await _old_day_contributions(session, chunk, received, deltas, measured, micros)
        old_cases = await session.execute(
            select(*(getattr(CaseRow, c) for c in _CASE_DAY_COLUMNS)).where(
                tuple_(CaseRow.source, CaseRow.customer_ref).in_(chunk)
            )
        )
        for old in old_cases.all():
            old_case = dict(zip(_CASE_DAY_COLUMNS, old, strict=True))
            _count_case(case_deltas, old_case, -1)
            _count_case_time(time_deltas, old_case, -1)
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
            key = _day_key(row, machine)
            deltas[key] += 1
            if machine.handling_micros is not None:
                measured[key] += 1
                micros[key] += machine.handling_micros
    await _insert_ignoring_duplicates(session, DemandFactRow, fact_rows)
    await _insert_ignoring_duplicates(session, CaseRow, case_rows)
    for row in case_rows:
        _count_case(case_deltas, row, +1)
        _count_case_time(time_deltas, row, +1)
    await _apply_day_deltas(session, deltas, measured, micros)
    await _apply_case_day_deltas(session, case_deltas)
    await _apply_case_time_deltas(session, time_deltas)


# (fulfilled day, source, purpose, first channel, team): case_days' key, '' for none.
CaseDayKey = tuple[date, str, str, str, str]
_CASE_DAY_COLUMNS = (
    "source",
    "purpose",
    "first_channel",
    "team",
    "status",
    "measured",
    "fulfilled_at",
    "contacts",
    "one_stop",
    "end_to_end_seconds",
)


def _count_case(deltas: dict[CaseDayKey, list[int]], case: dict[str, Any], sign: int) -> None:
    """Add (or with sign -1 take away) a case row's part of case_days: a measured case
    fulfilled on its day, as fulfilled_case_counts counts it."""
    if case["status"] != "fulfilled" or not case["measured"] or case["fulfilled_at"] is None:
        return
    key = (
        as_utc(case["fulfilled_at"]).date(),
        case["source"],
        case["purpose"] or "",
        case["first_channel"] or "",
        case["team"] or "",
    )
    found = deltas.setdefault(key, [0, 0, 0])
    found[0] += sign
    found[1] += sign * int(case["contacts"])
    found[2] += sign * int(bool(case["one_stop"]))


def _count_case_time(deltas: Counter[CaseTimeKey], case: dict[str, Any], sign: int) -> None:
    """A case row's part of case_time_days: a fulfilled case's end-to-end time, in its band
    on the day it was fulfilled (a time is only ever set on a measured, fulfilled case)."""
    seconds = case["end_to_end_seconds"]
    if seconds is None or case["fulfilled_at"] is None:
        return
    deltas[
        (
            as_utc(case["fulfilled_at"]).date(),
            case["source"],
            case["purpose"] or "",
            case["first_channel"] or "",
            case["team"] or "",
            time_band(float(seconds)),
        )
    ] += sign


# Bands of end-to-end time, an eighth of a doubling wide (9% apart) from 1 s to 2^32 s; band
# -1 holds times under a second. The bounds are these floats, in Python and in SQL alike, so
# a time's band and the band's lower bound in a query always agree.
_BAND_BOUNDS = [2 ** (band / 8) for band in range(8 * 32 + 1)]


def time_band(seconds: float) -> int:
    """The band of an end-to-end time: _BAND_BOUNDS[band] <= seconds < the next bound."""
    return bisect_right(_BAND_BOUNDS, seconds) - 1


def band_floor(band: int) -> float | None:
    """The least time of a band (None for band -1: no lower bound)."""
    return None if band < 0 else _BAND_BOUNDS[band]


async def _apply_case_time_deltas(session: AsyncSession, deltas: Counter[CaseTimeKey]) -> None:
    """case_time_days moved by the batch's net change, as _apply_day_deltas moves demand_days."""
    changed = sorted(key for key, n in deltas.items() if n)
    if not changed:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(CaseTimeDayRow)
    upsert = statement.on_conflict_do_update(
        index_elements=list(_CASE_TIME_COLUMNS),
        set_={"cases": CaseTimeDayRow.cases + statement.excluded.cases},
    )
    rows = [
        {**dict(zip(_CASE_TIME_COLUMNS, key, strict=True)), "cases": deltas[key]} for key in changed
    ]
    await session.execute(upsert, rows)
    emptied = [key for key in changed if deltas[key] < 0]
    columns = tuple_(*(getattr(CaseTimeDayRow, c) for c in _CASE_TIME_COLUMNS))
    for chunk in _chunks(emptied):
        await session.execute(
            delete(CaseTimeDayRow).where(columns.in_(chunk), CaseTimeDayRow.cases == 0)
        )


# (fulfilled day, source, purpose, first channel, team, band): case_time_days' key.
CaseTimeKey = tuple[date, str, str, str, str, int]
_CASE_TIME_COLUMNS = ("day", "source", "purpose", "channel", "team", "band")


async def _apply_case_day_deltas(
    session: AsyncSession, deltas: dict[CaseDayKey, list[int]]
) -> None:
    """case_days moved by the batch's net change, as _apply_day_deltas moves demand_days."""
    changed = sorted(key for key, counts in deltas.items() if any(counts))
    if not changed:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(CaseDayRow)
    upsert = statement.on_conflict_do_update(
        index_elements=["day", "source", "purpose", "channel", "team"],
        set_={
            "fulfilled": CaseDayRow.fulfilled + statement.excluded.fulfilled,
            "contacts": CaseDayRow.contacts + statement.excluded.contacts,
            "one_stop": CaseDayRow.one_stop + statement.excluded.one_stop,
        },
    )
    names = ("day", "source", "purpose", "channel", "team")
    rows = [
        {
            **dict(zip(names, key, strict=True)),
            "fulfilled": deltas[key][0],
            "contacts": deltas[key][1],
            "one_stop": deltas[key][2],
        }
        for key in changed
    ]
    await session.execute(upsert, rows)
    emptied = [key for key in changed if deltas[key][0] < 0]
    columns = tuple_(
        CaseDayRow.day, CaseDayRow.source, CaseDayRow.purpose, CaseDayRow.channel, CaseDayRow.team
    )
    for chunk in _chunks(emptied):
        await session.execute(
            delete(CaseDayRow).where(columns.in_(chunk), CaseDayRow.fulfilled == 0)
        )


# --- the daily aggregates ---------------------------------------------------------------------

# (day, source, channel, team, purpose, demand_type, failure_kind, cause_purpose,
#  machine_purpose, machine_type): demand_days' key, '' for none.
DayKey = tuple[date, str, str, str, str, str, str, str, str, str]
_DAY_KEY_COLUMNS = (
    "day",
    "source",
    "channel",
    "team",
    "purpose",
    "demand_type",
    "failure_kind",
    "cause_purpose",
    "machine_purpose",
    "machine_type",
)


@dataclass(frozen=True)
class _Received:
    """What a demand's aggregates need of it as received: its first classification and
    handling time (fixed once stored: the first DemandClassified of an id is kept)."""

    purpose: str
    demand_type: str
    handling_micros: int | None


def _micros(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1_000_000)


def _day_key(fact: dict[str, Any], machine: _Received) -> DayKey:
    return (
        as_utc(fact["occurred_at"]).date(),
        fact["source"],
        fact["channel"],
        fact["team"] or "",
        fact["purpose"],
        fact["demand_type"],
        fact["failure_kind"] or "",
        fact["cause_purpose"] or "",
        machine.purpose,
        machine.demand_type,
    )


async def _old_day_contributions(
    session: AsyncSession,
    customers: Sequence[Customer],
    received: dict[DemandKey, _Received],
    deltas: Counter[DayKey],
    measured: Counter[DayKey],
    micros: Counter[DayKey],
) -> None:
    """Subtract what these customers' facts, as stored before the swap, added to the daily
    aggregates; note each of their demands' first classification for the new facts."""
    statement = (
        select(
            Demand.source,
            Demand.demand_id,
            Demand.purpose,
            Demand.demand_type,
            Demand.handling_seconds,
            DemandFactRow.occurred_at,
            DemandFactRow.channel,
            DemandFactRow.team,
            DemandFactRow.purpose,
            DemandFactRow.demand_type,
            DemandFactRow.failure_kind,
            DemandFactRow.cause_purpose,
        )
        .outerjoin(DemandFactRow, _same_demand(DemandFactRow, Demand))
        .where(tuple_(Demand.source, Demand.customer_ref).in_(customers))
    )
    for row in (await session.execute(statement)).all():
        (source, demand_id, m_purpose, m_type, seconds, at, channel, team) = row[:8]
        purpose, demand_type, kind, cause = row[8:]
        machine = _Received(m_purpose, m_type, _micros(seconds))
        received[(source, demand_id)] = machine
        if at is None:  # not derived yet: received in this batch
            continue
        key = _day_key(
            {
                "occurred_at": at,
                "source": source,
                "channel": channel,
                "team": team,
                "purpose": purpose,
                "demand_type": demand_type,
                "failure_kind": kind,
                "cause_purpose": cause,
            },
            machine,
        )
        deltas[key] -= 1
        if machine.handling_micros is not None:
            measured[key] -= 1
            micros[key] -= machine.handling_micros


async def _apply_day_deltas(
    session: AsyncSession,
    deltas: Counter[DayKey],
    measured: Counter[DayKey],
    micros: Counter[DayKey],
) -> None:
    """Add the batch's net change to demand_days, and drop the groups left empty.

    Why deltas and not a recomputation of the touched groups from the facts: a (day,
    purpose, ...) group holds thousands of demands, so recomputing each group a batch
    touches would scan far more facts than the batch changed (a rebuild touches most days
    in every batch). The deltas are exact and idempotent because they are the difference
    between a customer's facts before and after replace_derived's own swap, in the same
    transaction, under the customer's lock: a redelivered or reordered event that leaves a
    customer's facts as they were moves nothing, so the aggregates stay a pure function of
    the set of events, equal to a recomputation from the facts (which tests check).
    Counts and microseconds are integers, so the sums do not depend on the order either.
    Concurrent batches of other customers add to the same row with one atomic upsert.
    """
    changed = [k for k in deltas.keys() | micros.keys() if deltas[k] or measured[k] or micros[k]]
    if not changed:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(DemandDayRow)
    upsert = statement.on_conflict_do_update(
        index_elements=list(_DAY_KEY_COLUMNS),
        set_={
            "demands": DemandDayRow.demands + statement.excluded.demands,
            "handling_measured": DemandDayRow.handling_measured
            + statement.excluded.handling_measured,
            "handling_micros": DemandDayRow.handling_micros + statement.excluded.handling_micros,
        },
    )
    rows = [
        {
            **dict(zip(_DAY_KEY_COLUMNS, key, strict=True)),
            "demands": deltas[key],
            "handling_measured": measured[key],
            "handling_micros": micros[key],
        }
        for key in sorted(changed)
    ]
    await session.execute(upsert, rows)
    emptied = [k for k in changed if deltas[k] < 0]
    columns = tuple_(*(getattr(DemandDayRow, c) for c in _DAY_KEY_COLUMNS))
    for chunk in _chunks(sorted(emptied)):
        await session.execute(
            delete(DemandDayRow).where(columns.in_(chunk), DemandDayRow.demands == 0)
        )


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


# --- reading the measures ------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    period: Period | None = None
    channel: str | None = None
    team: str | None = None
    # One source's data only: what a source's own key reads (ApiKeyRecord.reach). None is
    # the organisation's every source (a sources:all key, a signed-in person).
    source: str | None = None


def _filter_demands(statement: Any, filters: Filters) -> Any:
    if filters.source is not None:
        statement = statement.where(DemandFactRow.source == filters.source)
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
    if filters.source is not None:
        statement = statement.where(CaseRow.source == filters.source)
    if filters.period is not None:
        statement = statement.where(by >= filters.period.start, by < filters.period.end)
    if filters.channel is not None:
        statement = statement.where(CaseRow.first_channel == filters.channel)
    if filters.team is not None:
        statement = statement.where(CaseRow.team == filters.team)
    return statement


def whole_days(filters: Filters) -> bool:
    """The filter selects whole UTC days (or all time): demand_days can answer it."""
    period = filters.period
    if period is None:
        return True
    return all(as_utc(moment).time() == time.min for moment in (period.start, period.end))


DayTable = type[DemandDayRow] | type[CaseDayRow] | type[CaseTimeDayRow]


def filter_days(statement: Any, filters: Filters, table: DayTable = DemandDayRow) -> Any:
    """The filters on a daily table (only when whole_days(filters)); each has the same
    source, day, channel and team columns."""
    if filters.source is not None:
        statement = statement.where(table.source == filters.source)
    if filters.period is not None:
        statement = statement.where(
            table.day >= as_utc(filters.period.start).date(),
            table.day < as_utc(filters.period.end).date(),
        )
    if filters.channel is not None:
        statement = statement.where(table.channel == filters.channel)
    if filters.team is not None:
        statement = statement.where(table.team == filters.team)
    return statement


def _none_if_empty(value: str | None) -> str | None:
    return value or None


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
    statement: Any
    if whole_days(filters):
        day_column = DemandDayRow.purpose if by == "purpose" else DemandDayRow.channel
        statement = select(day_column, DemandDayRow.demand_type, func.sum(DemandDayRow.demands))
        statement = filter_days(statement, filters)
        if purpose is not None:
            statement = statement.where(DemandDayRow.purpose == purpose)
        statement = statement.group_by(day_column, DemandDayRow.demand_type)
    else:
        column = DemandFactRow.purpose if by == "purpose" else DemandFactRow.channel
        # Grouping by (key, type) lets an index on (purpose, demand_type) answer on its own.
        statement = select(column, DemandFactRow.demand_type, func.count())
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
    if whole_days(filters):
        by_days: Any = select(
            CaseDayRow.purpose,
            func.sum(CaseDayRow.fulfilled),
            func.sum(CaseDayRow.contacts),
            func.sum(CaseDayRow.one_stop),
        )
        by_days = filter_days(by_days, filters, CaseDayRow)
        if purpose is not None:
            by_days = by_days.where(CaseDayRow.purpose == purpose)
        found = (await session.execute(by_days.group_by(CaseDayRow.purpose))).all()
        # A case without a purpose is kept as '' and, as from the cases, counted under none.
        keys: dict[str, Any] = {p: p or None for p, *_ in found}
        return {keys[p]: CaseCounts(keys[p], int(n), int(c), int(o)) for p, n, c, o in found if n}
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

    if whole_days(filters):
        return await _banded_percentiles(session, filters, quantiles, fulfilled, purpose)
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


async def _banded_percentiles(
    session: AsyncSession,
    filters: Filters,
    quantiles: Sequence[float],
    fulfilled: Callable[[], Any],
    purpose: str | None,
) -> dict[str, dict[float, float]]:
    """end_to_end_percentiles off case_time_days: the bands' counts say which band holds
    each rank and how many times lie below it; the two times either side of the rank are
    then read from that band on, off the cases' index (a few seeks, not the whole period).
    The same times as the full walk, so the same percentiles."""
    statement: Any = select(
        CaseTimeDayRow.purpose, CaseTimeDayRow.band, func.sum(CaseTimeDayRow.cases)
    )
    statement = filter_days(statement, filters, CaseTimeDayRow)
    if purpose is not None:
        statement = statement.where(CaseTimeDayRow.purpose == purpose)
    statement = statement.group_by(CaseTimeDayRow.purpose, CaseTimeDayRow.band)
    bands: dict[str, list[tuple[int, int]]] = {}
    for band_purpose, band, count in (await session.execute(statement)).all():
        if count:
            bands.setdefault(band_purpose, []).append((int(band), int(count)))
    found: dict[Any, dict[float, float]] = {}
    for band_purpose, counts in bands.items():
        key: Any = band_purpose or None  # a case without a purpose, as the cases hold it
        counts.sort()
        size = sum(n for _band, n in counts)
        found[key] = {}
        for q in quantiles:
            rank = (size - 1) * q / 100
            below = math.floor(rank)
            band, before = _band_of(counts, below)
            query = fulfilled().where(
                CaseRow.purpose == key if key is not None else CaseRow.purpose.is_(None)
            )
            floor = band_floor(band)
            if floor is not None:
                query = query.where(CaseRow.end_to_end_seconds >= floor)
            rows = await session.execute(
                query.order_by(CaseRow.end_to_end_seconds).limit(2).offset(below - before)
            )
            values = [float(v) for v in rows.scalars()]
            above = values[1] if len(values) > 1 else values[0]
            found[key][q] = values[0] + (rank - below) * (above - values[0])
    return found


def _band_of(counts: Sequence[tuple[int, int]], below: int) -> tuple[int, int]:
    """The band (of (band, count) in order) holding the time at 0-based rank ``below``, and
    how many times lie in the bands before it."""
    before = 0
    for band, n in counts:
        if below < before + n:
            return band, before
        before += n
    return counts[-1][0], before - counts[-1][1]


async def open_case_counts(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> dict[str, int]:
    """Cases open now, per purpose (the period does not apply: open is now)."""
    statement: Any = select(CaseRow.purpose, func.count()).where(
        CaseRow.measured.is_(True), CaseRow.status == "open"
    )
    statement = _filter_cases(
        statement, Filters(None, filters.channel, filters.team, filters.source), by=None
    )
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


async def end_to_end_histogram(
    session: AsyncSession, filters: Filters, *, purpose: str
) -> list[tuple[float | None, int]]:
    """domain/buckets.histogram of the end-to-end times of the purpose's cases fulfilled in
    the period, counted by the database per bucket (a few rows, not every time)."""
    bucket = case(
        *((CaseRow.end_to_end_seconds <= bound, i) for i, bound in enumerate(END_TO_END_BUCKETS)),
        else_=len(END_TO_END_BUCKETS),
    )
    statement: Any = select(bucket, func.count()).where(
        CaseRow.purpose == purpose,
        CaseRow.measured.is_(True),
        CaseRow.end_to_end_seconds.is_not(None),
    )
    statement = _filter_cases(statement, filters, by=CaseRow.fulfilled_at).group_by(bucket)
    counts = [0] * (len(END_TO_END_BUCKETS) + 1)
    for index, count in (await session.execute(statement)).all():
        counts[int(index)] = int(count)
    bounds: list[float | None] = [*END_TO_END_BUCKETS, None]
    return list(zip(bounds, counts, strict=True))


async def open_case_ages(
    session: AsyncSession,
    filters: Filters,
    *,
    purpose: str,
    now: datetime,
    quantiles: Sequence[float],
) -> tuple[int, dict[float, float], float | None]:
    """How many of the purpose's cases are open now, their ages' percentiles (seconds, as
    domain/percentiles.percentile interpolates) and the oldest age: a count and a few seeks
    on the (purpose, status, measured, started_at) index, not every open case. An age is
    never below 0 (a case started after ``now``)."""
    statement: Any = select(CaseRow.started_at).where(
        CaseRow.purpose == purpose, CaseRow.measured.is_(True), CaseRow.status == "open"
    )
    statement = _filter_cases(
        statement, Filters(None, filters.channel, filters.team, filters.source), by=None
    )
    size = int(
        (await session.execute(select(func.count()).select_from(statement.subquery()))).scalar()
        or 0
    )
    if not size:
        return 0, {}, None
    # The youngest first: ages in ascending order.
    youngest_first = statement.order_by(CaseRow.started_at.desc())

    async def ages(offset: int, limit: int) -> list[float]:
        rows = await session.execute(youngest_first.limit(limit).offset(offset))
        return [max(0.0, (now - as_utc(at)).total_seconds()) for at in rows.scalars()]

    found: dict[float, float] = {}
    for q in quantiles:
        rank = (size - 1) * q / 100
        below = math.floor(rank)
        pair = await ages(below, 2)
        above = pair[1] if len(pair) > 1 else pair[0]
        found[q] = pair[0] + (rank - below) * (above - pair[0])
    (oldest,) = await ages(size - 1, 1)
    return size, found, oldest


async def open_case_starts(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> dict[str, list[datetime]]:
    """When each case still open now started (the period does not apply: open is now)."""
    statement: Any = select(CaseRow.purpose, CaseRow.started_at).where(
        CaseRow.measured.is_(True), CaseRow.status == "open"
    )
    statement = _filter_cases(
        statement, Filters(None, filters.channel, filters.team, filters.source), by=None
    )
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
    statement: Any
    if whole_days(filters):
        day_column = DemandDayRow.failure_kind if by == "kind" else DemandDayRow.cause_purpose
        statement = select(day_column, func.sum(DemandDayRow.demands)).where(
            DemandDayRow.purpose == purpose, DemandDayRow.demand_type == "failure"
        )
        statement = filter_days(statement, filters).group_by(day_column)
    else:
        column = DemandFactRow.failure_kind if by == "kind" else DemandFactRow.cause_purpose
        statement = select(column, func.count()).where(
            DemandFactRow.purpose == purpose, DemandFactRow.demand_type == "failure"
        )
        statement = _filter_demands(statement, filters).group_by(column)
    rows = (await session.execute(statement)).all()
    missing = "unspecified" if by == "kind" else "untraced"
    return sorted(((k or missing, int(n)) for k, n in rows), key=lambda kv: (-kv[1], kv[0]))


async def demand_day_counts(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> list[tuple[date, str, int]]:
    """(UTC day, demand type, demands) as they count now, oldest day first: for series over
    time, off demand_days when the filter is whole days."""
    if not whole_days(filters):
        counts: Counter[tuple[date, str]] = Counter(
            (at.date(), kind)
            for at, kind in await demand_moments(session, filters, purpose=purpose)
        )
        return [(day, kind, n) for (day, kind), n in sorted(counts.items())]
    statement: Any = select(
        DemandDayRow.day, DemandDayRow.demand_type, func.sum(DemandDayRow.demands)
    )
    statement = filter_days(statement, filters)
    if purpose is not None:
        statement = statement.where(DemandDayRow.purpose == purpose)
    statement = statement.group_by(DemandDayRow.day, DemandDayRow.demand_type)
    rows = (await session.execute(statement)).all()
    return sorted((as_date(d), str(kind), int(n)) for d, kind, n in rows if n)


def as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


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
    session: AsyncSession,
    *,
    purpose: str,
    since: datetime | None,
    source: str | None = None,
    ends: tuple[int, int] | None = None,
) -> list[tuple[datetime, float]]:
    """(fulfilled_at, end-to-end seconds) in order of fulfilment: the XmR series. With
    ``ends`` (first, last), only the first and the last so many points (all of them when
    there are no more): what a chart of a baseline and its latest points needs, read off
    the (purpose, fulfilled_at) index instead of every case since the baseline started."""
    statement: Any = select(CaseRow.fulfilled_at, CaseRow.end_to_end_seconds).where(
        CaseRow.purpose == purpose,
        CaseRow.measured.is_(True),
        CaseRow.end_to_end_seconds.is_not(None),
    )
    if since is not None:
        statement = statement.where(CaseRow.fulfilled_at >= since)
    if source is not None:
        statement = statement.where(CaseRow.source == source)

    async def read(ordered: Any, limit: int | None) -> list[tuple[datetime, float]]:
        rows = (await session.execute(ordered.limit(limit))).all()
        return [(as_utc(at), float(seconds)) for at, seconds in rows if at is not None]

    in_order = statement.order_by(CaseRow.fulfilled_at, CaseRow.case_id)
    if ends is None:
        return await read(in_order, None)
    first, last = ends
    head = await read(in_order, first + last)
    if len(head) < first + last:
        return head  # every point
    latest = statement.order_by(CaseRow.fulfilled_at.desc(), CaseRow.case_id.desc())
    return head[:first] + list(reversed(await read(latest, last)))


async def all_purposes(session: AsyncSession, *, source: str | None = None) -> list[str]:
    statement: Any = select(DemandDayRow.purpose).distinct()
    if source is not None:
        statement = statement.where(DemandDayRow.source == source)
    rows = await session.execute(statement)
    return sorted(rows.scalars())


# --- the audit sample -----------------------------------------------------------------------


async def first_classifications(
    session: AsyncSession, demands: Sequence[DemandKey]
) -> list[Demand]:
    """The demands as first classified (the first DemandClassified of a (source, id) is the
    one kept)."""
    found: list[Demand] = []
    for chunk in _chunks(sorted(set(demands))):
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
    for chunk in _chunks(purposes):
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


async def shrink_audit(session: AsyncSession, stratum: StratumKey, probability: float) -> None:
    """Drop the stratum's audit items whose draw is no longer below its probability."""
    purpose, week = stratum
    await session.execute(
        delete(AuditItemRow).where(
            AuditItemRow.purpose == purpose,
            AuditItemRow.week_start == week,
            AuditItemRow.draw >= probability,
        )
    )


async def add_audit_items(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await _insert_ignoring_duplicates(session, AuditItemRow, rows)


async def add_queue_texts(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await _insert_ignoring_duplicates(session, QueueTextRow, rows)


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
        .join(Demand, _same_demand(Demand, AuditItemRow))
        .join(
            LabelRow,
            and_(
                _same_demand(LabelRow, AuditItemRow, source="demand_source"),
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


# --- the queues ------------------------------------------------------------------------------


def _same_demand(table: Any, other: Any, *, source: str = "source") -> Any:
    """``table`` and ``other`` name one demand: its source and its id."""
    return and_(getattr(table, source) == other.source, table.demand_id == other.demand_id)


def _of_source(source: str | None) -> list[Any]:
    # None: the demand of that id in any source (the first by source when several have it).
    return [] if source is None else [Demand.source == source]


def _audit_labelled() -> Any:
    return exists().where(
        _same_demand(LabelRow, AuditItemRow, source="demand_source"), LabelRow.reason == "audit"
    )


@dataclass(frozen=True)
class AuditQueueRow:
    source: str
    demand_id: str
    channel: str
    occurred_at: datetime
    text: str


async def audit_queue(
    session: AsyncSession, *, limit: int, source: str | None = None
) -> tuple[int, list[AuditQueueRow]]:
    """Open audit items (no audit label yet) whose words are still kept, in the order of
    their draw: random, and those most sure to stay in the sample first. Blind: nothing the
    machine said about the demand is read here. ``source``: that source's items only."""
    conditions = [not_(_audit_labelled())]
    if source is not None:
        conditions.append(AuditItemRow.source == source)
    base: Any = (
        select(AuditItemRow.demand_id)
        .join(QueueTextRow, _same_demand(QueueTextRow, AuditItemRow))
        .where(*conditions)
    )
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar()
    statement = (
        select(
            AuditItemRow.source,
            AuditItemRow.demand_id,
            Demand.channel,
            Demand.occurred_at,
            QueueTextRow.text,
        )
        .join(Demand, _same_demand(Demand, AuditItemRow))
        .join(QueueTextRow, _same_demand(QueueTextRow, AuditItemRow))
        .where(*conditions)
        .order_by(AuditItemRow.draw, AuditItemRow.source, AuditItemRow.demand_id)
        .limit(limit)
    )
    rows = (await session.execute(statement)).all()
    return int(total or 0), [AuditQueueRow(s, d, c, as_utc(at), t) for s, d, c, at, t in rows]


def _review_candidate(below: float) -> Any:
    return or_(Demand.needs_review.is_(True), Demand.confidence < below)


@dataclass(frozen=True)
class ReviewQueueRow:
    source: str
    demand_id: str
    channel: str
    occurred_at: datetime
    text: str
    purpose: str
    demand_type: str
    failure_kind: str | None
    confidence: float
    needs_review: bool
    model_version: str


async def review_queue(
    session: AsyncSession,
    *,
    below: float,
    purpose: str | None,
    limit: int,
    source: str | None = None,
) -> tuple[int, list[ReviewQueueRow]]:
    """Demands the machine was unsure of (needs_review, or confidence below ``below``) that
    no person has labelled, lowest confidence first. Audit items are not here: they are
    shown blind, in the audit queue, so that no one sees the machine's label of them."""
    conditions = [
        _review_candidate(below),
        not_(exists().where(_same_demand(LabelRow, Demand, source="demand_source"))),
        not_(exists().where(_same_demand(AuditItemRow, Demand))),
    ]
    if purpose is not None:
        conditions.append(Demand.purpose == purpose)
    if source is not None:
        conditions.append(Demand.source == source)
    joined: Any = select(Demand.demand_id).join(QueueTextRow, _same_demand(QueueTextRow, Demand))
    total = (
        await session.execute(
            select(func.count()).select_from(joined.where(*conditions).subquery())
        )
    ).scalar()
    statement = (
        select(
            Demand.source,
            Demand.demand_id,
            Demand.channel,
            Demand.occurred_at,
            QueueTextRow.text,
            Demand.purpose,
            Demand.demand_type,
            Demand.failure_kind,
            Demand.confidence,
            Demand.needs_review,
            Demand.model_version,
        )
        .join(QueueTextRow, _same_demand(QueueTextRow, Demand))
        .where(*conditions)
        .order_by(Demand.confidence, Demand.occurred_at, Demand.source, Demand.demand_id)
        .limit(limit)
    )
    rows = (await session.execute(statement)).all()
    return int(total or 0), [
        ReviewQueueRow(s, d, c, as_utc(at), t, p, kind, fk, float(conf), bool(nr), mv)
        for s, d, c, at, t, p, kind, fk, conf, nr, mv in rows
    ]


async def review_item(
    session: AsyncSession, source: str | None, demand_id: str
) -> dict[str, Any] | None:
    """One demand of the review queue by id (the pages label it), with the machine's
    suggestion; None when its words are no longer kept."""
    row = (
        await session.execute(
            select(
                Demand.source,
                Demand.demand_id,
                Demand.channel,
                Demand.occurred_at,
                QueueTextRow.text,
                Demand.demand_type,
                Demand.purpose,
                Demand.failure_kind,
                Demand.confidence,
            )
            .join(QueueTextRow, _same_demand(QueueTextRow, Demand))
            .where(Demand.demand_id == demand_id, *_of_source(source))
            .order_by(Demand.source)
        )
    ).first()
    if row is None:
        return None
    found = dict(row._mapping)
    found["occurred_at"] = as_utc(found["occurred_at"])
    found["confidence"] = float(found["confidence"])
    return found


async def audit_item(
    session: AsyncSession, source: str | None, demand_id: str
) -> dict[str, Any] | None:
    """One audit item by id, blind (what the customer said, how and when); None when it is
    not in the sample or its words are no longer kept."""
    row = (
        await session.execute(
            select(
                Demand.source,
                Demand.demand_id,
                Demand.channel,
                Demand.occurred_at,
                QueueTextRow.text,
            )
            .join(AuditItemRow, _same_demand(AuditItemRow, Demand))
            .join(QueueTextRow, _same_demand(QueueTextRow, Demand))
            .where(Demand.demand_id == demand_id, *_of_source(source))
            .order_by(Demand.source)
        )
    ).first()
    if row is None:
        return None
    found = dict(row._mapping)
    found["occurred_at"] = as_utc(found["occurred_at"])
    return found


async def audit_machine_label(
    session: AsyncSession, source: str, demand_id: str
) -> tuple[str, str, str | None] | None:
    """The machine's first label of an audit item (purpose, type, failure kind): shown only
    once a person has answered it."""
    row = (
        await session.execute(
            select(
                AuditItemRow.purpose,
                AuditItemRow.machine_demand_type,
                AuditItemRow.machine_failure_kind,
            ).where(AuditItemRow.source == source, AuditItemRow.demand_id == demand_id)
        )
    ).first()
    return None if row is None else (row[0], row[1], row[2])


async def purge_queue_texts(
    session: AsyncSession, *, received_before: datetime, review_below: float
) -> int:
    """Delete the texts past retention, and those no queue needs any more: not an open
    audit item, and labelled or never a review candidate. Returns how many went."""
    open_audit = exists().where(_same_demand(AuditItemRow, QueueTextRow), not_(_audit_labelled()))
    labelled = exists().where(_same_demand(LabelRow, QueueTextRow, source="demand_source"))
    candidate = exists().where(_same_demand(Demand, QueueTextRow), _review_candidate(review_below))
    statement = delete(QueueTextRow).where(
        or_(
            QueueTextRow.received_at < received_before,
            and_(not_(open_audit), or_(labelled, not_(candidate))),
        )
    )
    result = await session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)


# --- cases --------------------------------------------------------------------------------


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


# --- recorded changes ----------------------------------------------------------------------


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
    for chunk in _chunks(rows):
        await _insert_ignoring_duplicates(session, PurposeChangeRow, chunk)


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


# --- the queues' desk -------------------------------------------------------------------------


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
