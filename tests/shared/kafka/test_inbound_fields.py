"""Inbound's fields as the runner fills them, without a broker: ``ConsumerRunner._prepare``
builds each Inbound positionally, so a field order changed (or two arguments swapped, such
as partition and timestamp_ms, both ints) must fail here. The classifier keys its state by
``message.partition``."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from shared.events import DemandReceived
from shared.kafka.codec import encode
from shared.kafka.consumer import ConsumerRunner, Inbound, RunnerOptions
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.settings import KafkaSettings
from tests.support.factories import demand_received

TOPIC = "demands"


def test_inbounds_fields_are_in_the_order_prepare_passes_them() -> None:
    assert [field.name for field in dataclasses.fields(Inbound)] == [
        "topic",
        "partition",
        "offset",
        "key",
        "event",
        "headers",
        "timestamp_ms",
    ], (
        "Inbound's fields moved: ConsumerRunner._prepare (shared/kafka/consumer.py) builds "
        "Inbound positionally, in this order; change it there too"
    )


def _runner() -> ConsumerRunner:
    return ConsumerRunner(
        settings=KafkaSettings(),
        topics={TOPIC: DemandReceived},
        handler=cast(Any, None),  # _prepare does not call it
        options=RunnerOptions(group_id="g", client_id="c", source="test"),
        metrics=ConsumerMetrics(CollectorRegistry()),
        producer=cast(AIOKafkaProducer, object()),  # not transactional: one is required
    )


def _record(partition: int, offset: int, timestamp: int, key: bytes, value: bytes) -> Any:
    return ConsumerRecord(
        topic=TOPIC,
        partition=partition,
        offset=offset,
        timestamp=timestamp,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=((f"h{partition}", b"v"),),
    )


def test_prepare_fills_each_inbound_field_from_its_own_record_field() -> None:
    # Every coordinate distinct from every other (and from the other record's), so any two
    # arguments swapped, or one read from the wrong record field, shows.
    first, second = demand_received(id="d-1"), demand_received(id="d-2")
    records = [
        _record(3, 41, 1_764_244_209_123, b"C-1", encode(first, topic=TOPIC, source="t").value),
        _record(5, 97, 1_764_244_210_456, b"C-2", encode(second, topic=TOPIC, source="t").value),
    ]
    batches = {TopicPartition(TOPIC, r.partition): [r] for r in records}
    prepared = _runner()._prepare(batches)
    assert prepared.dead == []
    for message, record, event in zip(prepared.messages, records, (first, second), strict=True):
        assert type(message) is Inbound
        assert message.topic == TOPIC
        assert message.partition == record.partition
        assert message.offset == record.offset
        assert message.key == record.key
        assert message.event == event
        assert message.headers == list(record.headers)
        assert type(message.headers) is list
        assert message.timestamp_ms == record.timestamp
        assert message == Inbound(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            event=event,
            headers=list(record.headers),
            timestamp_ms=record.timestamp,
        )
    assert prepared.offsets == {TopicPartition(TOPIC, 3): 42, TopicPartition(TOPIC, 5): 98}
