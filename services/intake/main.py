"""Intake's composition root: build the app and its clients in a lifespan, nothing at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake.api import IntakeContext, router
from services.intake.config import IntakeSettings
from services.intake.ledger import IdempotencyLedger
from services.intake.metrics import IntakeMetrics
from services.intake.openapi_docs import install_openapi
from services.intake.problems import IntakeProblem, problem_response, render_problem
from services.intake.redaction import Redactor
from services.intake.request_timing import RequestTiming
from services.intake.service import IntakeService
from services.intake.validation import FieldProblem
from shared.auth.dependencies import add_auth_problem_handler
from shared.auth.store import ApiKeyStore
from shared.database.engine import create_engine
from shared.kafka.producer import ManagedProducer
from shared.observability.ops import ops_router

log = logging.getLogger(__name__)
_SQLITE_SWITCH_INTERVAL_S = 0.0005


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    registry = CollectorRegistry()
    metrics = IntakeMetrics(registry)
    producer = ManagedProducer(settings.kafka, client_id="demandscope-intake")
    engine = create_engine(settings.database_url)
    ledger = IdempotencyLedger(engine, lease=timedelta(seconds=settings.claim_lease_s))
    key_store = ApiKeyStore(settings.auth.database_url, cache_ttl_s=settings.auth.cache_ttl_s)
    retention = timedelta(days=settings.idempotency_retention_days)

    async def purge_expired_ids() -> None:
        while True:
            try:
                forgotten = await ledger.purge(retention=retention)
                log.info("forgot %d event ids older than %s", forgotten, retention)
            except Exception as error:  # the next round tries again
                log.warning("purging expired event ids failed: %r", error)
            await asyncio.sleep(settings.purge_interval_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if engine.dialect.name == "sqlite":
            # aiosqlite runs each statement on its own thread. With the default 5 ms GIL
            # switch interval, a statement waited up to ~70 ms behind the request handlers
            # (measured under bench/intake.py); 0.5 ms makes the hops prompt.
            sys.setswitchinterval(_SQLITE_SWITCH_INTERVAL_S)
        await producer.start()
        await ledger.start()
        purger = asyncio.create_task(purge_expired_ids(), name="ledger-purge")
        try:
            yield
        finally:
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
            await producer.stop()
            await ledger.stop()
            await engine.dispose()
            await key_store.close()

    app = FastAPI(
        title="demandscope intake",
        version="1",
        summary="The front door: contact-centre systems post every customer demand here.",
        description=(
            "Every request needs an API key (`Authorization: Bearer <key>` or `X-API-Key`), "
            "made with `demandscope keys create --source NAME`. Errors are RFC 9457 "
            "problem documents listing each faulty field and why."
        ),
        lifespan=lifespan,
    )
    app.state.key_store = key_store
    app.state.intake = IntakeContext(
        service=IntakeService(
            producer=producer,
            ledger=ledger,
            kafka=settings.kafka,
            source_name=settings.source_name,
            metrics=metrics,
        ),
        settings=settings,
        redactor=Redactor(settings.redaction_patterns),
    )
    app.include_router(router)
    app.include_router(
        ops_router(
            registry=registry,
            checks=lambda: {
                "kafka": producer.is_ready,
                "database": lambda: _reachable(engine),
                "auth_database": lambda: _reachable(key_store.engine),
            },
        )
    )
    app.add_middleware(RequestTiming, histogram=metrics.request_seconds)
    app.add_exception_handler(IntakeProblem, render_problem)
    add_auth_problem_handler(app)
    install_openapi(app)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            FieldProblem(".".join(str(part) for part in item["loc"]) or "request", item["msg"])
            for item in error.errors()
        ]
        return problem_response(IntakeProblem(422, "Invalid request", problems=problems))

    return app


async def _reachable(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
