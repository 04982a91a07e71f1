"""The `demandscope` command: one entry point with a group per part of the system."""

from __future__ import annotations

import typer

from services.cli import schema_commands, topic_commands
from services.cli.service_commands import (
    classifier_serve,
    intake_app,
    metrics_app,
    migrate_all,
)
from services.intake import cli_import, cli_keys

app = typer.Typer(
    help="demandscope: value and failure demand, customer purpose and end-to-end time.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _classifier_app() -> typer.Typer:
    from services.classifier.cli import app as classifier_app

    classifier_app.info.help = "Labels demands: value or failure, failure kind, purpose."
    classifier_app.command("serve")(classifier_serve)
    return classifier_app


app.add_typer(intake_app, name="intake")
app.add_typer(_classifier_app(), name="classifier")
app.add_typer(metrics_app, name="metrics")
app.add_typer(topic_commands.app, name="topics")
app.add_typer(schema_commands.app, name="schemas")
app.command("migrate")(migrate_all)
app.add_typer(cli_keys.app, name="keys")
app.command("import")(cli_import.import_command)

if __name__ == "__main__":
    app()
