"""The `demandscope metrics rebuild` command's body: settings, a progress bar, the replay."""

from __future__ import annotations

import asyncio

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from services.metrics.config import MetricsSettings
from services.metrics.rebuild import DatabaseNotEmpty, rebuild


def run_rebuild(*, changes_from: str | None = None) -> None:
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
                rebuild(
                    kafka=settings.kafka,
                    database_url=settings.database_url,
                    batch_size=settings.max_batch,
                    progress=advance,
                    changes_from_url=changes_from,
                )
            )
        except DatabaseNotEmpty as error:
            typer.echo(f"refusing to rebuild: {error}. Point at an empty, migrated database.")
            raise typer.Exit(code=1) from error
    typer.echo(
        f"rebuilt {settings.database_url}: {report.events_applied} events in "
        f"{report.seconds:.1f}s ({report.events_per_second:,.0f}/s), "
        f"{report.undecodable} undecodable skipped"
    )
