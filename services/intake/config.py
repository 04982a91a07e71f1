"""Intake settings: environment variables prefixed DEMANDSCOPE_INTAKE_."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import AwareDatetime, Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.auth.settings import AuthSettings
from shared.kafka.settings import KafkaSettings
from shared.service.settings import ServiceSettings

EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)


class IntakeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMANDSCOPE_INTAKE_", extra="ignore")

    port: int = Field(default=8000, ge=0, le=65535, description="Port of the HTTP API.")
    source_name: str = Field(default="demandscope-intake", description="CloudEvents ce_source.")
    retry_after_s: int = Field(
        default=5, ge=1, description="Retry-After sent with a 503 while the broker is away."
    )
    earliest_event_time: AwareDatetime = Field(
        default=EARLIEST_EVENT_TIME,
        description="Dates (occurred_at, labelled_at) before this are refused with a 422.",
    )
    max_future_skew_s: int = Field(
        default=300,
        ge=0,
        description="How far ahead of intake's clock a date (occurred_at, labelled_at) may be.",
    )
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
    ledger_confirm_by_token: bool = Field(
        default=True,
        description=(
            "Confirm accepted ids by their request's claim token (one row a request); false "
            "confirms each id's row, which intake before ledger revision intake_0004 reads: "
            "set false while such instances share the ledger (upgrades, rollbacks)."
        ),
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
