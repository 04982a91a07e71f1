"""Special-cause signals on an XmR chart (Western Electric zone rules, as Wheeler uses them).

sigma = 2.66 x mR-bar / 3 (see xmr). "Beyond" is strict: a point on a line is not beyond
it. A point on the centre line belongs to neither side. Each hit is flagged at the point
that completes the rule, and only if that point is itself beyond the rule's line
(Minitab's convention); a rule that still holds at the next point flags that point too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # xmr imports this module to attach signals to a chart
    from services.metrics.domain.xmr import XmrLimits

BEYOND_LIMIT = "beyond_limit"
TWO_OF_THREE_BEYOND_TWO_SIGMA = "two_of_three_beyond_two_sigma"
FOUR_OF_FIVE_BEYOND_ONE_SIGMA = "four_of_five_beyond_one_sigma"
RUN_OF_EIGHT = "run_of_eight"
MOVING_RANGE_BEYOND_LIMIT = "moving_range_beyond_limit"


@dataclass(frozen=True, slots=True)
class SignalHit:
    rule: str
    index: int
    # The charted value: the point itself, or the moving range for moving_range_beyond_limit.
    value: float


def beyond_limit(values: Sequence[float], limits: XmrLimits) -> list[SignalHit]:
    """Rule 1: a point above the upper or below the lower natural process limit."""
    return [
        SignalHit(BEYOND_LIMIT, index, value)
        for index, value in enumerate(values)
        if value > limits.upper_natural_process_limit or value < limits.lower_natural_process_limit
    ]


def two_of_three_beyond_two_sigma(values: Sequence[float], limits: XmrLimits) -> list[SignalHit]:
    """Rule 2: 2 of 3 successive points beyond 2 sigma, on the same side of the centre line."""
    return _k_of_n_beyond(values, limits, TWO_OF_THREE_BEYOND_TWO_SIGMA, k=2, n=3, sigmas=2)


def four_of_five_beyond_one_sigma(values: Sequence[float], limits: XmrLimits) -> list[SignalHit]:
    """Rule 3: 4 of 5 successive points beyond 1 sigma, on the same side of the centre line."""
    return _k_of_n_beyond(values, limits, FOUR_OF_FIVE_BEYOND_ONE_SIGMA, k=4, n=5, sigmas=1)


def run_of_eight(values: Sequence[float], limits: XmrLimits) -> list[SignalHit]:
    """Rule 4: 8 successive points on the same side of the centre line."""
    return _k_of_n_beyond(values, limits, RUN_OF_EIGHT, k=8, n=8, sigmas=0)


def moving_range_beyond_limit(values: Sequence[float], limits: XmrLimits) -> list[SignalHit]:
    """mR chart: a moving range |x_i - x_(i-1)| above the upper range limit, flagged at i."""
    hits = []
    for index in range(1, len(values)):
        moving_range = abs(values[index] - values[index - 1])
        if moving_range > limits.upper_range_limit:
            hits.append(SignalHit(MOVING_RANGE_BEYOND_LIMIT, index, moving_range))
    return hits


Rule = Callable[[Sequence[float], "XmrLimits"], list[SignalHit]]

RULES: dict[str, Rule] = {
    BEYOND_LIMIT: beyond_limit,
    TWO_OF_THREE_BEYOND_TWO_SIGMA: two_of_three_beyond_two_sigma,
    FOUR_OF_FIVE_BEYOND_ONE_SIGMA: four_of_five_beyond_one_sigma,
    RUN_OF_EIGHT: run_of_eight,
    MOVING_RANGE_BEYOND_LIMIT: moving_range_beyond_limit,
}


def detect_signals(values: Sequence[float], limits: XmrLimits) -> list[SignalHit]:
    """Every rule's hits, ordered by point, then by the order of RULES."""
    hits = [hit for rule in RULES.values() for hit in rule(values, limits)]
    rule_order = {name: position for position, name in enumerate(RULES)}
    return sorted(hits, key=lambda hit: (hit.index, rule_order[hit.rule]))


def _k_of_n_beyond(
    values: Sequence[float], limits: XmrLimits, rule: str, *, k: int, n: int, sigmas: int
) -> list[SignalHit]:
    """Flag point i when it and at least k-1 others of the n points ending at i lie beyond
    centre +/- sigmas x sigma on the same side (sigmas=0: simply on that side)."""
    upper_line = limits.centre_line + sigmas * limits.sigma
    lower_line = limits.centre_line - sigmas * limits.sigma
    hits = []
    for index in range(n - 1, len(values)):
        window = values[index - n + 1 : index + 1]
        value = values[index]
        above = value > upper_line and sum(v > upper_line for v in window) >= k
        below = value < lower_line and sum(v < lower_line for v in window) >= k
        if above or below:
            hits.append(SignalHit(rule, index, value))
    return hits
