"""`demandscope migrate` and `make run` call every service's migrate function directly (not
through typer's parser): each must work with its defaults as plain Python values."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from services.cli.service_commands import migrate_all


def test_every_database_is_migrated_by_a_direct_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (variable, file, its version table): each service keeps its own Alembic history.
    databases = [
        ("DEMANDSCOPE_INTAKE_DATABASE_URL", "intake.db", "alembic_version_intake"),
        ("DEMANDSCOPE_AUTH_DATABASE_URL", "auth.db", "alembic_version_auth"),
        ("DEMANDSCOPE_CLASSIFIER_DATABASE_URL", "classifier.db", "alembic_version_classifier"),
        ("DEMANDSCOPE_METRICS_DATABASE_URL", "metrics.db", "alembic_version_metrics"),
    ]
    for variable, name, _ in databases:
        monkeypatch.setenv(variable, f"sqlite+aiosqlite:///{tmp_path / name}")
    migrate_all()
    for _, name, table in databases:
        with sqlite3.connect(tmp_path / name) as db:
            (version,) = db.execute(f"SELECT version_num FROM {table}").fetchone()
        assert version, name
