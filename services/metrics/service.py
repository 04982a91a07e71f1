"""The logic the entrypoints call: the measures of the API and of purpose.metrics, from
db/ reads composed with the pure domain (cases, percentiles, XmR charts)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.capability import (
    END_TO_END,
    FAILURE_PER_DAY,
    FAILURE_SHARE_PER_DAY,
    SIGNAL_LOOKBACK,
    VALUE_PER_DAY,
    baseline_start,
    daily_failure_share_series_of_days,
    daily_volume_series_of_days,
    xmr_chart,
)
from services.metrics.db import audit_sample, cases, measures, open_cases, sql, system_changes
from services.metrics.db.measures import Filters
from services.metrics.db.tables import PurposeChangeRow
from services.metrics.domain.audit import (
    AuditedDemand,
    MachineCount,
    estimate_of,
    estimates_by_group,
)
from services.metrics.domain.windows import Granularity, Period, bucket_of, period_start
from services.metrics.schemas import (
    CapabilityChart,
    CaseTimeline,
    ChangeIn,
    ChangeOut,
    ChannelRow,
    CountByKey,
    HistogramBucket,
    OpenCaseAge,
    OverallRow,
    OverTimeRow,
    ParetoRow,
    Percentiles,
    PurposeDetail,
    PurposeSummary,
    TimelineEntry,
)
from shared.estimates import ShareEstimate
from shared.events import Capability, EndToEndPercentiles, PurposeMetrics, Signal, SystemChanged
from shared.privacy import personal_data_kind, refusal_reason
from shared.service.problems import FieldProblem, ProblemError


@dataclass(frozen=True)
class ChartSettings:
    baseline_points: int = 20
    chart_points: int = 100


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


PERCENTILES = (50.0, 85.0, 95.0)


def estimate_fields(estimate: ShareEstimate) -> dict[str, Any]:
    """The fields every failure share carries (schemas.py), from one estimate: the share
    among demands, and the share of contacts that are not demands."""
    return {
        "failure_share_estimate": estimate.estimate,
        "failure_share_ci_low": estimate.ci_low,
        "failure_share_ci_high": estimate.ci_high,
        "failure_share_audited": estimate.audited,
        "failure_share_status": estimate.status,
        "not_a_demand_share": estimate.not_a_demand_share,
        "not_a_demand_ci_low": estimate.not_a_demand_ci_low,
        "not_a_demand_ci_high": estimate.not_a_demand_ci_high,
        "not_a_demand_audited": estimate.not_a_demand_audited,
    }


async def failure_estimates(
    session: AsyncSession,
    filters: Filters,
    *,
    by: audit_sample.Grouping,
    purpose: str | None = None,
) -> dict[Hashable, ShareEstimate]:
    """The audit-corrected failure share of each purpose, channel, or of everything ("all"),
    over the demands the filters select, grouped as the machine first labelled them."""
    counts = await audit_sample.machine_counts(session, filters, by=by, purpose=purpose)
    pairs = await audit_sample.audited(session, filters, purpose=purpose)
    return _estimates(counts, pairs, by=by)


def _estimates(
    counts: Sequence[MachineCount],
    pairs: Sequence[audit_sample.AuditedRow],
    *,
    by: audit_sample.Grouping,
) -> dict[Hashable, ShareEstimate]:
    audited = [
        AuditedDemand(
            {"purpose": row.stratum[0], "channel": row.channel, "all": "all"}[by],
            row.stratum,
            row.machine,
            row.person,
            row.not_a_demand,
        )
        for row in pairs
    ]
    return estimates_by_group(counts, audited)


def _percentiles(values: dict[float, float]) -> Percentiles:
    return Percentiles(
        p50_seconds=values.get(50.0), p85_seconds=values.get(85.0), p95_seconds=values.get(95.0)
    )


@dataclass(frozen=True)
class _SummaryReads:
    counts: list[measures.DemandCounts]
    cases: dict[str, measures.CaseCounts]
    times: dict[str, dict[float, float]]
    open_counts: dict[str, int]
    estimates: dict[Hashable, ShareEstimate]


async def purpose_summaries(
    session: AsyncSession, filters: Filters, *, purpose: str | None = None
) -> list[PurposeSummary]:
    """Every purpose's figures, largest volume first. Whole days (every period the API and
    the pages ask for) are read in one go on the session's connection (sql.run_sync: one hop
    to SQLite's thread for the seven statements, none of them built by SQLAlchemy); another
    period, a statement at a time."""
    if measures.whole_days(filters):
        reads = await sql.run_sync(session, partial(_summary_of_days, filters, purpose))
    else:
        reads = _SummaryReads(
            await measures.demand_counts(session, filters, purpose=purpose),
            await measures.fulfilled_case_counts(session, filters, purpose=purpose),
            await measures.end_to_end_percentiles(session, filters, PERCENTILES, purpose=purpose),
            await measures.open_case_counts(session, filters, purpose=purpose),
            await failure_estimates(session, filters, by="purpose", purpose=purpose),
        )
    counts, cases, times, open_counts = reads.counts, reads.cases, reads.times, reads.open_counts
    estimates = reads.estimates
    by_purpose = {row.key: row for row in counts}
    # Purposes with cases in the period but no demand in it still have figures to show.
    extra = sorted((set(cases) | set(times) | set(open_counts)) - set(by_purpose))
    for key in extra:
        by_purpose[key] = measures.DemandCounts(key, 0, 0, 0, 0)
    summaries = []
    for row in by_purpose.values():
        fulfilled = cases.get(row.key)
        summaries.append(
            PurposeSummary(
                purpose=row.key,
                volume=row.volume,
                value=row.value,
                failure=row.failure,
                unknown=row.unknown,
                failure_share=_share(row.failure, row.value + row.failure),
                **estimate_fields(estimate_of(estimates, row.key)),
                cases_fulfilled=fulfilled.fulfilled if fulfilled else 0,
                open_cases=open_counts.get(row.key, 0),
                end_to_end=_percentiles(times.get(row.key, {})),
                contacts_per_case=(fulfilled.contacts / fulfilled.fulfilled if fulfilled else None),
                one_stop_share=_share(fulfilled.one_stop, fulfilled.fulfilled)
                if fulfilled
                else None,
            )
        )
    return summaries


def _summary_of_days(filters: Filters, purpose: str | None, db: sql.SyncDb) -> _SummaryReads:
    """purpose_summaries' reads of whole days, on the connection: what demand_counts,
    fulfilled_case_counts, end_to_end_percentiles, open_case_counts and failure_estimates
    read for whole days, with the same SQL."""
    return _SummaryReads(
        measures.demand_counts_of(measures.demand_counts_of_days(db, filters, purpose=purpose)),
        measures.case_counts_of(measures.case_counts_of_days(db, filters, purpose)),
        measures.percentiles_of_days(db, filters, PERCENTILES, purpose=purpose),
        open_cases.counts_of(  # type: ignore[arg-type]  # None for no purpose, as before
            db,
            source=filters.source,
            channel=filters.channel,
            team=filters.team,
            purposes=None if purpose is None else [purpose],
        ),
        _estimates(
            audit_sample.machine_counts_of(
                audit_sample.machine_counts_of_days(db, filters, by="purpose", purpose=purpose)
            ),
            audit_sample.audited_of(db, filters, purpose=purpose),
            by="purpose",
        ),
    )


async def capability_charts(
    session: AsyncSession,
    purpose: str,
    settings: ChartSettings,
    now: datetime,
    *,
    source: str | None = None,
    changed_at: Sequence[datetime] | None = None,
) -> list[CapabilityChart]:
    """``source``: that source's demands and cases only (a source's own key).
    ``changed_at``: when the purpose's recorded changes took effect, if the caller has read
    them already (system_changes.changes_of), not read again."""
    changes = (
        list(changed_at)
        if changed_at is not None
        else [c.changed_at for c in await system_changes.changes_of(session, purpose)]
    )
    since = baseline_start([sql.as_utc(c) for c in changes], now)
    charts: list[CapabilityChart | None] = [
        xmr_chart(
            END_TO_END,
            await measures.fulfilment_series(
                session,
                purpose=purpose,
                since=since,
                source=source,
                # The baseline and the points shown, with the points before those that the
                # signal rules and the first moving range look back at: the same chart.
                ends=(settings.baseline_points, settings.chart_points + SIGNAL_LOOKBACK),
            ),
            baseline_points=settings.baseline_points,
            shown_points=settings.chart_points,
        )
    ]
    days = await measures.demand_day_counts(session, Filters(source=source), purpose=purpose)
    for measure, demand_type in ((VALUE_PER_DAY, "value"), (FAILURE_PER_DAY, "failure")):
        charts.append(
            xmr_chart(
                measure,
                daily_volume_series_of_days(days, demand_type, since=since),
                baseline_points=settings.baseline_points,
                shown_points=settings.chart_points,
            )
        )
    charts.append(
        xmr_chart(
            FAILURE_SHARE_PER_DAY,
            daily_failure_share_series_of_days(days, since=since),
            baseline_points=settings.baseline_points,
            shown_points=settings.chart_points,
        )
    )
    return [chart for chart in charts if chart is not None]


async def purpose_detail(
    session: AsyncSession,
    purpose: str,
    filters: Filters,
    *,
    settings: ChartSettings,
    now: datetime,
) -> PurposeDetail | None:
    summaries = await purpose_summaries(session, filters, purpose=purpose)
    if not summaries:
        return None
    distribution = await measures.end_to_end_histogram(session, filters, purpose=purpose)
    # The summary's open count is the ages' count (the same filters, the same kept counts).
    open_count, open_ages, oldest = await measures.open_case_ages(
        session,
        filters,
        purpose=purpose,
        now=now,
        quantiles=(50.0, 85.0),
        open_count=summaries[0].open_cases,
    )
    by_kind = await measures.failure_breakdown(session, filters, purpose=purpose, by="kind")
    by_cause = await measures.failure_breakdown(session, filters, purpose=purpose, by="cause")
    changes = await system_changes.changes_of(session, purpose)
    return PurposeDetail(
        summary=summaries[0],
        failure_by_kind=[CountByKey(key=k, count=n) for k, n in by_kind],
        failure_by_cause=[CountByKey(key=k, count=n) for k, n in by_cause],
        end_to_end_distribution=[
            HistogramBucket(le_seconds=bound, count=count) for bound, count in distribution
        ],
        open_case_age=OpenCaseAge(
            count=open_count,
            p50_seconds=open_ages.get(50.0),
            p85_seconds=open_ages.get(85.0),
            oldest_seconds=oldest,
        ),
        charts=await capability_charts(
            session,
            purpose,
            settings,
            now,
            source=filters.source,
            changed_at=[c.changed_at for c in changes],
        ),
        changes=[_change_out(c) for c in changes],
    )


async def recorded_changes(session: AsyncSession, purpose: str) -> list[ChangeOut]:
    """The changes to the system recorded for a purpose, oldest first."""
    return [_change_out(c) for c in await system_changes.changes_of(session, purpose)]


def change_event(
    purpose: str, change: ChangeIn, *, recorded_by: str | None, now: datetime
) -> SystemChanged:
    """A person's word that the system changed, as the event the API and the pages publish:
    the purpose's baselines start again there once the consumer has stored it.

    The note comes masked (``ChangeIn``); a purpose or an author that is itself personal data
    (an e-mail address as a proxy's user name) is refused with a 422 naming the field, for
    the API and the pages alike, and is never published; so is a purpose that no demand can
    ever have (not a purpose's plain lowercase name).
    """
    refused = [
        FieldProblem(field=name, reason=refusal_reason(kind))
        for name, value in (("purpose", purpose), ("recorded_by", recorded_by))
        if value is not None and (kind := personal_data_kind(value)) is not None
    ]
    if refused:
        raise ProblemError(422, "Invalid change", problems=refused)
    try:
        return SystemChanged(
            id=f"change-{uuid.uuid4()}",
            purpose=purpose,
            changed_at=change.changed_at,
            note=change.note,
            recorded_at=now,
            recorded_by=recorded_by,
        )
    except ValidationError as error:
        problems = [
            FieldProblem(field=".".join(str(p) for p in item["loc"]), reason=item["msg"])
            for item in error.errors(include_input=False, include_url=False)
        ]
        raise ProblemError(422, "Invalid change", problems=problems) from error


async def stored_change(session: AsyncSession, change_id: str) -> ChangeOut | None:
    """The change with this event id, once the consumer has stored it."""
    row = await system_changes.change_of_event(session, change_id)
    return None if row is None else _change_out(row)


def _change_out(row: PurposeChangeRow) -> ChangeOut:
    return ChangeOut(
        change_id=row.event_id,
        purpose=row.purpose,
        changed_at=sql.as_utc(row.changed_at),
        note=row.note,
        recorded_at=sql.as_utc(row.recorded_at),
        recorded_by=row.recorded_by,
    )


async def over_time(
    session: AsyncSession, filters: Filters, granularity: Granularity
) -> list[OverTimeRow]:
    """Value against failure demand per day, week or month (only periods with demand)."""
    buckets: dict[date, Counter[str]] = {}
    for day, kind, n in await measures.demand_day_counts(session, filters):
        buckets.setdefault(bucket_of(day, granularity), Counter())[kind] += n
    machine: Counter[tuple[date, tuple[str, date], str]] = Counter()
    for day, stratum, kind, n in await audit_sample.machine_day_counts(session, filters):
        machine[(bucket_of(day, granularity), stratum, kind)] += n
    estimates = estimates_by_group(
        [MachineCount(start, stratum, kind, n) for (start, stratum, kind), n in machine.items()],
        [
            AuditedDemand(
                period_start(row.occurred_at, granularity),
                row.stratum,
                row.machine,
                row.person,
                row.not_a_demand,
            )
            for row in await audit_sample.audited(session, filters)
        ],
    )
    return [
        OverTimeRow(
            period_start=start,
            volume=sum(c.values()),
            value=c["value"],
            failure=c["failure"],
            unknown=c["unknown"],
            failure_share=_share(c["failure"], c["value"] + c["failure"]),
            **estimate_fields(estimate_of(estimates, start)),
        )
        for start, c in sorted(buckets.items())
    ]


async def overall(session: AsyncSession, filters: Filters) -> OverallRow:
    """Every demand the filters select, with the failure share's estimate over all purposes."""
    counts = await measures.demand_counts(session, filters)
    value = sum(row.value for row in counts)
    failure = sum(row.failure for row in counts)
    estimates = await failure_estimates(session, filters, by="all")
    return OverallRow(
        volume=sum(row.volume for row in counts),
        value=value,
        failure=failure,
        unknown=sum(row.unknown for row in counts),
        failure_share=_share(failure, value + failure),
        **estimate_fields(estimate_of(estimates, "all")),
    )


async def by_channel(session: AsyncSession, filters: Filters) -> list[ChannelRow]:
    estimates = await failure_estimates(session, filters, by="channel")
    return [
        ChannelRow(
            channel=row.key,
            volume=row.volume,
            value=row.value,
            failure=row.failure,
            unknown=row.unknown,
            failure_share=_share(row.failure, row.value + row.failure),
            **estimate_fields(estimate_of(estimates, row.key)),
        )
        for row in await measures.demand_counts(session, filters, by="channel")
    ]


async def pareto(session: AsyncSession, filters: Filters) -> list[ParetoRow]:
    """Purposes by failure demand, most first, with the cumulative share: where to look."""
    rows = sorted(
        await measures.demand_counts(session, filters),
        key=lambda row: (-row.failure, -row.volume, row.key),
    )
    total = sum(row.failure for row in rows)
    estimates = await failure_estimates(session, filters, by="purpose")
    running = 0
    pareto_rows = []
    for row in rows:
        running += row.failure
        pareto_rows.append(
            ParetoRow(
                purpose=row.key,
                failure=row.failure,
                share_of_all_failure=_share(row.failure, total),
                cumulative_share=_share(running, total),
                volume=row.volume,
                failure_share=_share(row.failure, row.value + row.failure),
                **estimate_fields(estimate_of(estimates, row.key)),
            )
        )
    return pareto_rows


class AmbiguousCase(LookupError):
    """Two customers' cases share the reference: the caller must use the case id."""


async def case_timeline(
    session: AsyncSession, case_id: str, *, source: str | None = None
) -> CaseTimeline | None:
    """``source``: that source's cases only; another source's case is unknown (None), the
    same answer as for a case nobody has."""
    found = await sql.run_sync(session, partial(cases.find, case_id=case_id, source=source))
    if not found.cases:
        return None
    if len(found.cases) > 1:
        raise AmbiguousCase(case_id)
    case = found.cases[0]
    entries = [
        TimelineEntry(
            at=d.occurred_at,
            kind="demand",
            id=d.demand_id,
            channel=d.channel,
            demand_type=d.demand_type,
            failure_kind=d.failure_kind,
            purpose=d.purpose,
            labelled=d.labelled,
        )
        for d in found.demands
    ]
    entries += [
        TimelineEntry(
            at=e.occurred_at,
            kind="case_event",
            id=e.event_id,
            event_type=e.type,
            purpose=e.purpose,
        )
        for e in found.events
    ]
    entries.sort(key=lambda entry: (entry.at, entry.kind, entry.id))
    return CaseTimeline(
        case_id=case.case_id,
        case_ref=case.case_ref,
        customer_ref=case.customer_ref,
        purpose=case.purpose,
        status=case.status,
        started_at=case.started_at,
        fulfilled_at=case.fulfilled_at,
        end_to_end_seconds=case.end_to_end_seconds,
        reopened=case.reopened,
        contacts=case.contacts,
        failure_contacts=case.failure_contacts,
        channels=[c for c in case.channels.split(",") if c],
        one_stop=case.one_stop,
        entries=entries,
    )


async def purpose_metrics(
    session: AsyncSession,
    purpose: str,
    *,
    settings: ChartSettings,
    window_days: int,
    now: datetime,
) -> PurposeMetrics:
    """The event published to purpose.metrics: the trailing window's figures, the charts'
    limits and the signals on the points shown."""
    window = Period(now - timedelta(days=window_days), now)
    filters = Filters(period=window)
    summaries = await purpose_summaries(session, filters, purpose=purpose)
    summary = (
        summaries[0]
        if summaries
        else PurposeSummary(
            purpose=purpose, volume=0, value=0, failure=0, unknown=0, failure_share=None
        )
    )
    by_kind = await measures.failure_breakdown(session, filters, purpose=purpose, by="kind")
    charts = await capability_charts(session, purpose, settings, now)
    return PurposeMetrics(
        purpose=purpose,
        window_start=window.start,
        window_end=window.end,
        volume=summary.volume,
        value_count=summary.value,
        failure_count=summary.failure,
        unknown_count=summary.unknown,
        failure_ratio=summary.failure_share,
        failure_share_estimate=summary.failure_share_estimate,
        failure_share_ci_low=summary.failure_share_ci_low,
        failure_share_ci_high=summary.failure_share_ci_high,
        # Audited demands, as the field has always counted (the prior's clamp and weight
        # need the sample behind a share among demands): the API row counts contacts.
        failure_share_audited=summary.failure_share_audited - summary.not_a_demand_audited,
        failure_share_status=summary.failure_share_status,
        failure_by_kind=dict(by_kind),
        end_to_end=EndToEndPercentiles(**summary.end_to_end.model_dump()),
        cases_fulfilled=summary.cases_fulfilled,
        open_cases=summary.open_cases,
        contacts_per_case=summary.contacts_per_case,
        one_stop_share=summary.one_stop_share,
        capability=[
            Capability(
                measure=chart.measure,
                centre_line=chart.centre_line,
                lower_natural_process_limit=chart.lower_natural_process_limit,
                upper_natural_process_limit=chart.upper_natural_process_limit,
                upper_range_limit=chart.upper_range_limit,
                baseline_from=chart.baseline_from,
                baseline_to=chart.baseline_to,
            )
            for chart in charts
        ],
        signals=[
            Signal(measure=chart.measure, rule=s.rule, at=s.at, value=s.value)
            for chart in charts
            for s in chart.signals
        ],
        computed_at=now,
    )
