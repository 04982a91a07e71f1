"""The metrics HTTP API: purposes, demand over time, channels, Pareto, cases, changes.

Every read needs an API key with the ``read`` scope; recording a change to the system needs
``labels:write`` (a person's word about the work, like a label). Tables answer CSV with
``?format=csv`` or ``Accept: text/csv``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics import measures, repository
from services.metrics.csv_export import csv_response, wants_csv
from services.metrics.domain.windows import Granularity, parse_period
from services.metrics.measures import AmbiguousCase, ChartSettings
from services.metrics.repository import Filters
from services.metrics.schemas import (
    CaseTimeline,
    ChangeIn,
    ChangeOut,
    ChannelRow,
    OverTimeRow,
    ParetoRow,
    PurposeDetail,
    PurposeSummary,
    TimelineEntry,
)
from shared.auth.dependencies import require_scope
from shared.auth.keys import Scope
from shared.events import Channel


def get_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return sessions


def get_chart_settings(request: Request) -> ChartSettings:
    settings: ChartSettings = request.app.state.chart_settings
    return settings


def invalid_filter(field: str, detail: str) -> HTTPException:
    return HTTPException(
        status_code=422,
        detail={"type": "about:blank", "title": "Invalid filter", "field": field, "detail": detail},
    )


def get_filters(
    period: Annotated[
        str | None,
        Query(
            description="ISO 8601: 2026-03, 2026-W10, 2026-03-02, 2026 or an interval "
            "2026-03-01/2026-04-01 or 2026-03-01/P7D. UTC.",
            examples=["2026-03"],
        ),
    ] = None,
    channel: Annotated[Channel | None, Query(description="Only demands on this channel.")] = None,
    team: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Only this team's demands.")
    ] = None,
) -> Filters:
    try:
        parsed = parse_period(period) if period is not None else None
    except ValueError as error:
        raise invalid_filter("period", str(error)) from error
    return Filters(period=parsed, channel=channel.value if channel else None, team=team)


Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]
Filtered = Annotated[Filters, Depends(get_filters)]
Charts = Annotated[ChartSettings, Depends(get_chart_settings)]
Format = Annotated[
    Literal["json", "csv"] | None,
    Query(description="csv for a CSV export (or send Accept: text/csv)."),
]
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}
}

router = APIRouter(prefix="/v1", dependencies=[Depends(require_scope(Scope.READ))])


@router.get(
    "/purposes",
    response_model=list[PurposeSummary],
    tags=["purposes"],
    summary="Every customer purpose with its figures",
    responses=CSV_RESPONSE,
)
async def list_purposes(
    request: Request, sessions: Sessions, filters: Filtered, format: Format = None
) -> Any:
    """Demand volume, value and failure demand, end-to-end percentiles, open cases,
    contacts per case and one-stop share per purpose, largest volume first."""
    async with sessions() as session:
        rows = await measures.purpose_summaries(session, filters)
    if wants_csv(request, format):
        return csv_response(rows, PurposeSummary, "purposes")
    return rows


@router.get(
    "/purposes/{purpose:path}/changes",
    response_model=list[ChangeOut],
    tags=["purposes"],
    summary="The changes to the system recorded for a purpose",
    responses=CSV_RESPONSE,
)
async def list_changes(
    purpose: str, request: Request, sessions: Sessions, format: Format = None
) -> Any:
    async with sessions() as session:
        rows = [_change_out(c) for c in await repository.changes_of(session, purpose)]
    if wants_csv(request, format):
        return csv_response(rows, ChangeOut, "changes")
    return rows


@router.post(
    "/purposes/{purpose:path}/changes",
    response_model=ChangeOut,
    status_code=201,
    tags=["purposes"],
    summary="Record a change to the system: the capability baseline starts again there",
    dependencies=[Depends(require_scope(Scope.LABELS_WRITE))],
)
async def record_change(purpose: str, change: ChangeIn, sessions: Sessions) -> ChangeOut:
    """Limits are recalculated only here, when a person says the system changed: from the
    first ``baseline_points`` values on or after ``changed_at``. Never automatically."""
    async with sessions.begin() as session:
        row = await repository.add_change(
            session, purpose=purpose, changed_at=change.changed_at, note=change.note
        )
        return _change_out(row)


@router.get(
    "/purposes/{purpose:path}",
    response_model=PurposeDetail,
    tags=["purposes"],
    summary="One purpose: measures, failure by kind and cause, capability charts",
    responses={404: {"description": "No demand for this purpose yet."}},
)
async def get_purpose(
    purpose: str, sessions: Sessions, filters: Filtered, chart_settings: Charts
) -> PurposeDetail:
    async with sessions() as session:
        detail = await measures.purpose_detail(
            session, purpose, filters, settings=chart_settings, now=datetime.now(UTC)
        )
    if detail is None:
        raise HTTPException(404, detail=f"no demand for purpose {purpose!r}")
    return detail


@router.get(
    "/demand/over-time",
    response_model=list[OverTimeRow],
    tags=["demand"],
    summary="Value against failure demand per day, week or month",
    responses=CSV_RESPONSE,
)
async def demand_over_time(
    request: Request,
    sessions: Sessions,
    filters: Filtered,
    granularity: Granularity = Granularity.WEEK,
    format: Format = None,
) -> Any:
    async with sessions() as session:
        rows = await measures.over_time(session, filters, granularity)
    if wants_csv(request, format):
        return csv_response(rows, OverTimeRow, "demand-over-time")
    return rows


@router.get(
    "/demand/by-channel",
    response_model=list[ChannelRow],
    tags=["demand"],
    summary="Value against failure demand per channel",
    responses=CSV_RESPONSE,
)
async def demand_by_channel(
    request: Request, sessions: Sessions, filters: Filtered, format: Format = None
) -> Any:
    async with sessions() as session:
        rows = await measures.by_channel(session, filters)
    if wants_csv(request, format):
        return csv_response(rows, ChannelRow, "demand-by-channel")
    return rows


@router.get(
    "/demand/by-purpose",
    response_model=list[ParetoRow],
    tags=["demand"],
    summary="Failure demand per purpose in Pareto order, with the cumulative share",
    responses=CSV_RESPONSE,
)
async def demand_by_purpose(
    request: Request, sessions: Sessions, filters: Filtered, format: Format = None
) -> Any:
    async with sessions() as session:
        rows = await measures.pareto(session, filters)
    if wants_csv(request, format):
        return csv_response(rows, ParetoRow, "failure-pareto")
    return rows


@router.get(
    "/cases/{case_id:path}",
    response_model=CaseTimeline,
    tags=["cases"],
    summary="One case's timeline: every demand and case event, on the customer's clock",
    responses={
        404: {"description": "No such case."},
        409: {"description": "The reference names cases of several customers."},
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
    },
)
async def get_case(
    case_id: str, request: Request, sessions: Sessions, format: Format = None
) -> Any:
    """By the case id (`auto-<first demand id>` for cases the service stitched) or by the
    source's case reference. CSV exports the timeline's entries."""
    async with sessions() as session:
        try:
            timeline = await measures.case_timeline(session, case_id)
        except AmbiguousCase as error:
            raise HTTPException(409, detail=f"{error} names cases of several customers") from error
    if timeline is None:
        raise HTTPException(404, detail=f"no case {case_id!r}")
    if wants_csv(request, format):
        return csv_response(timeline.entries, TimelineEntry, f"case-{timeline.case_id}")
    return timeline


def _change_out(row: Any) -> ChangeOut:
    return ChangeOut(
        change_id=row.change_id,
        purpose=row.purpose,
        changed_at=repository.as_utc(row.changed_at),
        note=row.note,
        recorded_at=repository.as_utc(row.recorded_at),
    )
