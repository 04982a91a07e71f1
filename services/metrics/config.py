"""Metrics service settings: environment variables prefixed DEMANDSCOPE_METRICS_.

Host, port, logging, source name and the HTTP limits come from ``ServiceSettings``; only what
is the metrics service's own is declared here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.metrics.pages.settings import PagesSettings
from shared.auth.settings import AuthSettings, PeopleSettings
from shared.kafka.settings import KafkaSettings
from shared.service.settings import ServiceSettings

# The classifier's shipped example: one taxonomy for the fleet, so both read the same file.
SHIPPED_TAXONOMY = Path(__file__).parents[1] / "classifier" / "data" / "taxonomy.yaml"


class MetricsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMANDSCOPE_METRICS_", extra="ignore")

    port: int = Field(default=8002, ge=0, le=65535, description="Port of the HTTP API.")
    source_name: str = Field(default="demandscope-metrics", description="CloudEvents source.")
    database_url: str = Field(
        default="sqlite+aiosqlite:///.run/metrics.db",
        description="SQLAlchemy URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    group_id: str = Field(default="demandscope-metrics", description="Kafka consumer group.")
    instance_id: str | None = Field(
        default=None,
        description="This instance's name in the consumer group (static membership, KIP-345): "
        "the same across its restarts, unique in the group (a StatefulSet pod's name). A "
        "restarted instance takes its partitions back at once instead of waiting for its dead "
        "self's session to time out; one that stops keeps them until its session times out. "
        "Unset: `demandscope metrics serve` uses <host name>:<port>; empty: none.",
    )
    max_batch: int = Field(default=1000, ge=1, description="Records per database transaction.")
    decode_worker: bool = Field(
        default=True,
        description="On a SQLite database: decode a backlog's records, and make them ready "
        "to store, in a worker process (the second core) while the service writes the batch "
        "before (polls of more than one batch only; a consumer near the head decodes in "
        "process). Not used on PostgreSQL (not measured there). false: all in the service's "
        "process.",
    )
    rebuild_workers: int = Field(
        default=2,
        ge=0,
        le=32,
        description="Processes that compute the customers' derived rows during `metrics "
        "rebuild` on a SQLite file, beside the one that writes them (customers are "
        "independent); 0: all in the rebuild's own process.",
    )
    baseline_points: int = Field(
        default=20,
        ge=2,
        description="Values in an XmR baseline (cases for end-to-end time, days for volume).",
    )
    chart_points: int = Field(
        default=100, ge=2, description="Most recent points shown on a capability chart."
    )
    publish_debounce_s: float = Field(
        default=2.0,
        gt=0,
        description="Quiet time gathering changes before purpose.metrics is published.",
    )
    publish_window_days: int = Field(
        default=28, ge=1, description="Trailing window of the figures published per purpose."
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Larger request bodies get a 413 (checked while reading, after the key).",
    )
    audit_rate: float = Field(
        default=0.02,
        gt=0,
        le=1,
        description="Share of each purpose's weekly demands drawn into the blind audit.",
    )
    audit_min_per_week: int = Field(
        default=30, ge=0, description="Audit floor per purpose and ISO week (expected size)."
    )
    audit_max_per_week: int = Field(
        default=300, ge=1, description="Audit ceiling per purpose and ISO week (expected size)."
    )
    audit_key: SecretStr = Field(
        default=SecretStr("demandscope-audit"),
        description="Key of the hash that draws the audit: set a secret of your own, so no "
        "sender can choose ids that escape it; changing it draws a new sample.",
    )
    review_confidence_below: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="Demands classified below this confidence (or marked needs_review) "
        "are in the review queue until a person labels them.",
    )
    queue_text_retention_days: int = Field(
        default=30,
        ge=1,
        description="Days the customer's (redacted) words are kept for the review and "
        "audit queues after intake received them; then purged.",
    )
    queue_purge_interval_s: float = Field(
        default=3600, gt=0, description="How often texts the queues no longer need are purged."
    )
    taxonomy: Path = Field(
        default=SHIPPED_TAXONOMY,
        description="The organisation's taxonomy YAML (the classifier's): its purposes' owners "
        "label the signals and per-purpose gauges. Read at start; a purpose it does not name "
        "belongs to its default_owner.",
    )
    signal_publish_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often special-cause signals not yet on capability.signals are sent.",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    people: PeopleSettings = Field(default_factory=PeopleSettings)
    pages: PagesSettings = Field(default_factory=PagesSettings)

    @model_validator(mode="after")
    def _floor_below_ceiling(self) -> MetricsSettings:
        if self.audit_min_per_week > self.audit_max_per_week:
            raise ValueError("audit_min_per_week must not exceed audit_max_per_week")
        return self
