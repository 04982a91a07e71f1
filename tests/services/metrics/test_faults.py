"""Faults the metrics service must survive: records it cannot store, background tasks that die.

- Issue 10 (5): intake accepted ``0001-01-01T00:00:00+14:00`` (31 December of year 0 in
  UTC); the consumer's batch then failed with ``OverflowError``, was retried record by
  record and dead-lettered as "handler failed 3 times". Now such a record is dead-lettered
  at once with the field and the reason, and the rest of its batch is applied.
- Issue 9: a background task that raises is logged with its traceback, readiness turns
  false at once, and the supervisor runs it again.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from services.metrics.config import MetricsSettings
from services.metrics.db.migrate import upgrade
from services.metrics.ingest import apply_events
from services.metrics.main import create_app
from services.metrics.publisher import PurposeMetricsPublisher
from shared.database.engine import create_engine, session_factory
from shared.events import PurposeMetrics
from shared.kafka.codec import decode
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, dlq_name, topic_name
from tests.support import factories
from tests.support.apps import running
from tests.support.kafka_io import read_records
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

YEAR_ZERO = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))  # no UTC equivalent


async def test_a_date_with_no_utc_equivalent_is_dead_lettered_with_its_field(
    kafka_settings: KafkaSettings,
    database_url: str,
    unique_group: str,
    auth: Any,
    publish: Any,
    all_consumed: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    good = factories.demand_classified(purpose="billing")
    bad_demand = factories.demand_classified(occurred_at=YEAR_ZERO, purpose="billing")
    bad_case_event = factories.case_event(occurred_at=YEAR_ZERO)
    bad_label = factories.demand_labelled(demand_id=good.demand.id, labelled_at=YEAR_ZERO)
    settings = MetricsSettings(
        kafka=kafka_settings, database_url=database_url, group_id=unique_group,
        auth=auth.settings, publish_debounce_s=0.2,
    )  # fmt: skip

    with caplog.at_level(logging.WARNING):
        async with running(create_app(settings)) as client:
            await publish([bad_demand, good, bad_case_event, bad_label])
            await wait_until(lambda: all_consumed(unique_group), timeout=60, what="all consumed")
            purposes = await client.get("/v1/purposes", headers=auth.read_headers)

    assert [(p["purpose"], p["volume"]) for p in purposes.json()] == [("billing", 1)]
    reasons = {}
    for topic in (Topic.DEMAND_CLASSIFIED, Topic.CASE_EVENTS, Topic.DEMAND_LABELS):
        dlq = dlq_name(topic_name(kafka_settings, topic))
        (letter,) = await read_records(kafka_settings, dlq, count=1)
        reasons[topic] = dict(letter.headers)["dlq_reason"].decode()
    assert reasons == {
        Topic.DEMAND_CLASSIFIED: "cannot be stored: demand.occurred_at: 0001-01-01T00:00:00+14:00 "
        "is outside the dates that can be stored (years 1 to 9999 in UTC)",
        Topic.CASE_EVENTS: "cannot be stored: occurred_at: 0001-01-01T00:00:00+14:00 "
        "is outside the dates that can be stored (years 1 to 9999 in UTC)",
        Topic.DEMAND_LABELS: "cannot be stored: labelled_at: 0001-01-01T00:00:00+14:00 "
        "is outside the dates that can be stored (years 1 to 9999 in UTC)",
    }
    # Refused as records, never a failed batch: no traceback, no record-by-record retry.
    ours = [r for r in caplog.records if r.name.startswith(("shared.", "services."))]
    assert [r.getMessage() for r in ours if r.exc_info or "failed" in r.getMessage()] == []
    assert len([r for r in ours if "dead-lettered" in r.getMessage()]) == 3


async def test_a_background_task_that_dies_is_logged_unready_and_restarted(
    kafka_settings: KafkaSettings,
    sqlite_url: str,
    unique_group: str,
    auth: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The publisher's start-up republish is a supervised step: its failure is not swallowed.
    await asyncio.to_thread(upgrade, sqlite_url)
    engine = create_engine(sqlite_url)
    async with session_factory(engine).begin() as session:
        await apply_events(session, [factories.demand_classified(purpose="repair")])
    await engine.dispose()
    armed = asyncio.Event()
    calls = 0
    republish_all = PurposeMetricsPublisher.republish_all

    async def dies_once(publisher: PurposeMetricsPublisher) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await armed.wait()
            raise RuntimeError("the database said something unexpected")
        await republish_all(publisher)

    monkeypatch.setattr(PurposeMetricsPublisher, "republish_all", dies_once)
    settings = MetricsSettings(
        kafka=kafka_settings, database_url=sqlite_url, group_id=unique_group,
        auth=auth.settings, publish_debounce_s=0.2,
        restart_backoff_s=2,  # long enough to see the unready moment through the real probe
    )  # fmt: skip

    with caplog.at_level(logging.ERROR, logger="shared.service.supervisor"):
        async with running(create_app(settings)) as client:
            await wait_until(lambda: _readiness(client), accept=_is(200), what="ready at start")
            started = asyncio.get_running_loop().time()
            armed.set()

            unready = await wait_until(
                lambda: _readiness(client), accept=_is(503), timeout=5, what="unready"
            )
            assert unready[1]["checks"]["background"] == "unavailable"
            assert unready[1]["tasks"]["publisher"] == "backing off"
            (died,) = [r for r in caplog.records if "died" in r.getMessage()]
            assert "publisher" in died.getMessage()
            assert died.exc_info is not None
            assert isinstance(died.exc_info[1], RuntimeError)

            await wait_until(lambda: _readiness(client), accept=_is(200), timeout=15, what="back")
            assert asyncio.get_running_loop().time() - started < 15
            assert calls == 2
            # The restarted publisher republished what the database already held.
            (record,) = await read_records(
                kafka_settings, topic_name(kafka_settings, Topic.PURPOSE_METRICS), count=1
            )
            assert decode(PurposeMetrics, record.value).purpose == "repair"


async def _readiness(client: httpx.AsyncClient) -> tuple[int, Any]:
    response = await client.get("/readyz")
    return response.status_code, response.json()


def _is(status: int) -> Any:
    return lambda answer: answer[0] == status


async def test_the_longest_ids_intake_accepts_are_stored(database_url: str) -> None:
    # A demand without a case ref opens the case `auto-<demand id>`: 5 characters more.
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    longest = factories.demand_classified(id="d" * 200, customer_ref="C" * 200, purpose="repair")
    try:
        async with session_factory(engine).begin() as session:
            outcome = await apply_events(session, [longest])
    finally:
        await engine.dispose()
    assert outcome.refused == []
