"""The system of record keeps its history (metrics rebuild replays it); derived topics do not."""

from datetime import UTC, datetime

from shared.events import SystemChanged
from shared.kafka.settings import KafkaSettings
from shared.topics import EVENT_OF_TOPIC, HISTORY_TOPICS, Topic, dlq_name, topic_specs


def test_the_system_of_record_keeps_its_history_unless_told_otherwise() -> None:
    kept = {s.name: s.config for s in topic_specs(KafkaSettings())}
    for topic in HISTORY_TOPICS:
        assert kept[topic]["cleanup.policy"] == "delete", topic
        assert kept[topic]["retention.ms"] == "-1", topic
        assert kept[topic]["compression.type"] == "gzip", topic
    assert Topic.SYSTEM_CHANGES in HISTORY_TOPICS
    # Operators who archive the topics elsewhere bound them.
    bounded = {s.name: s.config for s in topic_specs(KafkaSettings(retention_days=400))}
    for topic in HISTORY_TOPICS:
        assert bounded[topic]["retention.ms"] == str(400 * 24 * 3600 * 1000)
    # Derived topics keep their bounds: the dead letters by time, purpose.metrics compacted.
    assert kept[dlq_name(Topic.DEMAND_CLASSIFIED)]["retention.ms"] == str(30 * 24 * 3600 * 1000)
    assert kept[Topic.PURPOSE_METRICS]["cleanup.policy"] == "compact"


def test_system_changes_carry_system_changed_keyed_by_purpose() -> None:
    assert EVENT_OF_TOPIC[Topic.SYSTEM_CHANGES] is SystemChanged
    change = SystemChanged(
        id="change-1",
        purpose="move home",
        changed_at=datetime(2026, 3, 1, tzinfo=UTC),
        note="visits booked on the call",
        recorded_at=datetime(2026, 3, 2, tzinfo=UTC),
    )
    assert change.partition_key() == "move home"
    assert change.event_id() == "change-1"
