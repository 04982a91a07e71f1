"""Routine faults the Kafka runtime must survive (issue 10, items 1-4), on real brokers:

- a record near 1 MiB is dead-lettered (cut to fit, size and digest in headers) and the
  records behind it are handled, also in transactional mode;
- a consumer stuck retrying a batch says so (not ready), and is ready again once it moves;
- a commit that fails with the producer in a fatal state ends the run, and the supervisor
  starts afresh: every record handled, its output published exactly once;
- a transactional consumer and an idempotent producer recover from a broker restart under
  traffic, without a restart of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from devstack.kafka import LocalKafkaConfig
from devstack.kafka import start as start_broker
from devstack.kafka import stop as stop_broker
from shared.events import DemandReceived
from shared.kafka.admin import ensure_topics
from shared.kafka.codec import OutboundRecord, decode, encode
from shared.kafka.consumer import (
    DLQ_MAX_VALUE_BYTES,
    BatchResult,
    ConsumerRunner,
    Inbound,
    RetryableError,
    RunnerOptions,
)
from shared.kafka.producer import BrokerUnavailable, ManagedProducer
from shared.kafka.read_to_end import read_all
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.service import ConsumerService
from shared.kafka.settings import KafkaSettings
from shared.service.supervisor import BackgroundTask, Supervisor
from shared.topics import Topic, dlq_name, topic_name, topic_specs
from tests.support.factories import demand_received
from tests.support.kafka_io import produce_raw, read_records
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

NEAR_ONE_MIB = 1_048_400


class Echo:
    """Publishes each demand's id to an output topic; can fail as a database outage would."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.seen: list[str] = []
        self.failing = False

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        if self.failing:
            raise RetryableError("database unavailable (simulated)")
        result = BatchResult()
        for message in messages:
            self.seen.append(message.event.id)
            result.outbound.append(
                OutboundRecord(
                    topic=self.output, key=message.key, value=message.event.id.encode(), headers=[]
                )
            )
        return result


@contextlib.asynccontextmanager
async def supervised_consumer(
    settings: KafkaSettings,
    handler: Echo,
    *,
    transactional: bool,
    stalled_after_s: float = 30.0,
) -> AsyncIterator[tuple[ConsumerService, Supervisor]]:
    group = f"faults-{uuid.uuid4().hex[:10]}"
    consumer = ConsumerService(
        settings=settings,
        topics={topic_name(settings, Topic.DEMAND_RECEIVED): DemandReceived},
        handler=handler,
        options=RunnerOptions(
            group_id=group,
            client_id="faults",
            source="test",
            transactional=transactional,
            # A commit that a broker restart left waiting is given up well within the test's
            # deadlines (60 s in production).
            commit_timeout_s=15.0,
        ),
        metrics=ConsumerMetrics(CollectorRegistry()),
        transactional_id_prefix=f"{group}-tx" if transactional else None,
        stalled_after_s=stalled_after_s,
    )
    supervisor = Supervisor(service="test", initial_backoff_s=0.2, max_backoff_s=2.0)
    supervisor.add(consumer.background_task())
    async with supervisor:
        yield consumer, supervisor


async def _ready(consumer: ConsumerService) -> bool:
    return await consumer.is_ready()


@pytest.mark.parametrize("transactional", [False, True], ids=["plain", "transactional"])
async def test_a_record_near_one_mib_is_dead_lettered_and_the_partition_moves_on(
    kafka_settings: KafkaSettings, topic_factory: Any, transactional: bool
) -> None:
    output = await topic_factory(prefix="echo", partitions=1)
    handler = Echo(output)
    source = topic_name(kafka_settings, Topic.DEMAND_RECEIVED)
    huge = b'{"id": "' + b"x" * (NEAR_ONE_MIB - 10) + b'"}'
    assert len(huge) == NEAR_ONE_MIB
    async with supervised_consumer(kafka_settings, handler, transactional=transactional) as (
        consumer,
        _,
    ):
        await produce_raw(kafka_settings, source, huge, key=b"C-huge")
        behind = encode(
            demand_received(id="after-the-big-one", customer_ref="C-after-the-big-one"),
            topic=source,
            source="test",
        )
        await produce_raw(kafka_settings, source, behind.value, key=behind.key)
        await wait_until(lambda: _seen(handler), accept=lambda seen: "after-the-big-one" in seen)
        assert await consumer.is_ready()
    [letter] = await read_records(kafka_settings, dlq_name(source), count=1)
    headers = {key: value for key, value in letter.headers}
    assert len(letter.value) == DLQ_MAX_VALUE_BYTES
    assert headers["dlq_value_truncated"] == b"true"
    assert headers["dlq_value_bytes"] == str(NEAR_ONE_MIB).encode()
    assert headers["dlq_value_sha256"] == hashlib.sha256(huge).hexdigest().encode()
    assert headers["dlq_reason"].startswith(b"too large")


async def test_a_consumer_stuck_on_a_batch_is_not_ready_until_it_moves_again(
    kafka_settings: KafkaSettings, topic_factory: Any
) -> None:
    output = await topic_factory(prefix="echo", partitions=1)
    handler = Echo(output)
    source = topic_name(kafka_settings, Topic.DEMAND_RECEIVED)
    async with supervised_consumer(
        kafka_settings, handler, transactional=False, stalled_after_s=1.0
    ) as (consumer, _):
        await wait_until(lambda: _ready(consumer), what="consumer ready")
        handler.failing = True
        record = encode(demand_received(id="stuck"), topic=source, source="test")
        await produce_raw(kafka_settings, source, record.value, key=record.key)
        await wait_until(lambda: _ready(consumer), accept=lambda ready: not ready)
        handler.failing = False
        await wait_until(lambda: _seen(handler), accept=lambda seen: "stuck" in seen)
        await wait_until(lambda: _ready(consumer), what="ready again")


async def test_a_commit_failing_in_a_fatal_producer_state_restarts_and_publishes_once(
    kafka_settings: KafkaSettings, topic_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = await topic_factory(prefix="echo", partitions=1)
    handler = Echo(output)
    source = topic_name(kafka_settings, Topic.DEMAND_RECEIVED)
    real_commit = ConsumerRunner._commit
    failures = 0

    async def commit_once_broken(self: ConsumerRunner, *args: Any) -> None:
        nonlocal failures
        if failures == 0:
            failures += 1
            # What aiokafka raised after 'Unexpected error during batch delivery'.
            raise AssertionError("FATAL_ERROR -> IN_TRANSACTION")
        await real_commit(self, *args)

    monkeypatch.setattr(ConsumerRunner, "_commit", commit_once_broken)
    ids = [f"d{i}" for i in range(20)]
    for demand_id in ids:
        record = encode(demand_received(id=demand_id), topic=source, source="test")
        await produce_raw(kafka_settings, source, record.value, key=record.key)
    async with supervised_consumer(kafka_settings, handler, transactional=True) as (_, sup):
        published = await read_records(kafka_settings, output, count=len(ids), timeout=60)
        assert sup.is_live()
    assert failures == 1
    assert sorted(r.value.decode() for r in published) == sorted(ids)


async def test_a_transactional_consumer_and_a_producer_recover_from_a_broker_restart_under_load(
    private_kafka: LocalKafkaConfig,
) -> None:
    settings = KafkaSettings(
        bootstrap_servers=private_kafka.bootstrap,
        partitions=2,
        delivery_timeout_s=3.0,
        request_timeout_ms=3000,
    )
    await ensure_topics(settings, topic_specs(settings))
    source = topic_name(settings, Topic.DEMAND_RECEIVED)
    output = topic_name(settings, Topic.DEMAND_CLASSIFIED)  # any topic of ours will do
    handler = Echo(output)
    producer = ManagedProducer(settings, client_id="faults-producer")
    outcomes: dict[str, bool] = {}
    stop_load = asyncio.Event()

    async def load() -> None:
        # Bounded: at most 3,000 sends at ~50 a second, whatever happens.
        for i in range(3_000):
            if stop_load.is_set():
                return
            event_id = f"load-{i}"
            try:
                await producer.send_and_wait(
                    [encode(demand_received(id=event_id), topic=source, source="t")]
                )
                outcomes[event_id] = True
            except BrokerUnavailable:
                outcomes[event_id] = False
            await asyncio.sleep(0.02)

    supervisor = Supervisor(service="test", initial_backoff_s=0.2, max_backoff_s=2.0)
    supervisor.add(BackgroundTask("producer", producer.maintain))
    async with (
        supervised_consumer(settings, handler, transactional=True) as (consumer, sup),
        supervisor,
    ):
        await wait_until(producer.is_ready, what="producer connected", timeout=60)
        traffic = asyncio.create_task(load())
        await wait_until(lambda: _count(outcomes), accept=lambda n: n >= 50, timeout=60)
        # How long the stop took: devstack SIGKILLs a broker still up after 30 s, and a
        # killed single broker may lose what it acknowledged last (a transaction whose
        # EndTxn was answered, seen in /tmp/perf_flaky.md's probes): diagnosis, not asserted.
        stopping = time.monotonic()
        await asyncio.to_thread(stop_broker, private_kafka)
        stop_s = time.monotonic() - stopping
        await wait_until(lambda: _failed(outcomes), accept=lambda n: n >= 10, what="sends refused")
        await asyncio.to_thread(start_broker, private_kafka, 120)
        accepted_before = sum(outcomes.values())
        # Intake's promise: it accepts again without a restart of its own.
        await wait_until(
            lambda: _accepted(outcomes),
            accept=lambda n: n >= accepted_before + 50,
            timeout=120,
            what="sends accepted again after the broker restart",
        )
        stop_load.set()
        await traffic
        accepted = {event_id for event_id, ok in outcomes.items() if ok}
        await wait_until(
            lambda: _seen_set(handler),
            accept=lambda seen: accepted <= seen,
            timeout=120,
            what=f"every accepted record consumed (broker stopped in {stop_s:.1f} s)",
        )
        await wait_until(lambda: _ready(consumer), what="consumer ready", timeout=60)
        assert sup.is_live()
        assert supervisor.is_live()
    published = await read_all(settings, [output], timeout=60)
    values = [r.value.decode() for r in published]
    refused = sum(1 for ok in outcomes.values() if not ok)
    print(  # the figures of the proof, shown with pytest -s
        f"sent {len(outcomes)}, accepted {len(accepted)}, refused {refused}, "
        f"published by the consumer {len(values)} ({len(set(values))} distinct), "
        f"producers replaced {producer.replacements}, broker stopped in {stop_s:.1f} s"
    )
    # Exactly once: no accepted record lost, none published twice by the consumer.
    assert accepted <= set(values), (
        f"accepted, never published: {sorted(accepted - set(values))} "
        f"(broker stopped in {stop_s:.1f} s)"
    )
    twice = {v for v in values if values.count(v) > 1}
    where: dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]] = {}
    if twice:  # where each was read from and written to, for the next failure's diagnosis
        read_back = await read_all(settings, [source], timeout=60)
        where = {
            v: (
                [(r.partition, r.offset) for r in read_back if decode_id(r.value) == v],
                [(r.partition, r.offset) for r in published if r.value.decode() == v],
            )
            for v in sorted(twice)
        }
    assert not twice, (
        f"published twice (source, output (partition, offset)s): {where} "
        f"(broker stopped in {stop_s:.1f} s)"
    )


def decode_id(value: bytes | None) -> str:
    return decode(DemandReceived, value or b"").id


async def _seen(handler: Echo) -> list[str]:
    return list(handler.seen)


async def _seen_set(handler: Echo) -> set[str]:
    return set(handler.seen)


async def _count(outcomes: dict[str, bool]) -> int:
    return len(outcomes)


async def _failed(outcomes: dict[str, bool]) -> int:
    return sum(1 for ok in outcomes.values() if not ok)


async def _accepted(outcomes: dict[str, bool]) -> int:
    return sum(outcomes.values())
