"""Capability charts per purpose: XmR limits from a baseline that only a person moves.

The baseline starts at the latest change a person recorded for the purpose (or at the
first data when there is none) and holds the first ``baseline_points`` values from there.
Limits are therefore fixed once the baseline is full and move again only when someone
records a change (POST /v1/purposes/{purpose}/changes): never automatically.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

from services.metrics.domain.xmr import build_chart, compute_limits
from services.metrics.schemas import CapabilityChart, ChartPointOut, SignalOut

END_TO_END = "end_to_end_seconds"
VALUE_PER_DAY = "value_per_day"
FAILURE_PER_DAY = "failure_per_day"
FAILURE_SHARE_PER_DAY = "failure_share_per_day"
# Points before the first one shown that a chart's signals and moving ranges read: the
# longest rule's window (8 in a run, domain/signals.py) less the point itself, and one more.
SIGNAL_LOOKBACK = 8


def xmr_chart(
    measure: str,
    series: Sequence[tuple[datetime, float]],
    *,
    baseline_points: int,
    shown_points: int,
) -> CapabilityChart | None:
    """The chart of a series that starts at the baseline; None below two points."""
    if len(series) < 2:
        return None
    baseline = series[:baseline_points]
    limits = compute_limits([value for _at, value in baseline], floor=0.0)
    values = [value for _at, value in series]
    chart = build_chart(values, limits, [at for at, _value in series])
    first_shown = max(0, len(series) - shown_points)
    points = [
        ChartPointOut(
            at=point.at or series[index][0],
            value=point.value,
            moving_range=chart.moving_ranges[index - 1] if index else None,
        )
        for index, point in enumerate(chart.points)
        if index >= first_shown
    ]
    signals = [
        SignalOut(rule=hit.rule, at=series[hit.index][0], value=hit.value)
        for hit in chart.signals
        if hit.index >= first_shown
    ]
    return CapabilityChart(
        measure=measure,
        centre_line=limits.centre_line,
        lower_natural_process_limit=limits.lower_natural_process_limit,
        upper_natural_process_limit=limits.upper_natural_process_limit,
        upper_range_limit=limits.upper_range_limit,
        baseline_from=baseline[0][0],
        baseline_to=baseline[-1][0],
        baseline_size=len(baseline),
        provisional=len(baseline) < baseline_points,
        points=points,
        signals=signals,
    )


def _days_of(moments: Sequence[tuple[datetime, str]]) -> list[tuple[date, str, int]]:
    counts = Counter((at.astimezone(UTC).date(), kind) for at, kind in moments)
    return [(day, kind, n) for (day, kind), n in sorted(counts.items())]


def daily_volume_series(
    moments: Sequence[tuple[datetime, str]], demand_type: str, *, since: datetime | None
) -> list[tuple[datetime, float]]:
    """Demands of one type per UTC day, quiet days included, from the baseline start (or
    the first demand) to the last demand's day."""
    return daily_volume_series_of_days(_days_of(moments), demand_type, since=since)


def daily_volume_series_of_days(
    days: Sequence[tuple[date, str, int]], demand_type: str, *, since: datetime | None
) -> list[tuple[datetime, float]]:
    """daily_volume_series from (UTC day, demand type, demands), oldest day first."""
    if not days:
        return []
    first_day = days[0][0]
    if since is not None:
        first_day = max(first_day, since.astimezone(UTC).date())
    last_day = days[-1][0]
    if last_day < first_day:
        return []
    per_day = Counter({day: n for day, kind, n in days if kind == demand_type})
    span = (first_day + timedelta(days=offset) for offset in range((last_day - first_day).days + 1))
    return [(datetime.combine(day, time.min, tzinfo=UTC), float(per_day[day])) for day in span]


def daily_failure_share_series(
    moments: Sequence[tuple[datetime, str]], *, since: datetime | None
) -> list[tuple[datetime, float]]:
    """Failure / (value + failure) demand per UTC day, from the baseline start (or the first
    demand), one point per day that had value or failure demand.

    A day without such demand has no share (0/0), so it is left out rather than counted as 0:
    the chart's points are the days the share could be measured. Unknown demand is in neither
    part, as in every other failure share.
    """
    return daily_failure_share_series_of_days(_days_of(moments), since=since)


def daily_failure_share_series_of_days(
    days: Sequence[tuple[date, str, int]], *, since: datetime | None
) -> list[tuple[datetime, float]]:
    """daily_failure_share_series from (UTC day, demand type, demands)."""
    first_day = since.astimezone(UTC).date() if since is not None else None
    per_day: dict[date, Counter[str]] = {}
    for day, kind, n in days:
        if kind in ("value", "failure") and (first_day is None or day >= first_day):
            per_day.setdefault(day, Counter())[kind] += n
    return [
        (
            datetime.combine(day, time.min, tzinfo=UTC),
            counts["failure"] / (counts["value"] + counts["failure"]),
        )
        for day, counts in sorted(per_day.items())
        if counts["value"] + counts["failure"]
    ]


def baseline_start(changes: Sequence[datetime], now: datetime) -> datetime | None:
    """The latest recorded change that has happened: the system before it is another one."""
    past = [moment for moment in changes if moment <= now]
    return max(past) if past else None
