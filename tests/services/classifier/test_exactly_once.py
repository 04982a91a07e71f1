"""Kill the classifier (SIGKILL, as a separate process) while transactions are in flight:
after a restart every demand is classified exactly once, and its context counted once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from devstack.process import pick_free_port
from services.classifier.changelog import parse_state
from shared.events import DemandClassified, DemandReceived
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.kafka_io import publish_events
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
DEMANDS = 3_000
CUSTOMERS = 300
TEXTS = (
    "I want to pay my bill by direct debit",
    "where is my engineer, still waiting",
    "I am moving house next month",
    "my broadband keeps dropping",
    "you charged me twice this month",
)


def start_classifier(
    settings: KafkaSettings, group: str, model_dir: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DEMANDSCOPE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "DEMANDSCOPE_KAFKA_TOPIC_PREFIX": settings.topic_prefix,
        "DEMANDSCOPE_KAFKA_PARTITIONS": str(settings.partitions),
        "DEMANDSCOPE_CLASSIFIER_GROUP_ID": group,
        "DEMANDSCOPE_CLASSIFIER_TRANSACTIONAL_ID": f"{group}-tx",
        "DEMANDSCOPE_CLASSIFIER_MODEL_DIR": str(model_dir),
        "DEMANDSCOPE_CLASSIFIER_PORT": str(pick_free_port("127.0.0.1")),
        # Small transactions: many of them are in flight when the process dies.
        "DEMANDSCOPE_CLASSIFIER_MAX_BATCH": "10",
        "DEMANDSCOPE_CLASSIFIER_RETRAIN_INTERVAL_S": "0",
        "DEMANDSCOPE_CLASSIFIER_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "classifier", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class CommittedReader:
    """Everything committed on a topic so far, read incrementally with read_committed."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic,
            **settings.client_options(),
            group_id=f"reader-{uuid.uuid4().hex}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        self.records: list[tuple[bytes | None, bytes | None]] = []

    async def __aenter__(self) -> CommittedReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._consumer.stop()

    async def drain(self) -> int:
        """Read until a poll brings nothing new (what is committed is readable at once)."""
        count = -1
        while count != len(self.records):
            count = len(self.records)
            await self.poll()
        return count

    async def poll(self) -> int:
        for batch in (await self._consumer.getmany(timeout_ms=200)).values():
            self.records += [(r.key, r.value) for r in batch]
        return len(self.records)


async def publish_demands(settings: KafkaSettings) -> list[str]:
    ids = [f"D-{i}" for i in range(DEMANDS)]
    await publish_events(
        settings,
        [
            DemandReceived(
                id=demand_id,
                occurred_at=datetime.now(UTC),
                received_at=datetime.now(UTC),
                channel="chat",
                source="test",
                customer_ref=f"C-{i % CUSTOMERS}",
                text=TEXTS[i % len(TEXTS)],
            )
            for i, demand_id in enumerate(ids)
        ],
    )
    return ids


async def test_a_killed_classifier_classifies_every_demand_exactly_once(
    kafka_settings: KafkaSettings, unique_group: str, model_dir: Path
) -> None:
    ids = await publish_demands(kafka_settings)
    classified_topic = topic_name(kafka_settings, Topic.DEMAND_CLASSIFIED)
    async with CommittedReader(kafka_settings, classified_topic) as classified:
        first = start_classifier(kafka_settings, unique_group, model_dir)
        try:
            seen_before_kill = await wait_until(
                classified.poll,
                accept=lambda n: n >= DEMANDS // 10,
                timeout=90,
                what="the first instance to commit some classifications",
            )
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        assert seen_before_kill < DEMANDS  # killed mid-stream, not after the end

        second = start_classifier(kafka_settings, unique_group, model_dir)
        try:
            await wait_until(
                classified.poll,
                accept=lambda n: n >= DEMANDS,
                timeout=120,
                what="every demand classified after the restart",
            )
            # Anything committed twice would arrive now, right behind the rest.
            await wait_until(classified.poll, accept=lambda _: True)
            async with CommittedReader(
                kafka_settings, topic_name(kafka_settings, Topic.CLASSIFIER_CONTEXT)
            ) as changelog:
                await changelog.drain()
                latest = dict(changelog.records)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=60)

    counts = Counter(
        DemandClassified.model_validate_json(value or b"").demand.id
        for _, value in classified.records
    )
    assert set(counts) == set(ids)  # no loss
    assert max(counts.values()) == 1  # no duplicate
    # The context agrees: each demand remembered once, by the customer who made it.
    remembered = Counter(
        d.demand_id
        for value in latest.values()
        if (state := parse_state(value)) is not None
        for d in state.demands
    )
    assert set(remembered) == set(ids)
    assert max(remembered.values()) == 1
