"""The classifier's composition root: ops endpoints plus the consume-classify-produce loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.classifier.config import ClassifierSettings
from services.classifier.handler import ClassifyDemands
from services.classifier.metrics import ClassifierMetrics
from shared.events import DemandReceived
from shared.kafka.consumer import RunnerOptions
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.service import ConsumerService
from shared.observability.ops import ops_router
from shared.topics import Topic, topic_name


def create_app(settings: ClassifierSettings | None = None) -> FastAPI:
    settings = settings or ClassifierSettings()
    registry = CollectorRegistry()
    metrics = ClassifierMetrics(registry)
    handler = ClassifyDemands(
        output_topic=topic_name(settings.kafka, Topic.DEMAND_CLASSIFIED),
        source=settings.source_name,
        metrics=metrics,
    )
    consumer = ConsumerService(
        settings=settings.kafka,
        topics={topic_name(settings.kafka, Topic.DEMAND_RECEIVED): DemandReceived},
        handler=handler,
        options=RunnerOptions(
            group_id=settings.group_id,
            client_id="demandscope-classifier",
            source=settings.source_name,
            max_batch=settings.max_batch,
            transactional=True,
        ),
        metrics=ConsumerMetrics(registry),
        transactional_id=settings.transactional_id,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await consumer.start()
        try:
            yield
        finally:
            await consumer.stop()

    app = FastAPI(
        title="demandscope classifier",
        version="1",
        summary="Labels each demand as value or failure demand and names its purpose.",
        lifespan=lifespan,
    )
    app.state.consumer = consumer
    app.include_router(ops_router(registry=registry, checks=lambda: {"kafka": consumer.is_ready}))
    return app
