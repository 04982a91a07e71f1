"""Alembic environment of the classifier database, with its own version table."""

from services.classifier.db import model_tables  # noqa: F401 - registers the model tables
from services.classifier.db.migrate import VERSION_TABLE
from services.classifier.db.tables import ClassifierBase
from shared.database.migrations import run_environment

run_environment(ClassifierBase.metadata, version_table=VERSION_TABLE)
