"""Where the API keys live: environment variables prefixed DEMANDSCOPE_AUTH_."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEMANDSCOPE_AUTH_", extra="ignore")

    database_url: str = Field(
        default="sqlite+aiosqlite:///.run/auth.db",
        description="SQLAlchemy URL of the API key database, shared by the three services.",
    )
    cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        description="Seconds a looked-up key is trusted from memory (revocation delay).",
    )
