"""Vega-Lite specifications of the pages' charts, built in Python from the API's own rows.

Each spec is plain JSON: embedded in the page (``<script type="application/json">``) for
vega-embed to draw as SVG, and what a test asserts on. Every mark carries a ``description``,
which Vega turns into the ARIA label of the drawn element, so a screen reader can walk a
chart point by point; each spec's top-level ``description`` labels the whole figure.

Capability charts follow NHS England's "Making Data Count": common-cause points grey,
special-cause points orange (concerning) or blue (improving), the centre line solid, the
natural process limits dashed, drawn from the recorded baseline, and a rule where a person
recorded a change to the system.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.metrics.figures import CapacityRow, FlowCell, PurposeOverTimeRow
from services.metrics.pages.web import duration, percent
from services.metrics.schemas import (
    CapabilityChart,
    ChangeOut,
    ChannelRow,
    CountByKey,
    HistogramBucket,
    OverTimeRow,
    PurposeSummary,
)

SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"  # an identifier; never fetched
TYPE_COLOURS = {"value": "#007f3b", "failure": "#d5281b", "unknown": "#768692"}
COMMON, CONCERNING, IMPROVING = (
    "common cause",
    "special cause, concerning",
    "special cause, improving",
)
MDC_COLOURS = {COMMON: "#7f7f7f", CONCERNING: "#ed8b00", IMPROVING: "#005eb8"}
CHANGE_COLOUR = "#330072"

Spec = dict[str, Any]


def _base(description: str, *, height: int = 220) -> Spec:
    return {
        "$schema": SCHEMA,
        "description": description,
        "width": "container",
        "height": height,
        "config": {"view": {"stroke": None}, "axis": {"labelFontSize": 12, "titleFontSize": 12}},
    }


def _type_colour() -> dict[str, Any]:
    return {
        "field": "type",
        "type": "nominal",
        "title": "Demand type",
        "scale": {"domain": list(TYPE_COLOURS), "range": list(TYPE_COLOURS.values())},
    }


def demand_over_time(rows: Sequence[OverTimeRow] | Sequence[PurposeOverTimeRow]) -> Spec:
    values = [
        {
            "period": row.period_start.isoformat(),
            "type": kind,
            "demands": getattr(row, kind),
            "label": f"Period from {row.period_start}: {getattr(row, kind)} {kind} demands",
        }
        for row in rows
        for kind in TYPE_COLOURS
    ]
    return {
        **_base("Value, failure and unknown demand per period, stacked"),
        "data": {"values": values},
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "x": {
                "field": "period",
                "type": "ordinal",
                "title": "Period starting",
                "axis": {"labelAngle": -30},
            },
            "y": {"field": "demands", "type": "quantitative", "title": "Demands"},
            "color": _type_colour(),
            "description": {"field": "label"},
        },
    }


def _stacked_by_key(
    rows: Sequence[PurposeSummary] | Sequence[ChannelRow], key: str, title: str
) -> Spec:
    values = []
    order = []
    for row in rows:
        name = str(getattr(row, key))
        order.append(name)
        for kind in TYPE_COLOURS:
            count = getattr(row, kind)
            values.append(
                {key: name, "type": kind, "demands": count, "label": f"{name}: {count} {kind}"}
            )
    return {
        **_base(title, height=max(120, 28 * len(order))),
        "data": {"values": values},
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "y": {"field": key, "type": "nominal", "sort": order, "title": None},
            "x": {"field": "demands", "type": "quantitative", "title": "Demands"},
            "color": _type_colour(),
            "description": {"field": "label"},
        },
    }


def by_purpose(rows: Sequence[PurposeSummary]) -> Spec:
    return _stacked_by_key(rows, "purpose", "Demand by purpose, largest first, by type")


def by_channel(rows: Sequence[ChannelRow]) -> Spec:
    return _stacked_by_key(rows, "channel", "Demand by channel, by type")


def capacity(rows: Sequence[CapacityRow]) -> Spec:
    values = [
        {
            "period": row.period_start.isoformat(),
            "purpose": row.purpose,
            "hours": row.hours,
            "label": f"{row.purpose}, period of {row.period_start}: {row.hours:.1f} staff hours "
            f"on {row.failure_demands} failure demands",
        }
        for row in rows
    ]
    return {
        **_base("Staff hours spent on failure demand per period, by purpose"),
        "data": {"values": values},
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "x": {
                "field": "period",
                "type": "ordinal",
                "title": "Period starting",
                "axis": {"labelAngle": -30},
            },
            "y": {"field": "hours", "type": "quantitative", "title": "Staff hours"},
            "color": {"field": "purpose", "type": "nominal", "title": "Purpose"},
            "description": {"field": "label"},
        },
    }


def pareto(counts: Sequence[CountByKey], *, what: str) -> Spec:
    total = sum(c.count for c in counts) or 1
    running = 0
    values = []
    for c in counts:
        running += c.count
        values.append(
            {
                "key": c.key,
                "count": c.count,
                "cumulative": running / total,
                "label": f"{c.key}: {c.count} failure demands, {percent(running / total)} "
                "cumulative",
            }
        )
    order = [c.key for c in counts]
    x = {
        "field": "key",
        "type": "nominal",
        "sort": order,
        "title": what,
        "axis": {"labelAngle": -30},
    }
    return {
        **_base(f"Failure demand by {what}, most first, with the cumulative share (Pareto)"),
        "data": {"values": values},
        "layer": [
            {
                "mark": {"type": "bar", "color": TYPE_COLOURS["failure"], "tooltip": True},
                "encoding": {
                    "x": x,
                    "y": {"field": "count", "type": "quantitative", "title": "Failure demands"},
                    "description": {"field": "label"},
                },
            },
            {
                "mark": {"type": "line", "point": True, "color": "#212b32"},
                "encoding": {
                    "x": x,
                    "y": {
                        "field": "cumulative",
                        "type": "quantitative",
                        "title": "Cumulative",
                        "axis": {"format": "%"},
                        "scale": {"domain": [0, 1]},
                    },
                    "description": {"field": "label"},
                },
            },
        ],
        "resolve": {"scale": {"y": "independent"}},
    }


def end_to_end_distribution(buckets: Sequence[HistogramBucket], summary: PurposeSummary) -> Spec:
    values = []
    lower = 0.0
    for bucket in buckets:
        name = (
            f"{duration(lower)} - {duration(bucket.le_seconds)}"
            if bucket.le_seconds is not None
            else f"over {duration(lower)}"
        )
        values.append(
            {"bucket": name, "cases": bucket.count, "label": f"{name}: {bucket.count} cases"}
        )
        lower = bucket.le_seconds or lower
    p = summary.end_to_end
    return {
        **_base(
            "End-to-end time of fulfilled cases, first demand to purpose met: "
            f"median {duration(p.p50_seconds)}, 85th percentile {duration(p.p85_seconds)}, "
            f"95th percentile {duration(p.p95_seconds)}"
        ),
        "data": {"values": values},
        "mark": {"type": "bar", "color": "#005eb8", "tooltip": True},
        "encoding": {
            "x": {
                "field": "bucket",
                "type": "ordinal",
                "sort": None,
                "title": "End-to-end time",
                "axis": {"labelAngle": -30},
            },
            "y": {"field": "cases", "type": "quantitative", "title": "Cases"},
            "description": {"field": "label"},
        },
    }


def _scaled(measure: str, value: float) -> float:
    if measure == "end_to_end_seconds":
        return value / 86400
    if measure == "failure_share_per_day":
        return value * 100
    return value


def _said(measure: str, value: float) -> str:
    if measure == "end_to_end_seconds":
        return duration(value)
    if measure == "failure_share_per_day":
        return percent(value)
    return f"{value:.1f}"


MEASURE_TITLES = {
    "end_to_end_seconds": ("End-to-end time of each fulfilled case", "Days"),
    "failure_share_per_day": ("Failure demand's share of each day's demand", "Failure share (%)"),
    "value_per_day": ("Value demands per day", "Demands"),
    "failure_per_day": ("Failure demands per day", "Demands"),
}


def point_status(chart: CapabilityChart) -> list[str]:
    """Each point's variation, as Making Data Count colours it. Every measure charted here is
    one where higher is worse (time, failure), so a signal above the centre is concerning."""
    flagged = {s.at for s in chart.signals}
    return [
        (CONCERNING if p.value > chart.centre_line else IMPROVING) if p.at in flagged else COMMON
        for p in chart.points
    ]


def xmr(chart: CapabilityChart, changes: Sequence[ChangeOut]) -> Spec:
    """An X chart (individuals) with its limits, in Making Data Count style."""
    title, unit = MEASURE_TITLES.get(chart.measure, (chart.measure, "Value"))
    m = chart.measure
    points = [
        {
            "at": p.at.isoformat(),
            "value": _scaled(m, p.value),
            "status": status,
            "label": f"{p.at:%Y-%m-%d}: {_said(m, p.value)}, {status}",
        }
        for p, status in zip(chart.points, point_status(chart), strict=True)
    ]
    limits = [
        ("Centre line (mean)", chart.centre_line, "centre"),
        ("Upper natural process limit", chart.upper_natural_process_limit, "limit"),
        ("Lower natural process limit", chart.lower_natural_process_limit, "limit"),
    ]
    limit_values = [
        {"limit": name, "value": _scaled(m, v), "kind": kind, "label": f"{name}: {_said(m, v)}"}
        for name, v, kind in limits
    ]
    change_values = [
        {
            "at": c.changed_at.isoformat(),
            "label": f"Change to the system recorded for {c.changed_at:%Y-%m-%d}: {c.note}",
        }
        for c in changes
    ]
    x = {"field": "at", "type": "temporal", "title": None}
    layers: list[Spec] = [
        {
            "data": {"values": limit_values},
            "mark": {"type": "rule", "strokeWidth": 1.5},
            "encoding": {
                "y": {"field": "value", "type": "quantitative"},
                "strokeDash": {
                    "field": "kind",
                    "type": "nominal",
                    "legend": None,
                    "scale": {"domain": ["centre", "limit"], "range": [[1, 0], [6, 4]]},
                },
                "color": {"value": "#425563"},
                "description": {"field": "label"},
            },
        },
        {
            "data": {"values": points},
            "mark": {"type": "line", "color": "#aeb7bd", "strokeWidth": 1},
            "encoding": {"x": x, "y": {"field": "value", "type": "quantitative", "title": unit}},
        },
        {
            "data": {"values": points},
            "mark": {"type": "point", "filled": True, "size": 55, "opacity": 1, "tooltip": True},
            "encoding": {
                "x": x,
                "y": {"field": "value", "type": "quantitative", "title": unit},
                "color": {
                    "field": "status",
                    "type": "nominal",
                    "title": "Variation",
                    "scale": {"domain": list(MDC_COLOURS), "range": list(MDC_COLOURS.values())},
                },
                "description": {"field": "label"},
            },
        },
    ]
    if change_values:
        layers.append(
            {
                "data": {"values": change_values},
                "mark": {
                    "type": "rule",
                    "color": CHANGE_COLOUR,
                    "strokeWidth": 2,
                    "strokeDash": [2, 2],
                },
                "encoding": {"x": x, "description": {"field": "label"}},
            }
        )
    return {
        **_base(
            f"Capability chart (XmR) of {title.lower()}: centre {_said(m, chart.centre_line)}, "
            f"natural process limits {_said(m, chart.lower_natural_process_limit)} to "
            f"{_said(m, chart.upper_natural_process_limit)}, from a baseline of "
            f"{chart.baseline_size} points starting {chart.baseline_from:%Y-%m-%d}",
            height=240,
        ),
        "usermeta": {
            "measure": m,
            "centre_line": chart.centre_line,
            "upper_natural_process_limit": chart.upper_natural_process_limit,
            "lower_natural_process_limit": chart.lower_natural_process_limit,
            "baseline_from": chart.baseline_from.isoformat(),
            "baseline_size": chart.baseline_size,
        },
        "layer": layers,
    }


def failure_flow(cells: Sequence[FlowCell]) -> Spec:
    values = [
        {
            "cause": c.cause,
            "purpose": c.purpose,
            "failure": c.failure,
            "label": f"{c.failure} failure demands about {c.purpose} caused by {c.cause}",
        }
        for c in cells
    ]
    causes = sorted({c.cause for c in cells})
    purposes = sorted({c.purpose for c in cells})
    encoding = {
        "x": {
            "field": "purpose",
            "type": "nominal",
            "title": "Failure demand about",
            "axis": {"labelAngle": -30},
        },
        "y": {"field": "cause", "type": "nominal", "title": "Caused by (purpose of the case)"},
    }
    return {
        **_base(
            "Failure flow: failure demand by the purpose that caused it and the purpose it "
            "arrives as",
            height=max(120, 34 * len(causes)),
        ),
        "data": {"values": values},
        "width": max(240, 90 * len(purposes)),
        "layer": [
            {
                "mark": {"type": "rect", "tooltip": True},
                "encoding": {
                    **encoding,
                    "color": {
                        "field": "failure",
                        "type": "quantitative",
                        "title": "Failure",
                        "scale": {"scheme": "oranges"},
                    },
                    "description": {"field": "label"},
                },
            },
            {
                "mark": {"type": "text", "color": "#212b32", "aria": False},
                "encoding": {**encoding, "text": {"field": "failure", "type": "quantitative"}},
            },
        ],
    }
