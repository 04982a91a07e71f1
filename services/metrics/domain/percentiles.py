"""Percentiles and duration summaries.

Method: linear interpolation between closest ranks, i.e. Hyndman & Fan (1996) type 7, the
default of numpy.percentile and of Excel PERCENTILE.INC. Sort the n values ascending, take
the rank h = (n - 1) x q / 100 (counting from 0), and interpolate between the values either
side of h. So p50 of [1, 2, 3, 4, 10] is 3 and p85 is 4 + 0.4 x (10 - 4) = 6.4. Written out
here rather than delegated, so the figure anyone can reproduce by hand is the one we report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean


@dataclass(frozen=True, slots=True)
class DurationSummary:
    """End-to-end times in seconds; every figure but count is None when there is no data."""

    count: int
    p50: float | None
    p85: float | None
    p95: float | None
    mean: float | None
    max: float | None


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100) by linear interpolation (see module docstring)."""
    if not values:
        raise ValueError("the percentile of no values is undefined")
    if not 0 <= q <= 100:
        raise ValueError(f"q must lie between 0 and 100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    below = math.floor(rank)
    above = min(below + 1, len(ordered) - 1)
    fraction = rank - below
    return ordered[below] + fraction * (ordered[above] - ordered[below])


def summarise_durations(seconds: Sequence[float]) -> DurationSummary:
    if not seconds:
        return DurationSummary(count=0, p50=None, p85=None, p95=None, mean=None, max=None)
    return DurationSummary(
        count=len(seconds),
        p50=percentile(seconds, 50),
        p85=percentile(seconds, 85),
        p95=percentile(seconds, 95),
        mean=fmean(seconds),
        max=max(seconds),
    )
