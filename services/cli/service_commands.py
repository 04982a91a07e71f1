"""`demandscope intake|classifier|metrics serve` and the metrics database commands."""

from __future__ import annotations

import typer

from services.cli.serve import serve

intake_app = typer.Typer(help="The HTTP front door where contact-centre systems post demands.")
metrics_app = typer.Typer(help="End-to-end times, failure demand and capability per purpose.")


@intake_app.command("serve")
def intake_serve() -> None:
    """Run the intake API (default http://127.0.0.1:8000; DEMANDSCOPE_INTAKE_* settings)."""
    from services.intake.config import IntakeSettings
    from services.intake.main import create_app

    settings = IntakeSettings()
    serve(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        json_logs=settings.json_logs,
    )


def classifier_serve() -> None:
    """Run the classifier consumer and its ops endpoints (default http://127.0.0.1:8001)."""
    from services.classifier.config import ClassifierSettings
    from services.classifier.main import create_app

    settings = ClassifierSettings()
    serve(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        json_logs=settings.json_logs,
    )


@metrics_app.command("serve")
def metrics_serve() -> None:
    """Run the metrics consumer and API (default http://127.0.0.1:8002). Migrate first."""
    from services.metrics.config import MetricsSettings
    from services.metrics.main import create_app

    settings = MetricsSettings()
    serve(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        json_logs=settings.json_logs,
    )


@metrics_app.command("migrate")
def metrics_migrate(
    revision: str = typer.Option("head", help="Alembic revision to upgrade to."),
) -> None:
    """Create or upgrade the metrics database schema (run before `metrics serve`)."""
    from services.metrics.config import MetricsSettings
    from services.metrics.db.migrate import upgrade

    settings = MetricsSettings()
    upgrade(settings.database_url, revision)
    typer.echo(f"metrics database at {settings.database_url} is at revision {revision}")


@intake_app.command("migrate")
def intake_migrate() -> None:
    """Create or upgrade intake's idempotency ledger and the shared API-key database."""
    from services.intake.config import IntakeSettings
    from services.intake.db.migrate import upgrade_all

    settings = IntakeSettings()
    upgrade_all(settings.database_url, settings.auth.database_url)
    typer.echo(f"intake ledger at {settings.database_url} and keys at {settings.auth.database_url}")


def migrate_all() -> None:
    """Run every database migration (intake ledger, API keys, metrics). Run before serving."""
    intake_migrate()
    metrics_migrate(revision="head")


@metrics_app.command("rebuild")
def metrics_rebuild(
    changes_from: str | None = typer.Option(
        None,
        help="Database URL to copy the recorded changes to the system from (they are not "
        "events, so the topics do not hold them).",
    ),
) -> None:
    """Replay demand.classified, case.events and demand.labels from the beginning into an
    empty, migrated metrics database (DEMANDSCOPE_METRICS_DATABASE_URL)."""
    from services.metrics.cli import run_rebuild

    run_rebuild(changes_from=changes_from)
