"""The auth database's migrations: `demandscope up`, the CLI and tests use it."""

from __future__ import annotations

from pathlib import Path

from shared.database import migrations

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking (Alembic runs its own event loop): call it from a thread inside async code."""
    migrations.upgrade(MIGRATIONS, database_url, revision)
