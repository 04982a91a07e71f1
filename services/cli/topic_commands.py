"""`demandscope topics ...`: the topics every part needs, created idempotently."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.table import Table

from shared.kafka.admin import ensure_topics
from shared.kafka.settings import KafkaSettings
from shared.topics import topic_specs

app = typer.Typer(help="Kafka topics: create them with the partitions and policies they need.")


@app.command("create")
def create() -> None:
    """Create every topic that is missing; existing topics are left as they are.

    Partitions, replication and retention come from DEMANDSCOPE_KAFKA_* settings, so the same
    command serves a laptop and a production cluster.
    """
    settings = KafkaSettings()
    specs = topic_specs(settings)
    try:
        results = asyncio.run(ensure_topics(settings, specs))
    except Exception as error:
        typer.secho(f"could not reach Kafka at {settings.bootstrap_servers}: {error!r}", fg="red")
        raise typer.Exit(1) from error
    table = Table("topic", "partitions", "policy", "status")
    for spec, result in zip(specs, results, strict=True):
        table.add_row(
            spec.name,
            str(spec.partitions),
            spec.config.get("cleanup.policy", "delete"),
            "created" if result.created else "exists",
        )
    Console().print(table)


@app.command("list")
def list_specs() -> None:
    """Show the topics demandscope uses and how each is configured (no broker needed)."""
    table = Table("topic", "partitions", "replicas", "config")
    for spec in topic_specs(KafkaSettings()):
        config = ", ".join(f"{k}={v}" for k, v in spec.config.items())
        table.add_row(spec.name, str(spec.partitions), str(spec.replication_factor), config)
    Console().print(table)
