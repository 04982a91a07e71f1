"""`demandscope migrate`: every service's database migrations at once (each service's own
commands live in its ``cli.py``)."""

from __future__ import annotations


def migrate_all() -> None:
    """Run every database migration (intake ledger, API keys, classifier, metrics). Run
    before serving."""
    from services.classifier.cli import migrate as classifier_migrate
    from services.intake.cli import migrate as intake_migrate
    from services.metrics.cli import migrate as metrics_migrate

    intake_migrate()
    classifier_migrate(revision="head")
    metrics_migrate(revision="head")
