"""The classifier database's migrations: `demandscope classifier migrate`, `demandscope
migrate` and the tests run them; the service itself never does."""

from __future__ import annotations

from pathlib import Path

from shared.database import migrations

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version_classifier"


def upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking (Alembic runs its own event loop): call it from a thread inside async code."""
    migrations.upgrade(MIGRATIONS, database_url, revision)
