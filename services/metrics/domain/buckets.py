"""End-to-end time buckets, minutes to weeks: one set for Prometheus and the API's histogram."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

_MINUTE, _HOUR, _DAY = 60.0, 3600.0, 86400.0

# A purpose met on the phone takes minutes; a house move or a repair takes days or weeks.
END_TO_END_BUCKETS: tuple[float, ...] = (
    5 * _MINUTE,
    15 * _MINUTE,
    _HOUR,
    4 * _HOUR,
    8 * _HOUR,
    _DAY,
    2 * _DAY,
    3 * _DAY,
    5 * _DAY,
    7 * _DAY,
    14 * _DAY,
    28 * _DAY,
    56 * _DAY,
    91 * _DAY,
)


def histogram(seconds: Iterable[float]) -> list[tuple[float | None, int]]:
    """(upper bound, count) per bucket, not cumulative; the last bound None is overflow.
    A value on a bound falls in that bound's bucket (Prometheus' `le`)."""
    counts = [0] * (len(END_TO_END_BUCKETS) + 1)
    for value in seconds:
        counts[bisect_left(END_TO_END_BUCKETS, value)] += 1
    bounds: list[float | None] = [*END_TO_END_BUCKETS, None]
    return list(zip(bounds, counts, strict=True))
