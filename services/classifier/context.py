"""Per-customer context: open cases and recent demands by purpose, bounded in time. Pure.

The classifier owns the context of the customers whose partitions it is assigned. A batch
works on a ``ContextOverlay`` (copies of the touched customers' states), so a batch that is
retried or aborted leaves the committed context untouched; ``ContextOverlay.commit`` applies
it once Kafka has committed the batch, together with its changelog records.

A customer's context is kept by ``customer_ref`` (the input topics' key, so partitions stay
aligned), but its entries name their source: a demand is (source, id) and a case (source,
case_ref), so a source's demand is judged against that source's demands and cases only
(docs/architecture.md, "Sources and the organisation"). An entry written before entries
named their source (``source`` None) is treated as any source's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import TypeAdapter

from services.classifier.judgement import CustomerContext, OpenCase, Recent, RecentDemand
from shared.events import CaseEvent
from shared.events.case import CaseEventType

CaseStatus = Literal["open", "fulfilled", "abandoned"]

# The tzinfo pydantic gives every UTC time it decodes ("Z" or "+00:00": one shared TzInfo(0)),
# so every time in the events and the context. An aware comparison or subtraction across two
# tzinfo objects calls utcoffset() on both (~0.6 µs against ~0.01 µs for one object), and
# pruning compares each entry's times with the horizon on every change: the horizon and the
# handler's clock are kept in this tzinfo (the same instants; pydantic writes either as "Z").
EVENT_UTC = TypeAdapter(datetime).validate_json('"2000-01-01T00:00:00Z"').tzinfo or UTC


def _same_source(entry: str | None, wanted: str | None) -> bool:
    return entry is None or wanted is None or entry == wanted


class _KeepsItsJson:
    """An entry's changelog JSON, kept once written (``state_json``). A slot, not a field: it
    is not part of the JSON, the comparison or a copy (``dataclasses.replace`` builds a new
    entry, so a changed entry is written afresh). Sound because nothing changes an entry in
    place once it is in a state that may have been written (see ``copy_for_change``)."""

    __slots__ = ("_json",)
    _json: bytes


# Plain dataclasses, not pydantic models: their values come from events already validated,
# so a new entry needs no validation of its own, and the context is built and copied for
# every demand. ``STATE_JSON`` validates and writes them for the changelog (the same JSON
# the pydantic models wrote, field for field). Keyword-only: the JSON keeps this field order.
@dataclass(slots=True, kw_only=True)
class CaseEntry(_KeepsItsJson):
    source: str | None = None
    ref: str
    purpose: str | None = None
    opened_at: datetime
    status: CaseStatus = "open"
    changed_at: datetime


@dataclass(slots=True, kw_only=True)
class DemandEntry(_KeepsItsJson):
    source: str | None = None
    demand_id: str
    purpose: str
    occurred_at: datetime
    case_ref: str | None = None
    fulfilled_at: datetime | None = None

    @property
    def ref_kind(self) -> Literal["demand"]:
        """As a ``RecentDemand`` of the judgement: the entry is its own recent demand."""
        return "demand"


@dataclass(slots=True, kw_only=True)
class CustomerState:
    """What one customer did recently: serialised as-is to the changelog topic."""

    v: Literal[1] = 1
    cases: list[CaseEntry] = field(default_factory=list)
    demands: list[DemandEntry] = field(default_factory=list)

    def copy_for_change(self) -> CustomerState:
        """A copy that can be changed without touching this one. The two share their
        entries: nothing changes an entry in place (``apply_case_event`` and ``apply_label``
        put a changed copy in its slot), so only the lists are copied, not every entry."""
        return CustomerState(cases=list(self.cases), demands=list(self.demands))

    # Plain loops, not next() over a generator: each demand recorded looks its id up (a
    # redelivery) and its case, so these run for every demand.
    def case(self, ref: str, source: str | None = None) -> CaseEntry | None:
        for case in self.cases:
            if case.ref == ref and _same_source(case.source, source):
                return case
        return None

    def demand(self, demand_id: str, source: str | None = None) -> DemandEntry | None:
        for demand in self.demands:
            if demand.demand_id == demand_id and _same_source(demand.source, source):
                return demand
        return None

    def demands_on(self, case: CaseEntry) -> list[DemandEntry]:
        return [
            d
            for d in self.demands
            if d.case_ref == case.ref and _same_source(d.source, case.source)
        ]

    def case_purpose(self, case: CaseEntry) -> str | None:
        """A case event may not name the purpose; the demands raised on the case do."""
        if case.purpose is not None:
            return case.purpose
        return next((d.purpose for d in self.demands_on(case)), None)

    def as_context(self, source: str | None = None) -> CustomerContext:
        """What a demand of ``source`` is judged against: that source's cases and demands.
        The demand entries are their own recent demands (no view built per entry)."""
        open_cases = []
        # Built for every demand judged: the source test inline, not a call per entry.
        recent: list[Recent] = (
            list(self.demands)
            if source is None
            else [d for d in self.demands if d.source is None or d.source == source]
        )
        for case in self.cases:
            if not _same_source(case.source, source):
                continue
            purpose = self.case_purpose(case)
            if purpose is None:
                continue
            if case.status == "open":
                open_cases.append(OpenCase(case.ref, purpose, case.opened_at))
            elif case.status == "fulfilled" and not self.demands_on(case):
                # Fulfilled with no demand seen here: the case itself is what a repeat traces to.
                recent.append(
                    RecentDemand(case.ref, purpose, case.opened_at, case.changed_at, "case")
                )
        return CustomerContext(open_cases=open_cases, recent_demands=recent)


def record_demand(
    state: CustomerState,
    *,
    demand_id: str,
    purpose: str,
    occurred_at: datetime,
    case_ref: str | None,
    source: str | None = None,
) -> None:
    if state.demand(demand_id, source) is not None:
        return  # the same demand again (a redelivery upstream): nothing new to learn
    state.demands.append(
        DemandEntry(
            source=source,
            demand_id=demand_id,
            purpose=purpose,
            occurred_at=occurred_at,
            case_ref=case_ref,
        )
    )
    if case_ref is not None and state.case(case_ref, source) is None:
        # A demand raised on a case we have not heard of: the case is open for its purpose.
        state.cases.append(
            CaseEntry(
                source=source,
                ref=case_ref,
                purpose=purpose,
                opened_at=occurred_at,
                changed_at=occurred_at,
            )
        )


def _slot(entries: Sequence[object], entry: object) -> int:
    """Where ``entry`` itself is (not an equal one)."""
    return next(i for i, candidate in enumerate(entries) if candidate is entry)


def apply_case_event(state: CustomerState, event: CaseEvent) -> None:
    found = state.case(event.case_ref, event.source)
    if found is None:
        case = CaseEntry(
            source=event.source,
            ref=event.case_ref,
            purpose=event.purpose,
            opened_at=event.occurred_at,
            changed_at=event.occurred_at,
        )
        state.cases.append(case)
    else:
        # A copy in its slot: the entry may be shared with the committed state.
        case = replace(found)
        state.cases[_slot(state.cases, found)] = case
    if event.purpose is not None:
        case.purpose = event.purpose
    case.changed_at = max(case.changed_at, event.occurred_at)
    if event.type in (CaseEventType.OPENED, CaseEventType.REOPENED, CaseEventType.PROGRESSED):
        if case.status != "open":
            case.opened_at = event.occurred_at
        case.status = "open"
    elif event.type is CaseEventType.FULFILLED:
        case.status = "fulfilled"
        for demand in state.demands_on(case):
            if demand.fulfilled_at is None:
                fulfilled = replace(demand, fulfilled_at=event.occurred_at)
                state.demands[_slot(state.demands, demand)] = fulfilled
    elif event.type is CaseEventType.ABANDONED:
        case.status = "abandoned"


def apply_label(
    state: CustomerState, *, demand_id: str, purpose: str, source: str | None = None
) -> bool:
    """A person named the demand's purpose: later demands are judged against that one.
    ``source`` None (a label written before labels named it): the demand of that id."""
    demand = state.demand(demand_id, source)
    if demand is None or demand.purpose == purpose:
        return False
    # A copy in its slot: the entry may be shared with the committed state.
    state.demands[_slot(state.demands, demand)] = replace(demand, purpose=purpose)
    return True


def _horizon(now: datetime, window: timedelta) -> datetime:
    # In the events' own tzinfo (itself when ``now`` is already), where comparing is cheap.
    # A naive ``now`` would be taken for local time by astimezone: refused, as comparing it
    # with the events' aware times was.
    if now.tzinfo is None:
        raise ValueError("the context's clock must be timezone-aware")
    return (now - window).astimezone(EVENT_UTC)


def prune(state: CustomerState, *, now: datetime, window: timedelta, max_demands: int) -> None:
    """Forget what is older than the window, and keep at most ``max_demands`` per customer."""
    horizon = _horizon(now, window)
    # A batch prunes every customer it touches, and mostly nothing has left the window: the
    # lists are rebuilt only when an entry goes (1.9 -> 0.4 µs for 10 entries, none gone).
    # A demand goes when it and its fulfilment (the later of the two counts) are both older.
    demands = state.demands
    for demand in demands:
        if demand.occurred_at < horizon and (
            demand.fulfilled_at is None or demand.fulfilled_at < horizon
        ):
            demands = [
                d
                for d in demands
                if d.occurred_at >= horizon
                or (d.fulfilled_at is not None and d.fulfilled_at >= horizon)
            ]
            break
    state.demands = demands[-max_demands:] if len(demands) > max_demands else demands
    cases = state.cases
    for case in cases:
        if case.changed_at < horizon:
            cases = [c for c in cases if c.changed_at >= horizon]
            break
    state.cases = cases[-max_demands:] if len(cases) > max_demands else cases


def prune_tail(
    state: CustomerState,
    *,
    demands_from: int,
    cases_from: int,
    now: datetime,
    window: timedelta,
    max_demands: int,
) -> None:
    """``prune`` for a state that ``prune`` already kept at this ``now`` up to the given
    lengths: what changes an entry (a label, a case event, a fulfilment) only makes it newer,
    so only the entries appended since need the window's test; the cap applies to all."""
    horizon = _horizon(now, window)
    if len(state.demands) > demands_from:
        kept = state.demands[:demands_from]
        kept += [
            d
            for d in state.demands[demands_from:]
            if max(d.occurred_at, d.fulfilled_at or d.occurred_at) >= horizon
        ]
        state.demands = kept[-max_demands:]
    if len(state.cases) > cases_from:
        cases = state.cases[:cases_from]
        cases += [c for c in state.cases[cases_from:] if c.changed_at >= horizon]
        state.cases = cases[-max_demands:]


STATE_JSON: TypeAdapter[CustomerState] = TypeAdapter(CustomerState)
_CASE_JSON: TypeAdapter[CaseEntry] = TypeAdapter(CaseEntry)
_DEMAND_JSON: TypeAdapter[DemandEntry] = TypeAdapter(DemandEntry)


def state_json(state: CustomerState) -> bytes:
    """``STATE_JSON.dump_json(state)``, byte for byte, from each entry's kept JSON: a batch
    writes a changed customer's whole state to the changelog, and most of its entries were
    written before (the changelog was 6.6% of the classifier's CPU, profiled). Only the
    entries new since are serialised."""
    return b"".join(
        (
            b'{"v":%d,"cases":[' % state.v,
            b",".join([_entry_json(case, _CASE_JSON) for case in state.cases]),
            b'],"demands":[',
            b",".join([_entry_json(demand, _DEMAND_JSON) for demand in state.demands]),
            b"]}",
        )
    )


def _entry_json(entry: _KeepsItsJson, adapter: TypeAdapter[Any]) -> bytes:
    try:
        kept: bytes = entry._json
    except AttributeError:  # not written yet (new, changed, or read from the changelog)
        # The serializer itself: TypeAdapter.dump_json's keyword handling cost as much.
        kept = entry._json = adapter.serializer.to_json(entry)
    return kept


def is_empty(state: CustomerState) -> bool:
    return not state.cases and not state.demands


class ContextStore:
    """The committed context of the customers this instance owns, by partition."""

    def __init__(self, *, window: timedelta, max_demands: int = 50) -> None:
        self.window = window
        self.max_demands = max_demands
        self._states: dict[str, CustomerState] = {}
        self._partition_of: dict[str, int] = {}
        # (source, demand id) -> customer; "" for an entry that names no source.
        self._customer_of_demand: dict[tuple[str, str], str] = {}

    def __len__(self) -> int:
        return len(self._states)

    def get(self, customer_ref: str) -> CustomerState | None:
        return self._states.get(customer_ref)

    def customer_of_demand(self, demand_id: str, source: str | None = None) -> str | None:
        """The customer of that demand; ``source`` None (an old label): the one customer
        with a demand of that id, or None when several sources' customers have one."""
        if source is not None:
            return self._customer_of_demand.get(
                (source, demand_id)
            ) or self._customer_of_demand.get(("", demand_id))
        found = {c for (_, d), c in self._customer_of_demand.items() if d == demand_id}
        return found.pop() if len(found) == 1 else None

    def partition_of(self, customer_ref: str) -> int | None:
        return self._partition_of.get(customer_ref)

    def put(self, customer_ref: str, partition: int, state: CustomerState) -> None:
        old = self._states.get(customer_ref)
        added: Sequence[DemandEntry] = state.demands
        if old is not None:
            kept = len(old.demands)
            if not is_empty(state) and state.demands[:kept] == old.demands:
                # The usual change: demands appended, none gone (the list comparison is
                # by identity first, and equal entries have equal keys): only the new
                # ones are indexed, not every demand popped and indexed again.
                added = state.demands[kept:]
            else:
                for demand in old.demands:
                    self._customer_of_demand.pop((demand.source or "", demand.demand_id), None)
        if is_empty(state):
            self._states.pop(customer_ref, None)
            self._partition_of.pop(customer_ref, None)
            return
        self._states[customer_ref] = state
        self._partition_of[customer_ref] = partition
        for demand in added:
            self._customer_of_demand[(demand.source or "", demand.demand_id)] = customer_ref

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget the customers of partitions this instance no longer owns; return how many."""
        gone = set(partitions)
        customers = [c for c, p in self._partition_of.items() if p in gone]
        for customer in customers:
            self.put(customer, self._partition_of[customer], CustomerState())
        return len(customers)

    def overlay(self) -> ContextOverlay:
        return ContextOverlay(self)


class ContextOverlay:
    """One batch's view: reads through to the store, writes to copies until ``commit``."""

    def __init__(self, store: ContextStore) -> None:
        self._store = store
        self._changed: dict[str, tuple[int, CustomerState]] = {}
        # Per changed customer: when it was pruned and the lengths it kept then. A batch
        # updates a customer many times; only its first update filters the whole history.
        self._pruned: dict[str, tuple[datetime, int, int]] = {}

    def state(self, customer_ref: str, partition: int) -> CustomerState:
        if customer_ref in self._changed:
            return self._changed[customer_ref][1]
        committed = self._store.get(customer_ref)
        return committed.copy_for_change() if committed else CustomerState()

    def update(
        self, customer_ref: str, partition: int, state: CustomerState, now: datetime
    ) -> None:
        window, cap = self._store.window, self._store.max_demands
        last = self._pruned.get(customer_ref)
        if last is not None and last[0] == now and self._changed[customer_ref][1] is state:
            prune_tail(
                state,
                demands_from=last[1],
                cases_from=last[2],
                now=now,
                window=window,
                max_demands=cap,
            )
        else:
            prune(state, now=now, window=window, max_demands=cap)
        self._pruned[customer_ref] = (now, len(state.demands), len(state.cases))
        self._changed[customer_ref] = (partition, state)

    def customer_of_demand(self, demand_id: str, source: str | None = None) -> str | None:
        for customer, (_, state) in self._changed.items():
            if state.demand(demand_id, source) is not None:
                return customer
        return self._store.customer_of_demand(demand_id, source)

    def partition_of(self, customer_ref: str) -> int | None:
        if customer_ref in self._changed:
            return self._changed[customer_ref][0]
        return self._store.partition_of(customer_ref)

    @property
    def changed(self) -> dict[str, CustomerState]:
        return {customer: state for customer, (_, state) in self._changed.items()}

    def commit(self) -> None:
        for customer, (partition, state) in self._changed.items():
            self._store.put(customer, partition, state)


def event_utc_now() -> datetime:
    """Now, in the events' own UTC tzinfo (``EVENT_UTC``)."""
    return datetime.now(EVENT_UTC)
