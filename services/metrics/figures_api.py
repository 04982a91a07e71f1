"""JSON API of the figures added for the pages (capacity, failure flow): the same calls the
pages make, so a page's figure and the API's answer cannot differ. Read scope, CSV too."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from services.metrics import figures
from services.metrics.api import (
    CSV_RESPONSE,
    PROBLEMS,
    Components,
    Filtered,
    Format,
    Sessions,
    read_key,
)
from services.metrics.csv_export import csv_response, wants_csv
from services.metrics.domain.windows import Granularity
from services.metrics.figures import CapacityRow, FlowCell, FlowExample, PurposeOverTimeRow

router = APIRouter(prefix="/v1", dependencies=[Depends(read_key)], responses=PROBLEMS)


@router.get(
    "/demand/capacity",
    response_model=list[CapacityRow],
    tags=["demand"],
    summary="Staff hours consumed by failure demand, per purpose and period",
    responses=CSV_RESPONSE,
)
async def demand_capacity(
    request: Request,
    sessions: Sessions,
    components: Components,
    filters: Filtered,
    granularity: Granularity = Granularity.WEEK,
    purpose: Annotated[
        str | None, Query(min_length=1, max_length=120, description="Only this purpose.")
    ] = None,
    format: Format = None,
) -> Any:
    """A demand's own handling time (its `handling_seconds` attribute) where its source sent
    one, else the configured average of its channel (`DEMANDSCOPE_PAGES_AVERAGE_HANDLING_
    SECONDS`): each row says how many of its demands were measured."""
    async with sessions() as session:
        rows = await figures.capacity(
            session,
            filters,
            granularity,
            components.settings.pages.average_handling_seconds,
            purpose=purpose,
        )
    if wants_csv(request, format):
        return csv_response(rows, CapacityRow, "failure-capacity")
    return rows


@router.get(
    "/demand/purpose-over-time",
    response_model=list[PurposeOverTimeRow],
    tags=["demand"],
    summary="One purpose's value against failure demand per day, week or month",
    responses=CSV_RESPONSE,
)
async def purpose_over_time(
    request: Request,
    sessions: Sessions,
    filters: Filtered,
    purpose: Annotated[str, Query(min_length=1, max_length=120)],
    granularity: Granularity = Granularity.WEEK,
    format: Format = None,
) -> Any:
    async with sessions() as session:
        rows = await figures.purpose_over_time(session, filters, granularity, purpose=purpose)
    if wants_csv(request, format):
        return csv_response(rows, PurposeOverTimeRow, "purpose-over-time")
    return rows


@router.get(
    "/demand/failure-flow",
    response_model=list[FlowCell],
    tags=["demand"],
    summary="Failure demand from the purpose that caused it to the purpose it arrives as",
    responses=CSV_RESPONSE,
)
async def failure_flow(
    request: Request, sessions: Sessions, filters: Filtered, format: Format = None
) -> Any:
    async with sessions() as session:
        rows = await figures.failure_flow(session, filters)
    if wants_csv(request, format):
        return csv_response(rows, FlowCell, "failure-flow")
    return rows


@router.get(
    "/demand/failure-flow/examples",
    response_model=list[FlowExample],
    tags=["demand"],
    summary="The latest failure demands of one cell of the failure flow, with their words",
)
async def failure_flow_examples(
    sessions: Sessions,
    filters: Filtered,
    cause: Annotated[str, Query(min_length=1, max_length=120)],
    purpose: Annotated[str, Query(min_length=1, max_length=120)],
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
) -> list[FlowExample]:
    async with sessions() as session:
        return await figures.failure_flow_examples(
            session, filters, cause=cause, purpose=purpose, limit=limit
        )
