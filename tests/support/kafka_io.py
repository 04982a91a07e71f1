"""Reading and writing raw records in tests, with the same client the services use."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.events import Event, PurposeMetrics
from shared.kafka.admin import ensure_topics
from shared.kafka.codec import decode, encode
from shared.kafka.producer import create_producer, send_all
from shared.kafka.read_to_end import Record, partition_counts, read_all
from shared.kafka.settings import KafkaSettings
from shared.topics import TOPIC_OF_EVENT, Topic, topic_name, topic_specs
from tests.support.waiting import wait_until


async def with_own_topics(bootstrap: str, *, partitions: int) -> KafkaSettings:
    """Settings whose topics (every demandscope topic, created) belong to one test alone."""
    settings = KafkaSettings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        partitions=partitions,
    )
    await ensure_topics(settings, topic_specs(settings))
    return settings


async def produce_raw(
    settings: KafkaSettings,
    topic: str,
    value: bytes,
    *,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(**settings.client_options(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


async def publish_events(
    settings: KafkaSettings, events: Sequence[Event], *, source: str = "test"
) -> None:
    """Each event onto the topic that carries it, keyed and with headers as upstream sends it."""
    records = [
        encode(event, topic=topic_name(settings, TOPIC_OF_EVENT[type(event)]), source=source)
        for event in events
    ]
    producer = create_producer(settings, client_id=f"{source}-publisher")
    await producer.start()
    try:
        await send_all(producer, records)
    finally:
        await producer.stop()


async def read_records(
    settings: KafkaSettings, topic: str, *, count: int, timeout: float = 30.0
) -> list[Record]:
    """Every committed record of ``topic``, once at least ``count`` are there.

    Each try reads the topic from its start to its end at that moment (read_to_end), so
    what comes back is everything committed by then, duplicates included: once the writer
    is known to be done (intake answered, a group committed), nothing more is to come.
    """
    return await wait_until(
        lambda: read_all(settings, [topic], timeout=timeout),
        accept=lambda records: len(records) >= count,
        timeout=timeout,
        what=f"{count} records on {topic}",
        show=lambda records: f"{len(records)} records",
    )


async def committed_to_end(settings: KafkaSettings, group_id: str, topics: Sequence[str]) -> bool:
    """Whether ``group_id`` has committed offsets up to the current end of every partition
    of ``topics``: all it has written for them (in the same transaction, or before the
    commit) is then on its output topics."""
    counts = await partition_counts(settings, topics)
    partitions = [TopicPartition(t, p) for t in topics for p in range(counts[t])]
    consumer = AIOKafkaConsumer(
        **settings.client_options(), group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            if ends[tp] and ((await consumer.committed(tp)) or 0) < ends[tp]:
                return False
        return True
    finally:
        await consumer.stop()


async def latest_purpose_metrics(settings: KafkaSettings) -> dict[str, PurposeMetrics]:
    """The compacted purpose.metrics topic as a new subscriber reads it: the last record per
    purpose, read to the end once (wrap in wait_until to wait for a state)."""
    topic = topic_name(settings, Topic.PURPOSE_METRICS)
    return {
        record.key.decode(): decode(PurposeMetrics, record.value)
        for record in await read_all(settings, [topic], timeout=30)
        if record.key is not None
    }
