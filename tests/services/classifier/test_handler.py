"""What the Kafka entrypoint does when the label store fails: an outage (or a store not yet
migrated) is retried, never dead-lettered; values the database refuses are a record's fault."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import OperationalError

from services.classifier.context import ContextStore
from services.classifier.db.repository import LabelRepository
from services.classifier.handler import ClassifyDemands, Topics
from services.classifier.judgement import Thresholds
from services.classifier.live_model import in_use
from services.classifier.metrics import ClassifierMetrics
from services.classifier.training import TrainedModel
from shared.database.engine import create_engine
from shared.kafka.consumer import Inbound, RetryableError
from tests.support.factories import demand_received


async def test_a_label_store_not_migrated_is_retried_not_dead_lettered(
    seed_model: TrainedModel, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'not-migrated.db'}")
    version, model = "seed", seed_model.model
    handler = ClassifyDemands(
        topics=Topics(classified="classified", context="context"),
        source="test",
        model=lambda: in_use(version, model),
        context=ContextStore(window=timedelta(days=30)),
        labels=LabelRepository(engine),
        thresholds=Thresholds(),
        metrics=ClassifierMetrics(CollectorRegistry()),
    )
    demand = demand_received()
    message = Inbound(
        topic="demands",
        partition=0,
        offset=0,
        key=demand.customer_ref.encode(),
        event=demand,
        headers=[],
        timestamp_ms=0,
    )
    try:
        with pytest.raises(RetryableError) as raised:
            await handler([message])
    finally:
        await engine.dispose()
    assert isinstance(raised.value.__cause__, OperationalError)
