"""ManagedProducer's single records gathered across concurrent callers (send_gathered): each
lands once, on the partition send() picks, in each caller's order, in fewer batches than
records; a refused batch is every one of its callers' BrokerUnavailable."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from shared.kafka.codec import OutboundRecord
from shared.kafka.producer import (
    BrokerUnavailable,
    ManagedProducer,
    create_producer,
    send_gathered,
)
from shared.kafka.read_to_end import read_all
from shared.kafka.settings import KafkaSettings
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

TopicFactory = Callable[..., Awaitable[str]]
DEADLINE = 30.0


async def _connected(settings: KafkaSettings) -> tuple[ManagedProducer, asyncio.Task[None]]:
    managed = ManagedProducer(settings, client_id="gathered")
    upkeep = asyncio.create_task(managed.maintain())

    async def connected() -> bool:
        return managed.producer is not None

    await wait_until(connected, timeout=DEADLINE, what="the producer connected")
    return managed, upkeep


async def _closed(managed: ManagedProducer, upkeep: asyncio.Task[None]) -> None:
    upkeep.cancel()
    await asyncio.gather(upkeep, return_exceptions=True)
    await managed.close()


def _record(topic: str, key: bytes, value: str) -> OutboundRecord:
    return OutboundRecord(topic=topic, key=key, value=value.encode(), headers=[("v", b"1")])


async def test_concurrent_single_records_land_once_in_order_in_fewer_batches(
    kafka_bootstrap: str, topic_factory: TopicFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    topic, other = await topic_factory("gathered", 5), await topic_factory("several", 5)
    managed, upkeep = await _connected(settings)
    assert managed.producer is not None
    batches = batched = 0
    send_batch = managed.producer.send_batch

    async def counted(batch: Any, to: str, **kwargs: Any) -> Any:
        nonlocal batches, batched
        if to == topic:
            batches += 1
            batched += batch.record_count()
        return await send_batch(batch, to, **kwargs)

    monkeypatch.setattr(managed.producer, "send_batch", counted)

    async def single(caller: int) -> None:  # one record a call, each after the last's ack
        for n in range(10):
            await managed.send_and_wait([_record(topic, b"c%d" % (caller % 37), f"{caller}-{n}")])

    async def several(caller: int) -> None:  # calls of a few records and of many, mixed in
        for n in range(5):
            size = 3 if n % 2 else 40
            records = [_record(other, b"m%d" % k, f"m{caller}-{n}-{k}") for k in range(size)]
            await managed.send_and_wait(records)

    try:
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(*(single(c) for c in range(150)), *(several(c) for c in range(3)))
    finally:
        await _closed(managed, upkeep)

    got = await read_all(settings, [topic, other], timeout=DEADLINE)
    values = [(r.value or b"").decode() for r in got]
    assert len(values) == len(set(values)) == 150 * 10 + 3 * (3 * 40 + 2 * 3)
    partitioner = DefaultPartitioner()
    partitions = list(range(5))
    assert all(r.partition == partitioner(r.key, partitions, partitions) for r in got)
    order: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in got:
        caller, _, n = (r.value or b"").decode().partition("-")
        if not caller.startswith("m"):
            order[caller].append((r.offset, int(n)))
    assert all([n for _, n in sorted(sent)] == list(range(10)) for sent in order.values())
    # Every single record went in a batch of gathered records: far fewer batches than records.
    assert batched == 150 * 10
    assert batches < 150 * 10 / 2


async def test_a_refused_batch_is_each_callers_broker_unavailable(
    kafka_bootstrap: str, topic_factory: TopicFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    topic = await topic_factory("refused", 1)
    managed, upkeep = await _connected(settings)
    assert managed.producer is not None

    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise KafkaError("refused for the test")

    monkeypatch.setattr(managed.producer, "send_batch", refused)
    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(managed.send_and_wait([_record(topic, b"k", str(n))]) for n in range(20)),
                return_exceptions=True,
            ),
            DEADLINE,
        )
    finally:
        await _closed(managed, upkeep)
    assert all(isinstance(outcome, BrokerUnavailable) for outcome in outcomes)


async def test_single_records_of_one_key_land_in_the_order_they_were_sent(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    topic = await topic_factory("ordered", 3)
    managed, upkeep = await _connected(settings)
    try:
        async with asyncio.timeout(DEADLINE):
            for round_ in range(5):  # calls started in order, none awaited before the next
                calls = [
                    asyncio.create_task(
                        managed.send_and_wait([_record(topic, b"one-key", f"{round_}-{n}")])
                    )
                    for n in range(60)
                ]
                await asyncio.gather(*calls)
    finally:
        await _closed(managed, upkeep)

    got = await read_all(settings, [topic], timeout=DEADLINE)
    sent = [f"{round_}-{n}" for round_ in range(5) for n in range(60)]
    assert [(r.value or b"").decode() for r in sorted(got, key=lambda r: r.offset)] == sent


async def test_a_stopped_producer_is_not_kept_alive_by_its_gathering(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    # ManagedProducer retires broken producers for good; their gatherings must let them go.
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    topic = await topic_factory("gone", 1)
    producer = create_producer(settings, client_id="gone")
    await producer.start()
    try:
        await asyncio.wait_for(send_gathered(producer, [_record(topic, b"k", "v")]), DEADLINE)
    finally:
        await producer.stop()
    gone = weakref.ref(producer)
    del producer
    await asyncio.sleep(0)  # the drain task's last step
    gc.collect()
    assert gone() is None
