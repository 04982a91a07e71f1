"""Where the API keys and accounts live, and how people sign in: DEMANDSCOPE_AUTH_."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
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


# Secrets that say "I was never set": refused outside development.
_PLACEHOLDER_SECRETS = {"changethis", "changeme", "secret", "development", "dev"}
MIN_SECRET_LENGTH = 32


class PeopleSettings(BaseSettings):
    """How people sign in to the pages (also DEMANDSCOPE_AUTH_): accounts or a trusted proxy.

    Only the service that serves pages (metrics) reads these, so a missing session secret
    stops that service, never intake or the classifier.
    """

    model_config = SettingsConfigDict(env_prefix="DEMANDSCOPE_AUTH_", extra="ignore")

    environment: Literal["development", "production"] = Field(
        default="development",
        description="production refuses a missing, short or placeholder session secret and "
        "sends the session cookie only over HTTPS.",
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description="Signs the pages' session cookies (32+ characters, e.g. `openssl rand "
        "-hex 32`). Unset in development: a random one per process (sessions end on restart).",
    )
    session_max_age_s: int = Field(
        default=12 * 3600, ge=60, description="A session ends this long after signing in."
    )
    trusted_proxy_header: str | None = Field(
        default=None,
        description="Trust this header (e.g. X-Forwarded-User) for who is signed in: only "
        "behind an authenticating proxy (oauth2-proxy) that sets it and strips it from clients.",
    )
    trusted_proxy_role_header: str | None = Field(
        default=None,
        description="With trusted_proxy_header: the header naming the person's role "
        "(viewer, reviewer or admin); unset or unknown, trusted_proxy_default_role applies.",
    )
    trusted_proxy_default_role: Literal["viewer", "reviewer", "admin"] = Field(
        default="viewer", description="Role of a person the proxy names without a role."
    )

    @model_validator(mode="after")
    def _strong_secret_outside_development(self) -> PeopleSettings:
        if self.environment == "development":
            return self
        secret = self.session_secret.get_secret_value() if self.session_secret else ""
        if len(secret) < MIN_SECRET_LENGTH or secret.lower() in _PLACEHOLDER_SECRETS:
            raise ValueError(
                "DEMANDSCOPE_AUTH_SESSION_SECRET must be set to 32 or more random characters "
                "outside development (e.g. `openssl rand -hex 32`)"
            )
        return self
