"""`demandscope kafka start|stop|status`: a real single-node broker for one machine."""

from __future__ import annotations

from pathlib import Path

import typer

from services.cli.local_kafka import LocalKafkaConfig, LocalKafkaError, start, status, stop
from shared.kafka.settings import KafkaSettings

app = typer.Typer(help="A local Apache Kafka broker (KRaft, Apache's jars from Maven Central).")


def local_config() -> LocalKafkaConfig:
    """The local broker listens where DEMANDSCOPE_KAFKA_BOOTSTRAP_SERVERS points."""
    first = KafkaSettings().bootstrap_servers.split(",")[0]
    host, _, port = first.rpartition(":")
    return LocalKafkaConfig(root=Path.cwd(), host=host or "127.0.0.1", port=int(port or 9092))


@app.command("start")
def start_command(
    timeout: float = typer.Option(120.0, help="Seconds to wait for the broker to answer."),
) -> None:
    """Fetch the jars if needed, start the broker in the background and wait until it answers."""
    config = local_config()
    try:
        start(config, timeout=timeout)
    except LocalKafkaError as error:
        typer.secho(f"Kafka did not start: {error}", fg="red", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"Kafka is ready on {config.host}:{config.port} (data in {config.run_dir})")


@app.command("stop")
def stop_command() -> None:
    """Stop the local broker (its data stays under .run/kafka)."""
    try:
        stop(local_config())
    except LocalKafkaError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(1) from error
    typer.echo("Kafka stopped")


@app.command("status")
def status_command() -> None:
    """Say whether the local broker runs, and where."""
    typer.echo(str(status(local_config())))
