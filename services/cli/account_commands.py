"""`demandscope accounts create|list|disable`: the people who sign in to the pages.

Accounts live in the auth database (DEMANDSCOPE_AUTH_DATABASE_URL) beside the API keys;
run `demandscope migrate` first. A password is prompted for (twice, not echoed) or read
from standard input with --password-stdin, never taken as an argument (it would sit in the
shell's history and in the process list).
"""

from __future__ import annotations

import asyncio
import sys

import typer

app = typer.Typer(help="People who sign in to the pages (viewer, reviewer, admin).")


def _store_url() -> str:
    from shared.auth.settings import AuthSettings

    return AuthSettings().database_url


@app.command("create")
def create(
    username: str = typer.Option(..., help="Lower-case letters, digits and . _ @ -."),
    role: str = typer.Option("viewer", help="viewer, reviewer (labels, changes) or admin."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin."
    ),
) -> None:
    """Create an account; the password is prompted for, or read from stdin."""
    from shared.auth.account_store import AccountExists, AccountStore
    from shared.auth.accounts import Role

    try:
        chosen = Role(role)
    except ValueError:
        typer.echo(f"role must be viewer, reviewer or admin, not {role!r}", err=True)
        raise typer.Exit(2) from None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)

    async def run() -> None:
        store = AccountStore(_store_url())
        try:
            await store.create(username, chosen, password)
        finally:
            await store.close()

    try:
        asyncio.run(run())
    except (AccountExists, ValueError) as error:
        typer.echo(f"not created: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"created {chosen.value} account {username!r}")


@app.command("list")
def list_accounts() -> None:
    """Every account: username, role, created, disabled."""
    from shared.auth.account_store import AccountStore

    async def run() -> None:
        store = AccountStore(_store_url())
        try:
            for record in await store.list_accounts():
                state = f"disabled {record.disabled_at:%Y-%m-%d}" if record.disabled_at else ""
                typer.echo(
                    f"{record.username:<32} {record.role.value:<9} "
                    f"created {record.created_at:%Y-%m-%d}  {state}".rstrip()
                )
        finally:
            await store.close()

    asyncio.run(run())


@app.command("disable")
def disable(username: str = typer.Argument(..., help="The account to disable.")) -> None:
    """Disable an account: its sessions end at their next request."""
    from shared.auth.account_store import AccountStore

    async def run() -> bool:
        store = AccountStore(_store_url())
        try:
            return await store.disable(username)
        finally:
            await store.close()

    if not asyncio.run(run()):
        typer.echo(f"no enabled account {username!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"disabled {username!r}")
