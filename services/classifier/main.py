"""The classifier's wiring: ``build`` opens everything in the lifespan, ``create_app`` opens
nothing (no file, directory or database), so importing or building the app is free."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import timedelta

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import DBAPIError

from services.classifier import api
from services.classifier.changelog import ContextRestorer
from services.classifier.components import ClassifierComponents
from services.classifier.config import ClassifierSettings
from services.classifier.context import ContextStore
from services.classifier.db.model_versions import ModelVersions
from services.classifier.db.repository import LabelRepository
from services.classifier.failure_share import read_estimated_prior
from services.classifier.handler import ClassifyDemands, Topics
from services.classifier.judgement import Thresholds
from services.classifier.live_model import ModelInUse, ModelKeeper
from services.classifier.metrics import ClassifierMetrics
from services.classifier.model_worker import ModelWorker, PollPredictions, PredictingRunner
from services.classifier.training import TrainingSources
from services.classifier.versions import holder_name
from shared.auth.store import ApiKeyStore
from shared.database.engine import create_engine
from shared.events import CaseEvent, DemandLabelled, DemandReceived
from shared.kafka.consumer import ConsumerRunner, RunnerOptions
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.service import ConsumerService
from shared.service.app import service_app
from shared.service.collector import collect_young_less_often
from shared.service.supervisor import BackgroundTask
from shared.topics import Topic, topic_name


async def build(settings: ClassifierSettings, stack: AsyncExitStack) -> ClassifierComponents:
    """Open the label store, the key store and the model (loaded, or trained on a fresh
    machine), and make the consumer; each is closed by ``stack`` in reverse order."""
    collect_young_less_often(stack)
    registry = CollectorRegistry()
    metrics = ClassifierMetrics(registry)
    engine = create_engine(settings.database_url)
    stack.push_async_callback(engine.dispose)
    key_store = ApiKeyStore(settings.auth.database_url, cache_ttl_s=settings.auth.cache_ttl_s)
    stack.push_async_callback(key_store.close)
    labels = LabelRepository(engine)
    context = ContextStore(
        window=timedelta(days=settings.context_window_days),
        max_demands=settings.max_demands_per_customer,
    )

    worker: ModelWorker | None = None
    if settings.model_worker:
        # Started first, so that its imports run beside the model's load; never waited for
        # (restart to ready): until it holds the model in use, predictions are made here.
        worker = ModelWorker(polls=metrics.model_worker_polls)
        await worker.start()
        stack.push_async_callback(worker.close)

    def swapped(model: ModelInUse) -> None:
        metrics.model.info({"version": model.version})
        metrics.model_swaps.inc()
        if worker is not None:
            worker.use(model)  # the worker predicts with the version in use, once it has it

    def polled(fleet_version: str | None) -> None:
        served = keeper.current.version
        metrics.model_behind.set(int(fleet_version is not None and fleet_version != served))

    keeper = make_keeper(settings, ModelVersions(engine), labels, swapped, polled)
    try:
        # The fleet's current version, or trained from the seed data on a fresh database.
        await keeper.load()
    except DBAPIError as error:
        where = engine.url.render_as_string(hide_password=True)
        raise RuntimeError(
            f"the classifier database {where} is unreachable or not migrated "
            f"(run `demandscope classifier migrate`): {error.orig!r}"
        ) from error

    demands = topic_name(settings.kafka, Topic.DEMAND_RECEIVED)
    cases = topic_name(settings.kafka, Topic.CASE_EVENTS)
    forwarded = topic_name(settings.kafka, Topic.CLASSIFIER_CONTEXT_LABELS)
    restorer = ContextRestorer(
        settings=settings.kafka,
        store=context,
        changelog_topic=topic_name(settings.kafka, Topic.CLASSIFIER_CONTEXT),
        keyed_topics={demands, cases, forwarded},
    )
    topics = Topics(
        classified=topic_name(settings.kafka, Topic.DEMAND_CLASSIFIED),
        context=topic_name(settings.kafka, Topic.CLASSIFIER_CONTEXT),
        forwarded_labels=forwarded,
    )
    predictions = PollPredictions(worker, demands) if worker is not None else None
    handler = ClassifyDemands(
        topics=topics,
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
        predictions=predictions,
    )
    consumer = ConsumerService(
        settings=settings.kafka,
        topics={
            demands: DemandReceived,
            cases: CaseEvent,
            topic_name(settings.kafka, Topic.DEMAND_LABELS): DemandLabelled,
            forwarded: DemandLabelled,
        },
        handler=handler,
        options=runner_options(settings, topics),
        metrics=ConsumerMetrics(registry),
        transactional_id_prefix=settings.transactional_id or settings.group_id,
        partition_listener=restorer,
        runner_factory=(
            functools.partial(
                PredictingRunner, predictions=predictions, model=lambda: keeper.current
            )
            if predictions is not None
            else ConsumerRunner
        ),
    )
    background = [consumer.background_task()]
    if settings.model_watch_interval_s > 0:
        background.append(BackgroundTask("model-watch", keeper.watch))
    if settings.retrain_interval_s > 0:
        background.append(BackgroundTask("model-retrain", keeper.retrain_on_schedule))
    return ClassifierComponents(
        registry=registry,
        key_store=key_store,
        background=background,
        consumer=consumer,
        model=keeper,
        context=context,
        labels=labels,
        model_worker=worker,
    )


def make_keeper(
    settings: ClassifierSettings,
    versions: ModelVersions,
    labels: LabelRepository,
    on_swap: Callable[[ModelInUse], None],
    on_poll: Callable[[str | None], None],
) -> ModelKeeper:
    """The model keeper as the settings say (opens nothing: ``load`` does)."""
    return ModelKeeper(
        versions=versions,
        sources=TrainingSources(
            seed_examples=settings.seed_examples,
            taxonomy=settings.taxonomy,
            general_corpus=settings.general_corpus,
            label_weight=settings.label_weight,
        ),
        labels=labels,
        holder=holder_name(),  # the pod (host) name, the process and a nonce
        watch_interval_s=settings.model_watch_interval_s,
        retrain_interval_s=settings.retrain_interval_s,
        on_swap=on_swap,
        on_poll=on_poll,
        lease_ttl_s=settings.training_lease_s,
        import_dir=settings.model_dir,
        failure_estimate=functools.partial(
            read_estimated_prior,
            settings.kafka,
            timeout_s=settings.failure_estimate_timeout_s,
        ),
        demand_prior=settings.demand_prior(),
    )


def create_app(settings: ClassifierSettings | None = None) -> FastAPI:
    return service_app(
        service="classifier",
        settings=settings or ClassifierSettings(),
        build=build,
        title="demandscope classifier",
        summary="Labels each demand as value or failure demand and names its purpose.",
        description="Reads `demand.received`, `case.events` and `demand.labels`; writes "
        "`demand.classified` and the customers' context in one Kafka transaction. Every route "
        "but /healthz, /readyz and /metrics needs an API key.",
        routers=[api.router],
    )


def runner_options(settings: ClassifierSettings, topics: Topics) -> RunnerOptions:
    """The consumer's loop: transactional, one transaction a poll, and every topic the
    handler writes to, so that a transaction the broker left without markers can be ended
    over them (shared/kafka/transactions.py)."""
    return RunnerOptions(
        group_id=settings.group_id,
        client_id="demandscope-classifier",
        source=settings.source_name,
        max_batch=settings.max_batch,
        transactional=True,
        co_partitioned=True,
        group_instance_id=settings.instance_id or None,
        one_transaction_per_poll=True,
        # A fetch waits up to fetch_wait_ms for more records (a megabyte: a backlog never
        # waits), so each poll's fixed cost (~7 ms of CPU: a transaction, a prediction)
        # is paid less often: at 1,000 demands/s and 10 ms, 483-542 -> 373 µs of CPU a
        # demand, produce -> visible p50 30-32 -> 39-42 ms (docs/performance.md, round
        # eight). With no wait, a fetch answers as soon as one record is there.
        fetch_min_bytes=1024 * 1024 if settings.fetch_wait_ms else 1,
        fetch_max_wait_ms=settings.fetch_wait_ms or 500,
        output_topics=tuple(
            t for t in (topics.classified, topics.context, topics.forwarded_labels) if t
        ),
    )
