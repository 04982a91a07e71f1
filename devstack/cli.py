"""`python -m devstack`: the development stack (`make run`, `make setup`, `make kafka-start`).

Not part of the demandscope wheel: production runs the services with `demandscope <service>
serve` against a real broker and database (docs/operations.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from devstack import kafka
from shared.kafka.settings import KafkaSettings

app = typer.Typer(
    help="demandscope's development stack: a local broker, the services, Prometheus.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
kafka_app = typer.Typer(
    help="A local Apache Kafka broker (KRaft, Apache's jars from Maven Central).",
    no_args_is_help=True,
)
app.add_typer(kafka_app, name="kafka")


def local_config() -> kafka.LocalKafkaConfig:
    """The local broker listens where DEMANDSCOPE_KAFKA_BOOTSTRAP_SERVERS points."""
    first = KafkaSettings().bootstrap_servers.split(",")[0]
    host, _, port = first.rpartition(":")
    return kafka.LocalKafkaConfig(root=Path.cwd(), host=host or "127.0.0.1", port=int(port or 9092))


@app.command("up")
def up_command(
    keep_kafka: bool = typer.Option(False, help="Leave the broker running after Ctrl-C."),
    ready_timeout: float = typer.Option(120.0, help="Seconds to wait for all parts to be ready."),
    demo: bool = typer.Option(
        True, help="Load the demo data set and make the demo account (development only)."
    ),
) -> None:
    """Start Kafka, create topics, migrate the databases, load the demo data and supervise the
    three services; print the pages' address and the demo account."""
    from devstack.stack import up

    raise typer.Exit(up(keep_kafka=keep_kafka, ready_timeout=ready_timeout, with_demo=demo))


@app.command("setup")
def setup_command() -> None:
    """Install the system packages the stack and the tests need (as root, with apt-get)."""
    from devstack import system_packages

    code = system_packages.setup(
        system_packages.requirements(),
        installer=system_packages.apt_install if system_packages.can_apt_install() else None,
        echo=typer.echo,
        ci=system_packages.in_ci(os.environ),
    )
    raise typer.Exit(code)


@app.command("assets")
def assets_command() -> None:
    """Fetch the pages' front-end libraries (pinned, integrity-checked) from the npm registry."""
    from devstack.assets import fetch
    from services.metrics.pages.settings import PagesSettings

    raise typer.Exit(fetch(PagesSettings().assets_dir))


@kafka_app.command("start")
def kafka_start(
    timeout: float = typer.Option(120.0, help="Seconds to wait for the broker to answer."),
) -> None:
    """Fetch the jars if needed, start the broker in the background and wait until it answers."""
    config = local_config()
    try:
        kafka.start(config, timeout=timeout)
    except kafka.LocalKafkaError as error:
        typer.secho(f"Kafka did not start: {error}", fg="red", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"Kafka is ready on {config.host}:{config.port} (data in {config.run_dir})")


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the local broker (its data stays under .run/kafka)."""
    try:
        kafka.stop(local_config())
    except kafka.LocalKafkaError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(1) from error
    typer.echo("Kafka stopped")


@kafka_app.command("status")
def kafka_status() -> None:
    """Say whether the local broker runs, and where."""
    typer.echo(str(kafka.status(local_config())))
