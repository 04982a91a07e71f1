"""Apply a batch of received events to the database: the one write path, live and rebuild.

Received events are stored once each (keyed by event id, ON CONFLICT DO NOTHING); then the
derived rows of every customer the batch touched are recomputed from everything stored for
that customer. Derived state is therefore a pure function of the set of events received,
whatever their order, duplication or topic interleaving: redelivery changes nothing, a late
case event or label lands where it belongs, and a rebuild ends where the live service is.
The common live case, a customer's new demands after everything stored for them, is
stitched on from their stored cases instead of their history (domain/cases.stitch_tail,
which gives the same rows or declines); so is a customer's one fulfilment or abandonment of
an open case after everything stored (domain/cases.close_at_tail: the case updated in place);
anything else is recomputed in full.
A recorded change to the system (``SystemChanged``) is stored the same way, once by its id.
The audit sample of the strata the batch's demands fall in is brought up to date in the same
transaction (services/metrics/audit.py), and is a function of the same set.

LOCK ORDER (PostgreSQL; SQLite has one writer at a time). Every batch, live with or without
labels and a rebuild's load alike, takes its locks in one order, so two batches on two
instances cannot deadlock: the demands' advisory locks (write_path.lock_demands), then the
recorded changes' insert (a unique event id, which waits on another transaction's
uncommitted insert of the same change), then the received events' inserts, then the
audit's strata (write_path.lock_strata), then the customers (write_path.lock_customers).

Total over every event that decodes: one that cannot be stored (a date with no UTC
equivalent, such as year 1 at +14:00) is refused with the field and the reason, and the
rest of the batch is applied; the live service dead-letters what is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from functools import cache, partial
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics.audit import (
    AuditPolicy,
    ReceivedDemand,
    as_received,
    draw_audit_received,
    stored_already_by_key,
    upkeep,
    upkeep_received,
)
from services.metrics.db import (
    audit_sample,
    open_cases,
    review_entries,
    sql,
    system_changes,
    write_path,
)
from services.metrics.db.audit_sample import Classified
from services.metrics.db.sql import FIXED_ZONES
from services.metrics.domain.cases import (
    StoredCase,
    TailStitched,
    apply_labels,
    close_at_tail,
    stitch_customer,
    stitch_tail,
)
from services.metrics.domain.windows import OutOfRange, to_utc
from shared.events import CaseEvent, DemandClassified, DemandLabelled, Event, SystemChanged


@dataclass(frozen=True)
class NewlyFulfilled:
    purpose: str
    channel: str
    end_to_end_seconds: float


@dataclass(frozen=True)
class Refused:
    event: Event
    reason: str


@dataclass
class BatchOutcome:
    """What changed, for the instruments and the publisher (applied after the commit)."""

    purposes: set[str] = field(default_factory=set)
    newly_fulfilled: list[NewlyFulfilled] = field(default_factory=list)
    # Customers stitched on at the tail, not recomputed from their history (for tests).
    stitched_at_tail: int = 0
    # Customers whose case was closed at the tail by one case event (for tests).
    closed_at_tail: int = 0
    # Customers recomputed from their whole history (for tests and the bench).
    recomputed: int = 0
    # Events that cannot be stored, with why; nothing of them was applied.
    refused: list[Refused] = field(default_factory=list)


def why_unstorable(event: Event) -> str | None:
    """Why ``event`` cannot be stored, naming the field, or None when it can."""
    return _unstorable(event, "")


_PLAIN = (str, int, float, bool, type(None))


def _plain(annotation: Any) -> bool:
    """Whether a field so annotated can hold neither a time nor a model: text, numbers,
    flags, enums and literals, alone or in an optional, a union or a container."""
    if annotation in _PLAIN or (isinstance(annotation, type) and issubclass(annotation, Enum)):
        return True
    origin = get_origin(annotation)
    if origin is Literal:
        return True
    if origin is Annotated:
        return _plain(get_args(annotation)[0])
    if origin in (Union, UnionType, list, dict, tuple, set, frozenset):
        return all(_plain(a) for a in get_args(annotation) if a is not Ellipsis)
    return False  # a time (AwareDatetime is no datetime subclass), a model, or unknown


@cache
def _checked_fields(model: type[BaseModel]) -> tuple[str, ...]:
    # Per event class once: a DemandClassified has 3 of its 21 fields (with its demand's)
    # worth a look, and the walk over all of them was 5 us of every event's CPU.
    return tuple(n for n, f in model.model_fields.items() if not _plain(f.annotation))


def _unstorable(model: BaseModel, prefix: str) -> str | None:
    # The instance's dict holds its fields (pydantic v2): cheaper than the class's
    # model_fields (a deprecated-property lookup) and a getattr per field.
    fields = model.__dict__
    for name in _checked_fields(type(model)):
        value = fields.get(name)
        if value is None:
            continue  # most optional fields (a demand's cause): no isinstance of BaseModel
        if isinstance(value, datetime):
            # An offset is under a day: only the first and last years overflow. A decoded
            # time's zone is pydantic's TzInfo, a fixed offset, never None: known by its
            # class, not asked (utcoffset calls into pydantic-core, ~2k instructions, three
            # times a demand); any other zone is asked, as before.
            if 1 < value.year < 9999 and (
                type(value.tzinfo) in FIXED_ZONES or value.utcoffset() is not None
            ):
                continue
            try:
                to_utc(value)
            except OutOfRange as error:
                return f"{prefix}{name}: {error}"
        elif isinstance(value, BaseModel):
            why = _unstorable(value, f"{prefix}{name}.")
            if why is not None:
                return why
    return None


async def apply_events(
    session: AsyncSession,
    events: Sequence[Event],
    audit: AuditPolicy | None = None,
    *,
    derive: bool = True,
) -> BatchOutcome:
    """``derive=False`` (a rebuild's bulk load) stores the events and leaves the customers'
    derived rows to ``derive_everything`` at the end: each customer computed once.

    A batch of demands and case events is applied by prepare_live and apply_prepared, the
    steps the live decoder's worker process splits between it and the service
    (live_decode.py): one implementation, wherever its first half runs."""
    if derive:
        prepared = prepare_live(events, session.get_bind().dialect.name)
        if prepared is not None:
            outcome = await apply_prepared(session, prepared, audit)
            outcome.refused = [Refused(events[i], why) for i, why in prepared.refused]
            return outcome
    refused = [Refused(e, why) for e in events if (why := why_unstorable(e)) is not None]
    if refused:
        dropped = {id(r.event) for r in refused}
        events = [e for e in events if id(e) not in dropped]
    outcome = await _apply(session, events, audit or AuditPolicy(), derive)
    outcome.refused = refused
    return outcome


async def _apply(
    session: AsyncSession, events: Sequence[Event], audit: AuditPolicy, derive: bool
) -> BatchOutcome:
    demands, case_events, labels, changes = by_kind(events)
    # A customer is a source's own reference: (source, customer_ref).
    moved = {(e.source or "", e.customer_ref) for e in case_events}
    keys, settled, fresh = demand_keys(demands, moved)
    customers = settled | moved
    # A label arriving at one instance while another's insert of its demand is uncommitted
    # must not be lost: the two serialise on the demand (write_path.lock_demands).
    await write_path.lock_demands(
        session,
        set(keys) | {(label.demand_source or "", label.demand_id) for label in labels},
    )
    # A change moves no customer's figures, only its purpose's baselines (read at query
    # time from the changes stored): the purpose is marked changed so it is republished.
    # Stored right after the demands' locks, on every path (see LOCK ORDER above).
    await system_changes.add_changes(session, changes)
    # The batch's own work in one hop to the database's thread (aiosqlite's, on SQLite): the
    # demands stored before it, its events stored, the audit's upkeep and, unless labels
    # must first find their customers, the touched customers recomputed. Four hops a batch
    # were four wake-ups of the loop and of that thread, each waiting for a core under load.
    together = derive and not labels
    outcome = await sql.run_sync(
        session,
        partial(
            _received_on_connection,
            demands=demands,
            keys=keys,
            case_events=case_events,
            labels=labels,
            audit=audit,
            customers=sorted(customers) if together else (),
            fresh=fresh if together else None,
            closing=new_case_events(case_events, settled) if together else None,
        ),
    )
    await review_entries.take_labelled(session, labels)  # a labelled demand waits no more
    if not derive:
        return BatchOutcome()
    if labels:
        labelled = await write_path.customers_of_labels(session, labels)
        customers |= labelled
        moved |= labelled
        settled |= labelled
        outcome = await recompute_customers(
            session,
            sorted(customers),
            fresh=new_demands(demands, moved),
            closing=new_case_events(case_events, settled),
        )
    outcome.purposes |= {change.purpose for change in changes}
    return outcome


_KINDS: tuple[type[Event], ...] = (DemandClassified, CaseEvent, DemandLabelled, SystemChanged)


def by_kind(
    events: Sequence[Event],
) -> tuple[list[DemandClassified], list[CaseEvent], list[DemandLabelled], list[SystemChanged]]:
    """The batch's demands, case events, labels and recorded changes, each in the batch's
    order, in one pass: by the event's own class, a dict look-up, where four passes of
    isinstance checks asked the models' metaclass (an ABC's check, ~0.16 µs) three times an
    event for the classes it is not. An instance of a subclass is sorted by isinstance, as
    before; an event of none of them is left out, as before."""
    demands: list[DemandClassified] = []
    case_events: list[CaseEvent] = []
    labels: list[DemandLabelled] = []
    changes: list[SystemChanged] = []
    lists: dict[type[Event], list[Any]] = dict(
        zip(_KINDS, (demands, case_events, labels, changes), strict=True)
    )
    for event in events:
        kind = lists.get(type(event))
        if kind is not None:
            kind.append(event)
            continue
        for cls in _KINDS:
            if isinstance(event, cls):
                lists[cls].append(event)
    return demands, case_events, labels, changes


def _received_on_connection(
    db: sql.SyncDb,
    *,
    demands: Sequence[DemandClassified],
    keys: Sequence[sql.DemandKey],
    case_events: Sequence[CaseEvent],
    labels: Sequence[DemandLabelled],
    audit: AuditPolicy,
    customers: Sequence[sql.Customer],
    fresh: Mapping[sql.Customer, Sequence[sql.DemandKey]] | None,
    closing: Mapping[sql.Customer, Sequence[sql.DemandKey]] | None,
) -> BatchOutcome:
    """The events stored, the audit brought up to date (counting only the demands this
    batch adds), then ``customers`` recomputed (none: left to the caller). ``keys``: the
    demands' (source, id), in their order."""
    known = audit_sample.stored_already(db, keys) if keys else set()
    write_path.store_received(db, demands=demands, case_events=case_events, labels=labels)
    upkeep(db, demands, audit, stored_before=known)
    if not customers:
        return BatchOutcome()
    return recompute_on_connection(db, customers, fresh, closing)


class _ReceivedAsTuples:
    """Handed between processes (a worker to the service or the rebuild): the audit's
    demands (``received``) as plain tuples, which pickle both ways at a tenth of the named
    tuples' cost (~0.3 against 3 µs each)."""

    received: list[ReceivedDemand]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["received"] = [(tuple(d.classified), d.text) for d in self.received]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        made = Classified._make
        received = state["received"]
        state["received"] = [ReceivedDemand(made(values), text) for values, text in received]
        self.__dict__.update(state)


@dataclass
class PreparedLoad(_ReceivedAsTuples):
    """A batch of a rebuild's load made ready to store: its events' rows and what the audit
    needs of its demands, plain values (built in a worker process, rebuild_pool.py, or in
    this one), with the labels and recorded changes as events (rare, and stored through
    the session). store_prepared does with it what apply_events(derive=False) does with
    the events: the same functions, given the same values."""

    decoded: int  # the events it was made from, unstorable ones included
    rows: write_path.ReceivedRows
    demand_keys: list[sql.DemandKey]  # the batch's demands' keys, in its order
    received: list[ReceivedDemand]
    labels: list[DemandLabelled]
    changes: list[SystemChanged]


def prepare_load(
    events: Sequence[Event], *, time: Callable[[datetime], Any], day: Callable[[date], Any]
) -> PreparedLoad:
    """``events`` made ready to store, their times and days as ``time`` and ``day`` store
    them (sql.stored_forms). An event that cannot be stored is left out, as apply_events
    refuses it."""
    storable = [e for e in events if why_unstorable(e) is None]
    demands = [e for e in storable if isinstance(e, DemandClassified)]
    case_events = [e for e in storable if isinstance(e, CaseEvent)]
    labels = [e for e in storable if isinstance(e, DemandLabelled)]
    return PreparedLoad(
        decoded=len(events),
        rows=write_path.received_rows(
            demands=demands, case_events=case_events, labels=labels, time=time, day=day
        ),
        demand_keys=[(d.demand.source, d.demand.id) for d in demands],
        received=as_received(demands, day),
        labels=labels,
        changes=[e for e in storable if isinstance(e, SystemChanged)],
    )


async def store_prepared(
    session: AsyncSession, load: PreparedLoad, audit: AuditPolicy | None = None
) -> None:
    """apply_events(derive=False) of a PreparedLoad: the same steps, in the same order."""
    labels = load.labels
    await write_path.lock_demands(
        session,
        set(load.demand_keys) | {(label.demand_source or "", label.demand_id) for label in labels},
    )
    await system_changes.add_changes(session, load.changes)
    known = await stored_already_by_key(session, load.demand_keys)
    await sql.run_sync(session, partial(write_path.insert_received, rows=load.rows))
    await draw_audit_received(session, load.received, audit or AuditPolicy(), stored_before=known)
    await review_entries.take_labelled(session, labels)


@dataclass
class PreparedLive(_ReceivedAsTuples):
    """A live batch of demands and case events made ready to apply: every value apply_events
    computes from the events alone (nothing of the database), built by the same functions,
    plain values (built in the live decoder's worker process, live_decode.py).
    apply_prepared does with it what apply_events does with the events."""

    decoded: int  # the events it was made from, refused ones included
    refused: list[tuple[int, str]]  # (position among the events, why it cannot be stored)
    rows: write_path.ReceivedRows
    keys: list[sql.DemandKey]  # the storable demands' keys, in the batch's order
    customers: list[sql.Customer]  # every customer the batch touches, sorted
    fresh: dict[sql.Customer, list[sql.DemandKey]]  # new_demands
    closing: dict[sql.Customer, list[sql.DemandKey]]  # new_case_events
    received: list[ReceivedDemand]


def prepare_live(events: Sequence[Event], dialect: str) -> PreparedLive | None:
    """``events`` made ready for apply_prepared on a database of ``dialect``: apply_events'
    steps that depend on the events only, in its order. None when the batch holds labels or
    recorded changes (rare; they need the database first): applied by apply_events."""
    refused = [(i, why) for i, e in enumerate(events) if (why := why_unstorable(e)) is not None]
    if refused:
        dropped = {i for i, _ in refused}
        events = [e for i, e in enumerate(events) if i not in dropped]
    demands, case_events, labels, changes = by_kind(events)
    if labels or changes:
        return None
    moved = {(e.source or "", e.customer_ref) for e in case_events}
    keys, settled, fresh = demand_keys(demands, moved)
    # store_received's and upkeep's forms of a time and a day (SqliteDb's or AlchemyDb's).
    time, day = sql.stored_forms(dialect)
    return PreparedLive(
        decoded=len(events) + len(refused),
        refused=refused,
        rows=write_path.received_rows(
            demands=demands, case_events=case_events, labels=(), time=time, day=day
        ),
        keys=keys,
        customers=sorted(settled | moved),
        fresh=fresh,
        closing=new_case_events(case_events, settled),
        received=as_received(demands, day),
    )


async def apply_prepared(
    session: AsyncSession, prepared: PreparedLive, audit: AuditPolicy | None = None
) -> BatchOutcome:
    """apply_events of a batch of demands and case events, from prepare_live's values: the
    same steps in the same order (no labels, no recorded changes: their steps do nothing)."""
    await write_path.lock_demands(session, set(prepared.keys))
    return await sql.run_sync(
        session, partial(_prepared_on_connection, prepared=prepared, audit=audit or AuditPolicy())
    )


def _prepared_on_connection(
    db: sql.SyncDb, *, prepared: PreparedLive, audit: AuditPolicy
) -> BatchOutcome:
    """_received_on_connection of prepared values."""
    keys = prepared.keys
    if isinstance(db, sql.SqliteDb):
        # The keys stored before, asked only if the insert left a demand out. Only a
        # complete insert (counted inside the write transaction) says each key is stored
        # as its batch row: the rowid read ran before the transaction, so another replica
        # on the file may have stored one of the keys since (review D1).
        known, exact = write_path.insert_new_received(db, prepared.rows, keys)
    else:
        # lock_demands holds the keys, so ``known`` is exact.
        known = audit_sample.stored_already(db, keys) if keys else set()
        write_path.insert_received(db, prepared.rows)
        exact = True
    upkeep_received(db, prepared.received, audit, stored_before=known)
    if not prepared.customers:
        return BatchOutcome()
    inserted = write_path.Inserted(prepared.rows.demands, known) if exact else None
    return recompute_on_connection(
        db, prepared.customers, prepared.fresh, prepared.closing, inserted
    )


def demand_keys(
    demands: Sequence[DemandClassified], moved: set[sql.Customer]
) -> tuple[list[sql.DemandKey], set[sql.Customer], dict[sql.Customer, list[sql.DemandKey]]]:
    """The demands' keys in their order, their customers, and new_demands(demands, moved),
    in one pass: each demand's fields read once, off its ``__dict__`` (BaseModel's
    ``__getattr__`` sends every attribute read through CPython's slower hook)."""
    keys: list[sql.DemandKey] = []
    customers: set[sql.Customer] = set()
    fresh: dict[sql.Customer, list[sql.DemandKey]] = {}
    for event in demands:
        demand = event.__dict__["demand"].__dict__
        source = demand["source"]
        key = (source, demand["id"])
        customer = (source, demand["customer_ref"])
        keys.append(key)
        customers.add(customer)
        if customer not in moved:
            fresh.setdefault(customer, []).append(key)
    return keys, customers, fresh


def new_demands(
    demands: Sequence[DemandClassified], moved: set[sql.Customer]
) -> dict[sql.Customer, list[sql.DemandKey]]:
    """The customers that may be stitched at the tail, with their demands' keys in the
    batch: those with no case event or label in it (``moved``). A demand stored before (a
    redelivery) needs no check here: its case was active at its time or later, so
    stitch_tail declines it."""
    fresh: dict[sql.Customer, list[sql.DemandKey]] = {}
    for event in demands:
        demand = event.demand
        customer = (demand.source, demand.customer_ref)
        if customer not in moved:
            fresh.setdefault(customer, []).append((demand.source, demand.id))
    return fresh


def new_case_events(
    case_events: Sequence[CaseEvent], settled: set[sql.Customer]
) -> dict[sql.Customer, list[sql.DemandKey]]:
    """The customers whose case may be closed at the tail, with their case events' keys
    (source, id) in the batch: those with no demand or label in it (``settled``).
    close_at_tail takes one event, after everything stored; the others are declined."""
    closing: dict[sql.Customer, list[sql.DemandKey]] = {}
    for event in case_events:
        source = event.source or ""
        customer = (source, event.customer_ref)
        if customer not in settled:
            closing.setdefault(customer, []).append((source, event.id))
    return closing


async def recompute_customers(
    session: AsyncSession,
    customers: Sequence[sql.Customer],
    fresh: Mapping[sql.Customer, Sequence[sql.DemandKey]] | None = None,
    closing: Mapping[sql.Customer, Sequence[sql.DemandKey]] | None = None,
) -> BatchOutcome:
    if not customers:
        return BatchOutcome()
    return await sql.run_sync(
        session, lambda db: recompute_on_connection(db, customers, fresh, closing)
    )


async def derive_everything(
    sessions: async_sessionmaker[AsyncSession], customers_per_transaction: int = 2000
) -> int:
    """Every stored customer's derived rows computed once, after a bulk load (a rebuild's):
    the customers in key order, a page per transaction. Returns the customers computed."""
    done = 0
    async for page in customer_pages(sessions, customers_per_transaction):
        async with sessions.begin() as session:
            await recompute_customers(session, page)
        done += len(page)
    return done


async def customer_pages(
    sessions: async_sessionmaker[AsyncSession], customers_per_page: int
) -> AsyncIterator[list[sql.Customer]]:
    """Every stored customer, in pages in key order: those with demands, then those with
    case events only. The stored events do not change while a rebuild derives, so each page
    is read on its own."""
    for with_demands in (True, False):
        after: sql.Customer | None = None
        while True:
            async with sessions() as session:
                page = await sql.run_sync(
                    session,
                    partial(
                        write_path.customers_after,
                        after=after,
                        limit=customers_per_page,
                        with_demands=with_demands,
                    ),
                )
            if not page:
                break
            yield page
            after = page[-1]


def recompute_on_connection(
    db: sql.SyncDb,
    customers: Sequence[sql.Customer],
    fresh: Mapping[sql.Customer, Sequence[sql.DemandKey]] | None = None,
    closing: Mapping[sql.Customer, Sequence[sql.DemandKey]] | None = None,
    inserted: write_path.Inserted | None = None,
) -> BatchOutcome:
    """Every touched customer's cases stitched again from everything stored for them: four
    reads for all of them, then only the rows that changed written (write_path). Live
    ingestion runs it on the session's connection; a rebuild's workers (rebuild_pool) on
    their own read-only ones, recording the writes.

    ``fresh`` (live: new_demands): customers whose batch holds only new demands, with
    their keys; each is stitched on at the tail when stitch_tail can, else in full.
    ``closing`` (live: new_case_events): customers whose batch holds only case events,
    with their keys; each has its case closed at the tail when close_at_tail can, else
    is recomputed in full. ``inserted`` (live: the batch's demand rows as stored, and the
    keys stored before it) spares the tail reading back what the batch has just stored."""
    outcome = BatchOutcome()
    if fresh or closing:
        write_path.lock_customers(db, customers)  # all of them, in one statement
        if fresh:
            customers = _stitch_at_tail(db, customers, fresh, outcome, inserted)
        if closing:
            customers = _close_at_tail(db, customers, closing, outcome)
        if not customers:
            return outcome
        write_path.touch_customers(db, customers, lock=False)
    else:
        write_path.touch_customers(db, customers)
    stored = write_path.stored_state(db, customers)
    outcome.recomputed = len(customers)
    before = stored.fulfilled_before()
    outcome.purposes |= stored.purposes()
    stitched = {}
    for customer, history in stored.histories.items():
        demands = apply_labels(history.demands, history.labels)
        result = stitch_customer(customer[1], demands, history.case_events)
        stitched[customer] = (result, demands)
        outcome.purposes |= {d.purpose for d in demands}
        for case in result.cases:
            seconds = case.end_to_end_seconds
            if (
                case.measured
                and seconds is not None
                and case.purpose is not None
                and (customer, case.case_id) not in before
            ):
                outcome.newly_fulfilled.append(
                    NewlyFulfilled(case.purpose, case.first_channel or "other", seconds)
                )
    write_path.replace_derived(db, stored, stitched)
    open_cases.move(db, stored, stitched)  # the open cases' counts, by the difference
    return outcome


def _stitch_at_tail(
    db: sql.SyncDb,
    customers: Sequence[sql.Customer],
    fresh: Mapping[sql.Customer, Sequence[sql.DemandKey]],
    outcome: BatchOutcome,
    inserted: write_path.Inserted | None,
) -> list[sql.Customer]:
    """The customers of ``fresh`` that stitch_tail takes, written; returns the others of
    ``customers``, for the full recomputation."""
    state = write_path.tail_state(db, fresh, inserted)
    stitched: dict[sql.Customer, TailStitched] = {}
    for customer, demands in state.demands.items():
        if customer in state.refused:
            continue
        result = stitch_tail(
            customer[1], state.cases[customer], demands, state.cause_cases.get(customer)
        )
        if result is not None:
            stitched[customer] = result
            # The demands' purposes, and a joined case's (its first demand's, which a demand
            # with its reference may not share).
            outcome.purposes |= {d.purpose for d in demands}
            outcome.purposes |= {c.purpose for c in result.extended if c.purpose is not None}
    if stitched:
        write_path.extend_derived(db, state, stitched)
        # The cases opened are counted open; the ones joined stay open, under the same key.
        open_cases.add_opened(
            db,
            ((source, case) for (source, _), result in stitched.items() for case in result.opened),
        )
        outcome.stitched_at_tail = len(stitched)
    return [customer for customer in customers if customer not in stitched]


def _close_at_tail(
    db: sql.SyncDb,
    customers: Sequence[sql.Customer],
    closing: Mapping[sql.Customer, Sequence[sql.DemandKey]],
    outcome: BatchOutcome,
) -> list[sql.Customer]:
    """The customers of ``closing`` whose case close_at_tail closes, written; returns the
    others of ``customers``, for the full recomputation."""
    state = write_path.closing_state(db, closing)
    closed: dict[sql.Customer, StoredCase] = {}
    for customer, event in state.events.items():
        if customer in state.refused:
            continue
        case = close_at_tail(state.cases[customer], event)
        if case is not None:
            closed[customer] = case
    if not closed:
        return list(customers)
    changed = write_path.close_derived(db, state, closed)
    open_cases.take_closed(db, (old for old, _new in changed))
    for _old, new in changed:
        # The case's purpose: its figures moved (the demands' facts did not).
        if new["purpose"] is not None:
            outcome.purposes.add(new["purpose"])
        seconds = new["end_to_end_seconds"]
        if new["measured"] and seconds is not None and new["purpose"] is not None:
            outcome.newly_fulfilled.append(
                NewlyFulfilled(new["purpose"], new["first_channel"] or "other", seconds)
            )
    outcome.closed_at_tail = len(closed)
    return [customer for customer in customers if customer not in closed]
