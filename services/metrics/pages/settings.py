"""Settings of the pages and of the capacity figure: environment variables DEMANDSCOPE_PAGES_."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Minutes of staff time a demand takes when its source does not say (attributes
# handling_seconds): rough contact-centre averages, to be replaced by an organisation's own.
DEFAULT_HANDLING_SECONDS = {
    "phone": 420.0,
    "email": 300.0,
    "chat": 480.0,
    "web": 240.0,
    "letter": 600.0,
    "face_to_face": 900.0,
    "social": 240.0,
    "other": 300.0,
}


class PagesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEMANDSCOPE_PAGES_", extra="ignore")

    assets_dir: Path = Field(
        default=Path(".run/assets"),
        description="Where `make install` puts htmx and Vega (services/metrics/pages/"
        "vendor.json); served at /pages/vendor/. Missing: pages show tables without charts.",
    )
    average_handling_seconds: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_HANDLING_SECONDS),
        description="Staff seconds per demand by channel, used where a demand carries no "
        'handling_seconds attribute (JSON, e.g. {"phone": 420}).',
    )
