"""send_all's batches on the real broker: each record on the partition send() picks for its
key, in order, acknowledged; in transactions too; and concurrent callers all get through."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from shared.kafka.codec import OutboundRecord
from shared.kafka.producer import BATCH_FROM, create_producer, partition_for, send_all
from shared.kafka.read_to_end import Record, read_all
from shared.kafka.settings import KafkaSettings

pytestmark = pytest.mark.integration

TopicFactory = Callable[..., Awaitable[str]]
DEADLINE = 30.0


@pytest.fixture
def settings(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap)


def numbered(topic: str, keys: list[bytes], size: int = 0) -> list[OutboundRecord]:
    """One record per key, its value its place in the list (padded to ``size`` bytes)."""
    return [
        OutboundRecord(
            topic=topic, key=key, value=str(n).encode().ljust(size), headers=[("n", b"%d" % n)]
        )
        for n, key in enumerate(keys)
    ]


def places(records: list[Record]) -> dict[int, tuple[int, int]]:
    """Each record's number -> (partition, offset)."""
    return {int(r.value or b""): (r.partition, r.offset) for r in records}


async def started(producer: AIOKafkaProducer) -> AIOKafkaProducer:
    await producer.start()
    return producer


async def test_each_record_lands_where_send_puts_it_in_order(
    settings: KafkaSettings, topic_factory: TopicFactory
) -> None:
    batched, sent = await topic_factory("batched", 5), await topic_factory("sent", 5)
    # Keys of many lengths, most partitions holding enough for a batch, some too few.
    keys = [f"customer-{n % 40}{'x' * (n % 7)}".encode() for n in range(400)]
    keys += [b"few-%d" % n for n in range(3)]
    producer = await started(create_producer(settings, client_id="batches"))
    try:
        await send_all(producer, numbered(batched, keys))
        for record in numbered(sent, keys):  # what a plain user of aiokafka does
            await producer.send_and_wait(record.topic, record.value, key=record.key)
    finally:
        await producer.stop()

    got = places(await read_all(settings, [batched], timeout=DEADLINE))
    expected = places(await read_all(settings, [sent], timeout=DEADLINE))
    assert len(got) == len(keys)
    assert {n: p for n, (p, _) in got.items()} == {n: p for n, (p, _) in expected.items()}
    offsets_by_key: dict[bytes, list[int]] = defaultdict(list)
    for n, key in enumerate(keys):
        offsets_by_key[key].append(got[n][1])
    assert all(offsets == sorted(offsets) for offsets in offsets_by_key.values())
    per_partition: dict[int, int] = defaultdict(int)
    for partition, _ in got.values():
        per_partition[partition] += 1
    assert max(per_partition.values()) >= BATCH_FROM  # the batched path was taken


async def test_more_than_one_batch_for_a_partition_arrives_whole_and_in_order(
    settings: KafkaSettings, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("big", 1)
    records = numbered(topic, [b"one-key"] * 60, size=10_000)  # ~600 KB > max_batch_size
    producer = await started(create_producer(settings, client_id="big"))
    try:
        await send_all(producer, records)
    finally:
        await producer.stop()

    got = await read_all(settings, [topic], timeout=DEADLINE)
    assert [int(r.value or b"") for r in got] == list(range(60))
    assert [list(r.headers) for r in got] == [r.headers for r in records]


async def test_a_transaction_publishes_its_batches_only_when_committed(
    settings: KafkaSettings, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("tx", 3)
    keys = [b"k%d" % (n % 9) for n in range(90)]
    producer = await started(
        create_producer(settings, client_id="tx", transactional_id=f"tx-{uuid.uuid4().hex}")
    )
    try:
        async with producer.transaction():
            await send_all(producer, numbered(topic, keys))
        await producer.begin_transaction()
        await send_all(producer, numbered(topic, [b"aborted"] * 20))
        await producer.abort_transaction()
        async with producer.transaction():
            await send_all(producer, numbered(topic, [b"k0"] * 10))
    finally:
        await producer.stop()

    got = await read_all(settings, [topic], timeout=DEADLINE)
    assert sorted(int(r.value or b"") for r in got) == sorted([*range(90), *range(10)])
    assert all(r.key != b"aborted" for r in got)


async def test_concurrent_callers_on_one_partition_all_get_through(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    # The shortest request timeout: aiokafka's send_batch, raced by other callers, spends
    # it within a few rounds (a KafkaTimeoutError without the gate in send_all).
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, request_timeout_ms=1_000)
    topic = await topic_factory("race", 1)
    producer = await started(create_producer(settings, client_id="race"))

    async def batches(caller: int) -> None:
        for round_ in range(25):
            await send_all(producer, numbered(topic, [b"b%d-%d" % (caller, round_)] * 40))

    async def singles(caller: int) -> None:
        for round_ in range(20):
            await send_all(producer, numbered(topic, [b"s%d-%d" % (caller, round_)]))

    try:
        await asyncio.wait_for(
            asyncio.gather(*(batches(c) for c in range(6)), *(singles(c) for c in range(64))),
            DEADLINE,
        )
    finally:
        await producer.stop()

    got = await read_all(settings, [topic], timeout=DEADLINE)
    assert len(got) == 6 * 25 * 40 + 64 * 20


def test_the_partition_is_the_default_partitioners() -> None:
    rng = random.Random(14)
    keys = [rng.randbytes(rng.randrange(0, 60)) for _ in range(3_000)]
    for count in (1, 2, 3, 6, 7):
        partitions = list(range(count))
        for key in keys:
            assert partition_for(key, partitions, partitions) == DefaultPartitioner()(
                key, partitions, partitions
            )
    assert partition_for(None, [0, 1, 2], [2]) == 2  # no key: an available one
