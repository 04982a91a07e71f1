"""The pages' routes: overview, purpose, failure flow, changes to the system, CSV exports.

Every route is guarded by a role (``Viewer``/``Reviewer``), every figure comes from the
service calls the JSON API makes (views.py), and every form posts the session's CSRF token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from services.metrics import figures, service
from services.metrics.api import Charts, Components, Sessions
from services.metrics.api import OrganisationFiltered as Filtered  # people: every source
from services.metrics.csv_export import csv_response
from services.metrics.db import measures
from services.metrics.domain.windows import Granularity
from services.metrics.pages import views
from services.metrics.pages.views import ChartView, FilterForm
from services.metrics.pages.web import PREFIX, Reviewer, Viewer, render, with_query
from services.metrics.schemas import ChangeIn
from shared.auth.accounts import Role
from shared.events import Channel
from shared.privacy import personal_data_kind
from shared.service.problems import ProblemError

router = APIRouter(include_in_schema=False)


def _form(
    period: Annotated[str | None, Query(max_length=60)] = None,
    channel: Channel | None = None,
    team: Annotated[str | None, Query(max_length=200)] = None,
    granularity: Granularity = Granularity.WEEK,
) -> FilterForm:
    return FilterForm(
        period=period or None,
        channel=channel.value if channel else None,
        team=team or None,
        granularity=granularity,
    )


Filters = Annotated[FilterForm, Depends(_form)]


@router.get("/")
async def home(_who: Viewer) -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/overview", status_code=303)


@router.get(PREFIX)
async def pages_home(_who: Viewer) -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/overview", status_code=303)


@router.get(f"{PREFIX}/overview", response_class=HTMLResponse)
async def overview(
    request: Request,
    who: Viewer,
    sessions: Sessions,
    components: Components,
    filters: Filtered,
    form: Filters,
) -> HTMLResponse:
    async with sessions() as session:
        page = await views.overview(
            session,
            filters,
            form,
            average_seconds=components.settings.pages.average_handling_seconds,
        )
    return render(
        request, "overview.html", who, title="Overview", active="overview", page=page, form=form
    )


@router.get(PREFIX + "/purposes/{purpose:path}", response_class=HTMLResponse)
async def purpose(
    purpose: str,
    request: Request,
    who: Viewer,
    sessions: Sessions,
    filters: Filtered,
    chart_settings: Charts,
    form: Filters,
) -> HTMLResponse:
    async with sessions() as session:
        page = await views.purpose_page(
            session, purpose, filters, form, chart_settings=chart_settings
        )
    if page is None:
        raise ProblemError(404, "Unknown purpose", detail=f"No demand for purpose {purpose!r}.")
    return render(
        request,
        "purpose.html",
        who,
        title=f"Purpose: {purpose}",
        active="overview",
        page=page,
        form=form,
        may_record=who.person.role.allows(Role.REVIEWER),
        now=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M"),
    )


@router.get(f"{PREFIX}/failure-flow", response_class=HTMLResponse)
async def failure_flow(
    request: Request, who: Viewer, sessions: Sessions, filters: Filtered, form: Filters
) -> HTMLResponse:
    async with sessions() as session:
        page = await views.flow_page(session, filters, form)
    return render(
        request,
        "failure_flow.html",
        who,
        title="Failure flow",
        active="failure-flow",
        page=page,
        form=form,
    )


@router.get(f"{PREFIX}/failure-flow/examples", response_class=HTMLResponse)
async def failure_flow_examples(
    request: Request,
    who: Viewer,
    sessions: Sessions,
    filters: Filtered,
    form: Filters,
    cause: Annotated[str, Query(min_length=1, max_length=120)],
    purpose: Annotated[str, Query(min_length=1, max_length=120)],
) -> HTMLResponse:
    """A fragment for htmx (the examples under the cross-tab), or a page of its own."""
    async with sessions() as session:
        examples = await figures.failure_flow_examples(
            session, filters, cause=cause, purpose=purpose
        )
    fragment = request.headers.get("HX-Request") == "true"
    return render(
        request,
        "flow_examples.html",
        who,
        title=f"Failure demand about {purpose} caused by {cause}",
        active="failure-flow",
        fragment=fragment,
        examples=examples,
        cause=cause,
        purpose=purpose,
        form=form,
        api_url=with_query(
            "/v1/demand/failure-flow/examples", form.query(cause=cause, purpose=purpose)
        ),
    )


@router.get(f"{PREFIX}/changes", response_class=HTMLResponse)
async def changes(request: Request, who: Viewer, sessions: Sessions) -> HTMLResponse:
    async with sessions() as session:
        found = await views.all_changes(session)
        purposes = await measures.all_purposes(session)
    return render(
        request,
        "changes.html",
        who,
        title="Changes to the system",
        active="changes",
        changes=found,
        purposes=purposes,
        may_record=who.person.role.allows(Role.REVIEWER),
        now=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M"),
        recorded=request.query_params.get("recorded"),
        pending=request.query_params.get("pending") == "1",
    )


@router.post(f"{PREFIX}/changes")
async def record_change(
    who: Reviewer,
    components: Components,
    purpose: Annotated[str, Form(min_length=1, max_length=120)],
    changed_at: Annotated[str, Form(min_length=1, max_length=40)],
    note: Annotated[str, Form(max_length=2000)],
    back: Annotated[str | None, Form(max_length=400)] = None,
) -> RedirectResponse:
    """Record a change to the system (a reviewer or admin, with the session's CSRF token):
    the same call as ``POST /v1/purposes/{purpose}/changes``, with who recorded it. The
    page it returns to says when the change is recorded but not yet stored (shown)."""
    if personal_data_kind(purpose) is not None:  # as the API refuses it
        raise ProblemError(422, "Invalid change", detail="The purpose is personal data.")
    when = changed_at if "+" in changed_at or changed_at.endswith("Z") else f"{changed_at}Z"
    try:
        change = ChangeIn.model_validate({"changed_at": when, "note": note})
    except ValidationError as error:
        raise ProblemError(
            422, "Invalid change", detail="; ".join(e["msg"] for e in error.errors())
        ) from error
    event = service.change_event(
        purpose, change, recorded_by=who.person.username, now=datetime.now(UTC)
    )
    stored = await components.changes.record(event)
    target = back if back and back.startswith(f"{PREFIX}/") else f"{PREFIX}/changes"
    pending = "" if stored is not None else "&pending=1"
    return RedirectResponse(
        f"{target}{'&' if '?' in target else '?'}recorded={quote(purpose)}{pending}",
        status_code=303,
    )


@router.get(PREFIX + "/export/{name:path}")
async def export_csv(
    name: str,
    _who: Viewer,
    sessions: Sessions,
    components: Components,
    filters: Filtered,
    chart_settings: Charts,
    form: Filters,
) -> Response:
    """The CSV of a chart, for a person signed in: the API's rows in the API's CSV format."""
    if not name.endswith(".csv"):
        raise ProblemError(404, "Not found")
    name = name.removesuffix(".csv")
    chart: ChartView | None = None
    async with sessions() as session:
        if name.startswith("purpose/"):
            purpose_name, _, chart_name = name.removeprefix("purpose/").rpartition("/")
            page = await views.purpose_page(
                session, purpose_name, filters, form, chart_settings=chart_settings
            )
            if page is not None:
                candidates = page.charts + [c.chart for c in page.capability]
                chart = _named(candidates, chart_name)
        elif name == "failure-flow":
            chart = (await views.flow_page(session, filters, form)).chart
        else:
            overview = await views.overview(
                session,
                filters,
                form,
                average_seconds=components.settings.pages.average_handling_seconds,
            )
            chart = _named(overview.charts, name)
    if chart is None:
        raise ProblemError(404, "Unknown export", detail=f"No chart {name!r}.")
    return csv_response(list(chart.source), chart.model, name.replace("/", "-"))


_EXPORT_IDS = {
    "over-time": "trend",
    "purposes": "by-purpose",
    "by-channel": "by-channel",
    "capacity": "capacity",
    "failure-by-kind": "by-kind",
    "failure-by-cause": "by-cause",
    "end-to-end": "end-to-end",
}


def _named(candidates: list[ChartView], name: str) -> ChartView | None:
    wanted = _EXPORT_IDS.get(name, name.replace("capability-", "xmr-"))
    return next((c for c in candidates if c.id == wanted), None)
