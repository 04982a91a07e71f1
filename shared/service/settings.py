"""``ServiceSettings``: the fields every service has; each service adds only its own."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ServiceSettings(BaseSettings):
    """Base of ``IntakeSettings``, ``ClassifierSettings`` and ``MetricsSettings``.

    A subclass sets its own ``env_prefix`` (``DEMANDSCOPE_INTAKE_`` ...) and default port.
    """

    host: str = Field(default="127.0.0.1", description="Address the HTTP server listens on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port of the HTTP server.")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    json_logs: bool = Field(default=True, description="One JSON object per log line.")
    source_name: str = Field(
        default="demandscope", description="CloudEvents ce_source of what this service publishes."
    )
    shutdown_timeout_s: float = Field(
        default=20,
        gt=0,
        description="How long a stop waits for background work (the batch in hand) to finish.",
    )
    restart_backoff_s: float = Field(
        default=0.5, gt=0, description="First delay before a failed background task is rerun."
    )
    restart_backoff_max_s: float = Field(
        default=30, gt=0, description="Longest delay between reruns of a failing background task."
    )
    http_keep_alive_s: int = Field(
        default=5, ge=1, description="Idle keep-alive connections are closed after this."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Larger request bodies get a 413 (counted while they stream).",
    )
    http_body_timeout_s: float = Field(
        default=30,
        gt=0,
        description="A request body that stalls this long between chunks gets a 408.",
    )
    http_limit_concurrency: int = Field(
        default=2000,
        ge=10,
        description="Connections served at once; more get a 503 (protects file descriptors).",
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
        return level
