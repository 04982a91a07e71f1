"""`demandscope schemas export`: the JSON Schemas of every event, for subscribers."""

from __future__ import annotations

from pathlib import Path

import typer

from shared.events.schema_export import write_schemas

app = typer.Typer(help="Generated documentation: event JSON Schemas, the settings table.")


@app.command("export")
def export(
    out: Path = typer.Option(Path("docs/schemas"), help="Folder to write the *.json files to."),
) -> None:
    """Write one JSON Schema per event (what `make schemas` runs)."""
    for path in write_schemas(out):
        typer.echo(f"wrote {path}")


@app.command("settings")
def settings(
    readme: Path = typer.Option(Path("README.md"), help="README whose table is rewritten."),
) -> None:
    """Rewrite the configuration table in the README from the settings classes."""
    from services.cli.settings_doc import render_into

    readme.write_text(render_into(readme.read_text()))
    typer.echo(f"updated the configuration table in {readme}")
