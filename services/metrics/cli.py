"""`demandscope metrics serve|migrate|rebuild|changes|assets`: every command of the metrics service.

Imports of the service's heavier modules happen inside the commands, so that
`demandscope --help` stays quick.
"""

from __future__ import annotations

import asyncio

import typer

app = typer.Typer(
    help="End-to-end times, failure demand and capability per purpose.", no_args_is_help=True
)


@app.command("serve")
def serve() -> None:
    """Run the metrics consumer and API (default http://127.0.0.1:8002). Migrate first."""
    from services.metrics.config import MetricsSettings
    from services.metrics.main import create_app
    from shared.service.serve import instance_name
    from shared.service.serve import serve as serve_app

    settings = MetricsSettings()
    settings.instance_id = instance_name(settings.instance_id, settings.port)
    serve_app(create_app(settings), settings)


@app.command("migrate")
def migrate(
    revision: str = typer.Option("head", help="Alembic revision to upgrade to."),
) -> None:
    """Create or upgrade the metrics database schema (run before `metrics serve`)."""
    from services.metrics.config import MetricsSettings
    from services.metrics.db.migrate import upgrade

    settings = MetricsSettings()
    upgrade(settings.database_url, revision)
    typer.echo(f"metrics database at {settings.database_url} is at revision {revision}")


@app.command("rebuild")
def rebuild() -> None:
    """Replay demand.classified, case.events, demand.labels and system.changes from the
    beginning into an empty, migrated metrics database (DEMANDSCOPE_METRICS_DATABASE_URL)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from services.metrics.audit import audit_policy
    from services.metrics.config import MetricsSettings
    from services.metrics.rebuild import DatabaseNotEmpty
    from services.metrics.rebuild import rebuild as replay
    from services.metrics.service import ChartSettings
    from shared.ownership import load_purpose_owners

    settings = MetricsSettings()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    ) as bar:
        task = bar.add_task("replaying events", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            report = asyncio.run(
                replay(
                    kafka=settings.kafka,
                    database_url=settings.database_url,
                    batch_size=settings.max_batch,
                    progress=advance,
                    audit=audit_policy(settings),
                    charts=ChartSettings(
                        baseline_points=settings.baseline_points,
                        chart_points=settings.chart_points,
                    ),
                    window_days=settings.publish_window_days,
                    owners=load_purpose_owners(settings.taxonomy),
                    workers=settings.rebuild_workers,
                )
            )
        except DatabaseNotEmpty as error:
            typer.echo(
                f"refusing to rebuild: {error}. Point at an empty, migrated database "
                "(a rebuild that stopped part way leaves one to delete: start again, the "
                "topics hold every event)."
            )
            raise typer.Exit(code=1) from error
    typer.echo(
        f"rebuilt {settings.database_url}: {report.events_applied} events "
        f"({report.records} records in {report.offsets} offsets) in "
        f"{report.seconds:.1f}s ({report.events_per_second:,.0f}/s), "
        f"{report.undecodable} undecodable skipped; "
        f"{report.signals_recorded} special-cause signals recorded as already raised"
    )


changes_app = typer.Typer(help="Recorded changes to the system (events on system.changes).")
app.add_typer(changes_app, name="changes")


@changes_app.command("export-to-topic")
def export_changes() -> None:
    """Once, after upgrading to changes as events: publish the changes recorded in the
    metrics database before then onto system.changes, so that `metrics rebuild` replays
    them. Each keeps its id: running it again changes nothing."""
    from services.metrics.changes import export_changes_to_topic
    from services.metrics.config import MetricsSettings

    settings = MetricsSettings()
    report = asyncio.run(
        export_changes_to_topic(
            database_url=settings.database_url,
            kafka=settings.kafka,
            source=settings.source_name,
        )
    )
    for reason in report.refused:
        typer.echo(f"left out: {reason}", err=True)
    typer.echo(f"published {report.published} recorded changes onto system.changes")


@app.command("assets")
def assets(
    into: str | None = typer.Option(
        None, help="Folder to fetch into (default: DEMANDSCOPE_PAGES_ASSETS_DIR, .run/assets)."
    ),
) -> None:
    """Fetch the pages' front-end libraries from the npm registry, pinned by version and
    SHA-512 (services/metrics/pages/vendor.json): for an image or a machine without the
    development stack (`make install` does this for a checkout)."""
    from pathlib import Path

    from services.metrics.pages import vendor
    from services.metrics.pages.settings import PagesSettings

    target = Path(into) if into else PagesSettings().assets_dir
    try:
        fetched = vendor.fetch(target, echo=typer.echo)
    except vendor.AssetError as error:
        typer.echo(f"front-end assets NOT fetched: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"front-end assets in {target}: {', '.join(fetched) or 'all present'}")


@app.command("alertmanager")
def alertmanager(
    out: str = typer.Option(
        "deploy/alertmanager/alertmanager.yml", help="The file to write ('-': standard output)."
    ),
    taxonomy: str | None = typer.Option(
        None, help="Taxonomy YAML to read the owners from (default: DEMANDSCOPE_METRICS_TAXONOMY)."
    ),
) -> None:
    """Write the Alertmanager configuration from the taxonomy's owners: a route and a
    receiver per team that owns a purpose (alerts with owner="<team>"), ops for the rest.
    The receivers are placeholders: each team replaces its own with its real receiver."""
    from pathlib import Path

    from services.metrics.alertmanager import render
    from services.metrics.config import MetricsSettings
    from shared.ownership import OwnershipError, load_purpose_owners

    source = Path(taxonomy) if taxonomy else MetricsSettings().taxonomy
    try:
        owners = load_purpose_owners(source)
    except OwnershipError as error:
        typer.echo(f"no Alertmanager configuration written: {error}", err=True)
        raise typer.Exit(1) from error
    root = Path(__file__).resolve().parents[2]
    shown = source.resolve()
    text = render(
        owners, source=str(shown.relative_to(root)) if shown.is_relative_to(root) else str(shown)
    )
    if out == "-":
        typer.echo(text, nl=False)
        return
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    typer.echo(f"wrote {out}: routes for {', '.join(owners.teams)} (ops for the rest)")
