"""The classifier's composition root: ops endpoints plus the consume-classify-produce loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry

from services.classifier.changelog import ContextRestorer
from services.classifier.config import ClassifierSettings
from services.classifier.context import ContextStore
from services.classifier.handler import ClassifyDemands, Topics
from services.classifier.judgement import Thresholds
from services.classifier.label_store import LabelStore
from services.classifier.live_model import ModelInUse, ModelKeeper
from services.classifier.metrics import ClassifierMetrics
from services.classifier.training import TrainingSources
from shared.events import CaseEvent, DemandLabelled, DemandReceived
from shared.kafka.consumer import RunnerOptions
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.service import ConsumerService
from shared.observability.ops import ops_router
from shared.topics import Topic, topic_name


def create_app(settings: ClassifierSettings | None = None) -> FastAPI:
    settings = settings or ClassifierSettings()
    registry = CollectorRegistry()
    metrics = ClassifierMetrics(registry)
    labels = LabelStore(settings.model_dir)
    context = ContextStore(
        window=timedelta(days=settings.context_window_days),
        max_demands=settings.max_demands_per_customer,
    )

    def swapped(model: ModelInUse) -> None:
        metrics.model.info({"version": model.version})
        metrics.model_swaps.inc()

    keeper = ModelKeeper(
        model_dir=settings.model_dir,
        sources=TrainingSources(
            seed_examples=settings.seed_examples,
            taxonomy=settings.taxonomy,
            label_weight=settings.label_weight,
        ),
        labels=labels,
        watch_interval_s=settings.model_watch_interval_s,
        retrain_interval_s=settings.retrain_interval_s,
        on_swap=swapped,
    )
    demands = topic_name(settings.kafka, Topic.DEMAND_RECEIVED)
    cases = topic_name(settings.kafka, Topic.CASE_EVENTS)
    restorer = ContextRestorer(
        settings=settings.kafka,
        store=context,
        changelog_topic=topic_name(settings.kafka, Topic.CLASSIFIER_CONTEXT),
        keyed_topics={demands, cases},
    )
    handler = ClassifyDemands(
        topics=Topics(
            classified=topic_name(settings.kafka, Topic.DEMAND_CLASSIFIED),
            context=topic_name(settings.kafka, Topic.CLASSIFIER_CONTEXT),
        ),
        source=settings.source_name,
        model=lambda: keeper.current,
        context=context,
        labels=labels,
        thresholds=Thresholds(
            review_threshold=settings.review_threshold,
            unknown_threshold=settings.unknown_threshold,
            repeat_window=timedelta(days=settings.repeat_window_days),
        ),
        metrics=metrics,
    )
    consumer = ConsumerService(
        settings=settings.kafka,
        topics={
            demands: DemandReceived,
            cases: CaseEvent,
            topic_name(settings.kafka, Topic.DEMAND_LABELS): DemandLabelled,
        },
        handler=handler,
        options=RunnerOptions(
            group_id=settings.group_id,
            client_id="demandscope-classifier",
            source=settings.source_name,
            max_batch=settings.max_batch,
            transactional=True,
            co_partitioned=True,
        ),
        metrics=ConsumerMetrics(registry),
        transactional_id=settings.transactional_id,
        partition_listener=restorer,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await keeper.start()  # loads CURRENT, or trains from the seed data on a fresh machine
        await consumer.start()
        try:
            yield
        finally:
            await consumer.stop()
            await keeper.stop()
            labels.close()

    app = FastAPI(
        title="demandscope classifier",
        version="1",
        summary="Labels each demand as value or failure demand and names its purpose.",
        lifespan=lifespan,
    )
    app.state.consumer = consumer
    app.state.model_keeper = keeper
    app.state.context = context
    app.include_router(ops_router(registry=registry, checks=lambda: {"kafka": consumer.is_ready}))
    app.include_router(_model_router(keeper))
    return app


def _model_router(keeper: ModelKeeper) -> APIRouter:
    router = APIRouter(tags=["model"])

    @router.get("/v1/model", summary="The model version classifying the stream now")
    async def current_model() -> dict[str, str]:
        return {"model_version": keeper.current.version}

    @router.post(
        "/v1/retrain",
        summary="Train on the seed examples and people's labels now, then classify with it",
    )
    async def retrain() -> dict[str, str]:
        return {"model_version": await keeper.retrain("command")}

    return router
