"""Alembic environment of the auth database (API keys), with its own version table, so the
keys can share one PostgreSQL database with other services' migrations."""

from shared.auth.tables import AuthBase
from shared.database.migrations import run_environment

run_environment(AuthBase.metadata, version_table="alembic_version_auth")
