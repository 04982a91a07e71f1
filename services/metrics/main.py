"""The metrics service's composition root: engine, consumer and API built in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from services.metrics.api import router
from services.metrics.config import MetricsSettings
from services.metrics.db.engine import create_engine, session_factory
from services.metrics.handler import StoreClassifiedDemands
from services.metrics.metrics import MetricsServiceMetrics
from shared.events import DemandClassified
from shared.kafka.consumer import RunnerOptions
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.service import ConsumerService
from shared.observability.ops import ops_router
from shared.topics import Topic, topic_name


def create_app(settings: MetricsSettings | None = None) -> FastAPI:
    settings = settings or MetricsSettings()
    registry = CollectorRegistry()
    metrics = MetricsServiceMetrics(registry)
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    consumer = ConsumerService(
        settings=settings.kafka,
        topics={topic_name(settings.kafka, Topic.DEMAND_CLASSIFIED): DemandClassified},
        handler=StoreClassifiedDemands(sessions=sessions, metrics=metrics),
        options=RunnerOptions(
            group_id=settings.group_id,
            client_id="demandscope-metrics",
            source=settings.source_name,
            max_batch=settings.max_batch,
        ),
        metrics=ConsumerMetrics(registry),
    )

    async def database_ready() -> bool:
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await consumer.start()
        try:
            yield
        finally:
            await consumer.stop()
            await engine.dispose()

    app = FastAPI(
        title="demandscope metrics",
        version="1",
        summary="Failure demand, end-to-end time and capability, per customer purpose.",
        lifespan=lifespan,
    )
    app.state.sessions = sessions
    app.state.consumer = consumer
    app.include_router(router)
    app.include_router(
        ops_router(
            registry=registry,
            checks=lambda: {"kafka": consumer.is_ready, "database": database_ready},
        )
    )
    return app
