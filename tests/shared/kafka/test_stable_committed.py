"""A transactional consumer reads its committed offsets only once they are stable.

aiokafka's OffsetFetch (v3, no KIP-447 ``require_stable``) answers with the offsets committed
so far while a transaction's offsets are still pending: after a broker crash right after
EndTxn was answered (its markers written only once the broker is back) that is the offset
from before the commit, and the records it covered were handled and published again.
``stable_committed`` asks with ``require_stable`` and waits for the transaction instead.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from shared.kafka.producer import create_producer
from shared.kafka.settings import KafkaSettings
from shared.kafka.transactions import stable_committed

pytestmark = pytest.mark.integration


async def test_committed_offsets_pending_in_a_transaction_are_waited_for(
    kafka_settings: KafkaSettings, topic_factory: Any
) -> None:
    source = await topic_factory(prefix="stable", partitions=2)
    output = await topic_factory(prefix="stable-out", partitions=1)
    group = f"stable-{uuid.uuid4().hex[:10]}"
    first, second = TopicPartition(source, 0), TopicPartition(source, 1)
    consumer = AIOKafkaConsumer(
        **kafka_settings.client_options(), group_id=group, enable_auto_commit=False
    )
    producer = create_producer(kafka_settings, client_id="stable", transactional_id=f"{group}-tx")
    await consumer.start()
    await producer.start()
    try:
        assert await stable_committed(consumer, group, [first, second]) == {
            first: None,
            second: None,
        }
        async with producer.transaction():
            await producer.send_and_wait(output, b"x")
            await producer.send_offsets_to_transaction({first: OffsetAndMetadata(5, "")}, group)
        assert await stable_committed(consumer, group, [first, second]) == {
            first: 5,
            second: None,
        }

        # Offsets sent in a transaction that has not ended: pending, as they are between
        # EndTxn's answer and the markers (the window a crash there makes long).
        await producer.begin_transaction()
        await producer.send_and_wait(output, b"y")
        await producer.send_offsets_to_transaction({first: OffsetAndMetadata(9, "")}, group)
        # The plain read gives the offset from before the transaction...
        assert await consumer.committed(first) == 5
        # ...the stable read waits for it to end (here: until its deadline).
        with pytest.raises(TimeoutError):
            await stable_committed(consumer, group, [first], timeout_s=3.0)
        # A partition without pending offsets is answered at once.
        assert await stable_committed(consumer, group, [second], timeout_s=10.0) == {second: None}
        waiting = asyncio.create_task(stable_committed(consumer, group, [first], timeout_s=60))
        await producer.commit_transaction()
        assert await waiting == {first: 9}
    finally:
        await producer.stop()
        await consumer.stop()
