"""Metrics service settings: environment variables prefixed DEMANDSCOPE_METRICS_."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.auth.settings import AuthSettings
from shared.kafka.settings import KafkaSettings


class MetricsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEMANDSCOPE_METRICS_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(default=8002, description="Port of the HTTP API.")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    json_logs: bool = Field(default=True, description="One JSON object per log line.")
    database_url: str = Field(
        default="sqlite+aiosqlite:///.run/metrics.db",
        description="SQLAlchemy URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    group_id: str = Field(default="demandscope-metrics", description="Kafka consumer group.")
    max_batch: int = Field(default=1000, ge=1, description="Records per database transaction.")
    source_name: str = Field(default="demandscope-metrics", description="CloudEvents source.")
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
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
