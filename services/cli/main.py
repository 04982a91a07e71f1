"""The `demandscope` command: one entry point with a group per part of the system.

``python -m services.cli.main <part> ...`` (how `make run` starts each service) imports
that part's commands only: a restart of intake must not wait seconds for the classifier's
model libraries. ``app``, the whole command (the `demandscope` script), is built on first use.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

# A part's own group, run on its own when the command line names it.
_PARTS = {
    "intake": "services.intake.cli",
    "classifier": "services.classifier.cli",
    "metrics": "services.metrics.cli",
}


def build() -> typer.Typer:
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
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        app = build()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    arguments = sys.argv[1:]
    if arguments and arguments[0] in _PARTS:
        # The same command path as in the whole app, with only this part mounted.
        part: typer.Typer = importlib.import_module(_PARTS[arguments[0]]).app
        root = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)
        root.add_typer(part, name=arguments[0])
        root(args=arguments, prog_name="demandscope")
    else:
        build()()


if __name__ == "__main__":
    main()
