"""The production command line: the services and their tools, not the development stack."""

from __future__ import annotations

from typer.main import get_command

from services.cli.main import app


def test_the_demandscope_command_has_no_development_stack_commands() -> None:
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    assert {"intake", "classifier", "metrics", "topics", "migrate", "keys"} <= commands
    assert commands.isdisjoint({"up", "kafka"}), "those are `python -m devstack up|kafka`"
