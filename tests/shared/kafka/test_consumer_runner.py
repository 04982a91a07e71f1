"""The one consumer runtime, on the real broker: commit after success, poison to the DLQ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry

from shared.events import DemandReceived
from shared.kafka.codec import encode, header
from shared.kafka.consumer import (
    BatchResult,
    ConsumerRunner,
    Inbound,
    Rejection,
    RetryableError,
    RunnerOptions,
)
from shared.kafka.producer import create_producer
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, dlq_name, topic_name
from tests.support.factories import demand_received
from tests.support.kafka_io import produce_raw, read_records
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


# One customer: every record in one partition, handled in the order sent.
CUSTOMER = "C-1"


class Recorder:
    """A handler that records what it saw; rejects texts containing 'reject'."""

    def __init__(self, transient_failures: int = 0) -> None:
        self.seen: list[str] = []
        self.transient_failures = transient_failures

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        if self.transient_failures:
            self.transient_failures -= 1
            raise RetryableError("database unavailable (simulated)")
        result = BatchResult()
        for message in messages:
            if "reject" in message.event.text:
                result.rejected.append(Rejection(message, "handler refused it"))
            else:
                self.seen.append(message.event.id)
        return result


@pytest.fixture
async def runner_factory(kafka_settings: KafkaSettings, unique_group: str) -> AsyncIterator[Any]:
    started: list[tuple[ConsumerRunner, asyncio.Task[None], Any]] = []

    async def start(
        handler: Recorder,
        registry: CollectorRegistry | None = None,
        options: RunnerOptions | None = None,
    ) -> ConsumerRunner:
        producer = create_producer(kafka_settings, client_id="test")
        await producer.start()
        runner = ConsumerRunner(
            settings=kafka_settings,
            topics={topic_name(kafka_settings, Topic.DEMAND_RECEIVED): DemandReceived},
            handler=handler,
            producer=producer,
            options=options
            or RunnerOptions(group_id=unique_group, client_id="test", source="test"),
            metrics=ConsumerMetrics(registry or CollectorRegistry()),
        )
        task = asyncio.create_task(runner.run())
        started.append((runner, task, producer))
        return runner

    yield start
    for runner, task, producer in started:
        runner.stop()
        await asyncio.wait_for(task, 30)
        await producer.stop()


async def send(settings: KafkaSettings, event: DemandReceived) -> None:
    record = encode(event, topic=topic_name(settings, Topic.DEMAND_RECEIVED), source="test")
    await produce_raw(settings, record.topic, record.value, key=record.key, headers=record.headers)


async def committed_offset(settings: KafkaSettings, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(**settings.client_options())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic)


async def group_members(settings: KafkaSettings, group: str) -> int:
    admin = AIOKafkaAdminClient(**settings.client_options())
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    (described,) = response.groups
    return len(described[5])  # (error, group, state, protocol type, protocol, members, ...)


async def test_poison_goes_to_the_dead_letter_topic_and_the_next_message_flows(
    kafka_settings: KafkaSettings, runner_factory: Any, unique_group: str
) -> None:
    topic = topic_name(kafka_settings, Topic.DEMAND_RECEIVED)
    registry = CollectorRegistry()
    recorder = Recorder()
    await runner_factory(recorder, registry)

    await produce_raw(kafka_settings, topic, b"{not json", key=CUSTOMER.encode())
    await produce_raw(kafka_settings, topic, b'{"id": "x"}', key=CUSTOMER.encode())
    await send(
        kafka_settings,
        demand_received(id="d-reject", customer_ref=CUSTOMER, text="please reject me"),
    )
    await send(kafka_settings, demand_received(id="d-good", customer_ref=CUSTOMER))

    await wait_until(lambda: _value(recorder.seen), accept=lambda s: s == ["d-good"], what="d-good")
    # Offsets are committed after the dead letters are acknowledged: once past all four,
    # every dead letter there will be is on the topic, and a duplicate would be read too.
    await wait_until(
        lambda: committed_offset(kafka_settings, unique_group, topic),
        accept=lambda n: n == 4,
        what="offsets committed past all four records",
    )
    dead = await read_records(kafka_settings, dlq_name(topic), count=3)
    reasons = [header(r.headers, "dlq_reason") or "" for r in dead]
    assert reasons[0].startswith("undecodable: ")
    assert "Invalid JSON" in reasons[0]
    assert "occurred_at: Field required" in reasons[1]
    assert reasons[2] == "handler refused it"
    assert dead[0].value == b"{not json"  # the original bytes, untouched
    assert {header(r.headers, "dlq_original_topic") for r in dead} == {topic}
    assert [header(r.headers, "dlq_original_offset") for r in dead] == ["0", "1", "2"]
    assert header(dead[2].headers, "ce_id") == "d-reject"  # original headers kept
    undecodable = registry.get_sample_value(
        "demandscope_dead_letters_total",
        {"group": unique_group, "topic": topic, "reason": "undecodable"},
    )
    assert undecodable == 2


async def test_a_transient_failure_is_retried_not_dead_lettered(
    kafka_settings: KafkaSettings, runner_factory: Any
) -> None:
    recorder = Recorder(transient_failures=2)
    await runner_factory(recorder)
    await send(kafka_settings, demand_received(id="d-1", customer_ref=CUSTOMER))
    await wait_until(lambda: _value(recorder.seen), accept=lambda s: s == ["d-1"], what="d-1")


async def test_committed_records_are_not_processed_again_after_a_restart(
    kafka_settings: KafkaSettings, runner_factory: Any
) -> None:
    first = Recorder()
    runner = await runner_factory(first)
    for n in range(5):
        await send(kafka_settings, demand_received(id=f"d-{n}", customer_ref=CUSTOMER))
    await wait_until(lambda: _value(len(first.seen)), accept=lambda n: n == 5, what="5 seen")
    runner.stop()
    await wait_until(lambda: _value(runner.consumer is None), what="the first runner to leave")

    second = Recorder()
    await runner_factory(second)
    await send(kafka_settings, demand_received(id="d-after", customer_ref=CUSTOMER))
    await wait_until(
        lambda: _value(second.seen), accept=lambda s: s == ["d-after"], what="only the new one"
    )


async def test_a_static_member_that_comes_back_gets_its_partitions_without_waiting_for_its_session(
    kafka_settings: KafkaSettings, runner_factory: Any, unique_group: str
) -> None:
    # A session far longer than the deadline below: had the restarted instance joined as a
    # new member, the group would wait for the old one's session to time out first.
    options = RunnerOptions(
        group_id=unique_group,
        client_id="test",
        source="test",
        session_timeout_ms=120_000,
        heartbeat_interval_ms=3_000,
        group_instance_id="instance-a",
    )
    first = Recorder()
    runner = await runner_factory(first, options=options)
    await send(kafka_settings, demand_received(id="d-1", customer_ref=CUSTOMER))
    await wait_until(lambda: _value(first.seen), accept=lambda s: s == ["d-1"], what="d-1")
    # A static member sends no LeaveGroup when it stops: the group keeps it as a member,
    # as it would keep one killed with SIGKILL, until its session times out.
    runner.stop()
    await wait_until(lambda: _value(runner.consumer is None), what="the first runner to stop")
    assert await group_members(kafka_settings, unique_group) == 1

    second = Recorder()
    await runner_factory(second, options=options)
    await send(kafka_settings, demand_received(id="d-2", customer_ref=CUSTOMER))
    await wait_until(
        lambda: _value(second.seen),
        accept=lambda s: s == ["d-2"],
        what="the same instance, restarted, to get its partition back",
        timeout=30,
    )


class Holding(Recorder):
    """Holds its first batch until released, noting which partitions were paused then."""

    def __init__(self) -> None:
        super().__init__()
        self.runner: ConsumerRunner | None = None
        self.batches: list[list[str]] = []
        self.paused_while_handling: set[Any] | None = None
        self.assigned_while_handling: set[Any] | None = None
        self.release = asyncio.Event()

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        self.batches.append([m.event.id for m in messages])
        if len(self.batches) == 1:
            assert self.runner is not None
            assert self.runner.consumer is not None
            self.paused_while_handling = self.runner.consumer.paused()
            self.assigned_while_handling = self.runner.consumer.assignment()
            await self.release.wait()
        return await super().__call__(messages)


async def test_records_that_arrive_while_a_poll_is_handled_are_fetched_after_it_together(
    kafka_settings: KafkaSettings, runner_factory: Any
) -> None:
    # aiokafka's fetcher would fetch again as soon as a poll took its records, keep what had
    # arrived by then and fetch nothing more until the next poll: those records would be a
    # whole batch-and-commit cycle old when handed over, and the rest a cycle later still.
    holding = Holding()
    holding.runner = await runner_factory(holding)
    await send(kafka_settings, demand_received(id="d-1", customer_ref=CUSTOMER))
    await wait_until(lambda: _value(holding.batches), what="the first batch in hand")
    for n in (2, 3, 4):
        await send(kafka_settings, demand_received(id=f"d-{n}", customer_ref=CUSTOMER))
    holding.release.set()
    await wait_until(
        lambda: _value(holding.seen), accept=lambda s: len(s) == 4, what="all four handled"
    )
    assert holding.assigned_while_handling
    assert holding.paused_while_handling == holding.assigned_while_handling
    assert holding.batches == [["d-1"], ["d-2", "d-3", "d-4"]]
    consumer = holding.runner.consumer
    assert consumer is not None
    # Fetching again once the poll is committed.
    await wait_until(lambda: _value(consumer.paused()), accept=lambda p: p == set(), what="resumed")


async def _value(value: Any) -> Any:
    return value
