"""Alembic environment of intake's database (the idempotency ledger), with its own version
table, so the ledger can share one PostgreSQL database with other services' migrations."""

from services.intake.db.tables import IntakeBase
from shared.database.migrations import run_environment

run_environment(IntakeBase.metadata, version_table="alembic_version_intake")
