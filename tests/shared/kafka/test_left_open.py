"""A transaction the broker completed without writing its markers is ended, as aborted, by
the next producer of its transactional id: its records are never committed with ours.

Found in test_faults' broker restart: a single broker in its controlled shutdown (its
partitions without a leader) answered EndTxn, then completed the transaction without its
markers ("Couldn't find leader endpoint for partitions Set(demand.classified-1,
__consumer_offsets-1) ... likely deleted already and hence can be skipped"), so its output
records and its offsets stayed open. The same producer id's next marker decides them: our
next transaction's commit committed them together with the records read and handled again
(published twice), and offsets left pending kept the restarted consumer's stable read
waiting for good (/tmp/perf_faults.md).

The restart cannot be timed to hit that window, so these tests leave a transaction open the
way the broker did, deterministically: on a broker of their own that, as brokers did before
KIP-890, takes a transactional record (or offsets) for a partition never added to the
transaction, aiokafka is made to skip AddPartitionsToTxn (and AddOffsetsToTxn): the
transaction then ends without a marker there.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError, LeaderNotAvailableError
from aiokafka.producer.transaction_manager import TransactionManager
from prometheus_client import CollectorRegistry

from devstack.kafka import LocalKafkaConfig
from devstack.kafka import start as start_broker
from devstack.kafka import stop as stop_broker
from shared.events import DemandReceived
from shared.kafka import consumer as consumer_module
from shared.kafka.codec import OutboundRecord, encode
from shared.kafka.consumer import BatchResult, Inbound, Rejection, RunnerOptions
from shared.kafka.read_to_end import read_all
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.service import ConsumerService
from shared.kafka.settings import KafkaSettings
from shared.service.supervisor import Supervisor
from shared.topics import Topic, dlq_name, topic_name
from tests.support.factories import demand_received
from tests.support.kafka_io import produce_raw, with_own_topics
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def unverified_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker of this module's own, without KIP-890's check that a transactional write's
    partition was added to its transaction."""
    cfg = LocalKafkaConfig.on_free_ports(
        root=ROOT, run_dir=tmp_path_factory.mktemp("kafka-unverified"), heap="384m"
    )
    cfg.extra_properties = {"transaction.partition.verification.enable": "false"}
    start_broker(cfg, timeout=120)
    try:
        yield cfg.bootstrap
    finally:
        stop_broker(cfg)


@pytest.fixture
async def settings(unverified_kafka: str) -> KafkaSettings:
    return await with_own_topics(unverified_kafka, partitions=1)


class Echo:
    """Publishes each demand's id."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.seen: list[str] = []

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        self.seen += [m.event.id for m in messages]
        return BatchResult(
            outbound=[
                OutboundRecord(topic=self.output, key=m.key, value=m.event.id.encode(), headers=[])
                for m in messages
            ]
        )


class LeaveOpen:
    """While ``on``: the output topic's partitions (and, with ``offsets``, the group's offsets
    partition) are never added to a transaction, so it ends without markers there."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, output: str, *, offsets: bool) -> None:
        self.on = True
        real_add = TransactionManager.maybe_add_partition_to_txn
        real_group = TransactionManager.consumer_group_to_add

        def add(manager: TransactionManager, tp: Any) -> None:
            if not (self.on and tp.topic == output):
                real_add(manager, tp)

        def group_to_add(manager: TransactionManager) -> str | None:
            group: str | None = real_group(manager)
            if self.on and offsets and group is not None:
                manager.consumer_group_added(group)  # as if AddOffsetsToTxn had been answered
                return None
            return group

        monkeypatch.setattr(TransactionManager, "maybe_add_partition_to_txn", add)
        monkeypatch.setattr(TransactionManager, "consumer_group_to_add", group_to_add)


def fail_first_offsets(monkeypatch: pytest.MonkeyPatch, leave: LeaveOpen) -> None:
    """The transaction open while ``leave`` is on fails at its offsets, as a broker restart's
    expired batch made it fail in test_faults (LeaderNotAvailableError), and ``leave`` goes
    off: its records were written, its abort leaves them without markers."""
    real_send_offsets = AIOKafkaProducer.send_offsets_to_transaction

    async def fail_once(producer: AIOKafkaProducer, *args: Any) -> None:
        if leave.on:
            leave.on = False
            raise LeaderNotAvailableError()
        await real_send_offsets(producer, *args)

    monkeypatch.setattr(AIOKafkaProducer, "send_offsets_to_transaction", fail_once)


class Reject(Echo):
    """Sets each demand aside (a dead letter)."""

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        self.seen += [m.event.id for m in messages]
        return BatchResult(rejected=[Rejection(message=m, reason="no") for m in messages])


async def _service(
    settings: KafkaSettings,
    handler: Echo,
    *,
    group: str | None = None,
    output_topics: tuple[str, ...] = (),
) -> ConsumerService:
    group = group or f"left-open-{uuid.uuid4().hex[:10]}"
    return ConsumerService(
        settings=settings,
        topics={topic_name(settings, Topic.DEMAND_RECEIVED): DemandReceived},
        handler=handler,
        options=RunnerOptions(
            group_id=group,
            client_id="left-open",
            source="test",
            transactional=True,
            output_topics=output_topics,
        ),
        metrics=ConsumerMetrics(CollectorRegistry()),
        transactional_id_prefix=f"{group}-tx",
    )


async def _produce(settings: KafkaSettings, ids: list[str]) -> None:
    source = topic_name(settings, Topic.DEMAND_RECEIVED)
    for demand_id in ids:
        record = encode(demand_received(id=demand_id), topic=source, source="test")
        await produce_raw(settings, source, record.value, key=record.key)


async def _published(settings: KafkaSettings, output: str, count: int) -> list[str]:
    async def read() -> list[str]:
        return [r.value.decode() for r in await read_all(settings, [output], timeout=30)]

    return await wait_until(read, accept=lambda values: len(values) >= count, timeout=60)


@asynccontextmanager
async def _supervised(service: ConsumerService, *, backoff_s: float = 0.2) -> AsyncIterator[None]:
    """The service's consumer run by a supervisor (restarted after a failed run) while the
    block lasts."""
    supervisor = Supervisor(
        service="test", initial_backoff_s=backoff_s, max_backoff_s=max(1.0, backoff_s)
    )
    supervisor.add(service.background_task())
    async with supervisor:
        yield


async def test_an_aborted_transaction_left_without_markers_is_not_committed_with_the_next(
    settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker restart's CommitFailed(LeaderNotAvailableError): a transaction whose records
    were written fails before its commit; its abort leaves them without a marker; the
    restarted consumer handles them again and commits. Before: each of them published twice
    (the next commit's marker took the open records too)."""
    output = topic_name(settings, Topic.DEMAND_CLASSIFIED)
    handler = Echo(output)
    leave = LeaveOpen(monkeypatch, output, offsets=False)
    fail_first_offsets(monkeypatch, leave)
    ids = [f"d{i}" for i in range(10)]
    await _produce(settings, ids)
    async with _supervised(await _service(settings, handler)):
        await wait_until(lambda: _off(leave), what="the first transaction failed")
        await wait_until(lambda: _seen(handler), accept=lambda seen: set(ids) <= seen)
        published = await _published(settings, output, len(ids))
    assert sorted(published) == sorted(ids)


async def test_offsets_left_pending_without_markers_are_ended_and_read_again_once(
    settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the broker left a commit answered in its shutdown: records and offsets both open.
    The consumer starts afresh (here: its next transaction fails to begin). Before: its
    stable read waited for the offsets for good, and nothing more was handled."""
    monkeypatch.setattr(consumer_module, "LEFT_OPEN_AFTER_S", 1.0)
    output = topic_name(settings, Topic.DEMAND_CLASSIFIED)
    handler = Echo(output)
    leave = LeaveOpen(monkeypatch, output, offsets=True)
    real_commit = AIOKafkaProducer.commit_transaction
    real_begin = AIOKafkaProducer.begin_transaction
    broken = {"begin": False}

    async def commit_then_break(producer: AIOKafkaProducer) -> None:
        if leave.on:
            # Nothing of it reached the coordinator, which has nothing to end: aiokafka
            # completes it without EndTxn, as the broker's answer left it.
            producer._txn_manager._txn_consumer_group = None
        await real_commit(producer)
        if leave.on:
            leave.on = False
            broken["begin"] = True  # the next transaction of this run fails: a restart

    async def begin(producer: AIOKafkaProducer) -> None:
        if broken["begin"]:
            broken["begin"] = False
            raise KafkaError("broker restarting (simulated)")
        await real_begin(producer)

    async def committed_never_answered(consumer: AIOKafkaConsumer, tp: Any) -> int | None:
        # A retriable error aiokafka retries for good: the offsets ended are never committed,
        # so none is read (the rebalance listener waited here, the processing lock held).
        await asyncio.Event().wait()
        return None

    monkeypatch.setattr(AIOKafkaProducer, "commit_transaction", commit_then_break)
    monkeypatch.setattr(AIOKafkaProducer, "begin_transaction", begin)
    monkeypatch.setattr(AIOKafkaConsumer, "committed", committed_never_answered)
    first = [f"a{i}" for i in range(5)]
    await _produce(settings, first)
    async with _supervised(await _service(settings, handler)):
        await wait_until(lambda: _off(leave), what="the first transaction left open")
        then = [f"b{i}" for i in range(5)]
        await _produce(settings, then)
        await wait_until(lambda: _seen(handler), accept=lambda seen: set(then) <= seen, timeout=90)
        published = await _published(settings, output, len(first) + len(then))
    assert sorted(published) == sorted(first + then)


async def _seen(handler: Echo) -> set[str]:
    return set(handler.seen)


async def _off(leave: LeaveOpen) -> bool:
    return not leave.on


async def test_dead_letters_left_open_are_ended_by_a_fresh_process(
    settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit of dead letters left without markers (records and offsets), then a fresh
    process (a new ConsumerService: nothing known of the last one's commits) that names its
    output topic but, as every service does, not its dead-letter topic. Before: the abort
    after the fence left the dead letters open, and the next commit's marker committed them
    with their second copies (each dead letter twice)."""
    monkeypatch.setattr(consumer_module, "LEFT_OPEN_AFTER_S", 1.0)
    source = topic_name(settings, Topic.DEMAND_RECEIVED)
    output = topic_name(settings, Topic.DEMAND_CLASSIFIED)
    dead = dlq_name(source)
    handler = Reject(output)
    leave = LeaveOpen(monkeypatch, dead, offsets=True)
    real_commit = AIOKafkaProducer.commit_transaction

    async def commit_left_open(producer: AIOKafkaProducer) -> None:
        if leave.on:
            producer._txn_manager._txn_consumer_group = None  # as in the test above
        await real_commit(producer)
        leave.on = False

    monkeypatch.setattr(AIOKafkaProducer, "commit_transaction", commit_left_open)
    group = f"left-open-{uuid.uuid4().hex[:10]}"
    first = [f"a{i}" for i in range(5)]
    await _produce(settings, first)
    async with _supervised(await _service(settings, handler, group=group)):
        await wait_until(lambda: _off(leave), what="the first transaction left open")
    handler = Reject(output)
    then = [f"b{i}" for i in range(5)]
    await _produce(settings, then)
    fresh = await _service(settings, handler, group=group, output_topics=(output,))
    async with _supervised(fresh):
        await wait_until(lambda: _seen(handler), accept=lambda seen: set(then) <= seen, timeout=90)

    async def dead_letters() -> list[str]:
        records = await read_all(settings, [dead], timeout=30)
        return [dict(r.headers)["dlq_original_offset"].decode() for r in records]

    offsets = await wait_until(dead_letters, accept=lambda got: len(got) >= len(first + then))
    assert sorted(offsets, key=int) == [str(i) for i in range(len(first + then))]


async def test_a_failed_transaction_is_ended_by_the_next_owner_of_its_partition(
    settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction that wrote records (no offsets yet) fails and is left without markers;
    its instance stops before opening the id again, and the partition goes to another one,
    which knows nothing of the failure (LeftOpen is in memory). Before: the new owner's
    first commit committed the open records with its own (each published twice)."""
    output = topic_name(settings, Topic.DEMAND_CLASSIFIED)
    handler = Echo(output)
    leave = LeaveOpen(monkeypatch, output, offsets=False)
    fail_first_offsets(monkeypatch, leave)
    group = f"left-open-{uuid.uuid4().hex[:10]}"
    ids = [f"d{i}" for i in range(10)]
    await _produce(settings, ids)
    # The failed instance does not start again before it is stopped.
    async with _supervised(await _service(settings, handler, group=group), backoff_s=60.0):
        await wait_until(lambda: _off(leave), what="the first transaction failed")
    handler = Echo(output)
    other = await _service(settings, handler, group=group, output_topics=(output,))
    async with _supervised(other):
        await wait_until(lambda: _seen(handler), accept=lambda seen: set(ids) <= seen)
        published = await _published(settings, output, len(ids))
    assert sorted(published) == sorted(ids)
