"""Intake's migrations: `demandscope up`, `intake migrate` and the tests use it."""

from __future__ import annotations

from pathlib import Path

from alembic import command

from shared.auth.migrate import upgrade as upgrade_auth
from shared.database import migrations

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking (Alembic runs its own event loop): call it from a thread inside async code."""
    migrations.upgrade(MIGRATIONS, database_url, revision)


def downgrade(database_url: str, revision: str) -> None:
    """Down to ``revision`` (a code rollback, docs/operations.md); blocking, as ``upgrade``."""
    command.downgrade(migrations.alembic_config(MIGRATIONS, database_url), revision)


def upgrade_all(intake_database_url: str, auth_database_url: str) -> None:
    """Everything intake needs before it starts: its ledger and the shared auth database."""
    upgrade(intake_database_url)
    upgrade_auth(auth_database_url)
