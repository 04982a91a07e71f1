"""Topics are created with the settings' replication and min.insync.replicas, on the broker."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.kafka.admin import ensure_topics
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name, topic_specs

pytestmark = pytest.mark.integration


async def _topic_config(settings: KafkaSettings, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(**settings.client_options())
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    [(_error, _message, _type, _name, entries)] = response.resources
    return {entry[0]: entry[1] for entry in entries}


async def test_the_broker_keeps_the_min_insync_replicas_the_settings_ask_for(
    kafka_bootstrap: str,
) -> None:
    settings = KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        partitions=1,
    )
    results = await ensure_topics(settings, topic_specs(settings))
    assert all(result.created for result in results)

    config = await _topic_config(settings, topic_name(settings, Topic.CAPABILITY_SIGNALS))

    assert config["min.insync.replicas"] == "1"
    # Created again (another instance starting): nothing to do, nothing changed.
    assert not any(
        result.created for result in await ensure_topics(settings, topic_specs(settings))
    )
