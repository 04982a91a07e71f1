"""The audit sample's strata and items, and the machine and audited counts the
estimates are made of."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, NamedTuple

from sqlalchemy import func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db.measures import (
    Filters,
    as_date,
    day_conditions,
    filter_conditions,
    filter_days,
    whole_days,
    window_counts,
)
from services.metrics.db.review_entries import by_source
from services.metrics.db.sql import (
    DemandKey,
    SyncDb,
    as_utc,
    chunks,
    run_sync,
)
from services.metrics.db.tables import (
    AuditItemRow,
    AuditStratumRow,
    Demand,
    DemandDayRow,
)
from services.metrics.domain.audit import MachineCount, StratumKey

# --- the upkeep of the sample: synchronous, for sql.run_sync (the write path's way) --------
#
# SQL written once with ``:name`` parameters for both databases; values go in and come back in
# the form the database stores them (db.time/db.day, or passed through as read), so a
# stratum's week and a demand's times are written back exactly as they were read.

# What the upkeep needs of each demand as first classified (the first DemandClassified of a
# (source, id) is the one stored).
_CLASSIFIED = (
    "SELECT source, demand_id, purpose, week_start, demand_type, failure_kind, model_version, "
    "needs_review, confidence, received_at FROM demands WHERE source = :source AND demand_id IN "
)


class Classified(NamedTuple):
    # A tuple: a rebuild's workers hand a batch's over as plain tuples (ingest.PreparedLoad),
    # made one again for a fifth of a slotted dataclass's cost (0.3 against 1.3 µs).
    source: str
    demand_id: str
    purpose: str
    week_start: Any  # as stored: the stratum's key within one database
    demand_type: str
    failure_kind: str | None
    model_version: str
    needs_review: bool
    confidence: float
    received_at: Any  # as stored, or an aware datetime (as_received)

    @property
    def key(self) -> DemandKey:
        return (self.source, self.demand_id)


def _in(ids: Sequence[str]) -> tuple[str, dict[str, str]]:
    """``(:i0, :i1, ...)`` and its parameters: an IN list both databases bind."""
    params = {f"i{n}": demand_id for n, demand_id in enumerate(ids)}
    return "(" + ", ".join(f":{name}" for name in params) + ")", params


def stored_already(db: SyncDb, demands: Iterable[DemandKey]) -> set[DemandKey]:
    """Which of these demands are stored (before a batch stores its own: the rest are new)."""
    found: set[DemandKey] = set()
    for source, ids in by_source(demands):
        marks, params = _in(ids)
        statement = f"SELECT demand_id FROM demands WHERE source = :source AND demand_id IN {marks}"
        found.update((source, row[0]) for row in db.rows(statement, {"source": source, **params}))
    return found


def classified(db: SyncDb, demands: Iterable[DemandKey]) -> list[Classified]:
    """The demands as stored (first classified), in key order."""
    found: list[Classified] = []
    for source, ids in by_source(demands):
        marks, params = _in(ids)
        rows = db.rows(_CLASSIFIED + marks, {"source": source, **params})
        found += [Classified(*row) for row in sorted(rows, key=lambda row: row[1])]
    return found


def lock_strata(db: SyncDb, strata: Sequence[tuple[str, date]]) -> None:
    """PostgreSQL: serialise a stratum's upkeep across instances until the transaction ends
    (its size is read, moved and its sample drawn by one transaction at a time), in hash
    order, after the demands' locks and before the customers'. SQLite needs none: the
    batch's first INSERT holds the single writer lock."""
    if db.dialect != "postgresql" or not strata:
        return
    db.execute(
        "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(c, 0) AS h "
        "FROM unnest(CAST(:keys AS text[])) AS c ORDER BY h) AS ordered",
        {"keys": [f"audit|{p}|{w.isoformat()}" for p, w in strata]},
    )


@dataclass(frozen=True, slots=True)
class StratumState:
    population: int
    inclusion_probability: float


def strata_as_kept(
    db: SyncDb, strata: Iterable[tuple[str, Any]]
) -> dict[tuple[str, Any], StratumState]:
    """The strata's recorded sizes and probabilities (a stratum no batch has kept yet has no
    row). ``strata``' weeks as stored."""
    wanted = set(strata)
    found: dict[tuple[str, Any], StratumState] = {}
    if not wanted:
        return found
    weeks = [w for _, w in wanted]
    for chunk in chunks(sorted({p for p, _ in wanted})):
        params: dict[str, Any] = {f"p{n}": p for n, p in enumerate(chunk)}
        statement = (
            "SELECT purpose, week_start, population, inclusion_probability FROM audit_strata "
            f"WHERE purpose IN ({', '.join(f':{name}' for name in params)}) "
            "AND week_start >= :first AND week_start <= :last"
        )
        params |= {"first": min(weeks), "last": max(weeks)}
        for purpose, week, population, probability in db.rows(statement, params):
            if (purpose, week) in wanted:
                found[(purpose, week)] = StratumState(int(population), float(probability))
    return found


def count_stratum(db: SyncDb, stratum: tuple[str, Any]) -> int:
    """The demands stored in a stratum, counted (off ix_demands_purpose_week_type): only for
    a stratum without a recorded size, i.e. whose demands were stored before it was kept."""
    purpose, week = stratum
    (count,) = db.rows(
        "SELECT count(*) FROM demands WHERE purpose = :purpose AND week_start = :week",
        {"purpose": purpose, "week": week},
    )[0]
    return int(count)


def record_strata(db: SyncDb, strata: Mapping[tuple[str, Any], StratumState]) -> None:
    """Record each stratum's size and inclusion probability (replacing what was there)."""
    db.executemany(
        "INSERT INTO audit_strata (purpose, week_start, population, inclusion_probability) "
        "VALUES (:purpose, :week_start, :population, :probability) "
        "ON CONFLICT (purpose, week_start) DO UPDATE SET population = excluded.population, "
        "inclusion_probability = excluded.inclusion_probability",
        [
            {
                "purpose": purpose,
                "week_start": week,
                "population": state.population,
                "probability": state.inclusion_probability,
            }
            for (purpose, week), state in sorted(strata.items())
        ],
    )


def shrink_stratum(db: SyncDb, stratum: tuple[str, Any], probability: float) -> list[DemandKey]:
    """Drop the stratum's audit items whose draw is no longer below its probability (off
    ix_audit_items_stratum_draw); the demands dropped (they may wait for review again)."""
    purpose, week = stratum
    params = {"purpose": purpose, "week": week, "probability": probability}
    leaving = "WHERE purpose = :purpose AND week_start = :week AND draw >= :probability"
    dropped = [
        (source, demand_id)
        for source, demand_id in db.rows(
            f"SELECT source, demand_id FROM audit_items {leaving}", params
        )
    ]
    if dropped:
        db.execute(f"DELETE FROM audit_items {leaving}", params)
    return dropped


_AUDIT_ITEM = (
    "source",
    "demand_id",
    "purpose",
    "week_start",
    "draw",
    "machine_demand_type",
    "machine_failure_kind",
    "model_version",
)
_QUEUE_TEXT = ("source", "demand_id", "text", "received_at")


def _insert_ignoring(table: str, columns: Sequence[str]) -> str:
    names, values = ", ".join(columns), ", ".join(f":{c}" for c in columns)
    return f"INSERT INTO {table} ({names}) VALUES ({values}) ON CONFLICT DO NOTHING"


def add_audit_items(db: SyncDb, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert-or-ignore (an item stays as first drawn: its machine label is the first)."""
    db.executemany(_insert_ignoring("audit_items", _AUDIT_ITEM), rows)


def add_queue_texts(db: SyncDb, rows: Sequence[Mapping[str, Any]]) -> None:
    db.executemany(_insert_ignoring("queue_texts", _QUEUE_TEXT), rows)


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
    session: AsyncSession,
    filters: Filters,
    *,
    by: Grouping,
    purpose: str | None = None,
    now: datetime | None = None,
) -> list[MachineCount]:
    """The machine's first labels counted per group, stratum and type: the estimate's
    population (grouped on the (purpose, week_start, demand_type) index). Off demand_days
    for whole days; a purpose's other periods split into days and rows (measures.window_counts:
    ``now`` only chooses how), the others from every demand of the period."""

    def rows(some: Filters) -> Any:
        group = _group_column(by)
        statement: Any = select(
            group, Demand.purpose, Demand.week_start, Demand.demand_type, func.count()
        )
        statement = _filter_received(statement, some)
        if purpose is not None:
            statement = statement.where(Demand.purpose == purpose)
        keys = [Demand.purpose, Demand.week_start, Demand.demand_type]
        return statement.group_by(*keys) if by == "all" else statement.group_by(group, *keys)

    if whole_days(filters):
        return machine_counts_of(
            await run_sync(
                session, lambda db: machine_counts_of_days(db, filters, by=by, purpose=purpose)
            )
        )
    return machine_counts_of(
        await window_counts(
            session,
            filters,
            days=lambda whole: _machine_days_statement(whole, by=by, purpose=purpose),
            rows=rows,
            counts=1,
            by_range=purpose is not None,
            now=now,
        )
    )


def machine_counts_of(found: Sequence[tuple[bool, tuple[Any, ...]]]) -> list[MachineCount]:
    """machine_counts from its grouped counts (window_counts' form)."""
    found_counts: Counter[tuple[Hashable, StratumKey, str]] = Counter()
    for from_days, (key, stratum_purpose, when, kind, n) in found:
        # A day's row is in the stratum of its ISO week; a demand, of its week_start.
        week = _monday(as_date(when)) if from_days else when
        found_counts[(key, (stratum_purpose, week), kind)] += n
    return [
        MachineCount(key, stratum, kind, n) for (key, stratum, kind), n in found_counts.items() if n
    ]


def machine_counts_of_days(
    db: SyncDb, filters: Filters, *, by: Grouping, purpose: str | None = None
) -> list[tuple[bool, tuple[Any, ...]]]:
    """_machine_days_statement's counts (whole days), on the connection (sql.run_sync):
    (group, machine purpose, day, machine type, demands)."""
    params: dict[str, Any] = {}
    conditions = day_conditions(db, filters, params)
    if purpose is not None:
        conditions.append("machine_purpose = :purpose")
        params["purpose"] = purpose
    group = {"purpose": "machine_purpose", "channel": "channel", "all": "'all'"}[by]
    keys = "day, machine_purpose, machine_type"
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = db.rows(
        f"SELECT {group}, machine_purpose, day, machine_type, sum(demands) FROM demand_days"
        f"{where} GROUP BY {keys if by == 'all' else f'{group}, {keys}'}",
        params,
    )
    return [(True, (g, p, db.read_day(d), kind, int(n or 0))) for g, p, d, kind, n in rows]


def _monday(day: date) -> date:
    """The ISO week's Monday: the stratum's week_start (domain/audit.py's week_start)."""
    return day - timedelta(days=day.weekday())


def _machine_days_statement(filters: Filters, *, by: Grouping, purpose: str | None) -> Any:
    """(group, machine purpose, day, machine type, demands) off demand_days."""
    group: Any = {
        "purpose": DemandDayRow.machine_purpose,
        "channel": DemandDayRow.channel,
        "all": literal("all"),
    }[by]
    statement: Any = select(
        group,
        DemandDayRow.machine_purpose,
        DemandDayRow.day,
        DemandDayRow.machine_type,
        func.sum(DemandDayRow.demands),
    )
    statement = filter_days(statement, filters)
    if purpose is not None:
        statement = statement.where(DemandDayRow.machine_purpose == purpose)
    keys = [DemandDayRow.day, DemandDayRow.machine_purpose, DemandDayRow.machine_type]
    return statement.group_by(*keys) if by == "all" else statement.group_by(group, *keys)


async def _machine_days(
    session: AsyncSession, filters: Filters, *, by: Grouping, purpose: str | None = None
) -> list[tuple[date, str, str, str, int]]:
    """(day, group, machine purpose, machine type, demands) off demand_days."""
    statement = _machine_days_statement(filters, by=by, purpose=purpose)
    return [
        (as_date(d), str(g), str(p), str(kind), int(n))
        for g, p, d, kind, n in (await session.execute(statement)).all()
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
    # The person said "not a demand" (person is then 'unknown'): shared/estimates.py
    # estimates the failure share among demands.
    not_a_demand: bool = False


async def audited(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> list[AuditedRow]:
    """The completed audit pairs of the demands the filters select: the machine's first
    label and the latest label made for the audit (labels made for any other reason are
    not an audit: they never enter the estimate)."""
    return await run_sync(session, lambda db: audited_of(db, filters, purpose=purpose))


_AUDITED = (
    "SELECT a.source, a.demand_id, a.purpose, a.week_start, d.channel, d.occurred_at, "
    "a.machine_demand_type, l.demand_type, l.labelled_at, l.label_id, l.not_a_demand "
    "FROM audit_items a "
    "JOIN demands d ON d.source = a.source AND d.demand_id = a.demand_id "
    "JOIN demand_labels l ON l.demand_source = a.source AND l.demand_id = a.demand_id "
    "AND l.reason = 'audit'"
)


def audited_of(db: SyncDb, filters: Filters, *, purpose: str | None = None) -> list[AuditedRow]:
    """audited, on the connection (sql.run_sync): for a caller with other reads to make in
    the same hop."""
    params: dict[str, Any] = {}
    # _filter_received's filters, on the demands.
    conditions = filter_conditions(filters, params, period=("occurred_at", db.time), table="d.")
    if purpose is not None:
        conditions.append("a.purpose = :purpose")
        params["purpose"] = purpose
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    latest: dict[DemandKey, tuple[tuple[datetime, str], AuditedRow]] = {}
    for row in db.rows(_AUDITED + where, params):
        (source, demand_id, p, w, channel, occurred, machine, person, labelled_at, label_id) = row[
            :10
        ]
        order = (db.read_time(labelled_at), label_id)
        key = (source, demand_id)
        if key not in latest or order > latest[key][0]:
            latest[key] = (
                order,
                AuditedRow(
                    demand_id,
                    (p, db.read_day(w)),
                    channel,
                    db.read_time(occurred),
                    machine,
                    person,
                    bool(row[10]),
                ),
            )
    return [row for _, (_, row) in sorted(latest.items(), key=lambda item: item[0])]
