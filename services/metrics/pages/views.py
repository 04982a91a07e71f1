"""View models of the pages: each built from the very service calls the JSON API makes (so a
page's figure and the API's answer for the same filter cannot differ), plus the links to that
API call and to the CSV of each chart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics import figures, service
from services.metrics.csv_export import columns_of
from services.metrics.db import measures
from services.metrics.db.measures import Filters
from services.metrics.domain.windows import Granularity
from services.metrics.figures import CapacityRow, FlowCell, PurposeOverTimeRow
from services.metrics.pages import charts
from services.metrics.pages.web import PREFIX, percent, with_query
from services.metrics.schemas import (
    CapabilityChart,
    ChangeOut,
    ChannelRow,
    CountByKey,
    HistogramBucket,
    OverTimeRow,
    PurposeDetail,
    PurposeSummary,
)
from services.metrics.service import ChartSettings

# The measures whose capability charts the purpose page shows (issue 12).
CAPABILITY_MEASURES = ("end_to_end_seconds", "failure_share_per_day")


@dataclass(frozen=True)
class FilterForm:
    """The filters a page was asked for, as the API takes them (query parameters)."""

    period: str | None = None
    channel: str | None = None
    team: str | None = None
    granularity: Granularity = Granularity.WEEK

    def query(self, **extra: Any) -> dict[str, Any]:
        return {"period": self.period, "channel": self.channel, "team": self.team, **extra}


@dataclass(frozen=True)
class ChartView:
    """One chart: its spec, the same figures as a table, the API call and the CSV behind it."""

    id: str
    title: str
    spec: dict[str, Any]
    api_url: str
    csv_url: str
    columns: list[str]
    rows: list[list[Any]]
    source: Sequence[BaseModel]  # the API's rows, for the CSV (the API's own CSV format)
    model: type[BaseModel]
    note: str = ""


def _table(rows: Sequence[BaseModel], model: type[BaseModel]) -> tuple[list[str], list[list[Any]]]:
    columns = [c for c in columns_of(model) if not c.startswith("failure_share_")]
    flat_rows = []
    for row in rows:
        data = row.model_dump(mode="json")
        flat = []
        for column in columns:
            value: Any = data
            for part in column.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            flat.append(value)
        flat_rows.append(flat)
    return columns, flat_rows


def chart_view(
    id: str,
    title: str,
    spec: dict[str, Any],
    *,
    api_path: str,
    api_query: Mapping[str, Any],
    export: str,
    rows: Sequence[BaseModel],
    model: type[BaseModel],
    note: str = "",
) -> ChartView:
    columns, table = _table(rows, model)
    return ChartView(
        id=id,
        title=title,
        spec=spec,
        api_url=with_query(api_path, api_query),
        csv_url=with_query(f"{PREFIX}/export/{export}.csv", api_query),
        columns=columns,
        rows=table,
        source=rows,
        model=model,
        note=note,
    )


# --- overview -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    volume: int
    value: int
    failure: int
    unknown: int
    machine_share: float | None
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    audited: int = 0
    status: str = "not yet validated"
    # Audited contacts a person called "not a demand", and the estimated share of them.
    not_a_demand_audited: int = 0
    not_a_demand_share: float | None = None
    not_a_demand_ci_low: float | None = None
    not_a_demand_ci_high: float | None = None


@dataclass(frozen=True)
class CapacityByPurpose:
    purpose: str
    failure_demands: int
    measured_demands: int
    hours: float
    measured_hours: float
    estimated_hours: float


@dataclass
class Overview:
    filters: FilterForm
    totals: Totals
    purposes: list[PurposeSummary]
    charts: list[ChartView]
    capacity: list[CapacityByPurpose]
    averages: dict[str, float]
    capacity_source: str
    extra: dict[str, Any] = field(default_factory=dict)


async def totals(session: AsyncSession, filters: Filters) -> Totals:
    """The whole filter as one row, with the failure share's estimate from the blind audit:
    ``GET /v1/demand/overall``."""
    row = await service.overall(session, filters)
    return Totals(
        volume=row.volume,
        value=row.value,
        failure=row.failure,
        unknown=row.unknown,
        machine_share=row.failure_share,
        estimate=row.failure_share_estimate,
        ci_low=row.failure_share_ci_low,
        ci_high=row.failure_share_ci_high,
        audited=row.failure_share_audited,
        status=row.failure_share_status,
        not_a_demand_audited=row.not_a_demand_audited,
        not_a_demand_share=row.not_a_demand_share,
        not_a_demand_ci_low=row.not_a_demand_ci_low,
        not_a_demand_ci_high=row.not_a_demand_ci_high,
    )


def capacity_by_purpose(rows: Sequence[CapacityRow]) -> list[CapacityByPurpose]:
    summed: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0, 0.0])
    for row in rows:
        s = summed[row.purpose]
        s[0] += row.failure_demands
        s[1] += row.measured_demands
        s[2] += row.hours
        s[3] += row.measured_hours
        s[4] += row.estimated_hours
    found = [
        CapacityByPurpose(p, int(s[0]), int(s[1]), round(s[2], 2), round(s[3], 2), round(s[4], 2))
        for p, s in summed.items()
    ]
    return sorted(found, key=lambda c: (-c.hours, c.purpose))


def capacity_source(rows: Sequence[CapacityByPurpose]) -> str:
    measured = sum(r.measured_demands for r in rows)
    total = sum(r.failure_demands for r in rows)
    if total == 0:
        return "none"
    if measured == total:
        return "measured"
    return "average" if measured == 0 else "mixed"


async def overview(
    session: AsyncSession,
    filters: Filters,
    form: FilterForm,
    *,
    average_seconds: Mapping[str, float],
) -> Overview:
    purposes = await service.purpose_summaries(session, filters)
    channels = await service.by_channel(session, filters)
    trend = await service.over_time(session, filters, form.granularity)
    capacity_rows = await figures.capacity(session, filters, form.granularity, average_seconds)
    per_purpose = capacity_by_purpose(capacity_rows)
    q = form.query()
    qg = form.query(granularity=form.granularity.value)
    return Overview(
        filters=form,
        totals=await totals(session, filters),
        purposes=purposes,
        charts=[
            chart_view(
                "trend",
                "Value and failure demand over time",
                charts.demand_over_time(trend),
                api_path="/v1/demand/over-time",
                api_query=qg,
                export="over-time",
                rows=trend,
                model=OverTimeRow,
            ),
            chart_view(
                "by-purpose",
                "Demand by purpose",
                charts.by_purpose(purposes),
                api_path="/v1/purposes",
                api_query=q,
                export="purposes",
                rows=purposes,
                model=PurposeSummary,
            ),
            chart_view(
                "by-channel",
                "Demand by channel",
                charts.by_channel(channels),
                api_path="/v1/demand/by-channel",
                api_query=q,
                export="by-channel",
                rows=channels,
                model=ChannelRow,
            ),
            chart_view(
                "capacity",
                "Staff hours consumed by failure demand",
                charts.capacity(capacity_rows),
                api_path="/v1/demand/capacity",
                api_query=qg,
                export="capacity",
                rows=capacity_rows,
                model=CapacityRow,
            ),
        ],
        capacity=per_purpose,
        averages=dict(average_seconds),
        capacity_source=capacity_source(per_purpose),
    )


# --- purpose --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variation:
    """The variation icon of a capability chart (Making Data Count)."""

    status: str  # charts.COMMON, CONCERNING or IMPROVING
    letter: str  # "" (common cause), "H" (high) or "L" (low)
    colour: str
    text: str


def variation(chart: CapabilityChart) -> Variation:
    """Special cause when one of the latest seven points signals, else common cause."""
    statuses = charts.point_status(chart)[-7:]
    special = [s for s in statuses if s != charts.COMMON]
    if not special:
        return Variation(
            charts.COMMON,
            "",
            charts.MDC_COLOURS[charts.COMMON],
            "Common cause variation: no signal among the latest points",
        )
    latest = special[-1]
    high = latest == charts.CONCERNING
    return Variation(
        latest,
        "H" if high else "L",
        charts.MDC_COLOURS[latest],
        f"Special cause variation, {'concerning: higher' if high else 'improving: lower'} "
        "than the limits predict",
    )


@dataclass(frozen=True)
class CapabilityView:
    chart: ChartView
    capability: CapabilityChart
    variation: Variation


@dataclass
class PurposePage:
    purpose: str
    filters: FilterForm
    detail: PurposeDetail
    charts: list[ChartView]
    capability: list[CapabilityView]
    api_url: str


def _api_purpose(purpose: str) -> str:
    return f"/v1/purposes/{quote(purpose, safe='')}"


async def purpose_page(
    session: AsyncSession,
    purpose: str,
    filters: Filters,
    form: FilterForm,
    *,
    chart_settings: ChartSettings,
) -> PurposePage | None:
    detail = await service.purpose_detail(
        session, purpose, filters, settings=chart_settings, now=datetime.now(UTC)
    )
    if detail is None:
        return None
    trend = await figures.purpose_over_time(session, filters, form.granularity, purpose=purpose)
    q = form.query()
    api = _api_purpose(purpose)
    export = f"purpose/{quote(purpose, safe='')}"
    views = [
        chart_view(
            "trend",
            "Value and failure demand over time",
            charts.demand_over_time(trend),
            api_path="/v1/demand/purpose-over-time",
            api_query=form.query(purpose=purpose, granularity=form.granularity.value),
            export=f"{export}/over-time",
            rows=trend,
            model=PurposeOverTimeRow,
        ),
        chart_view(
            "by-kind",
            "Failure demand by kind (Pareto)",
            charts.pareto(detail.failure_by_kind, what="kind"),
            api_path=api,
            api_query=q,
            export=f"{export}/failure-by-kind",
            rows=detail.failure_by_kind,
            model=CountByKey,
        ),
        chart_view(
            "by-cause",
            "Failure demand by cause: the purpose of the case it traces back to",
            charts.pareto(detail.failure_by_cause, what="cause"),
            api_path=api,
            api_query=q,
            export=f"{export}/failure-by-cause",
            rows=detail.failure_by_cause,
            model=CountByKey,
        ),
        chart_view(
            "end-to-end",
            "End-to-end time on the customer's clock",
            charts.end_to_end_distribution(detail.end_to_end_distribution, detail.summary),
            api_path=api,
            api_query=q,
            export=f"{export}/end-to-end",
            rows=detail.end_to_end_distribution,
            model=HistogramBucket,
        ),
    ]
    capability = []
    for chart in detail.charts:
        if chart.measure not in CAPABILITY_MEASURES:
            continue
        title = charts.MEASURE_TITLES[chart.measure][0]
        view = chart_view(
            f"xmr-{chart.measure}",
            f"Capability: {title.lower()}",
            charts.xmr(chart, detail.changes),
            api_path=api,
            api_query=q,
            export=f"{export}/capability-{chart.measure}",
            rows=chart.points,
            model=type(chart.points[0]) if chart.points else BaseModel,
            note="Limits from the baseline of "
            f"{chart.baseline_size} points from {chart.baseline_from:%Y-%m-%d}"
            + (" (provisional: the baseline is not full yet)" if chart.provisional else ""),
        )
        capability.append(CapabilityView(view, chart, variation(chart)))
    return PurposePage(purpose, form, detail, views, capability, with_query(api, q))


# --- failure flow ---------------------------------------------------------------------------


@dataclass
class FlowPage:
    filters: FilterForm
    cells: list[FlowCell]
    causes: list[str]
    purposes: list[str]
    matrix: dict[tuple[str, str], int]
    chart: ChartView


async def flow_page(session: AsyncSession, filters: Filters, form: FilterForm) -> FlowPage:
    cells = await figures.failure_flow(session, filters)
    q = form.query()
    return FlowPage(
        filters=form,
        cells=cells,
        causes=sorted({c.cause for c in cells}),
        purposes=sorted({c.purpose for c in cells}),
        matrix={(c.cause, c.purpose): c.failure for c in cells},
        chart=chart_view(
            "flow",
            "Failure flow",
            charts.failure_flow(cells),
            api_path="/v1/demand/failure-flow",
            api_query=q,
            export="failure-flow",
            rows=cells,
            model=FlowCell,
        ),
    )


# --- changes --------------------------------------------------------------------------------


async def all_changes(session: AsyncSession) -> list[ChangeOut]:
    """Every recorded change, newest first: the API's list of each purpose's changes."""
    found: list[ChangeOut] = []
    for purpose in await measures.all_purposes(session):
        found += await service.recorded_changes(session, purpose)
    return sorted(found, key=lambda c: (c.recorded_at, c.change_id), reverse=True)


def share_text(share: float | None) -> str:
    return percent(share)
