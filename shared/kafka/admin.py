"""Create topics idempotently, so the same command serves a laptop and a production cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.kafka.settings import KafkaSettings
from shared.topics import TopicSpec


@dataclass(frozen=True)
class TopicResult:
    name: str
    created: bool


async def ensure_topics(settings: KafkaSettings, specs: Sequence[TopicSpec]) -> list[TopicResult]:
    admin = AIOKafkaAdminClient(**settings.client_options(), client_id="demandscope-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            # Another instance may win the race: that is what idempotent means.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            name=spec.name,
                            num_partitions=spec.partitions,
                            replication_factor=spec.replication_factor,
                            topic_configs=spec.config,
                        )
                        for spec in missing
                    ]
                )
        missing_names = {spec.name for spec in missing}
        return [TopicResult(spec.name, spec.name in missing_names) for spec in specs]
    finally:
        await admin.close()
