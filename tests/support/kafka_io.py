"""Reading and writing raw records in tests, with the same client the services use."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.events import Event
from shared.kafka.codec import encode
from shared.kafka.producer import create_producer, send_all
from shared.kafka.settings import KafkaSettings
from shared.topics import TOPIC_OF_EVENT, topic_name


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
) -> list[Any]:
    """Read at least ``count`` committed records from the start of ``topic``."""
    consumer = AIOKafkaConsumer(
        topic,
        **settings.client_options(),
        group_id=f"reader-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
        # Give stragglers (duplicates we must not have) a moment to show up.
        if records:
            await asyncio.sleep(0)
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    if len(records) < count:
        raise AssertionError(f"only {len(records)} of {count} records arrived on {topic}")
    return records
