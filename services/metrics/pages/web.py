"""What every page shares: the templates, ``render`` (session cookie, CSRF token, navigation,
whether the chart libraries are there) and the formatting of figures.

Reusable by any page of the service (the review and audit queues too)::

    @router.get("/pages/thing")
    async def thing(request: Request, who: Viewer) -> HTMLResponse:
        return render(request, "thing.html", who, title="Thing", rows=...)

A form posts ``csrf_token`` (``{{ csrf_field() }}``); htmx sends the ``X-CSRF-Token`` header
set on ``<body hx-headers>``, so every unsafe request carries the session's token.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from services.metrics.pages import vendor
from services.metrics.pages.settings import PagesSettings
from shared.auth.accounts import Role
from shared.auth.dependencies import require_person
from shared.auth.sessions import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, SignedIn

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/pages"

templates = Jinja2Templates(directory=str(TEMPLATES))

# The guards of the pages: a page declares who may see it (the route walk checks every page).
Viewer = Annotated[SignedIn, Depends(require_person(Role.VIEWER))]
Reviewer = Annotated[SignedIn, Depends(require_person(Role.REVIEWER))]
Admin = Annotated[SignedIn, Depends(require_person(Role.ADMIN))]

NAVIGATION = (
    ("overview", "Overview", f"{PREFIX}/overview"),
    ("failure-flow", "Failure flow", f"{PREFIX}/failure-flow"),
    ("changes", "Changes to the system", f"{PREFIX}/changes"),
    ("review", "Review queue", f"{PREFIX}/review"),
    ("audit", "Audit queue", f"{PREFIX}/audit"),
)


def purpose_url(purpose: str) -> str:
    return f"{PREFIX}/purposes/{quote(purpose, safe='')}"


def with_query(path: str, params: Mapping[str, Any]) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def duration(seconds: float | None) -> str:
    """Calendar time as people say it: 45 min, 5.2 h, 3.4 days."""
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


def number(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def day(moment: datetime | date | None) -> str:
    if moment is None:
        return "-"
    return moment.strftime("%Y-%m-%d")


def moment(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters.update(
    duration=duration, percent=percent, number=number, day=day, moment=moment
)
templates.env.globals.update(purpose_url=purpose_url, with_query=with_query, PREFIX=PREFIX)


# Defence in depth for pages that show customers' words: scripts only from this origin (the
# vendored libraries; Vega compiles its expressions with Function, hence 'unsafe-eval'), no
# framing (clickjacking), forms only to this origin, nothing fetched from anywhere else.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def pages_settings(request: Request) -> PagesSettings:
    components = getattr(request.app.state, "components", None)
    settings = getattr(getattr(components, "settings", None), "pages", None)
    return settings if isinstance(settings, PagesSettings) else PagesSettings()


def render(
    request: Request,
    template: str,
    who: SignedIn | None,
    *,
    csrf: str | None = None,
    set_cookie: str | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page, with what the base template needs; sets the session cookie when it is new."""
    token = who.csrf if who is not None else csrf or ""
    assets_missing = vendor.missing(pages_settings(request).assets_dir)
    response = templates.TemplateResponse(
        request,
        template,
        {
            "who": who.person if who is not None else None,
            "csrf_token": token,
            "csrf_header": CSRF_HEADER,
            "csrf_field": lambda: Markup(
                f'<input type="hidden" name="{CSRF_FIELD}" value="{escape(token)}">'
            ),
            "navigation": NAVIGATION,
            "charts_available": not assets_missing,
            "assets_missing": assets_missing,
            "assets_dir": str(pages_settings(request).assets_dir),
            **context,
        },
        status_code=status_code,
    )
    cookie = set_cookie or (who.set_cookie if who is not None else None)
    if cookie is not None:
        set_session_cookie(request, response, cookie)
    # Pages show the organisation's data: never cached by a browser or a proxy.
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(SECURITY_HEADERS)
    return response


def set_session_cookie(request: Request, response: HTMLResponse | Any, value: str) -> None:
    gate = getattr(getattr(request.app.state, "components", None), "people", None)
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=gate.settings.session_max_age_s if gate is not None else None,
        httponly=True,
        samesite="lax",
        secure=bool(gate is not None and gate.secure_cookie),
        path="/",
    )
