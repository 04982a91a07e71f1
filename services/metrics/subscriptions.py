"""The topics the metrics service reads, and the event each carries (live and in a rebuild)."""

from __future__ import annotations

from shared.events import CaseEvent, DemandClassified, DemandLabelled, Event, SystemChanged
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name


def consumed_topics(settings: KafkaSettings) -> dict[str, type[Event]]:
    return {
        topic_name(settings, Topic.DEMAND_CLASSIFIED): DemandClassified,
        topic_name(settings, Topic.CASE_EVENTS): CaseEvent,
        topic_name(settings, Topic.DEMAND_LABELS): DemandLabelled,
        topic_name(settings, Topic.SYSTEM_CHANGES): SystemChanged,
    }
