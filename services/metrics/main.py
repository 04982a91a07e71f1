"""The metrics service's composition root: engine, consumer, publisher and API, built in the
lifespan's scope and disposed at its end. Nothing is built at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from services.metrics.api import router
from services.metrics.config import MetricsSettings
from services.metrics.handler import ApplyMetricsBatch
from services.metrics.measures import ChartSettings
from services.metrics.metrics import MetricsServiceMetrics
from services.metrics.publisher import PurposeMetricsPublisher
from services.metrics.subscriptions import consumed_topics
from shared.auth.dependencies import add_auth_problem_handler
from shared.auth.store import ApiKeyStore
from shared.database.engine import create_engine, session_factory
from shared.kafka.consumer import RunnerOptions
from shared.kafka.producer import ManagedProducer
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
    key_store = ApiKeyStore(settings.auth.database_url, cache_ttl_s=settings.auth.cache_ttl_s)
    chart_settings = ChartSettings(
        baseline_points=settings.baseline_points, chart_points=settings.chart_points
    )
    producer = ManagedProducer(settings.kafka, client_id="demandscope-metrics-publisher")
    publisher = PurposeMetricsPublisher(
        sessions=sessions,
        send=producer.send_and_wait,
        topic=topic_name(settings.kafka, Topic.PURPOSE_METRICS),
        source=settings.source_name,
        metrics=metrics,
        chart_settings=chart_settings,
        window_days=settings.publish_window_days,
        debounce_s=settings.publish_debounce_s,
    )
    consumer = ConsumerService(
        settings=settings.kafka,
        topics=consumed_topics(settings.kafka),
        handler=ApplyMetricsBatch(
            sessions=sessions, metrics=metrics, on_changed=publisher.mark_changed
        ),
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
        await producer.start()
        await publisher.start()
        await consumer.start()
        try:
            yield
        finally:
            await consumer.stop()
            await publisher.stop()
            await producer.stop()
            await key_store.close()
            await engine.dispose()

    app = FastAPI(
        title="demandscope metrics",
        version="1",
        summary="Failure demand, end-to-end time and capability, per customer purpose.",
        description="Reads need an API key with the `read` scope: `Authorization: Bearer "
        "<key>` or `X-API-Key: <key>`. Figures are capability, never targets.",
        lifespan=lifespan,
    )
    app.state.sessions = sessions
    app.state.consumer = consumer
    app.state.publisher = publisher
    app.state.key_store = key_store
    app.state.chart_settings = chart_settings
    add_auth_problem_handler(app)
    app.include_router(router)
    app.include_router(
        ops_router(
            registry=registry,
            checks=lambda: {"kafka": consumer.is_ready, "database": database_ready},
        )
    )
    return app
