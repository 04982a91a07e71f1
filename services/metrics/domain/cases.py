"""Cases on the customer's clock: one customer's demands and case events stitched into cases.

A pure function of everything known about one customer, so the result does not depend on
the order in which events arrived, on redelivery, or on whether it is computed live or in
a rebuild. The rules, applied in the order things happened (by ``occurred_at``):

- a demand with a ``case_ref`` joins that case;
- a failure demand ``caused_by`` a case joins it; ``caused_by`` a demand joins that
  demand's case;
- otherwise a demand joins the customer's open case for the same purpose, or opens one;
- a case event joins its ``case_ref``; one whose ref is new adopts the customer's open
  case of the same purpose that has no ref yet (the source named the case later than the
  demand), else it starts a case of its own;
- ``fulfilled`` stops the clock, ``reopened`` starts it again from where it was (the
  end-to-end time still runs from the first demand), ``abandoned`` closes without a time.

A case with no demand yet (its case events came first) is kept but is not measured: the
customer's clock starts at the customer's first demand.

``stitch_tail`` gives the same cases for the common live case without the history: demands
later than everything stored for the customer, that join an open case or open one (by
reference, cause or purpose), stitched on from the customer's stored cases; it declines
(None) whenever that might differ. ``close_at_tail`` does the same for one case event after
everything stored that closes an open case with demands (a fulfilment or an abandonment).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

# The facts and cases below are built afresh for every customer a batch touches (a rebuild:
# every customer once) and never changed after: plain slotted dataclasses, not frozen ones,
# whose __init__ sets each field through object.__setattr__ (about three times the cost).

OPEN = "open"
FULFILLED = "fulfilled"
ABANDONED = "abandoned"


@dataclass(slots=True)
class DemandFact:
    """A demand as classified, before or after a person's label is applied."""

    demand_id: str
    customer_ref: str
    occurred_at: datetime
    channel: str
    team: str | None
    case_ref: str | None
    purpose: str
    demand_type: str
    failure_kind: str | None
    caused_by_kind: str | None = None
    caused_by_ref: str | None = None
    labelled: bool = False


@dataclass(slots=True)
class CaseEventFact:
    event_id: str
    case_ref: str
    customer_ref: str
    type: str
    occurred_at: datetime
    purpose: str | None = None


@dataclass(slots=True)
class LabelFact:
    label_id: str
    demand_id: str
    demand_type: str
    failure_kind: str | None
    purpose: str
    labelled_at: datetime


@dataclass(slots=True)
class Case:
    case_id: str
    customer_ref: str
    case_ref: str | None
    purpose: str | None
    status: str
    started_at: datetime
    fulfilled_at: datetime | None
    reopened: int
    demand_ids: tuple[str, ...]
    failure_contacts: int
    channels: tuple[str, ...]
    first_channel: str | None
    team: str | None
    last_activity_at: datetime

    @property
    def contacts(self) -> int:
        return len(self.demand_ids)

    @property
    def measured(self) -> bool:
        """Only a case with a demand and a purpose is on the customer's clock."""
        return self.contacts > 0 and self.purpose is not None

    @property
    def end_to_end_seconds(self) -> float | None:
        if self.status != FULFILLED or self.fulfilled_at is None or not self.contacts:
            return None
        return max(0.0, (self.fulfilled_at - self.started_at).total_seconds())

    @property
    def one_stop(self) -> bool:
        """Fulfilled at the first contact: one demand, never reopened."""
        return self.status == FULFILLED and self.contacts == 1 and self.reopened == 0


@dataclass(slots=True)
class StitchedCustomer:
    cases: tuple[Case, ...]
    case_of_demand: dict[str, str]
    # For a failure demand that was traced to its cause: the purpose of the case it joined.
    cause_purpose_of_demand: dict[str, str]


def apply_labels(demands: Iterable[DemandFact], labels: Iterable[LabelFact]) -> list[DemandFact]:
    """Each demand with its latest label applied (by labelled_at, then label id)."""
    latest: dict[str, LabelFact] = {}
    for label in labels:
        current = latest.get(label.demand_id)
        if current is None or (label.labelled_at, label.label_id) > (
            current.labelled_at,
            current.label_id,
        ):
            latest[label.demand_id] = label
    relabelled = []
    for demand in demands:
        applied = latest.get(demand.demand_id)
        if applied is not None:
            demand = replace(
                demand,
                purpose=applied.purpose,
                demand_type=applied.demand_type,
                failure_kind=applied.failure_kind if applied.demand_type == "failure" else None,
                labelled=True,
            )
        relabelled.append(demand)
    return relabelled


@dataclass
class _Building:
    case_id: str
    customer_ref: str
    case_ref: str | None
    purpose: str | None
    first_seen: datetime
    status: str = OPEN
    fulfilled_at: datetime | None = None
    reopened: int = 0
    demands: list[DemandFact] = field(default_factory=list)
    last_activity_at: datetime | None = None

    def touch(self, moment: datetime) -> None:
        if self.last_activity_at is None or moment > self.last_activity_at:
            self.last_activity_at = moment

    def freeze(self) -> Case:
        # One pass over the demands for their ids, channels and failures (a case a tail
        # stitch opens is frozen once, for one or two demands: the generators' set-up was
        # most of it).
        ids: list[str] = []
        channels: set[str] = set()
        failures = 0
        for demand in self.demands:
            ids.append(demand.demand_id)
            channels.add(demand.channel)
            failures += demand.demand_type == "failure"
        first = self.demands[0] if self.demands else None
        started = first.occurred_at if first is not None else self.first_seen
        # By position, in Case's field order: a class called with keywords makes a dict of
        # them a call (CPython's type_call), ~1 µs of the 14 here, once a case. Each
        # argument names its field; test_row_readers holds this equal to the keyword form
        # and pins Case's field order.
        return Case(
            self.case_id,  # case_id
            self.customer_ref,  # customer_ref
            self.case_ref,  # case_ref
            first.purpose if first is not None else self.purpose,  # purpose
            self.status,  # status
            started,  # started_at
            self.fulfilled_at,  # fulfilled_at
            self.reopened,  # reopened
            tuple(ids),  # demand_ids
            failures,  # failure_contacts
            tuple(sorted(channels)),  # channels
            first.channel if first is not None else None,  # first_channel
            first.team if first is not None else None,  # team
            self.last_activity_at or started,  # last_activity_at
        )


class _Stitcher:
    def __init__(self, customer_ref: str) -> None:
        self.customer_ref = customer_ref
        self.cases: dict[str, _Building] = {}
        self.by_ref: dict[str, str] = {}
        self.case_of_demand: dict[str, str] = {}
        self.cause_purpose: dict[str, str] = {}

    def new_case(
        self, case_id: str, case_ref: str | None, purpose: str | None, at: datetime
    ) -> _Building:
        building = _Building(case_id, self.customer_ref, case_ref, purpose, at)
        self.cases[case_id] = building
        if case_ref is not None:
            self.by_ref[case_ref] = case_id
        return building

    def referenced(self, case_ref: str, purpose: str | None, at: datetime) -> _Building:
        case_id = self.by_ref.get(case_ref)
        if case_id is not None:
            return self.cases[case_id]
        return self.new_case(case_ref, case_ref, purpose, at)

    def open_case_for(self, purpose: str | None, *, without_ref: bool = False) -> _Building | None:
        candidates = [
            c
            for c in self.cases.values()
            if c.status == OPEN
            and (c.demands[0].purpose if c.demands else c.purpose) == purpose
            and not (without_ref and c.case_ref is not None)
        ]
        # The most recently active open case: the one the customer is chasing.
        return max(candidates, key=lambda c: c.last_activity_at or c.first_seen, default=None)

    def add_demand(self, demand: DemandFact) -> None:
        case = self.case_for(demand)
        if not case.demands and case.purpose is None:
            case.purpose = demand.purpose
        case.demands.append(demand)
        case.touch(demand.occurred_at)
        self.case_of_demand[demand.demand_id] = case.case_id

    def case_for(self, demand: DemandFact) -> _Building:
        if demand.case_ref is not None:
            return self.referenced(demand.case_ref, demand.purpose, demand.occurred_at)
        if demand.demand_type == "failure" and demand.caused_by_ref is not None:
            cause = self.cause_of(demand)
            if cause is not None:
                self.cause_purpose[demand.demand_id] = _purpose_of(cause) or demand.purpose
                return cause
        existing = self.open_case_for(demand.purpose)
        if existing is not None:
            return existing
        return self.new_case(f"auto-{demand.demand_id}", None, demand.purpose, demand.occurred_at)

    def cause_of(self, demand: DemandFact) -> _Building | None:
        ref = demand.caused_by_ref
        assert ref is not None
        if demand.caused_by_kind == "case":
            return self.referenced(ref, demand.purpose, demand.occurred_at)
        case_id = self.case_of_demand.get(ref)
        return self.cases[case_id] if case_id is not None else None

    def add_case_event(self, event: CaseEventFact) -> None:
        case_id = self.by_ref.get(event.case_ref)
        if case_id is not None:
            case = self.cases[case_id]
        else:
            adoptable = self.open_case_for(event.purpose, without_ref=True)
            if adoptable is not None and event.purpose is not None:
                adoptable.case_ref = event.case_ref
                self.by_ref[event.case_ref] = adoptable.case_id
                case = adoptable
            else:
                case = self.new_case(
                    event.case_ref, event.case_ref, event.purpose, event.occurred_at
                )
        if case.purpose is None:
            case.purpose = event.purpose
        case.touch(event.occurred_at)
        if event.type == "fulfilled":
            case.status, case.fulfilled_at = FULFILLED, event.occurred_at
        elif event.type == "abandoned":
            case.status, case.fulfilled_at = ABANDONED, None
        elif event.type == "reopened" and case.status != OPEN:
            case.status, case.fulfilled_at = OPEN, None
            case.reopened += 1


def _purpose_of(case: _Building) -> str | None:
    return case.demands[0].purpose if case.demands else case.purpose


# Demands before case events at the same instant: the customer asks, then the case moves.
_DEMAND, _CASE_EVENT = 0, 1


def stitch_customer(
    customer_ref: str, demands: Sequence[DemandFact], case_events: Sequence[CaseEventFact]
) -> StitchedCustomer:
    """Every case of one customer, from their (already relabelled) demands and case events."""
    timeline: list[tuple[datetime, int, str, DemandFact | CaseEventFact]] = [
        (d.occurred_at, _DEMAND, d.demand_id, d) for d in demands
    ]
    timeline += [(e.occurred_at, _CASE_EVENT, e.event_id, e) for e in case_events]
    timeline.sort(key=lambda item: (item[0], item[1], item[2]))
    stitcher = _Stitcher(customer_ref)
    for _at, _kind, _id, item in timeline:
        if isinstance(item, DemandFact):
            stitcher.add_demand(item)
        else:
            stitcher.add_case_event(item)
    return StitchedCustomer(
        cases=tuple(case.freeze() for case in stitcher.cases.values()),
        case_of_demand=stitcher.case_of_demand,
        cause_purpose_of_demand=stitcher.cause_purpose,
    )


# --- stitching on at the tail: new demands after everything stored -------------------------


@dataclass(slots=True)
class StoredCase:
    """What stitching on at a customer's tail needs of one of their stored cases."""

    case_id: str
    case_ref: str | None
    purpose: str | None
    status: str
    contacts: int
    failure_contacts: int
    channels: tuple[str, ...]
    last_activity_at: datetime


def _copied(case: StoredCase, status: str, last_activity_at: datetime) -> StoredCase:
    """A copy of ``case`` with this status and last activity: built field by field, not
    by dataclasses.replace (1.5 against 0.2 µs), for every stored case a tail stitch or
    close looks at. By position (as freeze; test_row_readers holds it to the keyword form)."""
    return StoredCase(
        case.case_id,  # case_id
        case.case_ref,  # case_ref
        case.purpose,  # purpose
        status,  # status
        case.contacts,  # contacts
        case.failure_contacts,  # failure_contacts
        case.channels,  # channels
        last_activity_at,  # last_activity_at
    )


@dataclass(slots=True)
class TailStitched:
    # The stored cases the demands joined, as they are now (only their counts, channels and
    # last activity move: the first demand, the status and the clock stay).
    extended: tuple[StoredCase, ...]
    opened: tuple[Case, ...]  # the cases the demands opened
    case_of_demand: dict[str, str]  # the new demands' cases
    cause_purpose_of_demand: dict[str, str]  # as StitchedCustomer's, for the new demands


def stitch_tail(
    customer_ref: str,
    stored: Sequence[StoredCase],
    demands: Sequence[DemandFact],
    cause_cases: Mapping[str, str] | None = None,
) -> TailStitched | None:
    """What ``stitch_customer`` makes of the customer's stored history plus ``demands``, from
    the cases stitched of that history (``stored``, every one of them) and the cases of the
    stored demands the new ones name as their cause (``cause_cases``, by demand id): the
    same cases, the untouched ones as stored. None when that is not certain, and the caller
    stitches the whole history: a demand not after everything stored (every demand and case
    event touched a case, so the latest ``last_activity_at`` is the latest of them), one
    with a label, a tie between open cases, a demand joining a case that has no demand yet
    or is not open, or a new case whose id another case has.

    Why it is the same: in the full stitch each of these demands comes after every stored
    event in the timeline, so the stitcher's state when it reaches them is the stored cases
    (and the ones these demands opened). Without a label, ``case_for`` joins the case of the
    demand's reference, or opens it; else the case of its cause (a case by reference, opened
    if new; a demand's case, if that demand is the customer's); else it asks
    ``open_case_for`` its purpose, which picks the latest active open case of it (the first
    made among equals, an order the stored rows do not keep: hence the tie rule), or opens
    ``auto-<id>``. A demand joining an open case with demands moves only its counts,
    channels and last activity."""
    latest = max((case.last_activity_at for case in stored), default=None)
    # Copies: ``stored`` stays.
    cases = {case.case_id: _copied(case, case.status, case.last_activity_at) for case in stored}
    by_ref = {case.case_ref: case for case in cases.values() if case.case_ref is not None}
    stored_causes = cause_cases or {}
    stitcher = _Stitcher(customer_ref)  # the cases these demands open, stitched as usual
    # A case made with the id of an earlier one ("auto-<demand id>" as a reference) replaced
    # it, and the references that case had taken name the new one in the full stitch, which
    # the stored rows no longer tell: a reference not stored may be one of them.
    collided = any(c.case_id == c.case_ref and c.case_id.startswith("auto-") for c in stored)
    extended: dict[str, StoredCase] = {}
    case_of_demand: dict[str, str] = {}
    cause_purpose: dict[str, str] = {}
    for demand in sorted(demands, key=lambda d: (d.occurred_at, d.demand_id)):
        if (latest is not None and demand.occurred_at <= latest) or demand.labelled:
            return None
        joined: StoredCase | None = None
        by_cause = False  # joined as the case of the demand's cause (case_for's order)
        # The case the full stitch looks for by reference: the demand's, or its cause's.
        ref = demand.case_ref
        cause = demand.caused_by_ref if demand.demand_type == "failure" else None
        if ref is None and cause is not None and demand.caused_by_kind == "case":
            ref, by_cause = cause, True
        if ref is not None:
            if ref not in stitcher.by_ref:
                joined = by_ref.get(ref)
                if joined is None and (ref in cases or ref in stitcher.cases or collided):
                    return None  # the full stitch would make this id's case anew
        elif cause is not None and (cause in case_of_demand or cause in stored_causes):
            joined = cases.get(case_of_demand.get(cause) or stored_causes[cause])
            if joined is None:
                return None
            by_cause = True
        # A case opened by an earlier demand of these is later than every stored one; and
        # a cause among those demands is the stitcher's to follow.
        elif stitcher.open_case_for(demand.purpose) is None and (
            cause is None or cause not in stitcher.case_of_demand
        ):
            candidates = [
                c for c in cases.values() if c.status == OPEN and c.purpose == demand.purpose
            ]
            if candidates:
                last = max(case.last_activity_at for case in candidates)
                chasing = [case for case in candidates if case.last_activity_at == last]
                if len(chasing) > 1:
                    return None
                joined = chasing[0]
            elif f"auto-{demand.demand_id}" in cases:
                return None
        if (
            joined is None
            and ref is None
            and (cause is None or cause not in stitcher.case_of_demand)
        ):
            # The stitcher joins its latest open case of the purpose; a stored one as recent
            # (joined at the same instant by one of these demands) may be the full stitch's.
            chosen = stitcher.open_case_for(demand.purpose)
            if chosen is not None and any(
                case.status == OPEN
                and case.purpose == demand.purpose
                and case.last_activity_at >= (chosen.last_activity_at or chosen.first_seen)
                for case in cases.values()
            ):
                return None
        if joined is None:
            stitcher.add_demand(demand)
            continue
        if joined.status != OPEN or joined.contacts == 0:
            return None
        if by_cause:
            cause_purpose[demand.demand_id] = joined.purpose or demand.purpose
        joined.contacts += 1
        joined.failure_contacts += demand.demand_type == "failure"
        if demand.channel not in joined.channels:
            joined.channels = tuple(sorted({*joined.channels, demand.channel}))
        joined.last_activity_at = demand.occurred_at
        extended[joined.case_id] = joined
        case_of_demand[demand.demand_id] = joined.case_id
    case_of_demand |= stitcher.case_of_demand
    return TailStitched(
        extended=tuple(extended.values()),
        opened=tuple([case.freeze() for case in stitcher.cases.values()]),
        case_of_demand=case_of_demand,
        cause_purpose_of_demand=cause_purpose | stitcher.cause_purpose,
    )


# --- a case closed at the tail: one fulfilment or abandonment after everything stored --------

# The case events whose effect on an open case with demands is only its status and times.
_CLOSING = {FULFILLED: FULFILLED, ABANDONED: ABANDONED}


def close_at_tail(stored: Sequence[StoredCase], event: CaseEventFact) -> StoredCase | None:
    """The stored case ``event`` (a customer's only event of the batch) closes, as it is
    after it (its status and last activity; the caller sets the fulfilled time, the
    end-to-end time and one-stop as Case derives them), or None when that is not certain
    and the caller stitches the whole history: an event that is not a fulfilment or an
    abandonment, or not after everything stored, or whose reference names no stored case,
    two of them, or one that is not open or has no demand yet.

    Why it is the same: in the full stitch the event comes after every stored event, so
    the stitcher's cases are the stored ones when it reaches it; ``add_case_event`` finds
    the case of its reference (by_ref: the one case that took the reference, which is
    stored with it), touches it at the event's time, and sets its status (fulfilled: and
    its fulfilled time; abandoned: none). The purpose stays its first demand's; the
    demands, their cases and the other cases do not move."""
    status = _CLOSING.get(event.type)
    if status is None:
        return None
    latest = max((case.last_activity_at for case in stored), default=None)
    if latest is None or event.occurred_at <= latest:
        return None
    named = [case for case in stored if case.case_ref == event.case_ref]
    if len(named) != 1:
        return None
    case = named[0]
    if case.status != OPEN or case.contacts == 0:
        return None
    return _copied(case, status, event.occurred_at)
