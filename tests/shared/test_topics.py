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
