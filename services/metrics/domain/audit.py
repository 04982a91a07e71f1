"""The audit sample's design, pure: which demands people check blind, with what probability,
and the strata the failure-share estimate is computed over.

- **Draw.** Each demand gets ``u = HMAC-SHA256(key, demand id)`` read as a number in [0, 1):
  uniform, fixed for the demand, and independent of everything the classifier said about it
  (type, purpose, confidence). Redelivery and rebuild compute the same ``u``.
- **Strata.** (the purpose the machine first gave the demand, the ISO week it occurred in,
  UTC). The sample is drawn, and the estimate computed, within each.
- **Inclusion.** A demand is in its stratum's audit iff ``u < p(N)``, where ``N`` is the
  stratum's number of demands and ``p(N) = min(1, max(floor / N, min(rate, ceiling / N)))``:
  the expected sample is ``rate · N`` kept between the floor and the ceiling (all of them
  when ``N`` is below the floor). Every demand of a stratum has the same, known ``p``, so
  the audit is a simple random sample of its stratum (given its size), and of any part of it
  (a channel, a team, a day): the estimate (shared/estimates.py) stays unbiased (to O(1/n)).
- **Why not a count cap.** Taking "the first 300" would sample by time of week; ranking by
  ``u`` to hit exact counts would move demands in and out of the sample all week. ``p(N)``
  never grows as ``N`` grows, so membership only ever shrinks: a demand drawn out is never
  drawn in later, and in the middle regime (``rate`` between floor and ceiling) nothing moves
  at all. The price: floor and ceiling hold in expectation, not to the unit.

The sample is a function of the set of demands stored, so it does not depend on arrival
order: the live service and a rebuild draw the same one.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import TypeVar

from shared.estimates import AuditPair, ShareEstimate, Stratum, stratified_estimate

DEFAULT_KEY = "demandscope-audit"


@dataclass(frozen=True)
class AuditPlan:
    """The sampling design (``audit_*`` settings): a rate, floor and ceiling per purpose and
    ISO week, and the key of the draw."""

    rate: float = 0.02
    min_per_week: int = 30
    max_per_week: int = 300
    key: str = DEFAULT_KEY

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 1:
            raise ValueError("the audit rate must be in (0, 1]")
        if not 0 <= self.min_per_week <= self.max_per_week:
            raise ValueError("the audit floor must be between 0 and the ceiling")

    def draw(self, demand_id: str) -> float:
        return draw(self.key, demand_id)

    def inclusion_probability(self, population: int) -> float:
        return inclusion_probability(population, self)


def draw(key: str, demand_id: str) -> float:
    """The demand's uniform number in [0, 1): 53 bits of HMAC-SHA256(key, id)."""
    mac = _keyed(key).copy()
    mac.update(demand_id.encode())
    return (int.from_bytes(mac.digest()[:8], "big") >> 11) / _TWO_TO_53


_TWO_TO_53 = float(1 << 53)


@lru_cache(maxsize=8)
def _keyed(key: str) -> hmac.HMAC:
    """The key's HMAC state, made once per key and copied per demand (``hmac``'s own way to
    reuse a key, a third cheaper per demand than ``hmac.new`` each time)."""
    return hmac.new(key.encode(), digestmod=hashlib.sha256)


def inclusion_probability(population: int, plan: AuditPlan) -> float:
    """``p(N)``: every demand of a stratum of ``population`` is drawn with this probability."""
    if population <= 0:
        return 1.0
    p = max(plan.min_per_week / population, min(plan.rate, plan.max_per_week / population))
    return min(1.0, p)


def week_start(moment: datetime) -> date:
    """The Monday of the ISO week ``moment`` (UTC) falls in."""
    day = moment.date()
    return day - timedelta(days=day.weekday())


# --- the estimate over the strata --------------------------------------------------------

K = TypeVar("K", bound=Hashable)
StratumKey = tuple[str, date]  # (first machine purpose, ISO week start)


@dataclass(frozen=True, slots=True)
class MachineCount:
    """How many demands of a group and stratum the machine first labelled with a type."""

    group: Hashable
    stratum: StratumKey
    demand_type: str
    count: int


@dataclass(frozen=True, slots=True)
class AuditedDemand:
    """A completed audit pair: the machine's first label and the auditor's, blind."""

    group: Hashable
    stratum: StratumKey
    machine: str
    person: str
    not_a_demand: bool = False  # the person's answer: then person is 'unknown'


def _failure(demand_type: str) -> int:
    return 1 if demand_type == "failure" else 0


def estimates_by_group(
    counts: Iterable[MachineCount], audited: Iterable[AuditedDemand]
) -> dict[Hashable, ShareEstimate]:
    """The failure share of each group (a purpose, a channel, a period, everything),
    estimated over the strata its demands fall in.

    The share is of the demands the machine called value or failure (as the machine's own
    ``failure_share``): its 'unknown' demands are outside it, in the population and in the
    audit. An auditor's 'unknown' counts as not failure, so no audited demand is dropped.
    An auditor's "not a demand" makes the share one among demands (the ratio of
    shared/estimates.py), with the share of contacts that are not demands beside it.
    """
    population: dict[Hashable, dict[StratumKey, list[int]]] = {}
    for row in counts:
        if row.demand_type not in ("value", "failure"):
            continue
        cell = population.setdefault(row.group, {}).setdefault(row.stratum, [0, 0])
        cell[0] += row.count
        cell[1] += row.count * _failure(row.demand_type)
    pairs: dict[Hashable, dict[StratumKey, list[AuditPair]]] = {}
    for pair in audited:
        if pair.machine not in ("value", "failure"):
            continue
        pairs.setdefault(pair.group, {}).setdefault(pair.stratum, []).append(
            AuditPair(
                machine=_failure(pair.machine),
                person=0 if pair.not_a_demand else _failure(pair.person),
                demand=not pair.not_a_demand,
            )
        )
    return {
        group: stratified_estimate(
            Stratum(size, failures, pairs.get(group, {}).get(key, ()))
            for key, (size, failures) in sorted(cells.items())
        )
        for group, cells in population.items()
    }


def not_validated() -> ShareEstimate:
    """What a group without demands (as the machine first labelled them) shows."""
    return stratified_estimate([])


def estimate_of(estimates: Mapping[K, ShareEstimate], group: K) -> ShareEstimate:
    return estimates.get(group) or not_validated()
