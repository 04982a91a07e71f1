"""The metrics service's wiring: ``build`` opens its resources in the lifespan, ``create_app``
only describes the app (it opens nothing, so importing or building it touches no file)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from contextlib import AsyncExitStack
from functools import partial

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url

from services.metrics import pages
from services.metrics.api import router
from services.metrics.audit import QueueTextPurge, audit_policy
from services.metrics.changes import ChangeRecorder
from services.metrics.components import MetricsComponents
from services.metrics.config import MetricsSettings
from services.metrics.figures_api import router as figures_router
from services.metrics.handler import ApplyMetricsBatch
from services.metrics.live_decode import DecodeWorker, OffloadingRunner
from services.metrics.metrics import MetricsServiceMetrics
from services.metrics.publisher import PurposeMetricsPublisher
from services.metrics.service import ChartSettings
from services.metrics.signals import SignalOutbox
from services.metrics.subscriptions import consumed_topics
from shared.auth.account_store import AccountStore
from shared.auth.sessions import PeopleGate
from shared.auth.store import ApiKeyStore
from shared.database.checkpoint import background_checkpoint
from shared.database.engine import create_engine, session_factory
from shared.kafka.consumer import ConsumerRunner, RunnerOptions
from shared.kafka.producer import ManagedProducer
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.service import ConsumerService
from shared.ownership import load_purpose_owners
from shared.service.app import service_app
from shared.service.collector import collect_young_less_often
from shared.service.supervisor import BackgroundTask
from shared.topics import Topic, topic_name


async def build(settings: MetricsSettings, stack: AsyncExitStack) -> MetricsComponents:
    """Open the database, the key store and the producer (closed in reverse order on
    ``stack``); the consumer, the producer's upkeep, the publisher and the purge of the
    queues' texts are background tasks."""
    collect_young_less_often(stack)
    registry = CollectorRegistry()
    metrics = MetricsServiceMetrics(registry)
    owners = load_purpose_owners(settings.taxonomy)  # who owns each purpose: its signals' team
    # A SQLite file's log is checkpointed in the background, off the commits' path
    # (shared/database/checkpoint.py); the engine's own checkpoint is only the backstop.
    checkpoint = background_checkpoint(
        settings.database_url, on_failure=metrics.wal_checkpoint_failures.inc
    )
    engine = create_engine(settings.database_url, wal_autocheckpoint=checkpoint.wal_autocheckpoint)
    stack.push_async_callback(engine.dispose)
    sessions = session_factory(engine)
    key_store = ApiKeyStore(settings.auth.database_url, cache_ttl_s=settings.auth.cache_ttl_s)
    stack.push_async_callback(key_store.close)
    people = PeopleGate(settings.people, AccountStore(key_store.engine))
    producer = ManagedProducer(settings.kafka, client_id="demandscope-metrics-publisher")
    stack.push_async_callback(producer.close)
    chart_settings = ChartSettings(
        baseline_points=settings.baseline_points, chart_points=settings.chart_points
    )
    signal_outbox = SignalOutbox(
        sessions=sessions,
        send=producer.send_and_wait,
        topic=topic_name(settings.kafka, Topic.CAPABILITY_SIGNALS),
        source=settings.source_name,
        metrics=metrics,
        interval_s=settings.signal_publish_interval_s,
    )
    publisher = PurposeMetricsPublisher(
        sessions=sessions,
        send=producer.send_and_wait,
        topic=topic_name(settings.kafka, Topic.PURPOSE_METRICS),
        source=settings.source_name,
        metrics=metrics,
        chart_settings=chart_settings,
        window_days=settings.publish_window_days,
        debounce_s=settings.publish_debounce_s,
        owners=owners,
        on_signals=signal_outbox.wake,
    )
    audit = audit_policy(settings)
    purge = QueueTextPurge(
        sessions=sessions,
        policy=audit.queues,
        interval_s=settings.queue_purge_interval_s,
        metrics=metrics,
    )
    topics = consumed_topics(settings.kafka)
    runner_factory: Callable[..., ConsumerRunner] = ConsumerRunner
    if settings.decode_worker and make_url(settings.database_url).get_backend_name() == "sqlite":
        # Started now (its imports take ~1 s of the second core), stopped with the service;
        # until it is up, batches are decoded here (live_decode.py).
        worker = DecodeWorker(topics, "sqlite")
        await worker.start()
        stack.push_async_callback(worker.close)
        runner_factory = partial(
            OffloadingRunner, worker=worker, batches=metrics.decode_worker_batches
        )
    consumer = ConsumerService(
        settings=settings.kafka,
        topics=topics,
        runner_factory=runner_factory,
        handler=ApplyMetricsBatch(
            sessions=sessions, metrics=metrics, on_changed=publisher.mark_changed, audit=audit
        ),
        options=RunnerOptions(
            group_id=settings.group_id,
            client_id="demandscope-metrics",
            source=settings.source_name,
            max_batch=settings.max_batch,
            group_instance_id=settings.instance_id or None,
        ),
        metrics=ConsumerMetrics(registry),
    )
    # What is built by now (modules, the app, settings, clients) lives as long as the
    # process: move it out of the collector's generations, so that the full collections a
    # batch's many short-lived rows set off no longer walk it every time (as the classifier
    # does once its model is loaded). In-process, the write path's CPU per event fell by
    # 15-20% with it (docs/performance.md).
    gc.freeze()
    return MetricsComponents(
        registry=registry,
        key_store=key_store,
        settings=settings,
        engine=engine,
        sessions=sessions,
        metrics=metrics,
        chart_settings=chart_settings,
        producer=producer,
        publisher=publisher,
        signal_outbox=signal_outbox,
        owners=owners,
        consumer=consumer,
        people=people,
        audit=audit,
        purge=purge,
        changes=ChangeRecorder(
            send=producer.send_and_wait,
            kafka=settings.kafka,
            source=settings.source_name,
            sessions=sessions,
        ),
        background=[
            consumer.background_task(),
            BackgroundTask("producer", producer.maintain),
            publisher.background_task(),
            signal_outbox.background_task(),
            purge.background_task(),
            *checkpoint.tasks,
        ],
    )


def create_app(settings: MetricsSettings | None = None) -> FastAPI:
    settings = settings or MetricsSettings()
    app = service_app(
        service="metrics",
        settings=settings,
        build=build,
        title="demandscope metrics",
        summary="Failure demand, end-to-end time and capability, per customer purpose.",
        description="Reads need an API key with the `read` scope: `Authorization: Bearer "
        "<key>` or `X-API-Key: <key>`; the review and audit queues, which show customers' "
        "(redacted) words, need `labels:write` too. Figures are capability, never targets; "
        "every failure share carries its estimate from the blind audit, with a 95% interval, "
        "or says it is not yet validated. Errors are RFC 9457 problem documents "
        "(`application/problem+json`).",
        routers=[router, figures_router, *pages.routers()],
    )
    pages.install(app, settings.pages)
    return app
