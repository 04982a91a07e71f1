"""read_to_end on the real broker: plain, empty and transactional topics.

On a transactional topic the last offset is a commit or abort marker, which no consumer is
ever handed: a read that waits for the record at end - 1 runs into its deadline, so every
test here bounds the read and checks it returned well before it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from shared.kafka.read_to_end import (
    ReadToEndTimeout,
    partition_counts,
    read_all,
    read_to_end,
)
from shared.kafka.settings import KafkaSettings

pytestmark = pytest.mark.integration

TopicFactory = Callable[..., Awaitable[str]]
DEADLINE = 20.0


@pytest.fixture
def settings(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap)


async def produce(settings: KafkaSettings, topic: str, values: list[bytes], **send: int) -> None:
    producer = AIOKafkaProducer(**settings.client_options(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=value, **send)
    finally:
        await producer.stop()


async def timed_read(
    settings: KafkaSettings,
    sources: list[str | TopicPartition],
    from_offsets: dict[TopicPartition, int] | None = None,
) -> tuple[list[bytes | None], float]:
    started = time.monotonic()
    records = await read_all(settings, sources, from_offsets=from_offsets, timeout=DEADLINE)
    return [r.value for r in records], time.monotonic() - started


async def test_a_plain_topic_is_read_whole_in_order_per_partition(
    settings: KafkaSettings, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("plain", partitions=3)
    values = [f"v{n:02d}".encode() for n in range(30)]
    await produce(settings, topic, values)

    records = await read_all(settings, [topic], timeout=DEADLINE)

    assert sorted(r.value for r in records) == values  # each once, none missing
    for partition in range(3):
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(len(offsets)))


async def test_records_written_after_the_start_are_not_read(
    settings: KafkaSettings, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("moving", partitions=1)
    await produce(settings, topic, [b"before-1", b"before-2"])
    seen: list[bytes | None] = []
    async with read_to_end(settings, [topic], timeout=DEADLINE, max_records=1) as reader:
        assert reader.end_offsets == {TopicPartition(topic, 0): 2}
        await produce(settings, topic, [b"after-1", b"after-2"])
        async for batch in reader:
            seen += [r.value for r in batch]
        assert reader.offsets_read == reader.total == 2
    assert seen == [b"before-1", b"before-2"]


async def test_given_offsets_and_partitions_start_and_bound_the_read(
    settings: KafkaSettings, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("offsets", partitions=2)
    await produce(settings, topic, [b"a0", b"a1", b"a2", b"a3"], partition=0)
    await produce(settings, topic, [b"b0", b"b1"], partition=1)

    values, _ = await timed_read(
        settings,
        [TopicPartition(topic, 0)],
        from_offsets={TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 0},
    )

    assert values == [b"a2", b"a3"]  # partition 1 was not asked for


async def test_an_empty_topic_ends_at_once(
    settings: KafkaSettings, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("empty", partitions=3)

    async with read_to_end(settings, [topic], timeout=DEADLINE) as reader:
        batches = [batch async for batch in reader]
        assert reader.partitions == [TopicPartition(topic, p) for p in range(3)]
        assert reader.total == 0

    assert batches == []
    missing = f"missing-{uuid.uuid4().hex}"
    assert await partition_counts(settings, [topic, missing]) == {topic: 3, missing: 0}


@pytest.mark.parametrize("last", ["commit", "abort"])
async def test_a_transactional_topic_returns_exactly_the_committed_records_before_the_deadline(
    settings: KafkaSettings, topic_factory: TopicFactory, last: str
) -> None:
    topic = await topic_factory("tx", partitions=1)
    tx = AIOKafkaProducer(**settings.client_options(), transactional_id=f"tx-{uuid.uuid4().hex}")
    await tx.start()
    try:
        async with tx.transaction():
            await tx.send_and_wait(topic, b"c1")
            await tx.send_and_wait(topic, b"c2")
        await tx.begin_transaction()
        await tx.send_and_wait(topic, b"aborted-1")
        await tx.abort_transaction()
        async with tx.transaction():
            await tx.send_and_wait(topic, b"c3")
        if last == "abort":
            await tx.begin_transaction()
            await tx.send_and_wait(topic, b"aborted-2")
            await tx.abort_transaction()
    finally:
        await tx.stop()

    started = time.monotonic()
    async with read_to_end(settings, [topic], timeout=DEADLINE) as reader:
        records = [record async for batch in reader for record in batch]
        end = reader.end_offsets[TopicPartition(topic, 0)]
    elapsed = time.monotonic() - started

    assert [r.value for r in records] == [b"c1", b"c2", b"c3"]
    # What makes this topic hard: no record the consumer sees sits at end - 1 (a marker or
    # an aborted record does), so "stop once offset end - 1 has arrived" never stops.
    assert records[-1].offset < end - 1
    assert elapsed < DEADLINE / 2, f"took {elapsed:.1f}s of a {DEADLINE}s deadline"


async def test_an_open_transaction_does_not_hold_the_read_up(
    settings: KafkaSettings, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("open-tx", partitions=1)
    tx = AIOKafkaProducer(**settings.client_options(), transactional_id=f"tx-{uuid.uuid4().hex}")
    await tx.start()
    try:
        async with tx.transaction():
            await tx.send_and_wait(topic, b"committed")
        await tx.begin_transaction()
        await tx.send_and_wait(topic, b"in-flight")
        # Read while the transaction is open: its end is the last stable offset, before it.
        values, elapsed = await timed_read(settings, [topic])
        await tx.abort_transaction()
    finally:
        await tx.stop()

    assert values == [b"committed"]
    assert elapsed < DEADLINE / 2


async def test_a_read_past_its_deadline_raises(
    settings: KafkaSettings, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("slow", partitions=1)
    await produce(settings, topic, [b"1", b"2", b"3"])

    async def read_slowly() -> None:
        async with read_to_end(settings, [topic], timeout=1.0, max_records=1) as reader:
            async for _batch in reader:
                # A slow caller on purpose: the deadline counts its time between batches.
                await asyncio.sleep(1.0)

    with pytest.raises(ReadToEndTimeout, match=r"not at the end after 1.0s: .*\[0\] at \d of 3"):
        await read_slowly()
