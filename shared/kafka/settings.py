"""How to reach the Kafka cluster. Shared by every service: one prefix, DEMANDSCOPE_KAFKA_."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEMANDSCOPE_KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated host:port list of brokers."
    )
    topic_prefix: str = Field(
        default="", description="Prepended to every topic name (e.g. 'prod.'); empty by default."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How clients talk to the brokers."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism, when security_protocol uses SASL."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: str | None = Field(default=None, description="SASL password (a secret).")
    request_timeout_ms: int = Field(
        default=10_000, ge=1_000, description="Kafka client request timeout."
    )
    delivery_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="How long intake waits for the broker's acknowledgement before a 503.",
    )
    partitions: int = Field(default=6, ge=1, description="Partitions of each topic created.")
    replication_factor: int = Field(
        default=1,
        ge=1,
        description="Replicas of each topic created (3 in production: one broker can be lost).",
    )
    min_insync_replicas: int = Field(
        default=1,
        ge=1,
        description="min.insync.replicas of each topic created: how many replicas must have an "
        "acks=all write before it is acknowledged (2 with a replication factor of 3). At most "
        "the replication factor.",
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        description="Retention of the system-of-record topics (demands, classifications, case "
        "events, labels, changes) in days; unset: kept for ever, as `metrics rebuild` needs. "
        "Set it only when they are archived elsewhere.",
    )
    dlq_retention_days: int = Field(default=30, ge=1, description="Retention of .dlq topics.")

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> KafkaSettings:
        # More in-sync replicas than replicas: every acks=all write would be refused.
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError("min_insync_replicas must not exceed replication_factor")
        return self

    def client_options(self) -> dict[str, object]:
        """Connection options common to producers, consumers and the admin client."""
        options: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism:
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password,
            }
        return options
