"""The metrics HTTP API: purposes, demand over time, channels, Pareto, cases, changes, and
the review and audit queues people label from.

Every read needs an API key with the ``read`` scope; recording a change to the system needs
``labels:write`` (a person's word about the work, like a label), and so do the two queues:
they show customers' (redacted) words, which only those who label need, never a dashboard's
read-only key. Tables answer CSV with ``?format=csv`` or ``Accept: text/csv``. Every failure
share carries its audit estimate (docs/services/metrics.md, "Estimates and the audit").
Every error is an RFC 9457 problem document.

A write route never declares its body as a parameter: FastAPI reads such a body before any
dependency runs, so an unauthenticated caller could make us read (and hold) anything. The
body is a dependency declared after the scope's (``ChangeBody``), read through the
skeleton's ``BodyLimit`` (shared.service.request_bodies).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics import audit, service
from services.metrics.components import MetricsComponents
from services.metrics.csv_export import csv_response, wants_csv
from services.metrics.db.measures import Filters
from services.metrics.domain.windows import Granularity, parse_period
from services.metrics.schemas import (
    AuditQueue,
    CaseTimeline,
    ChangeAccepted,
    ChangeIn,
    ChangeOut,
    ChannelRow,
    OverallRow,
    OverTimeRow,
    ParetoRow,
    PurposeDetail,
    PurposeSummary,
    ReviewQueue,
    TimelineEntry,
)
from services.metrics.service import AmbiguousCase, ChartSettings
from shared.auth.dependencies import require_scope
from shared.auth.keys import ApiKeyRecord, Scope
from shared.events import Channel
from shared.privacy import personal_data_kind, refusal_reason
from shared.service.components import components_dependency
from shared.service.problems import FieldProblem, Problem, ProblemError

Components = Annotated[MetricsComponents, Depends(components_dependency(MetricsComponents))]


def _sessions(components: Components) -> async_sessionmaker[AsyncSession]:
    return components.sessions


def _chart_settings(components: Components) -> ChartSettings:
    return components.chart_settings


# One dependency object for the routers' guard and the filters' key: FastAPI checks it once.
read_key = require_scope(Scope.READ)
ReadKey = Annotated[ApiKeyRecord, Depends(read_key)]
_queue_key = require_scope(Scope.LABELS_WRITE)
QueueKey = Annotated[ApiKeyRecord, Depends(_queue_key)]


def _query_filters(
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
        # Named like FastAPI's own query errors (query.channel), so both read alike.
        raise ProblemError(
            422, "Invalid filter", problems=[FieldProblem(field="query.period", reason=str(error))]
        ) from error
    return Filters(period=parsed, channel=channel.value if channel else None, team=team)


# The query's filters over every source: what a signed-in person sees (the pages).
OrganisationFiltered = Annotated[Filters, Depends(_query_filters)]


def _filters(key: ReadKey, filters: OrganisationFiltered) -> Filters:
    """The query's filters within the key's reach: a source's own key reads its source's
    data only; a sources:all key, every source's."""
    return replace(filters, source=key.reach)


async def _change_body(request: Request) -> ChangeIn:
    """The body of ``POST .../changes``, read only now that the key has been checked."""
    body = await request.body()  # bounded by BodyLimit: a 413 once it passes max_body_bytes
    try:
        return ChangeIn.model_validate_json(body)
    except ValidationError as error:
        raise ProblemError(
            422,
            "Invalid request",
            problems=[
                FieldProblem(
                    field=".".join(str(part) for part in item["loc"]) or "body",
                    reason=item["msg"],
                )
                for item in error.errors(include_input=False)
            ],
        ) from error


def _review_below(components: Components) -> float:
    return components.audit.queues.review_below


Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]
# One dependency object: the route's guard and the parameter naming who recorded a change
# share FastAPI's per-request cache, so the key is checked once, before the body is read.
_change_writer = require_scope(Scope.LABELS_WRITE)
ChangeWriter = Annotated[ApiKeyRecord, Depends(_change_writer)]
ReviewBelow = Annotated[float, Depends(_review_below)]
QueueLimit = Annotated[
    int, Query(ge=1, le=500, description="Items returned at most (the head of the queue).")
]
Charts = Annotated[ChartSettings, Depends(_chart_settings)]
Filtered = Annotated[Filters, Depends(_filters)]
ChangeBody = Annotated[ChangeIn, Depends(_change_body)]
Format = Annotated[
    Literal["json", "csv"] | None,
    Query(description="csv for a CSV export (or send Accept: text/csv)."),
]


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}
}
PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: _problem("No API key, or one that is unknown, malformed or revoked."),
    403: _problem("The key lacks the scope."),
    422: _problem("A filter or a field is invalid: each is named with the reason."),
}

router = APIRouter(prefix="/v1", dependencies=[Depends(read_key)], responses=PROBLEMS)


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
        rows = await service.purpose_summaries(session, filters)
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
        rows = await service.recorded_changes(session, purpose)
    if wants_csv(request, format):
        return csv_response(rows, ChangeOut, "changes")
    return rows


@router.post(
    "/purposes/{purpose:path}/changes",
    response_model=ChangeOut,
    status_code=201,
    tags=["purposes"],
    summary="Record a change to the system: the capability baseline starts again there",
    dependencies=[Depends(_change_writer)],
    responses={
        202: {
            "model": ChangeAccepted,
            "description": "Recorded (on system.changes), not yet stored by the consumer: "
            "it appears at changes_url (the Location) shortly.",
        },
        403: _problem(
            "The key lacks labels:write, or reaches only its own source (a change rebases "
            "every source's limits, so it needs sources:all)."
        ),
        413: _problem("The body is larger than max_body_bytes."),
        503: _problem("The broker did not acknowledge the change: nothing was recorded."),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ChangeIn.model_json_schema()}},
        }
    },
)
async def record_change(
    purpose: str, key: ChangeWriter, change: ChangeBody, components: Components
) -> Any:
    """Limits are recalculated only here, when a person says the system changed: from the
    first ``baseline_points`` values on or after ``changed_at``. Never automatically.
    The note is masked (schemas.ChangeIn); a purpose that is personal data is refused.

    The change is published as a ``SystemChanged`` event (acknowledged by the broker before
    any answer) and stored by the consumer, as a rebuild stores it: 201 with the change once
    stored, which takes moments; 202 when the consumer has not stored it within a few
    seconds (services/metrics/changes.py)."""
    if key.reach is not None:
        # A change rebases the purpose's limits for every source: the organisation's call,
        # not one sending system's (docs/architecture.md, "Sources and the organisation").
        raise ProblemError(
            403,
            "Forbidden",
            detail=f"A change to the system rebases every source's limits; the key of source "
            f"{key.source!r} reaches only its own source. Use an organisation-wide key "
            "(scope sources:all) or the changes page.",
        )
    kind = personal_data_kind(purpose)
    if kind is not None:
        problem = FieldProblem(field="path.purpose", reason=refusal_reason(kind))
        raise ProblemError(422, "Invalid request", problems=[problem])
    event = service.change_event(
        purpose, change, recorded_by=f"key:{key.source}", now=datetime.now(UTC)
    )
    changes_url = f"/v1/purposes/{quote(purpose, safe='/')}/changes"
    stored = await components.changes.record(event)
    headers = {"Location": changes_url}
    if stored is None:
        accepted = ChangeAccepted(change_id=event.id, purpose=purpose, changes_url=changes_url)
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202, headers=headers)
    return JSONResponse(stored.model_dump(mode="json"), status_code=201, headers=headers)


@router.get(
    "/purposes/{purpose:path}",
    response_model=PurposeDetail,
    tags=["purposes"],
    summary="One purpose: measures, failure by kind and cause, capability charts",
    responses={404: _problem("No demand for this purpose yet.")},
)
async def get_purpose(
    purpose: str, sessions: Sessions, filters: Filtered, chart_settings: Charts
) -> PurposeDetail:
    async with sessions() as session:
        detail = await service.purpose_detail(
            session, purpose, filters, settings=chart_settings, now=datetime.now(UTC)
        )
    if detail is None:
        raise ProblemError(404, "Unknown purpose", detail=f"No demand for purpose {purpose!r}.")
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
        rows = await service.over_time(session, filters, granularity)
    if wants_csv(request, format):
        return csv_response(rows, OverTimeRow, "demand-over-time")
    return rows


@router.get(
    "/demand/overall",
    response_model=OverallRow,
    tags=["demand"],
    summary="Every demand the filters select as one row, with the failure share's estimate",
    responses=CSV_RESPONSE,
)
async def demand_overall(
    request: Request, sessions: Sessions, filters: Filtered, format: Format = None
) -> Any:
    async with sessions() as session:
        row = await service.overall(session, filters)
    if wants_csv(request, format):
        return csv_response([row], OverallRow, "demand-overall")
    return row


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
        rows = await service.by_channel(session, filters)
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
        rows = await service.pareto(session, filters)
    if wants_csv(request, format):
        return csv_response(rows, ParetoRow, "failure-pareto")
    return rows


@router.get(
    "/cases/{case_id:path}",
    response_model=CaseTimeline,
    tags=["cases"],
    summary="One case's timeline: every demand and case event, on the customer's clock",
    responses={
        404: _problem("No such case."),
        409: _problem("The reference names cases of several customers."),
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
    },
)
async def get_case(
    case_id: str, request: Request, sessions: Sessions, key: ReadKey, format: Format = None
) -> Any:
    """By the case id (`auto-<first demand id>` for cases the service stitched) or by the
    source's case reference. CSV exports the timeline's entries."""
    async with sessions() as session:
        try:
            timeline = await service.case_timeline(session, case_id, source=key.reach)
        except AmbiguousCase as error:
            raise ProblemError(
                409,
                "Ambiguous case reference",
                detail=f"{case_id!r} names cases of several customers: use the case id.",
            ) from error
    if timeline is None:
        raise ProblemError(404, "Unknown case", detail=f"No case {case_id!r}.")
    if wants_csv(request, format):
        return csv_response(timeline.entries, TimelineEntry, f"case-{timeline.case_id}")
    return timeline


QUEUE_PROBLEMS: dict[int | str, dict[str, Any]] = {
    403: _problem("The key lacks the read or the labels:write scope."),
}


@router.get(
    "/audit/queue",
    response_model=AuditQueue,
    tags=["queues"],
    summary="The open audit items, blind: what the customer said, never what the machine said",
    dependencies=[Depends(_queue_key)],
    responses=QUEUE_PROBLEMS,
)
async def get_audit_queue(sessions: Sessions, key: QueueKey, limit: QueueLimit = 50) -> AuditQueue:
    """A random sample of demands per purpose and ISO week, to be labelled blind: the
    machine's type, purpose and confidence are not shown. Label one through intake's
    `POST /v1/demands/{demand_id}/labels` with `"reason": "audit"`: that completes it, and
    only such labels enter the failure share's estimate. In the order of the random draw."""
    async with sessions() as session:
        return await audit.audit_queue(session, limit=limit, source=key.reach)


@router.get(
    "/review/queue",
    response_model=ReviewQueue,
    tags=["queues"],
    summary="Demands the machine was unsure of, with its suggestion, lowest confidence first",
    dependencies=[Depends(_queue_key)],
    responses=QUEUE_PROBLEMS,
)
async def get_review_queue(
    sessions: Sessions,
    key: QueueKey,
    below: ReviewBelow,
    purpose: Annotated[
        str | None,
        Query(min_length=1, max_length=120, description="Only this purpose (as classified)."),
    ] = None,
    limit: QueueLimit = 50,
) -> ReviewQueue:
    """Demands marked needs_review or classified below `review_confidence_below`, that no
    person has labelled (audit items are not here: they are labelled blind). Label one with
    `"reason": "review"`: it teaches the model and moves the figures, never the estimate."""
    async with sessions() as session:
        return await audit.review_queue(
            session, below=below, purpose=purpose, limit=limit, source=key.reach
        )
