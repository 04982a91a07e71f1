"""/healthz, /readyz and /metrics: the same three endpoints on every service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadinessCheck = Callable[[], Awaitable[bool]]


def ops_router(
    *, registry: CollectorRegistry, checks: Callable[[], Mapping[str, ReadinessCheck]]
) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: the broker and the database are reachable",
        responses={503: {"description": "A dependency is not reachable"}},
    )
    async def readyz() -> JSONResponse:
        named = dict(checks())
        results = await asyncio.gather(
            *(check() for check in named.values()), return_exceptions=True
        )
        status = {
            name: "ok" if result is True else "unavailable"
            for name, result in zip(named, results, strict=True)
        }
        ready = all(value == "ok" for value in status.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": status},
            status_code=200 if ready else 503,
        )

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
