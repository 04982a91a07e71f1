"""``routers()`` and ``install(app)``: what the metrics app needs to serve the pages.

``install`` adds the static mounts (the pages' own CSS and script, and the vendored
libraries from the assets folder, ``check_dir=False`` so that building the app opens
nothing and a missing folder is a 404, not a failure to start) and turns ``SignInRequired``
into a redirect to the sign-in page for a browser (``HX-Redirect`` for htmx).
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from services.metrics.pages import queues, routes, sign_in
from services.metrics.pages.settings import PagesSettings
from services.metrics.pages.web import PREFIX, STATIC
from shared.auth.sessions import SignInRequired
from shared.service.problems import problem_response


def routers() -> list[APIRouter]:
    return [sign_in.router, routes.router, queues.router]


def install(app: FastAPI, settings: PagesSettings) -> None:
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC, check_dir=False), "pages-static")
    app.mount(
        f"{PREFIX}/vendor",
        StaticFiles(directory=settings.assets_dir, check_dir=False),
        "pages-vendor",
    )

    async def sign_in_first(request: Request, error: Exception) -> Response:
        assert isinstance(error, SignInRequired)
        path = request.url.path
        if not (path == "/" or path.startswith(f"{PREFIX}/") or path == PREFIX):
            return problem_response(error)
        asked = path + (f"?{request.url.query}" if request.url.query else "")
        target = f"{PREFIX}/sign-in?next={quote(asked)}"
        if request.headers.get("HX-Request") == "true":
            return JSONResponse({}, status_code=401, headers={"HX-Redirect": target})
        if request.method in {"GET", "HEAD"}:
            return RedirectResponse(target, status_code=303)
        return problem_response(error)

    app.add_exception_handler(SignInRequired, sign_in_first)
