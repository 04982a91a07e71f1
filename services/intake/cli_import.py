"""`demandscope import FILE.csv|FILE.jsonl`: load past demands (a demand study) into Kafka."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from services.intake.config import IntakeSettings
from services.intake.db.migrate import upgrade
from services.intake.historic_import import ImportSummary, import_file
from services.intake.import_rows import count_rows
from services.intake.ledger import IdempotencyLedger
from services.intake.metrics import IntakeMetrics
from services.intake.redaction import Redactor
from services.intake.service import IntakeService
from shared.database.engine import create_engine
from shared.kafka.producer import ManagedProducer

_CONNECT_TIMEOUT_S = 30.0


def import_command(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="A .csv or .jsonl file."),
    source: str = typer.Option(..., help="The system the rows come from (their `source`)."),
    rejected: Path | None = typer.Option(
        None, help="Where rejected rows go, with reasons (default: FILE.rejected.jsonl)."
    ),
) -> None:
    """Import past demands through intake's validation, redaction and idempotency.

    Re-running the same file publishes nothing twice: its rows come back as duplicates.
    """
    rejected_path = rejected or path.with_name(path.name + ".rejected.jsonl")
    settings = IntakeSettings()
    upgrade(settings.database_url)
    summary = asyncio.run(_run(path, source, rejected_path, settings))
    console = Console()
    console.print(
        f"[green]{summary.accepted} accepted[/], {summary.duplicates} duplicates, "
        f"[red]{summary.rejected} rejected[/] of {summary.total} rows"
    )
    if summary.rejected:
        reasons = ", ".join(f"{name}: {count}" for name, count in sorted(summary.reasons.items()))
        console.print(f"rejected rows and their reasons: {rejected_path} ({reasons})")
    else:
        rejected_path.unlink(missing_ok=True)


async def _run(
    path: Path, source: str, rejected_path: Path, settings: IntakeSettings
) -> ImportSummary:
    from prometheus_client import CollectorRegistry

    producer = ManagedProducer(settings.kafka, client_id="demandscope-import")
    engine = create_engine(settings.database_url)
    ledger = IdempotencyLedger(engine, lease=timedelta(seconds=settings.claim_lease_s))
    await producer.start()
    await ledger.start()
    try:
        await _wait_for_broker(producer, settings.kafka.bootstrap_servers)
        service = IntakeService(
            producer=producer,
            ledger=ledger,
            kafka=settings.kafka,
            source_name=settings.source_name,
            metrics=IntakeMetrics(CollectorRegistry()),
        )
        columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with (
            Progress(*Progress.get_default_columns()[:1], *columns) as progress,
            rejected_path.open("w") as rejected_out,
        ):
            task = progress.add_task(f"importing {path.name}", total=count_rows(path))
            return await import_file(
                path,
                source=source,
                service=service,
                redactor=Redactor(settings.redaction_patterns),
                rejected_out=rejected_out,
                max_future_skew=timedelta(seconds=settings.max_future_skew_s),
                on_rows=lambda count: progress.advance(task, count),
            )
    finally:
        await ledger.stop()
        await producer.stop()
        await engine.dispose()


async def _wait_for_broker(producer: ManagedProducer, servers: str) -> None:
    deadline = time.monotonic() + _CONNECT_TIMEOUT_S
    while not await producer.is_ready():
        if time.monotonic() > deadline:
            raise typer.BadParameter(f"no Kafka broker at {servers} (is `make run` up?)")
        await asyncio.sleep(0.2)
