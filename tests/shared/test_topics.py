import pytest
from pydantic import ValidationError

from shared.kafka.settings import KafkaSettings
from shared.topics import CONSUMED_TOPICS, Topic, dlq_name, topic_specs


def test_every_consumed_topic_has_a_dead_letter_topic() -> None:
    names = {spec.name for spec in topic_specs(KafkaSettings())}
    for topic in CONSUMED_TOPICS:
        assert dlq_name(topic) in names


def test_purpose_metrics_is_compacted_and_partitions_come_from_settings() -> None:
    specs = {s.name: s for s in topic_specs(KafkaSettings(partitions=12, topic_prefix="p."))}
    assert specs["p.purpose.metrics"].config["cleanup.policy"] == "compact"
    assert specs["p.demand.received"].partitions == 12
    assert specs[f"p.{Topic.DEMAND_RECEIVED}.dlq"].config["cleanup.policy"] == "delete"


def test_every_topic_is_created_with_the_min_insync_replicas_of_the_settings() -> None:
    production = KafkaSettings(replication_factor=3, min_insync_replicas=2)
    specs = topic_specs(production)

    assert {spec.replication_factor for spec in specs} == {3}
    assert {spec.config["min.insync.replicas"] for spec in specs} == {"2"}
    # The defaults suit the single local broker: one replica, which is all of them.
    local = topic_specs(KafkaSettings())
    assert {(s.replication_factor, s.config["min.insync.replicas"]) for s in local} == {(1, "1")}


def test_more_in_sync_replicas_than_replicas_is_refused() -> None:
    with pytest.raises(ValidationError, match="min_insync_replicas must not exceed"):
        KafkaSettings(replication_factor=2, min_insync_replicas=3)


def test_purpose_metrics_rolls_and_compacts_within_the_hour() -> None:
    # The active segment is never compacted: without a roll, every rewrite stays readable.
    specs = {s.name: s for s in topic_specs(KafkaSettings())}
    config = specs["purpose.metrics"].config
    assert config["segment.ms"] == config["max.compaction.lag.ms"] == str(60 * 60 * 1000)
    assert "segment.ms" not in specs["classifier.context"].config
