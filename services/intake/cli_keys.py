"""`demandscope keys create|list|revoke`: API keys of the systems that post and read."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.table import Table

from shared.auth.keys import Scope
from shared.auth.migrate import upgrade
from shared.auth.settings import AuthSettings
from shared.auth.store import ApiKeyStore

app = typer.Typer(
    help="API keys: one per source system, stored only as a hash (DEMANDSCOPE_AUTH_*).",
    no_args_is_help=True,
)


def _migrated_store() -> ApiKeyStore:
    """Migrates first (idempotent: a fresh machine has no auth database yet); call it
    outside the event loop, since Alembic runs its own."""
    settings = AuthSettings()
    upgrade(settings.database_url)
    return ApiKeyStore(settings.database_url, cache_ttl_s=0)


@app.command("create")
def create(
    source: str = typer.Option(..., help="The sending system, e.g. 'genesys-eu'."),
    scopes: list[Scope] = typer.Option(
        [Scope.DEMANDS_WRITE], "--scopes", "--scope", help="Repeat for several scopes."
    ),
) -> None:
    """Make a key and print it once: only its hash is kept."""

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


@app.command("list")
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


@app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key id shown by `keys list`.")) -> None:
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
