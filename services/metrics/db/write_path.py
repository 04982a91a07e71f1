"""The one write path: received events stored, each touched customer's derived rows
(demand facts, cases) recomputed and the changed ones replaced, and the daily aggregates
moved by the difference. The recomputation is synchronous, for ``sql.run_sync``: on SQLite
all its statements go to sqlite3 in one hop to aiosqlite's thread."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import date, datetime, timedelta
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db.aggregates import (
    CaseDayKey,
    CaseTimeKey,
    DayKey,
    Received,
    apply_case_day_deltas,
    apply_case_time_deltas,
    apply_day_deltas,
    count_case,
    count_case_time,
    to_micros,
)
from services.metrics.db.sql import (
    DEMAND_SOURCES,
    Customer,
    DemandKey,
    SqliteDb,
    SyncDb,
    as_utc,
    chunks,
    demand_sources,
    stored_forms,
)
from services.metrics.db.tables import Demand
from services.metrics.domain.audit import StratumKey, week_start
from services.metrics.domain.cases import (
    Case,
    CaseEventFact,
    DemandFact,
    LabelFact,
    StitchedCustomer,
    StoredCase,
    TailStitched,
)
from shared.events import CaseEvent, DemandClassified, DemandLabelled


def demand_row(event: DemandClassified) -> dict[str, Any]:
    """A demand as the demands table holds it, by column, its times as UTC datetimes."""
    occurred_at = as_utc(event.demand.occurred_at)
    values = (*_demand_values(event, as_utc), week_start(occurred_at))
    return dict(zip(DEMAND_COLUMNS, values, strict=True))


def handling_seconds(attributes: dict[str, str]) -> float | None:
    """The staff seconds a source reports in the demand's ``handling_seconds`` attribute: a
    number from 0 to a week, else nothing (the channel's average stands in, figures.py)."""
    reported = attributes.get("handling_seconds")
    if reported is None:  # most demands: no exception raised and caught for them
        return None
    try:
        seconds = float(reported)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 7 * 86400 else None


def case_event_row(event: CaseEvent) -> dict[str, Any]:
    return dict(zip(CASE_EVENT_COLUMNS, _case_event_values(event, as_utc), strict=True))


def label_row(event: DemandLabelled) -> dict[str, Any]:
    return dict(zip(LABEL_COLUMNS, _label_values(event, as_utc), strict=True))


# The received rows' columns, in the order store_received builds their values.
DEMAND_COLUMNS = (
    "source",
    "demand_id",
    "customer_ref",
    "case_ref",
    "channel",
    "team",
    "occurred_at",
    "received_at",
    "purpose",
    "demand_type",
    "failure_kind",
    "confidence",
    "method",
    "model_version",
    "caused_by_kind",
    "caused_by_ref",
    "classified_at",
    "handling_seconds",
    "needs_review",
    "week_start",
)
CASE_EVENT_COLUMNS = (
    "source",
    "event_id",
    "case_ref",
    "customer_ref",
    "type",
    "occurred_at",
    "purpose",
)
LABEL_COLUMNS = (
    "demand_source",
    "label_id",
    "demand_id",
    "demand_type",
    "failure_kind",
    "purpose",
    "labelled_by",
    "labelled_at",
    "reason",
    "not_a_demand",
)


def _demand_values(event: DemandClassified, time: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """A demand's values in DEMAND_COLUMNS' order but the week (added by the caller), its
    times as ``time`` writes them: a tuple straight from the event, no dict per row (the
    live path's per-row Python was most of store_received's cost, more than sqlite3's
    inserts). An enum's value is read off the member (``_value_``), not through Enum's
    ``value`` property (0.15 against 0.04 µs, four times a demand). The fields are read off
    the models' ``__dict__`` (pydantic v2 keeps them there): BaseModel defines
    ``__getattr__``, so each attribute read went through CPython's slower hook for it,
    about twice a dict look-up's cost, eighteen times a demand."""
    fields = event.__dict__
    demand = fields["demand"].__dict__
    source = demand["source"]
    cause = fields["caused_by"]
    if cause is not None and cause.source not in (None, source):
        # Refs are unique within a source, and a customer is one source's: a cause in
        # another source is not this customer's, so it stitches nothing.
        cause = None
    attributes = demand["attributes"]
    return (
        source,
        demand["id"],
        demand["customer_ref"],
        demand["case_ref"],
        demand["channel"]._value_,
        demand["team"],
        time(demand["occurred_at"]),
        time(demand["received_at"]),
        fields["purpose"],
        fields["demand_type"]._value_,
        fields["failure_kind"],
        fields["confidence"],
        fields["method"]._value_,
        fields["model_version"],
        cause.kind if cause else None,
        cause.ref if cause else None,
        time(fields["classified_at"]),
        handling_seconds(attributes) if attributes else None,
        fields["needs_review"],
    )


def _case_event_values(event: CaseEvent, time: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """A case event's values in CASE_EVENT_COLUMNS' order (off ``__dict__``, as a demand's)."""
    fields = event.__dict__
    return (
        fields["source"] or "",
        fields["id"],
        fields["case_ref"],
        fields["customer_ref"],
        fields["type"]._value_,
        time(fields["occurred_at"]),
        fields["purpose"],
    )


def _label_values(label: DemandLabelled, time: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """A label's values in LABEL_COLUMNS' order."""
    return (
        label.demand_source or "",  # an old label names no source (customer_histories)
        label.id,
        label.demand_id,
        label.demand_type._value_,
        label.failure_kind,
        label.purpose,
        label.labelled_by,
        time(label.labelled_at),
        label.reason,
        label.not_a_demand,
    )


def _utc_day(moment: datetime) -> date:
    offset = moment.utcoffset()
    return (moment - offset if offset else moment).date()


class ReceivedRows(NamedTuple):
    """A batch's received events as the rows store_received inserts (plain values, so a
    rebuild's workers can build them and hand them over)."""

    demands: list[tuple[Any, ...]]
    case_events: list[tuple[Any, ...]]
    labels: list[tuple[Any, ...]]


def received_rows(
    *,
    demands: Sequence[DemandClassified],
    case_events: Sequence[CaseEvent],
    labels: Sequence[DemandLabelled],
    time: Callable[[datetime], Any],
    day: Callable[[date], Any],
) -> ReceivedRows:
    """Each received event's row once, by its key, its times and week as ``time`` and
    ``day`` store them. Within the batch the last of a key's events is the one offered, as
    before (a redelivery's copy is the same event)."""
    weeks: dict[date, Any] = {}  # a week's stored form once per UTC day of the batch
    demand_rows: dict[tuple[str, str], tuple[Any, ...]] = {}
    for event in demands:
        values = _demand_values(event, time)
        on = _utc_day(event.demand.occurred_at)
        week = weeks.get(on)
        if week is None:
            week = weeks[on] = day(on - timedelta(days=on.weekday()))
        demand_rows[(values[0], values[1])] = (*values, week)
    case_rows = {(e.source or "", e.id): _case_event_values(e, time) for e in case_events}
    label_rows = {(lb.demand_source or "", lb.id): _label_values(lb, time) for lb in labels}
    return ReceivedRows(
        list(demand_rows.values()), list(case_rows.values()), list(label_rows.values())
    )


def insert_received(db: SyncDb, rows: ReceivedRows) -> None:
    """Store each received row once, by its key (insert-or-ignore: a redelivered event
    changes nothing), one executemany per table."""
    db.insert_rows("demands", DEMAND_COLUMNS, rows.demands)
    db.insert_rows("case_events", CASE_EVENT_COLUMNS, rows.case_events)
    db.insert_rows("demand_labels", LABEL_COLUMNS, rows.labels)


def insert_new_received(
    db: SqliteDb, rows: ReceivedRows, keys: Sequence[DemandKey]
) -> tuple[set[DemandKey], bool]:
    """insert_received on SQLite, returning which of ``keys`` (the batch's demands') were
    stored before it: what audit_sample.stored_already answers when asked before the
    insert. Asked after it, and only when the insert did not add every demand row (its
    count of changes): a live batch is new demands, and reading every key first was ~4% of
    the live path's instructions. A demand stored before keeps its rowid, and each row the
    insert adds gets a larger one than any before it (SQLite's rule for a rowid table
    without AUTOINCREMENT: the largest one + 1), so those stored before are the batch's
    keys at or under the largest rowid before it.

    Also whether the insert added every demand row. Only that is exact with two replicas
    on one file: pysqlite opens the transaction at the INSERT, so the max(rowid) read runs
    before it, and another replica may commit a key of the batch in between (its row then
    above ``last``, ours ignored). A complete insert means every key is stored as its
    batch row; an incomplete one must be read back (Inserted's caller)."""
    last = db.rows("SELECT max(rowid) FROM demands")[0][0] or 0
    before = db.changes()
    db.insert_rows("demands", DEMAND_COLUMNS, rows.demands)
    added = db.changes() - before
    db.insert_rows("case_events", CASE_EVENT_COLUMNS, rows.case_events)
    db.insert_rows("demand_labels", LABEL_COLUMNS, rows.labels)
    if added == len(rows.demands):
        return set(), True
    known: set[DemandKey] = set()
    for source in sorted({source for source, _ in keys}):
        ids = sorted({demand_id for s, demand_id in keys if s == source})
        for part in chunks(ids):
            params = {"source": source, "last": last, **_params(part)}
            found = db.rows(_STORED_BEFORE + _marks(part), params)
            known.update((source, demand_id) for (demand_id,) in found)
    return known, False


_STORED_BEFORE = (
    "SELECT demand_id FROM demands WHERE source = :source AND rowid <= :last AND demand_id IN "
)


def store_received(
    db: SyncDb,
    *,
    demands: Sequence[DemandClassified],
    case_events: Sequence[CaseEvent],
    labels: Sequence[DemandLabelled],
) -> None:
    """Store each received event once, by its key (received_rows, insert_received)."""
    # The times as stored_forms makes them: new values, so SqliteDb.time's look-up of the
    # texts it has read back (none yet, on this run_sync's SqliteDb) is not paid three
    # times a demand.
    time, day = stored_forms(db.dialect)
    insert_received(
        db,
        received_rows(demands=demands, case_events=case_events, labels=labels, time=time, day=day),
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
    # By the key, a source at a time: the demands have no index by id alone, and SQLite
    # read the source's every demand for ``source IN (...)``, or with DISTINCT (off the
    # customers' index, in order); the set takes out the repeats.
    sources = (await session.execute(demand_sources())).scalars().all() if legacy else []
    for source in sources:
        for chunk in chunks(legacy):
            rows = await session.execute(
                select(Demand.customer_ref).where(
                    Demand.source == source, Demand.demand_id.in_(chunk)
                )
            )
            found.update((source, customer) for customer in rows.scalars().all())
    return found


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
    row. Taken first of all the batch's locks (then strata, then customers). PostgreSQL
    only, as _advisory_locks: on SQLite (one writer at a time) no key is written out."""
    if session.get_bind().dialect.name != "postgresql":
        return
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


# --- recomputing the touched customers: one synchronous function (sql.run_sync) -------------
#
# Set-based: the batch's customers go into a temporary table, and each read and delete below
# is one statement joined to it, whatever the number of customers (no IN lists to expand).
# Rows are compared with what is stored, and only the facts and cases that changed are
# written: a case event that moves one case rewrites that case, not the customer's rows.

_TOUCHED_SQLITE = (
    "CREATE TEMP TABLE IF NOT EXISTS touched_customers (source TEXT NOT NULL, "
    "customer_ref TEXT NOT NULL, PRIMARY KEY (source, customer_ref)) WITHOUT ROWID"
)
_TOUCHED_POSTGRESQL = (
    "CREATE TEMP TABLE IF NOT EXISTS touched_customers (source text NOT NULL, "
    "customer_ref text NOT NULL, PRIMARY KEY (source, customer_ref)) ON COMMIT DELETE ROWS"
)
# The touched customers lead every read: written as a CROSS JOIN, which SQLite never reorders
# (without statistics it otherwise scanned all of demands or cases and probed the temporary
# table: 0.4-1.5 s a batch at a million demands instead of a few ms); PostgreSQL plans a
# CROSS JOIN with its WHERE as the inner join it is.
_FROM_TOUCHED = "FROM touched_customers t CROSS JOIN {1} {0}"
_OF_TOUCHED = "{0}.source = t.source AND {0}.customer_ref = t.customer_ref"

_FACT_COLUMNS = (
    "source",
    "demand_id",
    "customer_ref",
    "case_id",
    "purpose",
    "demand_type",
    "failure_kind",
    "cause_purpose",
    "channel",
    "team",
    "occurred_at",
    "labelled",
)
_CASE_COLUMNS = (
    "source",
    "customer_ref",
    "case_id",
    "case_ref",
    "purpose",
    "status",
    "measured",
    "started_at",
    "fulfilled_at",
    "end_to_end_seconds",
    "reopened",
    "contacts",
    "failure_contacts",
    "channels",
    "first_channel",
    "team",
    "one_stop",
    "last_activity_at",
)


# A stored demand's columns as _demand_of reads them.
_DEMAND_READ = (
    "d.source, d.customer_ref, d.demand_id, d.occurred_at, d.channel, d.team, "
    "d.case_ref, d.purpose, d.demand_type, d.failure_kind, d.caused_by_kind, d.caused_by_ref, "
    "d.handling_seconds"
)
# Each stored demand of the customers with its derived fact as stored, if any (the fact's
# columns are null for a demand received in this batch).
_DEMANDS = (
    f"SELECT {_DEMAND_READ}, {', '.join(f'f.{c}' for c in _FACT_COLUMNS)} "
    f"{_FROM_TOUCHED.format('d', 'demands')} "
    "LEFT JOIN demand_facts f ON f.source = d.source AND f.demand_id = d.demand_id "
    f"WHERE {_OF_TOUCHED.format('d')}"
)
_CASE_EVENTS = (
    "SELECT e.source, e.customer_ref, e.event_id, e.case_ref, e.type, e.occurred_at, e.purpose "
    f"{_FROM_TOUCHED.format('e', 'case_events')} WHERE {_OF_TOUCHED.format('e')}"
)
_LABEL_COLUMNS = "l.label_id, l.demand_id, l.demand_type, l.failure_kind, l.purpose, l.labelled_at"
# A label of the customers' demands by (source, id); and an old label without a source, for
# the one demand of its id when no other source used the id (see customer_histories' rule).
_LABELS = (
    f"SELECT d.source, {_LABEL_COLUMNS} {_FROM_TOUCHED.format('d', 'demands')} "
    f"CROSS JOIN demand_labels l WHERE {_OF_TOUCHED.format('d')} "
    "AND l.demand_source = d.source AND l.demand_id = d.demand_id "
    "UNION ALL "
    f"SELECT d.source, {_LABEL_COLUMNS} {_FROM_TOUCHED.format('d', 'demands')} "
    f"CROSS JOIN demand_labels l WHERE {_OF_TOUCHED.format('d')} "
    "AND l.demand_source = '' AND l.demand_id = d.demand_id "
    # Of the label's id, not the demand's: counted only for a label found, not every demand.
    f"AND (SELECT count(*) FROM demands o WHERE o.source IN ({DEMAND_SOURCES}) "
    "AND o.demand_id = l.demand_id) = 1"
)
_CASES = (
    f"SELECT {', '.join(f'c.{c}' for c in _CASE_COLUMNS)} "
    f"{_FROM_TOUCHED.format('c', 'cases')} WHERE {_OF_TOUCHED.format('c')}"
)
_DELETE_FACT = "DELETE FROM demand_facts WHERE source = :source AND demand_id = :demand_id"
_DELETE_CASE = (
    "DELETE FROM cases WHERE source = :source AND customer_ref = :customer_ref "
    "AND case_id = :case_id"
)
_LOCKS = (
    "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(c, 0) AS h "
    "FROM unnest(CAST(:keys AS text[])) AS c ORDER BY h) AS ordered"
)


def touch_customers(db: SyncDb, customers: Sequence[Customer], *, lock: bool = True) -> None:
    """Name the customers for the statements below, and lock them (lock_customers; not
    with ``lock=False``: customers already locked, all of a batch's in one statement)."""
    if lock:
        lock_customers(db, customers)
    if db.dialect == "postgresql":
        db.execute(_TOUCHED_POSTGRESQL)
    else:
        db.execute(_TOUCHED_SQLITE)
    db.execute("DELETE FROM touched_customers")
    db.insert_rows("touched_customers", ("source", "customer_ref"), customers)


def lock_customers(db: SyncDb, customers: Sequence[Customer]) -> None:
    """On PostgreSQL, serialise the customers' recomputation across instances until the
    transaction ends.

    Two instances can hold one customer's events (labels are keyed by demand, and the
    topics are not co-partitioned): without the lock, each could recompute from a history
    lacking the other's uncommitted rows, and the last commit would win. PostgreSQL: one
    transaction-scoped advisory lock per customer, taken in hash order so two batches
    cannot deadlock, after the demands', the recorded changes' and the strata's (ingest.py's
    LOCK ORDER). SQLite needs none: the batch's first INSERT already holds the single writer
    lock, and the history is read after it.
    """
    if db.dialect == "postgresql":
        db.execute(_LOCKS, {"keys": [f"{source}|{customer}" for source, customer in customers]})


# The stored customers in key order, a page at a time: those with demands, or those with
# only case events. Both off an index that starts with the key.
_CUSTOMERS = {
    True: "SELECT DISTINCT source, customer_ref FROM demands e WHERE {after} "
    "ORDER BY source, customer_ref LIMIT :limit",
    False: "SELECT DISTINCT source, customer_ref FROM case_events e WHERE {after} AND NOT EXISTS "
    "(SELECT 1 FROM demands d WHERE d.source = e.source AND d.customer_ref = e.customer_ref) "
    "ORDER BY source, customer_ref LIMIT :limit",
}
_AFTER = "(e.source, e.customer_ref) > (:source, :customer_ref)"


def customers_after(
    db: SyncDb, after: Customer | None, limit: int, *, with_demands: bool
) -> list[Customer]:
    """Up to ``limit`` stored customers after ``after`` (None: from the first), in key
    order: those with demands, or (``with_demands=False``) those with case events only.
    Paging on from each page's last customer walks every customer once."""
    statement = _CUSTOMERS[with_demands].format(after="1 = 1" if after is None else _AFTER)
    params: dict[str, Any] = {"limit": limit}
    if after is not None:
        params |= {"source": after[0], "customer_ref": after[1]}
    return [(source, customer) for source, customer in db.rows(statement, params)]


@dataclass(slots=True)
class CustomerHistory:
    demands: list[DemandFact]
    case_events: list[CaseEventFact]
    labels: list[LabelFact]


@dataclass
class StoredState:
    """What is stored of the touched customers: their histories, and their derived rows
    as stored (in the database's own form, to compare the recomputed ones with)."""

    histories: dict[Customer, CustomerHistory]
    received: dict[DemandKey, Received]  # each demand's first classification
    facts: dict[DemandKey, tuple[Any, ...]]  # _FACT_COLUMNS
    cases: dict[tuple[str, str, str], tuple[Any, ...]]  # _CASE_COLUMNS
    # Each demand's time as the demands table stores it, which is its fact's too (a label
    # moves no time): copied, not converted to a datetime and back for every fact.
    occurred: dict[DemandKey, Any] = field(default_factory=dict)

    def fulfilled_before(self) -> set[tuple[Customer, str]]:
        seconds = _CASE_COLUMNS.index("end_to_end_seconds")
        return {
            ((s, c), case_id)
            for (s, c, case_id), row in self.cases.items()
            if row[seconds] is not None
        }

    def purposes(self) -> set[str]:
        """The purposes the customers' facts counted in before: a relabel moves them out."""
        at = _FACT_COLUMNS.index("purpose")
        return {row[at] for row in self.facts.values()}


def stored_state(db: SyncDb, customers: Sequence[Customer]) -> StoredState:
    """The touched customers' (touch_customers) histories and derived rows, in four reads."""
    histories = {c: CustomerHistory([], [], []) for c in customers}
    received: dict[DemandKey, Received] = {}
    facts: dict[DemandKey, tuple[Any, ...]] = {}
    occurred: dict[DemandKey, Any] = {}
    read_time = db.read_time
    for row in db.rows(_DEMANDS):
        source, customer_ref, demand_id = row[0], row[1], row[2]
        occurred[(source, demand_id)] = row[3]
        histories[(source, customer_ref)].demands.append(_demand_of(row, read_time))
        received[(source, demand_id)] = Received(row[7], row[8], to_micros(row[12]))
        if row[13] is not None:
            facts[(source, demand_id)] = tuple(row[13:])
    for row in db.rows(_CASE_EVENTS):
        histories[(row[0], row[1])].case_events.append(_case_event_of(row, read_time))
    customer_of: dict[DemandKey, Customer] = {}
    for history_customer, history in histories.items():
        for demand in history.demands:
            customer_of[(history_customer[0], demand.demand_id)] = history_customer
    for row in db.rows(_LABELS):
        customer = customer_of.get((row[0], row[2]))
        if customer is not None:
            histories[customer].labels.append(
                LabelFact(
                    label_id=row[1],
                    demand_id=row[2],
                    demand_type=row[3],
                    failure_kind=row[4],
                    purpose=row[5],
                    labelled_at=read_time(row[6]),
                )
            )
    cases = {(row[0], row[1], row[2]): tuple(row) for row in db.rows(_CASES)}
    return StoredState(histories, received, facts, cases, occurred)


# The row readers below (_case_event_of, _demand_of, _read_stored_cases) build their
# dataclasses by position, in the fields' order: a class called with keywords goes through
# type_call, which makes a dict of them a call and matches it back to the parameters (~0.65
# against ~0.35 µs for a DemandFact), several times an event on the live path. Each argument
# names its field in a comment; test_row_readers holds each reader equal to the keyword form
# and pins the field order of every class built by position (test_positional_field_order).


def _case_event_of(row: Sequence[Any], read_time: Callable[[Any], datetime]) -> CaseEventFact:
    """A case event as stitched, from a row of _CASE_EVENTS's columns."""
    # By position (see above).
    return CaseEventFact(
        row[2],  # event_id
        row[3],  # case_ref
        row[1],  # customer_ref
        row[4],  # type
        read_time(row[5]),  # occurred_at
        row[6],  # purpose
    )


def _demand_of(row: Sequence[Any], read_time: Callable[[Any], datetime]) -> DemandFact:
    """A demand as stitched, from a row that starts with _DEMAND_READ's columns."""
    # By position (see above _case_event_of); labelled left False.
    return DemandFact(
        row[2],  # demand_id
        row[1],  # customer_ref
        read_time(row[3]),  # occurred_at
        row[4],  # channel
        row[5],  # team
        row[6],  # case_ref
        row[7],  # purpose
        row[8],  # demand_type
        row[9],  # failure_kind
        row[10],  # caused_by_kind
        row[11],  # caused_by_ref
    )


def _stored_case_at(columns: Sequence[str]) -> tuple[int, ...]:
    """Where each of StoredCase's fields is, in field order, in a row of ``columns``."""
    return tuple(columns.index(f.name) for f in dataclass_fields(StoredCase))


def _read_stored_cases(
    rows: Iterable[Sequence[Any]],
    at: tuple[int, ...],
    read_time: Callable[[Any], datetime],
    cases: dict[Customer, list[StoredCase]],
    whole: dict[tuple[str, str, str], tuple[Any, ...]] | None = None,
) -> None:
    """Each stored case of ``rows`` (source and customer_ref first, the rest where ``at``
    places them: _stored_case_at) added to its customer's in ``cases``, as stitch_tail
    takes it, and its whole row to ``whole`` by key if given: tail_state's and
    closing_state's reads. The loop is here, not a call a row, to keep the row's cost."""
    case_id, case_ref, purpose, status, contacts, failures, channels, last = at
    for row in rows:
        if whole is not None:
            whole[(row[0], row[1], row[2])] = tuple(row)
        # By position (see above _case_event_of).
        cases[(row[0], row[1])].append(
            StoredCase(
                row[case_id],  # case_id
                row[case_ref],  # case_ref
                row[purpose],  # purpose
                row[status],  # status
                row[contacts],  # contacts
                row[failures],  # failure_contacts
                tuple(row[channels].split(",")) if row[channels] else (),  # channels
                read_time(row[last]),  # last_activity_at
            )
        )


# Where _read_stored_cases finds StoredCase's fields in a row of _CASES (closing_state's read).
_CASES_STORED_AT = _stored_case_at(_CASE_COLUMNS)


def replace_derived(
    db: SyncDb,
    stored: StoredState,
    stitched: dict[Customer, tuple[StitchedCustomer, list[DemandFact]]],
) -> None:
    """Make each touched customer's derived rows the freshly stitched ones, writing only
    the rows that changed, and move the daily aggregates by the difference (see
    aggregates.apply_day_deltas)."""
    time = db.time
    facts: dict[DemandKey, tuple[Any, ...]] = {}
    cases: dict[tuple[str, str, str], tuple[dict[str, Any], tuple[Any, ...]]] = {}
    fact_days: dict[DemandKey, DayKey] = {}
    for (source, _customer), (result, demands) in stitched.items():
        case_of, cause_of = result.case_of_demand, result.cause_purpose_of_demand
        for demand in demands:
            key = (source, demand.demand_id)
            facts[key], fact_days[key] = _fact(
                source,
                demand,
                case_of[demand.demand_id],
                cause_of.get(demand.demand_id),
                stored.occurred[key],
                stored.received[key],
            )
        for case in result.cases:
            cases[(source, case.customer_ref, case.case_id)] = _case_values(case, source, time)
    deltas: Counter[DayKey] = Counter()
    measured: Counter[DayKey] = Counter()
    micros_of: Counter[DayKey] = Counter()
    changed = {
        k for k in stored.facts.keys() | facts.keys() if _same(stored.facts.get(k)) != facts.get(k)
    }
    gone_facts = [k for k in stored.facts if k in changed]
    new_facts = [k for k in facts if k in changed]
    read_time = db.read_time
    for key in gone_facts:
        machine = stored.received[key]
        old = stored.facts[key]
        day_of = read_time(old[10]).date()
        day_key = (day_of, old[0], old[8], old[9] or "", old[4], old[5], old[6] or "",
                   old[7] or "", machine.purpose, machine.demand_type)  # fmt: skip
        _count(deltas, measured, micros_of, day_key, machine, -1)
    for key in new_facts:
        _count(deltas, measured, micros_of, fact_days[key], stored.received[key], +1)
    db.executemany(_DELETE_FACT, [{"source": s, "demand_id": d} for s, d in gone_facts])
    db.insert_rows("demand_facts", _FACT_COLUMNS, [facts[k] for k in new_facts])
    case_deltas: dict[CaseDayKey, list[int]] = {}
    time_deltas: Counter[CaseTimeKey] = Counter()
    moved = {
        k
        for k in stored.cases.keys() | cases.keys()
        if _case_changed(stored.cases.get(k), cases[k][1] if k in cases else None, db)
    }
    gone_cases = [k for k in stored.cases if k in moved]
    new_cases = [k for k in cases if k in moved]
    for case_key in gone_cases:
        old_case = dict(zip(_CASE_COLUMNS, stored.cases[case_key], strict=True))
        if old_case["fulfilled_at"] is not None:
            old_case["fulfilled_at"] = read_time(old_case["fulfilled_at"])
        count_case(case_deltas, old_case, -1)
        count_case_time(time_deltas, old_case, -1)
    new_rows = []
    for case_key in new_cases:
        new_case, as_stored = cases[case_key]
        count_case(case_deltas, new_case, +1)
        count_case_time(time_deltas, new_case, +1)
        new_rows.append(as_stored)
    db.executemany(
        _DELETE_CASE,
        [{"source": s, "customer_ref": c, "case_id": i} for s, c, i in gone_cases],
    )
    db.insert_rows("cases", _CASE_COLUMNS, new_rows)
    apply_day_deltas(db, deltas, measured, micros_of)
    apply_case_day_deltas(db, case_deltas)
    apply_case_time_deltas(db, time_deltas)


def _fact(
    source: str,
    demand: DemandFact,
    case_id: str,
    cause: str | None,
    occurred: Any,
    machine: Received,
) -> tuple[tuple[Any, ...], DayKey]:
    """A demand's fact row (_FACT_COLUMNS; its time as the demands table stores it) and
    the demand_days key it counts in."""
    fact = (
        source,
        demand.demand_id,
        demand.customer_ref,
        case_id,
        demand.purpose,
        demand.demand_type,
        demand.failure_kind,
        cause,
        demand.channel,
        demand.team,
        occurred,
        demand.labelled,
    )
    day = (
        as_utc(demand.occurred_at).date(),
        source,
        demand.channel,
        demand.team or "",
        demand.purpose,
        demand.demand_type,
        demand.failure_kind or "",
        cause or "",
        machine.purpose,
        machine.demand_type,
    )
    return fact, day


def _case_values(
    case: Case, source: str, time: Callable[[datetime], Any]
) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """A case's row by column, and its values in _CASE_COLUMNS' order as stored (the times
    in the database's form)."""
    row = case_row(case, source)
    values = [row[c] for c in _CASE_COLUMNS]
    for at in _CASE_TIMES:
        if values[at] is not None:
            values[at] = time(values[at])
    return row, tuple(values)


def _case_stored(case: Case, source: str, time: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """_case_values' stored values alone, in _CASE_COLUMNS' order, built straight from the
    case (no row by column first): a case a tail stitch opens is only inserted."""
    fulfilled_at = case.fulfilled_at
    return (
        source,
        case.customer_ref,
        case.case_id,
        case.case_ref,
        case.purpose,
        case.status,
        case.measured,
        time(case.started_at),
        None if fulfilled_at is None else time(fulfilled_at),
        case.end_to_end_seconds,
        case.reopened,
        case.contacts,
        case.failure_contacts,
        ",".join(case.channels),
        case.first_channel,
        case.team,
        case.one_stop,
        time(case.last_activity_at),
    )


def _same(row: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    """A stored fact as the recomputed ones are built: booleans as booleans."""
    if row is None:
        return None
    return (*row[:11], bool(row[11]))


_CASE_TIMES = tuple(
    _CASE_COLUMNS.index(c) for c in ("started_at", "fulfilled_at", "last_activity_at")
)
_CASE_FLAGS = tuple(_CASE_COLUMNS.index(c) for c in ("measured", "one_stop"))


def _case_changed(old: tuple[Any, ...] | None, new: tuple[Any, ...] | None, db: SyncDb) -> bool:
    """Whether a stored case differs from a recomputed one (its times in the stored form)."""
    if old is None or new is None:
        return old is not new
    recomputed = list(new)
    was = list(old)
    for at in _CASE_FLAGS:
        was[at] = bool(was[at])
    if db.dialect != "sqlite":
        for at in _CASE_TIMES:
            if was[at] is not None:
                was[at] = db.read_time(was[at])
    return was != recomputed


def _count(
    deltas: Counter[DayKey],
    measured: Counter[DayKey],
    micros_of: Counter[DayKey],
    key: DayKey,
    machine: Received,
    sign: int,
) -> None:
    deltas[key] += sign
    if machine.handling_micros is not None:
        measured[key] += sign
        micros_of[key] += sign * machine.handling_micros


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


# --- stitching on at the tail (domain/cases.stitch_tail): a customer's new demands only ------
#
# A live batch's customers whose demands are all new and come after everything stored for
# them read their stored cases and those demands (by key), not their whole history, and
# write the new facts, the cases those joined or opened, and demand_days' increments. The
# cases as stored are those stitched of the stored events: every transaction that stores
# a customer's events derives that customer's rows in it (under the customer's lock).

_FRESH_SQLITE = (
    "CREATE TEMP TABLE IF NOT EXISTS fresh_demands (source TEXT NOT NULL, "
    "demand_id TEXT NOT NULL, PRIMARY KEY (source, demand_id)) WITHOUT ROWID"
)
_FRESH_POSTGRESQL = (
    "CREATE TEMP TABLE IF NOT EXISTS fresh_demands (source text NOT NULL, "
    "demand_id text NOT NULL, PRIMARY KEY (source, demand_id)) ON COMMIT DELETE ROWS"
)
_TAIL_CASE_COLUMNS = (
    "source",
    "customer_ref",
    "case_id",
    "case_ref",
    "purpose",
    "status",
    "contacts",
    "failure_contacts",
    "channels",
    "last_activity_at",
)
_TAIL_CASES = (
    f"SELECT {', '.join(f'c.{c}' for c in _TAIL_CASE_COLUMNS)} "
    f"{_FROM_TOUCHED.format('c', 'cases')} WHERE {_OF_TOUCHED.format('c')}"
)
# Where _read_stored_cases finds StoredCase's fields in a row of _TAIL_CASES.
_TAIL_STORED_AT = _stored_case_at(_TAIL_CASE_COLUMNS)
# The batch's demands as stored, each with whether a label names it (by its source, or an
# old label by its id alone: either may apply; a label can come before its demand), and the
# case of its cause if that is a stored demand of the customer's. One
# stored before this batch (redelivered, or another copy of its key) needs no mark: its case
# was active at its time or later, so stitch_tail declines it.
_FRESH_DEMANDS = (
    f"SELECT {_DEMAND_READ}, "
    "EXISTS (SELECT 1 FROM demand_labels l WHERE l.demand_id = d.demand_id "
    "AND l.demand_source IN (d.source, '')), "
    # The case of the demand it names as its cause, when that is the customer's (stored).
    "(SELECT c.case_id FROM demand_facts c WHERE c.source = d.source "
    "AND c.demand_id = d.caused_by_ref AND c.customer_ref = d.customer_ref) "
    "FROM fresh_demands n CROSS JOIN demands d "
    "WHERE d.source = n.source AND d.demand_id = n.demand_id"
)
_EXTEND_CASE = (
    "UPDATE cases SET contacts = :contacts, failure_contacts = :failure_contacts, "
    "channels = :channels, last_activity_at = :last_activity_at "
    "WHERE source = :source AND customer_ref = :customer_ref AND case_id = :case_id"
)


@dataclass
class TailState:
    """The customers offered for stitching at the tail: their stored cases, and their
    batch's demands as stored (only of the customers not ``refused``)."""

    cases: dict[Customer, list[StoredCase]]
    demands: dict[Customer, list[DemandFact]]
    cause_cases: dict[Customer, dict[str, str]]  # a cause's demand id: its stored case
    received: dict[DemandKey, Received]
    occurred: dict[DemandKey, Any]
    # Stitched whole instead: a demand of theirs labelled, or stored under another
    # customer (another copy of its key).
    refused: set[Customer]


class Inserted(NamedTuple):
    """What a batch's insert_received was given of its demands: their rows (DEMAND_COLUMNS,
    one a key: received_rows) and the keys stored before it (audit_sample.stored_already,
    asked before the insert). A key not stored before is stored as its row of the batch
    (insert-or-ignore), so tail_state takes it from there instead of reading it back."""

    rows: Sequence[tuple[Any, ...]]
    before: set[DemandKey]


# The labels of these demand ids (off ix_demand_labels_demand): a demand is labelled by one
# of its source, or an old one by its id alone (source ''), as _FRESH_DEMANDS' EXISTS asks.
_LABELLED_IDS = "SELECT demand_id, demand_source FROM demand_labels WHERE demand_id IN "
# A row of DEMAND_COLUMNS' _DEMAND_READ columns, in their order.
_AS_READ = itemgetter(
    *(DEMAND_COLUMNS.index(c.removeprefix("d.")) for c in _DEMAND_READ.split(", "))
)


def _fresh_from_batch(
    db: SyncDb, keys: Sequence[DemandKey], rows: Mapping[DemandKey, tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """_FRESH_DEMANDS' rows for ``keys`` (sorted), none of them stored before this batch:
    each its batch row's _DEMAND_READ columns, then whether a label names it, then its
    cause's case (the fact of the demand its cause names, if that is the customer's).
    Small reads by id instead of every demand read back."""
    labels: set[tuple[str, str]] = set()  # (demand id, the label's source)
    for part in chunks(sorted({demand_id for _, demand_id in keys})):
        labels.update(db.rows(_LABELLED_IDS + _marks(part), _params(part)))
    read: list[tuple[Any, ...]] = [_AS_READ(rows[key]) for key in keys]
    causes = sorted({(r[0], r[11]) for r in read if r[11] is not None})
    cases: dict[DemandKey, tuple[str, str]] = {}
    for source in sorted({source for source, _ in causes}):
        for part in chunks([demand_id for s, demand_id in causes if s == source]):
            params = {"source": source, **_params(part)}
            for demand_id, customer_ref, case_id in db.rows(_CAUSE_FACTS + _marks(part), params):
                cases[(source, demand_id)] = (customer_ref, case_id)
    made = []
    for r in read:
        labelled = (r[2], r[0]) in labels or (r[2], "") in labels
        cause = cases.get((r[0], r[11])) if r[11] is not None else None
        made.append((*r, labelled, cause[1] if cause and cause[0] == r[1] else None))
    return made


def _marks(ids: Sequence[str]) -> str:
    """``(:i0, :i1, ...)``, an IN list of as many as ``ids`` (their values: _params)."""
    return "(" + ", ".join(f":i{n}" for n in range(len(ids))) + ")"


def _params(ids: Sequence[str]) -> dict[str, str]:
    return {f"i{n}": demand_id for n, demand_id in enumerate(ids)}


_CAUSE_FACTS = (
    "SELECT demand_id, customer_ref, case_id FROM demand_facts "
    "WHERE source = :source AND demand_id IN "
)


def tail_state(
    db: SyncDb, fresh: Mapping[Customer, Sequence[DemandKey]], inserted: Inserted | None = None
) -> TailState:
    """The stored cases of ``fresh``'s customers (already locked: lock_customers) and
    their demands of the batch by key, in two reads; names the customers for the reads
    after it (touch_customers' table). With ``inserted`` (the live path's), when none of
    the demands was stored before the batch, they are taken from its rows (as stored)."""
    customers = sorted(fresh)
    touch_customers(db, customers, lock=False)
    owner = {key: customer for customer, keys in fresh.items() for key in keys}
    read_time = db.read_time
    cases: dict[Customer, list[StoredCase]] = {customer: [] for customer in customers}
    _read_stored_cases(db.rows(_TAIL_CASES), _TAIL_STORED_AT, read_time, cases)
    demands: dict[Customer, list[DemandFact]] = {customer: [] for customer in customers}
    cause_cases: dict[Customer, dict[str, str]] = {}
    received: dict[DemandKey, Received] = {}
    occurred: dict[DemandKey, Any] = {}
    refused: set[Customer] = set()
    keys = sorted(owner)
    if inserted is not None and not (inserted.before and inserted.before & owner.keys()):
        batch = {(row[0], row[1]): row for row in inserted.rows}
        rows = _fresh_from_batch(db, keys, batch)
    else:
        db.execute(_FRESH_POSTGRESQL if db.dialect == "postgresql" else _FRESH_SQLITE)
        db.execute("DELETE FROM fresh_demands")
        db.insert_rows("fresh_demands", ("source", "demand_id"), keys)
        rows = db.rows(_FRESH_DEMANDS)
    for row in rows:
        key = (row[0], row[2])
        customer = owner[key]
        if (row[0], row[1]) != customer or row[13]:
            refused.add(customer)
            continue
        demands[customer].append(_demand_of(row, read_time))
        received[key] = Received(row[7], row[8], to_micros(row[12]))
        occurred[key] = row[3]
        if row[14] is not None:
            cause_cases.setdefault(customer, {})[row[11]] = row[14]
    refused |= {c for c in customers if len(demands[c]) != len(set(fresh[c]))}
    return TailState(cases, demands, cause_cases, received, occurred, refused)


def extend_derived(db: SyncDb, state: TailState, stitched: Mapping[Customer, TailStitched]) -> None:
    """The derived rows of customers stitched at the tail: their new demands' facts, the
    cases those joined (updated in place) or opened, and demand_days moved by the new facts.
    case_days and case_time_days do not move: they count fulfilled cases, and these cases
    are open (a demand changes no status)."""
    time = db.time
    facts: list[tuple[Any, ...]] = []
    deltas: Counter[DayKey] = Counter()
    measured: Counter[DayKey] = Counter()
    micros_of: Counter[DayKey] = Counter()
    extended: list[dict[str, Any]] = []
    opened: list[tuple[Any, ...]] = []
    for (source, customer_ref), result in stitched.items():
        for demand in state.demands[(source, customer_ref)]:
            key = (source, demand.demand_id)
            machine = state.received[key]
            fact, day = _fact(
                source,
                demand,
                result.case_of_demand[demand.demand_id],
                result.cause_purpose_of_demand.get(demand.demand_id),
                state.occurred[key],
                machine,
            )
            facts.append(fact)
            _count(deltas, measured, micros_of, day, machine, +1)
        extended += [
            {
                "source": source,
                "customer_ref": customer_ref,
                "case_id": case.case_id,
                "contacts": case.contacts,
                "failure_contacts": case.failure_contacts,
                "channels": ",".join(case.channels),
                "last_activity_at": time(case.last_activity_at),
            }
            for case in result.extended
        ]
        opened += [_case_stored(case, source, time) for case in result.opened]
    db.insert_rows("demand_facts", _FACT_COLUMNS, facts)
    db.executemany(_EXTEND_CASE, extended)
    db.insert_rows("cases", _CASE_COLUMNS, opened)
    apply_day_deltas(db, deltas, measured, micros_of)


# --- a case closed at the tail (domain/cases.close_at_tail): one case event only --------------
#
# A live batch's customers whose part of it is one case event (no demand, no label) read
# their stored cases whole and their case events, not their demands; when the event closes
# one open case after everything stored, that case is updated in place and case_days,
# case_time_days and the open-case counts move by it. Facts and demand_days do not move: a
# case event changes no demand's case or purpose.

_CLOSE_CASE = (
    "UPDATE cases SET status = :status, fulfilled_at = :fulfilled_at, "
    "end_to_end_seconds = :end_to_end_seconds, one_stop = :one_stop, "
    "last_activity_at = :last_activity_at "
    "WHERE source = :source AND customer_ref = :customer_ref AND case_id = :case_id"
)


@dataclass
class ClosingState:
    """The customers offered for closing at the tail: their stored cases (whole rows, in
    the database's form, and as stitch_tail's StoredCase), and their batch's one case
    event as stored (only of the customers not ``refused``)."""

    rows: dict[tuple[str, str, str], tuple[Any, ...]]  # _CASE_COLUMNS
    cases: dict[Customer, list[StoredCase]]
    events: dict[Customer, CaseEventFact]
    # Recomputed whole instead: more than one case event of theirs in the batch, or one
    # stored under another customer (another copy of its key).
    refused: set[Customer]


def closing_state(db: SyncDb, closing: Mapping[Customer, Sequence[DemandKey]]) -> ClosingState:
    """The stored cases and case events of ``closing``'s customers (already locked), in two
    reads; names the customers for the reads after it (touch_customers' table)."""
    customers = sorted(closing)
    touch_customers(db, customers, lock=False)
    read_time = db.read_time
    rows: dict[tuple[str, str, str], tuple[Any, ...]] = {}
    cases: dict[Customer, list[StoredCase]] = {customer: [] for customer in customers}
    _read_stored_cases(db.rows(_CASES), _CASES_STORED_AT, read_time, cases, rows)
    wanted = {key: customer for customer, keys in closing.items() for key in keys}
    events: dict[Customer, CaseEventFact] = {}
    found: Counter[Customer] = Counter()
    for row in db.rows(_CASE_EVENTS):
        customer = wanted.get((row[0], row[2]))
        if customer != (row[0], row[1]):
            continue  # a stored event of theirs, or a key of the batch stored for another
        found[customer] += 1
        events[customer] = _case_event_of(row, read_time)
    refused = {c for c in customers if len(set(closing[c])) != 1 or found[c] != 1}
    return ClosingState(rows, cases, events, refused)


def close_derived(
    db: SyncDb, state: ClosingState, closed: Mapping[Customer, StoredCase]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each closed case (close_at_tail's) updated in place, and case_days and
    case_time_days moved from its row as stored to its row now. Returns the rows (by
    column), as stored and now, for the open-case counts and the newly fulfilled."""
    read_time, time = db.read_time, db.time
    case_deltas: dict[CaseDayKey, list[int]] = {}
    time_deltas: Counter[CaseTimeKey] = Counter()
    changed: list[tuple[dict[str, Any], dict[str, Any]]] = []
    updates: list[dict[str, Any]] = []
    for (source, customer_ref), case in closed.items():
        old = dict(
            zip(_CASE_COLUMNS, state.rows[(source, customer_ref, case.case_id)], strict=True)
        )
        for column in ("started_at", "fulfilled_at", "last_activity_at"):
            if old[column] is not None:
                old[column] = read_time(old[column])
        old["measured"], old["one_stop"] = bool(old["measured"]), bool(old["one_stop"])
        at = case.last_activity_at
        fulfilled = case.status == "fulfilled"
        new = old | {
            "status": case.status,
            "fulfilled_at": at if fulfilled else None,
            # As Case.end_to_end_seconds: the case has a demand (close_at_tail's rule).
            "end_to_end_seconds": max(0.0, (at - old["started_at"]).total_seconds())
            if fulfilled
            else None,
            "one_stop": fulfilled and old["contacts"] == 1 and old["reopened"] == 0,
            "last_activity_at": at,
        }
        count_case(case_deltas, old, -1)
        count_case_time(time_deltas, old, -1)
        count_case(case_deltas, new, +1)
        count_case_time(time_deltas, new, +1)
        changed.append((old, new))
        stored_at = time(at)
        updates.append(
            {
                "source": source,
                "customer_ref": customer_ref,
                "case_id": case.case_id,
                "status": new["status"],
                "fulfilled_at": stored_at if fulfilled else None,
                "end_to_end_seconds": new["end_to_end_seconds"],
                "one_stop": new["one_stop"],
                "last_activity_at": stored_at,
            }
        )
    db.executemany(_CLOSE_CASE, updates)
    apply_case_day_deltas(db, case_deltas)
    apply_case_time_deltas(db, time_deltas)
    return changed


# --- a rebuild's bulk load: the derived tables' indexes built once, after it ----------------

# The tables a rebuild's load stores into, and the one index of theirs the load itself reads
# (the audit counts a stratum it has no recorded size of off it); the others serve the
# derivation and the figures, and are built once the load is over. A demand's id is random
# (intake's UUID), so ix_demands_demand_id (dropped since, 0019) alone took an insert at a
# random page per demand: 200,000 demands with random ids and customers, 44-49 µs a row with
# every index, 15 with this one and 3 more to build the others after.
LOADED_TABLES = ("demands", "case_events")
KEPT_FOR_THE_LOAD = ("ix_demands_purpose_week_type",)

# The derived tables a rebuild fills at its end (ingest.derive_everything), whose secondary
# indexes serve only the figures' reads: each customer's rows are written in customer order,
# which is random order for an index by purpose and time, so keeping them up to date row by
# row costs a random B-tree insert each; one sort per index after the load does not.
DERIVED_TABLES = ("demand_facts", "cases")


def drop_secondary_indexes(
    db: SyncDb, tables: Sequence[str], keep: Sequence[str] = ()
) -> list[str]:
    """SQLite: drop the secondary indexes of ``tables`` but those named in ``keep``, and
    return the statements that create them again (as the migrations made them); elsewhere
    nothing, and none. The primary keys stay: the write path's own reads go by them."""
    if db.dialect != "sqlite":
        return []
    marks = ", ".join(f":t{n}" for n in range(len(tables)))
    indexes = db.rows(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        f"AND tbl_name IN ({marks}) ORDER BY name",
        {f"t{n}": table for n, table in enumerate(tables)},
    )
    dropped = [(name, statement) for name, statement in indexes if name not in keep]
    for name, _ in dropped:
        db.execute(f'DROP INDEX "{name}"')
    return [statement for _, statement in dropped]


def create_indexes(db: SyncDb, statements: Sequence[str]) -> None:
    for statement in statements:
        db.execute(statement)
