"""Kill the classifier (SIGKILL, as a separate process) while transactions are in flight:
after a restart every demand is classified exactly once, and its context counted once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from devstack.process import pick_free_port
from services.classifier.changelog import parse_state
from shared.auth.settings import AuthSettings
from shared.events import DemandClassified
from shared.kafka.read_to_end import read_all
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.factories import demand_received
from tests.support.kafka_io import committed_to_end, publish_events
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
    settings: KafkaSettings, group: str, model_dir: Path, databases: dict[str, str]
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DEMANDSCOPE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "DEMANDSCOPE_KAFKA_TOPIC_PREFIX": settings.topic_prefix,
        "DEMANDSCOPE_KAFKA_PARTITIONS": str(settings.partitions),
        "DEMANDSCOPE_CLASSIFIER_GROUP_ID": group,
        "DEMANDSCOPE_CLASSIFIER_TRANSACTIONAL_ID": f"{group}-tx",
        "DEMANDSCOPE_CLASSIFIER_MODEL_DIR": str(model_dir),
        **databases,
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


async def committed_count(settings: KafkaSettings, topic: str) -> int:
    return len(await read_all(settings, [topic], timeout=30))


async def publish_demands(settings: KafkaSettings) -> list[str]:
    ids = [f"D-{i}" for i in range(DEMANDS)]
    await publish_events(
        settings,
        [
            demand_received(
                id=demand_id, customer_ref=f"C-{i % CUSTOMERS}", text=TEXTS[i % len(TEXTS)]
            )
            for i, demand_id in enumerate(ids)
        ],
    )
    return ids


async def test_a_killed_classifier_classifies_every_demand_exactly_once(
    kafka_settings: KafkaSettings,
    unique_group: str,
    tmp_path: Path,
    seeded_url: str,
    auth_settings: AuthSettings,
) -> None:
    model_dir = tmp_path / "no-model-dir"  # the seed model is the database's current one
    databases = {
        "DEMANDSCOPE_CLASSIFIER_DATABASE_URL": seeded_url,
        "DEMANDSCOPE_AUTH_DATABASE_URL": auth_settings.database_url,
    }
    ids = await publish_demands(kafka_settings)
    classified_topic = topic_name(kafka_settings, Topic.DEMAND_CLASSIFIED)
    demands_topic = topic_name(kafka_settings, Topic.DEMAND_RECEIVED)
    first = start_classifier(kafka_settings, unique_group, model_dir, databases)
    try:
        seen_before_kill = await wait_until(
            lambda: committed_count(kafka_settings, classified_topic),
            accept=lambda n: n >= DEMANDS // 10,
            timeout=90,
            what="the first instance to commit some classifications",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert seen_before_kill < DEMANDS  # killed mid-stream, not after the end

    second = start_classifier(kafka_settings, unique_group, model_dir, databases)
    try:
        # Offsets are committed in the transaction that writes the output: once the group
        # is at the end of its input, every classification and context record is written
        # (a duplicate included, were there one) and reading to the end finds all of them.
        await wait_until(
            lambda: committed_to_end(kafka_settings, unique_group, [demands_topic]),
            timeout=120,
            what="every demand classified after the restart",
        )
        classified = await read_all(kafka_settings, [classified_topic], timeout=60)
        changelog = await read_all(
            kafka_settings,
            [topic_name(kafka_settings, Topic.CLASSIFIER_CONTEXT)],
            timeout=60,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    latest = {record.key: record.value for record in changelog}

    counts = Counter(
        DemandClassified.model_validate_json(record.value or b"").demand.id for record in classified
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
