"""The HTTP entrypoint: decode, hand to the service, answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse

from services.intake.config import IntakeSettings
from services.intake.schemas import Accepted, DemandSubmission, Problem
from services.intake.service import InvalidDemand, Publisher, to_demand
from shared.kafka.producer import BrokerUnavailable


def get_publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publisher
    return publisher


def get_settings(request: Request) -> IntakeSettings:
    settings: IntakeSettings = request.app.state.settings
    return settings


PublisherDep = Annotated[Publisher, Depends(get_publisher)]
SettingsDep = Annotated[IntakeSettings, Depends(get_settings)]

router = APIRouter(prefix="/v1", tags=["demands"])


@router.post(
    "/demands",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    summary="Post one customer demand",
    responses={
        422: {"model": Problem, "description": "Invalid demand: one entry per problem"},
        503: {"model": Problem, "description": "The broker cannot acknowledge; retry later"},
    },
)
async def post_demand(
    submission: DemandSubmission, publisher: PublisherDep, settings: SettingsDep
) -> Accepted | JSONResponse:
    """Answers 202 only once the broker has acknowledged the demand (acks=all)."""
    publisher.metrics.received.labels("demand").inc()
    try:
        demand = to_demand(
            submission,
            now=datetime.now(UTC),
            max_future_skew=timedelta(seconds=settings.max_future_skew_s),
        )
    except InvalidDemand as error:
        publisher.metrics.rejected.labels("demand", "invalid").inc()
        return problem(
            422, "Invalid demand", errors=[{"field": error.field, "reason": error.reason}]
        )
    try:
        await publisher.publish_demand(demand)
    except BrokerUnavailable as error:
        publisher.metrics.broker_unavailable.inc()
        return problem(
            503,
            "Broker unavailable",
            detail=f"The demand was not accepted: {error}. Retry later.",
            headers={"Retry-After": str(settings.retry_after_s)},
        )
    publisher.metrics.accepted.labels("demand", demand.channel.value, demand.source).inc()
    return Accepted(id=demand.id, status="accepted")


def problem(
    status_code: int,
    title: str,
    *,
    detail: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(title=title, status=status_code, detail=detail, errors=errors or [])
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status_code,
        headers=headers,
        media_type="application/problem+json",
    )
