"""Alembic environment of the metrics database, with its own version table."""

from services.metrics.db.migrate import VERSION_TABLE
from services.metrics.db.tables import Base
from shared.database.migrations import run_environment

run_environment(Base.metadata, version_table=VERSION_TABLE)
