"""Signing in and out of the pages (accounts mode), and what a proxy-mode sign-in page says.

The sign-in form is CSRF-protected too (login CSRF): its token lives in an anonymous session
cookie; signing in replaces that session with a new one (a new token), so a session id
planted before signing in is worth nothing after.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.metrics.pages.web import PREFIX, Viewer, render, set_session_cookie
from shared.auth.dependencies import people_gate_of
from shared.auth.sessions import SESSION_COOKIE, new_session, tokens_match

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only a page of ours: never an open redirect to another site."""
    if target and target.startswith(f"{PREFIX}/") and not target.startswith("//"):
        return target
    return f"{PREFIX}/overview"


@router.get(f"{PREFIX}/sign-in", response_class=HTMLResponse)
async def sign_in_page(
    request: Request, next: Annotated[str | None, Query(max_length=400)] = None
) -> HTMLResponse:
    gate = people_gate_of(request)
    session = gate.session_of(request)
    fresh = None
    if session is None or session.username is not None:
        session = new_session(None)
        fresh = gate.encode(session)
    return render(
        request,
        "sign_in.html",
        None,
        csrf=session.csrf,
        set_cookie=fresh,
        title="Sign in",
        next=safe_next(next),
        proxy_mode=gate.proxy_mode,
        error=None,
    )


@router.post(f"{PREFIX}/sign-in", response_class=HTMLResponse)
async def sign_in(
    request: Request,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form(max_length=200)],
    next: Annotated[str | None, Form(max_length=400)] = None,
) -> Response:
    gate = people_gate_of(request)
    session = gate.session_of(request)
    if session is None or not tokens_match(csrf_token, session.csrf):
        fresh = new_session(None)
        return render(
            request,
            "sign_in.html",
            None,
            csrf=fresh.csrf,
            set_cookie=gate.encode(fresh),
            title="Sign in",
            next=safe_next(next),
            proxy_mode=gate.proxy_mode,
            error="The form had expired: please sign in again.",
            status_code=403,
        )
    person = None if gate.proxy_mode else await gate.accounts.authenticate(username, password)
    if person is None:
        return render(
            request,
            "sign_in.html",
            None,
            csrf=session.csrf,
            title="Sign in",
            next=safe_next(next),
            proxy_mode=gate.proxy_mode,
            error="That username and password do not match an enabled account.",
            status_code=401,
        )
    response = RedirectResponse(safe_next(next), status_code=303)
    set_session_cookie(request, response, gate.encode(new_session(person.username)))
    return response


@router.post(f"{PREFIX}/sign-out")
async def sign_out(_who: Viewer) -> RedirectResponse:
    """Ends the session in this browser (CSRF-checked, so no other site can sign you out)."""
    response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
