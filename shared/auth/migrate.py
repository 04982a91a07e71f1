"""Run the auth database's Alembic migrations: `demandscope up`, the CLI and tests use it."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def ensure_sqlite_folder(database_url: str) -> None:
    """SQLite creates the file but not its folder (``.run/`` on a fresh checkout)."""
    if database_url.startswith("sqlite") and ":///" in database_url:
        path = database_url.split(":///", 1)[1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking (Alembic runs its own event loop): call it from a thread inside async code."""
    ensure_sqlite_folder(database_url)
    command.upgrade(alembic_config(database_url), revision)
