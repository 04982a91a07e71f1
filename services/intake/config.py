"""Intake settings: environment variables prefixed DEMANDSCOPE_INTAKE_."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.auth.settings import AuthSettings
from shared.kafka.settings import KafkaSettings


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEMANDSCOPE_INTAKE_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(default=8000, description="Port of the HTTP API.")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    json_logs: bool = Field(default=True, description="One JSON object per log line.")
    retry_after_s: int = Field(
        default=5, ge=1, description="Retry-After sent with a 503 while the broker is away."
    )
    max_future_skew_s: int = Field(
        default=300, ge=0, description="How far in the future an occurred_at may be (clock skew)."
    )
    source_name: str = Field(default="demandscope-intake", description="CloudEvents ce_source.")
    database_url: str = Field(
        default="sqlite+aiosqlite:///.run/intake.db",
        description="Idempotency ledger (SQLAlchemy URL); PostgreSQL when several instances run.",
    )
    idempotency_retention_days: float = Field(
        default=7, gt=0, description="How long an accepted event id is remembered as a duplicate."
    )
    purge_interval_s: float = Field(
        default=3600, gt=0, description="How often ids older than the retention are forgotten."
    )
    claim_lease_s: float = Field(
        default=30,
        gt=0,
        description="After this, an id claimed by an instance that never confirmed is retaken.",
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="Larger request bodies get a 413."
    )
    max_batch_items: int = Field(
        default=1000, ge=1, le=10_000, description="Most events in one batch request."
    )
    redaction_patterns: dict[str, str] = Field(
        default_factory=dict,
        description='Extra patterns to mask, as JSON {"kind": "regex"}, e.g. account numbers.',
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    @model_validator(mode="after")
    def _lease_outlives_delivery(self) -> IntakeSettings:
        # A claim must outlive the wait for the broker, or a slow ack would be retaken.
        if self.claim_lease_s <= self.kafka.delivery_timeout_s:
            raise ValueError("claim_lease_s must be longer than kafka.delivery_timeout_s")
        return self
