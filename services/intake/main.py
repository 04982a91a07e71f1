"""Intake's wiring: ``build`` opens everything in the lifespan, ``create_app`` opens nothing."""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import timedelta
from functools import partial

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.intake.api import post_demand, post_demand_batch, router
from services.intake.components import IntakeComponents
from services.intake.config import IntakeSettings
from services.intake.direct_routes import serve_directly
from services.intake.ledger import IdempotencyLedger
from services.intake.metrics import IntakeMetrics
from services.intake.openapi_docs import install_openapi
from services.intake.request_timing import observe_request
from services.intake.service import IntakeService
from shared.auth.store import ApiKeyStore
from shared.database.checkpoint import background_checkpoint
from shared.database.engine import create_engine
from shared.kafka.producer import ManagedProducer
from shared.privacy.redaction import Redactor
from shared.service.app import service_app
from shared.service.collector import collect_young_less_often
from shared.service.supervisor import BackgroundTask

DESCRIPTION = (
    "Every request needs an API key (`Authorization: Bearer <key>` or `X-API-Key`), "
    "made with `demandscope keys create --source NAME`. Errors are RFC 9457 "
    "problem documents listing each faulty field and why."
)


async def build(settings: IntakeSettings, stack: AsyncExitStack) -> IntakeComponents:
    """Opens the ledger's and the keys' databases and the producer; closes them on ``stack``.

    Background tasks: the producer's upkeep (connect, replace when broken), the ledger
    writer (group commits; on stop it lets queued confirmations land), the purge of
    expired ids and, on a SQLite file, the ledger log's checkpoint.
    """
    collect_young_less_often(stack)
    registry = CollectorRegistry()
    metrics = IntakeMetrics(registry)
    # A SQLite ledger's log is checkpointed in the background, off the writer's commits
    # (shared/database/checkpoint.py); the connections' own checkpoint is only the backstop.
    checkpoint = background_checkpoint(
        settings.database_url, on_failure=metrics.wal_checkpoint_failures.inc
    )
    backstop = checkpoint.wal_autocheckpoint
    engine = create_engine(settings.database_url, wal_autocheckpoint=backstop)
    stack.push_async_callback(engine.dispose)
    key_store = ApiKeyStore(settings.auth.database_url, cache_ttl_s=settings.auth.cache_ttl_s)
    stack.push_async_callback(key_store.close)
    producer = ManagedProducer(settings.kafka, client_id="demandscope-intake")
    stack.push_async_callback(producer.close)
    ledger = IdempotencyLedger(
        engine,
        lease=timedelta(seconds=settings.claim_lease_s),
        wal_autocheckpoint=backstop,
        confirm_by_token=settings.ledger_confirm_by_token,
    )
    purge = partial(
        ledger.purge_periodically,
        retention=timedelta(days=settings.idempotency_retention_days),
        interval_s=settings.purge_interval_s,
    )
    return IntakeComponents(
        registry=registry,
        key_store=key_store,
        background=[
            BackgroundTask("producer", producer.maintain),
            BackgroundTask("ledger-writer", ledger.run, stop=ledger.request_stop),
            BackgroundTask("ledger-purge", purge),
            *checkpoint.tasks,
        ],
        settings=settings,
        service=IntakeService(
            producer=producer,
            ledger=ledger,
            kafka=settings.kafka,
            source_name=settings.source_name,
            metrics=metrics,
        ),
        redactor=Redactor(settings.redaction_patterns),
        metrics=metrics,
        producer=producer,
        ledger_engine=engine,
    )


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    app = service_app(
        service="intake",
        settings=settings or IntakeSettings(),
        build=build,
        title="demandscope intake",
        summary="The front door: contact-centre systems post every customer demand here.",
        description=DESCRIPTION,
        routers=[router],
        observe_request=observe_request,
    )
    install_openapi(app)
    # The two hot endpoints skip FastAPI's per-request dependency machinery (same routes).
    serve_directly(app, (post_demand, post_demand_batch))
    return app
