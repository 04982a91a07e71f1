"""Intake's command line (``demandscope intake ...``): serve, migrate, import, and API keys.

The root command also mounts ``import`` and ``keys`` at the top (``demandscope import``,
``demandscope keys``): they are what an operator types most.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from services.intake.config import IntakeSettings
from services.intake.historic_import import ImportSummary, import_file
from services.intake.import_rows import count_rows
from services.intake.ledger import IdempotencyLedger
from services.intake.metrics import IntakeMetrics
from services.intake.service import IntakeService
from shared.auth.keys import Scope
from shared.auth.settings import AuthSettings
from shared.auth.store import ApiKeyStore
from shared.database.checkpoint import background_checkpoint
from shared.database.engine import create_engine
from shared.kafka.producer import ManagedProducer
from shared.privacy import Redactor, personal_data_kind, refusal_reason
from shared.service.supervisor import BackgroundTask, Supervisor

app = typer.Typer(
    help="The HTTP front door where contact-centre systems post demands.", no_args_is_help=True
)
keys_app = typer.Typer(
    help="API keys: one per source system, stored only as a hash (DEMANDSCOPE_AUTH_*).",
    no_args_is_help=True,
)

DEV_SOURCE = "demo"
DEV_SCOPES = frozenset({Scope.DEMANDS_WRITE, Scope.LABELS_WRITE, Scope.READ})
_CONNECT_TIMEOUT_S = 30.0


# -- serve and migrate ---------------------------------------------------------------------


@app.command("serve")
def serve() -> None:
    """Run the intake API (default http://127.0.0.1:8000; DEMANDSCOPE_INTAKE_* settings)."""
    from services.intake.main import create_app
    from shared.service.serve import serve as serve_app

    settings = IntakeSettings()
    serve_app(create_app(settings), settings)


@app.command("migrate")
def migrate(
    # Annotated, with a plain default: `demandscope migrate` and `make run` call this
    # function directly, where a typer.Option(...) default would be an OptionInfo.
    downgrade_to: Annotated[
        str | None,
        typer.Option(
            "--downgrade-to",
            help="Take intake's ledger down to this revision (a code rollback, e.g. "
            "intake_0003) instead of upgrading; see docs/operations.md first.",
        ),
    ] = None,
) -> None:
    """Create or upgrade intake's idempotency ledger and the shared API-key database."""
    from services.intake.db.migrate import downgrade, upgrade_all

    settings = IntakeSettings()
    if downgrade_to is not None:
        downgrade(settings.database_url, downgrade_to)
        typer.echo(f"intake ledger at {settings.database_url} down to {downgrade_to}")
        return
    upgrade_all(settings.database_url, settings.auth.database_url)
    typer.echo(f"intake ledger at {settings.database_url} and keys at {settings.auth.database_url}")


# -- historic import -----------------------------------------------------------------------


@app.command("import")
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
    from services.intake.db.migrate import upgrade

    _refuse_personal_data("--source", source)
    rejected_path = rejected or path.with_name(path.name + ".rejected.jsonl")
    settings = IntakeSettings()
    upgrade(settings.database_url)
    summary = asyncio.run(_import(path, source, rejected_path, settings))
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


async def _import(
    path: Path, source: str, rejected_path: Path, settings: IntakeSettings
) -> ImportSummary:
    """The producer's upkeep and the ledger writer run supervised for the import's length
    (and, on a SQLite file, the ledger log's checkpoint, as in the service)."""
    checkpoint = background_checkpoint(settings.database_url)
    backstop = checkpoint.wal_autocheckpoint
    engine = create_engine(settings.database_url, wal_autocheckpoint=backstop)
    producer = ManagedProducer(settings.kafka, client_id="demandscope-import")
    ledger = IdempotencyLedger(
        engine,
        lease=timedelta(seconds=settings.claim_lease_s),
        wal_autocheckpoint=backstop,
        confirm_by_token=settings.ledger_confirm_by_token,
    )
    supervisor = Supervisor(service="import", shutdown_timeout_s=settings.shutdown_timeout_s)
    supervisor.add(BackgroundTask("producer", producer.maintain))
    supervisor.add(BackgroundTask("ledger-writer", ledger.run, stop=ledger.request_stop))
    for background in checkpoint.tasks:
        supervisor.add(background)
    try:
        async with supervisor:
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
                    earliest=settings.earliest_event_time,
                    on_rows=lambda count: progress.advance(task, count),
                )
    finally:
        await producer.close()
        await engine.dispose()


def _refuse_personal_data(option: str, value: str) -> None:
    kind = personal_data_kind(value)
    if kind is not None:
        raise typer.BadParameter(refusal_reason(kind), param_hint=option)


async def _wait_for_broker(producer: ManagedProducer, servers: str) -> None:
    deadline = time.monotonic() + _CONNECT_TIMEOUT_S
    while not await producer.is_ready():
        if time.monotonic() > deadline:
            raise typer.BadParameter(f"no Kafka broker at {servers} (is `make run` up?)")
        await asyncio.sleep(0.2)


# -- API keys ------------------------------------------------------------------------------


def _migrated_store() -> ApiKeyStore:
    """Migrates first (idempotent: a fresh machine has no auth database yet); call it
    outside the event loop, since Alembic runs its own."""
    from shared.auth.migrate import upgrade

    settings = AuthSettings()
    upgrade(settings.database_url)
    return ApiKeyStore(settings.database_url, cache_ttl_s=0)


@keys_app.command("create")
def create_key(
    source: str = typer.Option(..., help="The sending system, e.g. 'genesys-eu'."),
    scopes: list[Scope] = typer.Option(
        [Scope.DEMANDS_WRITE],
        "--scopes",
        "--scope",
        help="Repeat for several scopes. A key reads and labels its own source's data only; "
        "add sources:all for an organisation-wide key (dashboards, BI, operators).",
    ),
) -> None:
    """Make a key and print it once: only its hash is kept."""
    _refuse_personal_data("--source", source)  # it is stamped on every event the key sends
    store = _migrated_store()

    async def run() -> None:
        try:
            plaintext, record = await store.create(source, scopes)
        finally:
            await store.close()
        typer.echo(plaintext)
        scope_names = ", ".join(sorted(record.scopes))
        typer.echo(f"key {record.key_id} for source {source!r} ({scope_names})", err=True)
        typer.echo("Store it now: it cannot be shown again.", err=True)

    try:
        asyncio.run(run())
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error


@keys_app.command("list")
def list_keys(source: str | None = typer.Option(None, help="Only this source's keys.")) -> None:
    """Every key: id, source, scopes, created and revoked times (never the key itself)."""

    store = _migrated_store()

    async def run() -> None:
        try:
            records = await store.list_keys(source=source)
        finally:
            await store.close()
        table = Table("key id", "source", "scopes", "created", "revoked")
        for record in records:
            table.add_row(
                record.key_id,
                record.source,
                " ".join(sorted(record.scopes)),
                record.created_at.isoformat(timespec="seconds"),
                record.revoked_at.isoformat(timespec="seconds") if record.revoked_at else "",
            )
        Console().print(table)

    asyncio.run(run())


@keys_app.command("revoke")
def revoke_key(key_id: str = typer.Argument(..., help="The key id shown by `keys list`.")) -> None:
    """Revoke a key: refused at once here, by running services within the auth cache TTL."""

    store = _migrated_store()

    async def run() -> bool:
        try:
            return await store.revoke(key_id)
        finally:
            await store.close()

    if not asyncio.run(run()):
        typer.secho(f"no live key {key_id!r}", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@keys_app.command("dev")
def dev_key(
    path: Path = typer.Option(Path(".run/api-key"), help="Where the key is kept (mode 0600)."),
) -> None:
    """Print the development key of the source 'demo' (every scope), made once and reused."""
    typer.echo(ensure_dev_key(AuthSettings().database_url, path))


def ensure_dev_key(auth_database_url: str, path: Path) -> str:
    """The key in ``path`` if it is still a live demo key with every scope, else a new one.

    ``make run`` writes it for the README's curl examples. Blocking (migrates the auth
    database first): call it before starting the services.
    """
    from shared.auth.migrate import upgrade

    upgrade(auth_database_url)
    existing = path.read_text().strip() if path.exists() else None
    key, created = asyncio.run(_live_or_new(auth_database_url, existing))
    if created:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A secret: created readable by its owner only, and tightened if it existed.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key + "\n")
        path.chmod(0o600)
    return key


async def _live_or_new(auth_database_url: str, existing: str | None) -> tuple[str, bool]:
    store = ApiKeyStore(auth_database_url, cache_ttl_s=0)
    try:
        if existing:
            record = await store.authenticate(existing)
            if record is not None and record.source == DEV_SOURCE and record.scopes >= DEV_SCOPES:
                return existing, False
        plaintext, _ = await store.create(DEV_SOURCE, DEV_SCOPES)
        return plaintext, True
    finally:
        await store.close()


app.add_typer(keys_app, name="keys")
