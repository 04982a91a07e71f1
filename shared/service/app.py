"""``service_app``: the FastAPI app of a service, built the same way for all three.

The lifespan is the only place where anything is opened::

    async with AsyncExitStack() as stack:
        components = await build(settings, stack)     # opens engines, clients, stores
        async with Supervisor(...):                   # runs components.background
            yield                                     # serve requests
    # closed in reverse order: background tasks first, then what build opened

``create_app`` and imports open nothing (no file, database, directory or socket), so an app
can be built, inspected (OpenAPI) and thrown away for free.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TypeVar

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.service.components import ServiceComponents
from shared.service.problems import install_problem_handlers
from shared.service.request_bodies import BodyLimit, RequestObserver
from shared.service.settings import ServiceSettings
from shared.service.supervisor import Supervisor, SupervisorMetrics

S = TypeVar("S", bound=ServiceSettings)
C = TypeVar("C", bound=ServiceComponents)

Build = Callable[[S, AsyncExitStack], Awaitable[C]]


def service_app(
    *,
    service: str,
    settings: S,
    build: Callable[[S, AsyncExitStack], Awaitable[C]],
    title: str,
    summary: str,
    description: str = "",
    routers: Sequence[APIRouter] = (),
    observe_request: RequestObserver | None = None,
) -> FastAPI:
    """The app of one service: its routers, the ops endpoints and the one error format.

    ``observe_request`` is told each request's status and duration (``BodyLimit``).

    ``app.state.on_fatal`` (set by the process entrypoint, ``shared.service.serve``) is
    called when a background task dies for good, so the server exits and is restarted.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            components = await build(settings, stack)
            supervisor = Supervisor(
                service=service,
                metrics=SupervisorMetrics.register(components.registry),
                on_fatal=getattr(app.state, "on_fatal", None),
                shutdown_timeout_s=settings.shutdown_timeout_s,
                initial_backoff_s=settings.restart_backoff_s,
                max_backoff_s=settings.restart_backoff_max_s,
            )
            for task in components.background:
                supervisor.add(task)
            await stack.enter_async_context(supervisor)
            app.state.components = components
            app.state.supervisor = supervisor
            try:
                yield
            finally:
                app.state.components = None

    app = FastAPI(
        title=title,
        version="1",
        summary=summary,
        description=description,
        lifespan=lifespan,
        # The services report through Prometheus (/metrics) and configure no OpenTelemetry
        # provider; FastAPI's native telemetry would still look for one in the environment
        # and the global providers on every request (3% of an intake request, profiled).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_problem_handlers(app)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.http_body_timeout_s,
        observe=observe_request,
    )
    for router in routers:
        app.include_router(router)
    app.include_router(ops_router())
    return app


def ops_router() -> APIRouter:
    """/healthz, /readyz and /metrics: the same three endpoints on every service."""
    router = APIRouter(tags=["operations"])

    @router.get(
        "/healthz",
        summary="Liveness: the process can still recover by itself",
        responses={503: {"description": "A background task died for good: restart the process"}},
    )
    async def healthz(request: Request) -> JSONResponse:
        supervisor: Supervisor | None = getattr(request.app.state, "supervisor", None)
        if supervisor is not None and not supervisor.is_live():
            return JSONResponse(
                {"status": "dead", "reason": supervisor.fatal_reason}, status_code=503
            )
        return JSONResponse({"status": "ok"})

    @router.get(
        "/readyz",
        summary="Readiness: background tasks running, broker and databases reachable",
        responses={503: {"description": "Not ready: see checks and tasks"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        supervisor: Supervisor | None = getattr(request.app.state, "supervisor", None)
        components: ServiceComponents | None = getattr(request.app.state, "components", None)
        if supervisor is None or components is None:
            return JSONResponse({"status": "starting", "checks": {}}, status_code=503)
        named = dict(components.readiness_checks())
        results = await asyncio.gather(
            *(check() for check in named.values()), return_exceptions=True
        )
        checks = {
            name: "ok" if result is True else "unavailable"
            for name, result in zip(named, results, strict=True)
        }
        checks["background"] = "ok" if supervisor.is_ready() else "unavailable"
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {
                "status": "ready" if ready else "not ready",
                "checks": checks,
                "tasks": supervisor.status(),
            },
            status_code=200 if ready else 503,
        )

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        components: ServiceComponents | None = getattr(request.app.state, "components", None)
        if components is None:
            return Response("starting\n", status_code=503, media_type="text/plain")
        await components.before_scrape()
        return Response(generate_latest(components.registry), media_type=CONTENT_TYPE_LATEST)

    return router
