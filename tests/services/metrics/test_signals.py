"""Special-cause signals are raised once across restarts and replicas, counted once, and
reach capability.signals with the owning team of the purpose."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics.config import SHIPPED_TAXONOMY, MetricsSettings
from services.metrics.db import signals as signals_db
from services.metrics.db.migrate import upgrade
from services.metrics.ingest import apply_events
from services.metrics.main import create_app
from services.metrics.metrics import MetricsServiceMetrics
from services.metrics.publisher import PurposeMetricsPublisher
from services.metrics.rebuild import rebuild
from services.metrics.service import ChartSettings
from shared.database.engine import create_engine, session_factory
from shared.events import DemandClassified, SpecialCauseSignalled
from shared.events.signals import signal_id
from shared.kafka.codec import OutboundRecord, decode, header
from shared.kafka.settings import KafkaSettings
from shared.ownership import load_purpose_owners
from shared.topics import Topic, topic_name
from tests.services.metrics.conftest import AuthFixture, Publish
from tests.support import factories
from tests.support.apps import running
from tests.support.kafka_io import read_records
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# Owned by the team "billing" in the shipped taxonomy.
PURPOSE = "billing / pay my bill"
OWNER = "billing"
# Value demands per day: a baseline of 2, 3, 2, 3 (centre 2.5, upper limit 5.16), then 20.
DAILY = [2, 3, 2, 3, 20]
CHARTS = ChartSettings(baseline_points=4, chart_points=50)


def _demands() -> list[DemandClassified]:
    today = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    first = today - timedelta(days=len(DAILY) - 1)
    return [
        factories.demand_classified(purpose=PURPOSE, occurred_at=first + timedelta(days=day))
        for day, count in enumerate(DAILY)
        for _ in range(count)
    ]


async def _stored(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    try:
        async with session_factory(engine).begin() as session:
            await apply_events(session, _demands())
    finally:
        await engine.dispose()


class Instance:
    """One metrics service instance's publisher: its own engine, registry and counters."""

    def __init__(self, database_url: str) -> None:
        self.engine: AsyncEngine = create_engine(database_url)
        self.metrics = MetricsServiceMetrics(CollectorRegistry())
        self.sent: list[OutboundRecord] = []
        self.woken = 0
        self.publisher = PurposeMetricsPublisher(
            sessions=session_factory(self.engine),
            send=self._send,
            topic="purpose.metrics",
            source="test",
            metrics=self.metrics,
            chart_settings=CHARTS,
            window_days=28,
            debounce_s=0.01,
            owners=load_purpose_owners(SHIPPED_TAXONOMY),
            on_signals=self._wake,
        )

    async def _send(self, records: list[OutboundRecord]) -> None:
        self.sent += records

    def _wake(self) -> None:
        self.woken += 1

    def counted(self) -> dict[tuple[str, ...], float]:
        return _counted(self.metrics.signals.collect())

    async def publish(self) -> None:
        self.publisher.mark_changed({PURPOSE})
        await self.publisher.publish_dirty()

    async def close(self) -> None:
        await self.engine.dispose()


def _counted(families: Any) -> dict[tuple[str, ...], float]:
    return {
        (s.labels["purpose"], s.labels["owner"], s.labels["measure"], s.labels["rule"]): s.value
        for family in families
        for s in family.samples
        if s.name.endswith("_total")
    }


async def _raised(database_url: str) -> list[Any]:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            return await signals_db.raised(session)
    finally:
        await engine.dispose()


async def test_a_restart_neither_raises_nor_counts_a_signal_again(database_url: str) -> None:
    await _stored(database_url)
    first = Instance(database_url)
    try:
        await first.publish()
        await first.publish()  # the same figures again: nothing new
    finally:
        await first.close()
    rows = await _raised(database_url)
    beyond = [r for r in rows if r.measure == "value_per_day" and r.rule == "beyond_limit"]
    assert len(beyond) == 1
    assert beyond[0].owner == OWNER
    assert beyond[0].value == 20
    assert beyond[0].upper_natural_process_limit == pytest.approx(2.5 + 2.66)
    assert beyond[0].published_at is None  # the outbox's, not yet sent
    assert sum(first.counted().values()) == len(rows)
    assert first.counted()[(PURPOSE, OWNER, "value_per_day", "beyond_limit")] == 1
    assert first.woken == 1

    restarted = Instance(database_url)  # a new process on the same database
    try:
        await restarted.publish()
    finally:
        await restarted.close()
    assert restarted.counted() == {}
    assert restarted.woken == 0
    assert len(await _raised(database_url)) == len(rows)
    # The gauges carry the owner too.
    limits = [s for m in restarted.metrics.capability_limit.collect() for s in m.samples]
    assert {s.labels["owner"] for s in limits} == {OWNER}


async def test_a_round_inserts_only_the_signals_its_last_round_did_not_store(
    database_url: str,
) -> None:
    """A chart keeps its signals round after round: once a round has committed them, the
    next round over the same charts inserts none of them again, and still publishes."""
    await _stored(database_url)
    instance = Instance(database_url)
    inserts: list[str] = []

    @event.listens_for(instance.engine.sync_engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if " ".join(statement.split()).upper().startswith("INSERT INTO SPECIAL_CAUSE_SIGNALS"):
            inserts.append(statement)

    try:
        await instance.publish()
        assert inserts  # the first round stored them
        inserts.clear()
        await instance.publish()
    finally:
        await instance.close()
    assert inserts == []
    rows = await _raised(database_url)
    assert rows
    assert sum(instance.counted().values()) == len(rows)  # each counted once
    assert len(instance.sent) == 2  # both rounds published the purpose's figures


async def test_two_instances_on_one_database_raise_each_signal_once(database_url: str) -> None:
    await _stored(database_url)
    one, two = Instance(database_url), Instance(database_url)
    try:
        await asyncio.gather(one.publish(), two.publish())
    finally:
        await one.close()
        await two.close()
    rows = await _raised(database_url)
    assert rows
    assert sum(one.counted().values()) + sum(two.counted().values()) == len(rows)
    assert one.woken + two.woken >= 1
    ids = {
        signal_id(
            purpose=r.purpose, measure=r.measure, rule=r.rule, at=r.point_at.replace(tzinfo=UTC)
        )
        for r in rows
    }
    assert ids == {r.signal_id for r in rows}  # the id is what the signal is


async def test_a_signal_reaches_capability_signals_once_with_its_owner(
    kafka_settings: KafkaSettings,
    unique_group: str,
    auth: AuthFixture,
    publish: Publish,
    tmp_path: Any,
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'metrics.db'}"
    await asyncio.to_thread(upgrade, database_url)
    settings = MetricsSettings(
        kafka=kafka_settings,
        database_url=database_url,
        group_id=unique_group,
        auth=auth.settings,
        publish_debounce_s=0.2,
        baseline_points=CHARTS.baseline_points,
        signal_publish_interval_s=0.5,
    )
    topic = topic_name(kafka_settings, Topic.CAPABILITY_SIGNALS)
    app = create_app(settings)
    async with running(app):
        await publish(_demands())
        await read_records(kafka_settings, topic, count=1, timeout=60)
        outbox = app.state.components.signal_outbox
        # Everything raised is sent, and marked: another round finds nothing to send.
        await wait_until(
            lambda: _unpublished(database_url),
            accept=lambda left: left == 0,
            timeout=30,
            what="every signal marked published",
        )
        assert await outbox.publish_pending() == 0
    rows = await _raised(database_url)
    records = await read_records(kafka_settings, topic, count=len(rows), timeout=30)
    signals = [decode(SpecialCauseSignalled, r.value) for r in records]
    assert sorted(s.signal_id for s in signals) == sorted(r.signal_id for r in rows)
    beyond = [s for s in signals if s.measure == "value_per_day" and s.rule == "beyond_limit"]
    assert len(beyond) == 1
    assert (beyond[0].purpose, beyond[0].owner, beyond[0].value) == (PURPOSE, OWNER, 20)
    for record, signal in zip(records, signals, strict=True):
        assert record.key == PURPOSE.encode()
        assert header(record.headers, "ce_id") == signal.signal_id
        assert header(record.headers, "ce_type") == SpecialCauseSignalled.CE_TYPE


async def _unpublished(database_url: str) -> int:
    return sum(1 for row in await _raised(database_url) if row.published_at is None)


async def test_a_rebuilt_database_neither_raises_counts_nor_sends_past_signals_again(
    database_url: str, kafka_settings: KafkaSettings, publish: Publish
) -> None:
    """The service a rebuild replaces raised these signals long ago: the signals table of a
    rebuilt database starts with them raised and published."""
    await asyncio.to_thread(upgrade, database_url)
    await publish(_demands())
    report = await rebuild(
        kafka=kafka_settings,
        database_url=database_url,
        charts=CHARTS,
        window_days=28,
        owners=load_purpose_owners(SHIPPED_TAXONOMY),
    )
    rows = await _raised(database_url)
    assert report.signals_recorded == len(rows)
    assert [(r.measure, r.rule, r.owner) for r in rows if r.value == 20] == [
        ("value_per_day", "beyond_limit", OWNER)
    ]
    assert all(r.published_at is not None for r in rows)

    started = Instance(database_url)  # the service started on the rebuilt database
    try:
        await started.publish()
        async with session_factory(started.engine)() as session:
            pending = await signals_db.unpublished(session, limit=100)
    finally:
        await started.close()
    assert started.counted() == {}
    assert started.woken == 0
    assert pending == []  # nothing for the outbox to send again
    assert len(await _raised(database_url)) == len(rows)
