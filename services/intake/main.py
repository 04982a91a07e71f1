"""Intake's composition root: build the app and its clients in a lifespan, nothing at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from services.intake.api import problem, router
from services.intake.config import IntakeSettings
from services.intake.metrics import IntakeMetrics
from services.intake.service import Publisher
from shared.kafka.producer import ManagedProducer
from shared.observability.ops import ops_router


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    registry = CollectorRegistry()
    metrics = IntakeMetrics(registry)
    producer = ManagedProducer(settings.kafka, client_id="demandscope-intake")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await producer.start()
        try:
            yield
        finally:
            await producer.stop()

    app = FastAPI(
        title="demandscope intake",
        version="1",
        summary="The front door: contact-centre systems post every customer demand here.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.publisher = Publisher(
        producer=producer, kafka=settings.kafka, source_name=settings.source_name, metrics=metrics
    )
    app.include_router(router)
    app.include_router(ops_router(registry=registry, checks=lambda: {"kafka": producer.is_ready}))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        metrics.rejected.labels("demand", "invalid").inc()
        errors = [
            {
                "field": ".".join(str(part) for part in item["loc"] if part != "body") or "body",
                "reason": item["msg"],
            }
            for item in error.errors()
        ]
        return problem(422, "Invalid request", errors=errors)

    return app
