"""Intake settings: environment variables prefixed DEMANDSCOPE_INTAKE_."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
