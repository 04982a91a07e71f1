"""The local infrastructure the other tests stand on: a real Kafka broker and PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.cli import local_kafka


def test_broker_is_running(kafka_config: local_kafka.LocalKafkaConfig) -> None:
    state = local_kafka.status(kafka_config)
    assert state.running
    assert state.pid is not None
    assert state.port != 9092
    assert local_kafka.is_ready(kafka_config.host, kafka_config.port)
    # idempotent: a second start returns at once
    local_kafka.start(kafka_config, timeout=5)


async def test_topic_created_with_config(
    kafka_bootstrap: str, topic_factory: Callable[..., Awaitable[str]]
) -> None:
    topic = await topic_factory("compacted", partitions=2, config={"cleanup.policy": "compact"})
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert topic in await admin.list_topics()
        [described] = await admin.describe_topics([topic])
        assert len(described["partitions"]) == 2
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = {entry[0]: entry[1] for entry in response.resources[0][4]}
        assert entries["cleanup.policy"] == "compact"
    finally:
        await admin.close()


async def test_transactional_roundtrip_read_committed(
    kafka_bootstrap: str,
    topic_factory: Callable[..., Awaitable[str]],
    unique_group: str,
) -> None:
    source = await topic_factory("in", partitions=1)
    sink = await topic_factory("out", partitions=1)

    plain = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True, acks="all")
    await plain.start()
    try:
        for i in range(3):
            await plain.send_and_wait(source, f"m{i}".encode(), key=b"k")
    finally:
        await plain.stop()

    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=kafka_bootstrap,
        group_id=unique_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    tx = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"{unique_group}-tx")
    await consumer.start()
    await tx.start()
    try:
        seen = 0
        while seen < 3:
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, "no records from the source topic"
            for partition, records in batch.items():
                async with tx.transaction():
                    for record in records:
                        assert record.value is not None
                        await tx.send(sink, record.value.upper(), key=record.key)
                    await tx.send_offsets_to_transaction(
                        {partition: records[-1].offset + 1}, unique_group
                    )
                seen += len(records)
        # an aborted transaction must stay invisible to read_committed readers
        await tx.begin_transaction()
        await tx.send(sink, b"ABORTED")
        await tx.abort_transaction()
    finally:
        await tx.stop()
        await consumer.stop()

    reader = AIOKafkaConsumer(
        sink,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{unique_group}-reader",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await reader.start()
    try:
        values: list[bytes] = []
        for _ in range(20):
            batch = await reader.getmany(timeout_ms=1000)
            values += [r.value for records in batch.values() for r in records if r.value]
            if len(values) >= 3 and not batch:
                break
        await reader.commit()
        assert values == [b"M0", b"M1", b"M2"]
    finally:
        await reader.stop()

    checker = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=unique_group, enable_auto_commit=False
    )
    await checker.start()
    try:
        assert await checker.committed(TopicPartition(source, 0)) == 3
    finally:
        await checker.stop()


async def test_postgres_url_connects(postgres_url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    assert postgres_url.startswith("postgresql+asyncpg://")
    engine = create_async_engine(postgres_url)
    try:
        async with engine.begin() as connection:
            database = (await connection.execute(text("select current_database()"))).scalar_one()
            assert database == "demandscope"
            await connection.execute(text("create table t (id int primary key)"))
            await connection.execute(text("insert into t values (1)"))
            assert (await connection.execute(text("select count(*) from t"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_database_url_works_on_both(database_url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            assert (await connection.execute(text("select 1"))).scalar_one() == 1
    finally:
        await engine.dispose()
