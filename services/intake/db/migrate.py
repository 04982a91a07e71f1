"""Run intake's Alembic migrations: `demandscope up`, `intake migrate` and tests use it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.auth.migrate import ensure_sqlite_folder
from shared.auth.migrate import upgrade as upgrade_auth

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking (Alembic runs its own event loop): call it from a thread inside async code."""
    ensure_sqlite_folder(database_url)
    command.upgrade(alembic_config(database_url), revision)


def upgrade_all(intake_database_url: str, auth_database_url: str) -> None:
    """Everything intake needs before it starts: its ledger and the shared auth database."""
    upgrade(intake_database_url)
    upgrade_auth(auth_database_url)
