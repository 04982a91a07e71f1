"""Topic names, beside the events they carry, and what each topic needs from the cluster."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from shared.events import (
    CaseEvent,
    DemandClassified,
    DemandLabelled,
    DemandReceived,
    Event,
    PurposeMetrics,
    SpecialCauseSignalled,
    SystemChanged,
)
from shared.kafka.settings import KafkaSettings

DLQ_SUFFIX = ".dlq"
_HOUR_MS = 60 * 60 * 1000
_DAY_MS = 24 * _HOUR_MS


class Topic(StrEnum):
    DEMAND_RECEIVED = "demand.received"
    DEMAND_CLASSIFIED = "demand.classified"
    CASE_EVENTS = "case.events"
    DEMAND_LABELS = "demand.labels"
    PURPOSE_METRICS = "purpose.metrics"
    # Each special-cause signal once, keyed by purpose, with its owning team.
    CAPABILITY_SIGNALS = "capability.signals"
    # Changes to the system people record (the metrics API and pages), keyed by purpose.
    SYSTEM_CHANGES = "system.changes"
    # The classifier's per-customer context, compacted so a restart rebuilds it.
    CLASSIFIER_CONTEXT = "classifier.context"
    # Labels re-keyed by customer, for the classifier instance that holds its context.
    CLASSIFIER_CONTEXT_LABELS = "classifier.context-labels"


EVENT_OF_TOPIC: dict[Topic, type[Event]] = {
    Topic.DEMAND_RECEIVED: DemandReceived,
    Topic.DEMAND_CLASSIFIED: DemandClassified,
    Topic.CASE_EVENTS: CaseEvent,
    Topic.DEMAND_LABELS: DemandLabelled,
    Topic.PURPOSE_METRICS: PurposeMetrics,
    Topic.CAPABILITY_SIGNALS: SpecialCauseSignalled,
    Topic.SYSTEM_CHANGES: SystemChanged,
}

TOPIC_OF_EVENT: dict[type[Event], Topic] = {event: topic for topic, event in EVENT_OF_TOPIC.items()}

# Topics that services consume, and so need a dead-letter topic beside them.
CONSUMED_TOPICS: tuple[Topic, ...] = (
    Topic.DEMAND_RECEIVED,
    Topic.DEMAND_CLASSIFIED,
    Topic.CASE_EVENTS,
    Topic.DEMAND_LABELS,
    Topic.SYSTEM_CHANGES,
)


# The system of record: every figure is a function of these (docs/operations.md, "Retained
# history and its sizing"). Derived topics (purpose.metrics, the dead letters) are not.
HISTORY_TOPICS: tuple[Topic, ...] = (
    Topic.DEMAND_RECEIVED,
    Topic.DEMAND_CLASSIFIED,
    Topic.CASE_EVENTS,
    Topic.DEMAND_LABELS,
    Topic.SYSTEM_CHANGES,
)


def topic_name(settings: KafkaSettings, topic: Topic | str) -> str:
    return f"{settings.topic_prefix}{topic}"


def dlq_name(name: str) -> str:
    return f"{name}{DLQ_SUFFIX}"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: KafkaSettings) -> list[TopicSpec]:
    """Every topic demandscope needs, with the partitions and policy each one wants."""
    # The system of record: `metrics rebuild` replays these from their first offset, so they
    # keep their history (retention.ms=-1) unless operators archive them elsewhere. The broker
    # compresses what it keeps: about a third less on disk for one-record batches, more for
    # larger ones; gzip, because every consumer (teams' tools too) can read it without a codec
    # library (docs/operations.md, "Retained history and its sizing").
    kept_ms = -1 if settings.retention_days is None else settings.retention_days * _DAY_MS
    history = {"cleanup.policy": "delete", "retention.ms": str(kept_ms), "compression.type": "gzip"}
    compacted = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
    dlq = {"cleanup.policy": "delete", "retention.ms": str(settings.dlq_retention_days * _DAY_MS)}
    specs: list[TopicSpec] = []

    def add(topic: Topic | str, config: dict[str, str], partitions: int | None = None) -> None:
        specs.append(
            TopicSpec(
                name=topic_name(settings, topic),
                partitions=partitions or settings.partitions,
                replication_factor=settings.replication_factor,
                # Every demandscope producer writes with acks=all: this is what "all" means.
                config={**config, "min.insync.replicas": str(settings.min_insync_replicas)},
            )
        )

    # Not compacted: they are keyed by customer, demand or purpose, and every key has many
    # events that all count; compaction would keep one per key (docs/operations.md).
    for topic in HISTORY_TOPICS:
        add(topic, history)
    # The publisher rewrites every changed purpose every few seconds, and the active segment
    # is never compacted (it rolls at 1 GB or 7 days by default): without these, a reader
    # (the classifier's prior, failure_share.py) reads hundreds of thousands of old figures.
    # Rolled hourly and compacted within the hour, it holds about an hour's rewrites.
    # Applied when the topic is created; an existing topic keeps its config.
    add(
        Topic.PURPOSE_METRICS,
        {**compacted, "segment.ms": str(_HOUR_MS), "max.compaction.lag.ms": str(_HOUR_MS)},
    )
    # Few (one record per signal, ever) and each team's record of what its charts said.
    add(Topic.CAPABILITY_SIGNALS, history)
    add(Topic.CLASSIFIER_CONTEXT, compacted)
    # Consumed within minutes; a copy of demand.labels, so no history of its own.
    add(
        Topic.CLASSIFIER_CONTEXT_LABELS,
        {"cleanup.policy": "delete", "retention.ms": str(7 * _DAY_MS)},
    )
    add(dlq_name(str(Topic.CLASSIFIER_CONTEXT_LABELS)), dlq, partitions=1)
    for topic in CONSUMED_TOPICS:
        add(dlq_name(str(topic)), dlq, partitions=1)
    return specs
