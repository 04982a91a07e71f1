"""XmR (individuals and moving range) process behaviour charts, after Donald J. Wheeler.

The limits describe what the system predictably delivers. They are never targets.

Scaling factors for moving ranges of two successive values (n = 2), as Wheeler publishes
them (Understanding Variation, Making Sense of Data) and as the issue asks:

- 2.66 x mR-bar either side of the centre line gives the natural process limits
  (3 / d2 = 3 / 1.128 = 2.6596, rounded the way practitioners compute it by hand);
- 3.268 x mR-bar is the upper range limit (D4; Wheeler also prints it as 3.27).

Using the published factors means a chart drawn by hand from our figures agrees with ours
to the last digit. The zone rules' sigma is 2.66 x mR-bar / 3, so the 3-sigma line is the
natural process limit itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from statistics import fmean

from services.metrics.domain.signals import SignalHit, detect_signals

NATURAL_PROCESS_LIMIT_FACTOR = 2.66
UPPER_RANGE_LIMIT_FACTOR = 3.268
MINIMUM_BASELINE_SIZE = 2


@dataclass(frozen=True, slots=True)
class XmrLimits:
    centre_line: float
    average_moving_range: float
    lower_natural_process_limit: float
    upper_natural_process_limit: float
    upper_range_limit: float
    baseline_size: int

    @property
    def sigma(self) -> float:
        """Dispersion estimated from the moving ranges (2.66 / 3 x mR-bar, i.e. mR-bar / d2
        with Wheeler's rounding), not the global standard deviation."""
        return NATURAL_PROCESS_LIMIT_FACTOR * self.average_moving_range / 3


@dataclass(frozen=True, slots=True)
class ChartPoint:
    value: float
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class XmrChart:
    points: tuple[ChartPoint, ...]
    # moving_ranges[i - 1] is |x_i - x_(i-1)|: the first point has no moving range.
    moving_ranges: tuple[float, ...]
    limits: XmrLimits
    signals: tuple[SignalHit, ...]


def moving_ranges(values: Sequence[float]) -> list[float]:
    return [abs(current - previous) for previous, current in pairwise(values)]


def compute_limits(baseline: Sequence[float], *, floor: float | None = None) -> XmrLimits:
    """Limits from a baseline; `floor` clips the lower limit (e.g. 0 for counts or durations)."""
    if len(baseline) < MINIMUM_BASELINE_SIZE:
        raise ValueError(
            f"an XmR baseline needs at least {MINIMUM_BASELINE_SIZE} values "
            f"to have a moving range, got {len(baseline)}"
        )
    centre_line = fmean(baseline)
    average_moving_range = fmean(moving_ranges(baseline))
    spread = NATURAL_PROCESS_LIMIT_FACTOR * average_moving_range
    lower = centre_line - spread
    if floor is not None:
        lower = max(lower, floor)
    return XmrLimits(
        centre_line=centre_line,
        average_moving_range=average_moving_range,
        lower_natural_process_limit=lower,
        upper_natural_process_limit=centre_line + spread,
        upper_range_limit=UPPER_RANGE_LIMIT_FACTOR * average_moving_range,
        baseline_size=len(baseline),
    )


def build_chart(
    values: Sequence[float],
    limits: XmrLimits,
    timestamps: Sequence[datetime] | None = None,
) -> XmrChart:
    """Plot `values` against limits computed earlier (usually from a baseline period)."""
    if timestamps is not None and len(timestamps) != len(values):
        raise ValueError(
            f"got {len(timestamps)} timestamps for {len(values)} values: they must pair up"
        )
    points = tuple(
        ChartPoint(value=value, at=timestamps[index] if timestamps is not None else None)
        for index, value in enumerate(values)
    )
    return XmrChart(
        points=points,
        moving_ranges=tuple(moving_ranges(values)),
        limits=limits,
        signals=tuple(detect_signals(values, limits)),
    )
