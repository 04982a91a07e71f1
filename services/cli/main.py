"""The `demandscope` command: one entry point with a group per part of the system."""

from __future__ import annotations

import typer

from services.classifier import cli as classifier_cli
from services.cli import account_commands, schema_commands, topic_commands
from services.cli.service_commands import migrate_all
from services.intake import cli as intake_cli
from services.metrics import cli as metrics_cli

app = typer.Typer(
    help="demandscope: value and failure demand, customer purpose and end-to-end time.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


app.add_typer(intake_cli.app, name="intake")
app.add_typer(classifier_cli.app, name="classifier")
app.add_typer(metrics_cli.app, name="metrics")
app.add_typer(topic_commands.app, name="topics")
app.add_typer(schema_commands.app, name="schemas")
app.command("migrate")(migrate_all)
app.add_typer(intake_cli.keys_app, name="keys")
app.add_typer(account_commands.app, name="accounts")
app.command("import")(intake_cli.import_command)

if __name__ == "__main__":
    app()
