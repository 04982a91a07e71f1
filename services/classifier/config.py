"""Classifier settings: environment variables prefixed DEMANDSCOPE_CLASSIFIER_."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.kafka.settings import KafkaSettings


class ClassifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEMANDSCOPE_CLASSIFIER_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address of the ops endpoints.")
    port: int = Field(default=8001, description="Port of the ops endpoints.")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    json_logs: bool = Field(default=True, description="One JSON object per log line.")
    group_id: str = Field(default="demandscope-classifier", description="Kafka consumer group.")
    transactional_id: str = Field(
        default_factory=lambda: f"demandscope-classifier-{socket.gethostname()}",
        description="Kafka transactional id; unique and stable per instance (e.g. pod name).",
    )
    model_dir: Path = Field(default=Path(".run/models"), description="Versioned model files.")
    max_batch: int = Field(default=500, ge=1, description="Records per transaction at most.")
    source_name: str = Field(default="demandscope-classifier", description="CloudEvents source.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
