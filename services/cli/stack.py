"""`demandscope up`: the whole system on one machine, in the foreground, until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import typer

from services.cli.kafka_commands import local_config
from services.cli.local_kafka import LocalKafkaError
from services.cli.local_kafka import start as start_kafka
from services.cli.local_kafka import stop as stop_kafka
from services.cli.local_prometheus import (
    LocalPrometheusConfig,
    LocalPrometheusError,
    fetch_jmx_exporter,
    start_if_installed,
)
from services.cli.local_prometheus import stop as stop_prometheus

BROKER_METRICS_PORT = 9404  # the JMX exporter's port, scraped by the local Prometheus


@dataclass(frozen=True)
class Part:
    name: str
    command: tuple[str, ...]
    url: str


def _parts() -> list[Part]:
    from services.classifier.config import ClassifierSettings
    from services.intake.config import IntakeSettings
    from services.metrics.config import MetricsSettings

    intake, classifier, metrics = IntakeSettings(), ClassifierSettings(), MetricsSettings()
    module = (sys.executable, "-m", "services.cli.main")
    return [
        Part("intake", (*module, "intake", "serve"), f"http://{intake.host}:{intake.port}"),
        Part(
            "classifier",
            (*module, "classifier", "serve"),
            f"http://{classifier.host}:{classifier.port}",
        ),
        Part("metrics", (*module, "metrics", "serve"), f"http://{metrics.host}:{metrics.port}"),
    ]


async def _relay(name: str, stream: asyncio.StreamReader) -> None:
    width = len("classifier")
    while line := await stream.readline():
        sys.stdout.write(f"{name:<{width}} | {line.decode(errors='replace')}")
        sys.stdout.flush()


async def _wait_ready(
    parts: list[Part],
    processes: list[asyncio.subprocess.Process],
    deadline: float,
    stop: asyncio.Event,
) -> list[str]:
    """The parts not ready by the deadline; gives up at once when a part exits (a taken
    port, a bad setting): its own output, relayed above, says why."""
    pending = {part.name: (part, process) for part, process in zip(parts, processes, strict=True)}
    async with httpx.AsyncClient(timeout=2.0) as client:
        while pending and time.monotonic() < deadline and not stop.is_set():
            for name, (part, process) in list(pending.items()):
                if process.returncode is not None:
                    typer.secho(f"{name} exited with code {process.returncode}", fg="red")
                    return list(pending)
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{part.url}/readyz")).status_code == 200:
                        del pending[name]
            await asyncio.sleep(0.3)
    return list(pending)


async def _run(parts: list[Part], ready_timeout: float) -> int:
    started = time.monotonic()
    processes: list[asyncio.subprocess.Process] = []
    relays = []
    for part in parts:
        process = await asyncio.create_subprocess_exec(
            *part.command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        processes.append(process)
        assert process.stdout is not None
        relays.append(asyncio.create_task(_relay(part.name, process.stdout)))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    not_ready = await _wait_ready(parts, processes, time.monotonic() + ready_timeout, stop)
    if not_ready:
        typer.secho(f"not ready: {', '.join(not_ready)}; stopping", fg="red")
        stop.set()
    else:
        typer.secho(f"\ndemandscope is up in {time.monotonic() - started:.1f}s", fg="green")
        for part in parts:
            docs = " (API docs at /docs)" if part.name != "classifier" else ""
            typer.echo(f"  {part.name:<10} {part.url}{docs}")
        typer.echo("Press Ctrl-C to stop.\n")

    exited = [asyncio.create_task(p.wait()) for p in processes]
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([*exited, stopper], return_when=asyncio.FIRST_COMPLETED)
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*exited), timeout=30)
    for process in processes:
        if process.returncode is None:
            process.kill()
    await asyncio.gather(*relays, return_exceptions=True)
    stopper.cancel()
    return 0 if stop.is_set() and not not_ready else 1


def up(
    keep_kafka: bool = typer.Option(False, help="Leave the broker running after Ctrl-C."),
    ready_timeout: float = typer.Option(120.0, help="Seconds to wait for all parts to be ready."),
) -> None:
    """Start Kafka, create topics, migrate the database and run the three services."""
    from services.cli.service_commands import migrate_all
    from services.cli.topic_commands import create as create_topics
    from services.intake.config import IntakeSettings
    from services.intake.dev_key import ensure_dev_key

    config = local_config()
    try:
        fetch_jmx_exporter(
            config.jmx_exporter_jar, pom=Path.cwd() / "deploy" / "kafka" / "jmx-exporter-pom.xml"
        )
        config.jmx_exporter_port = BROKER_METRICS_PORT
    except LocalPrometheusError as error:
        typer.echo(f"broker metrics are off: {error}")
    typer.echo(f"starting Kafka on {config.host}:{config.port} ...")
    try:
        start_kafka(config)
    except LocalKafkaError as error:
        typer.secho(f"Kafka did not start: {error}", fg="red", err=True)
        raise typer.Exit(1) from error
    code = 1
    prometheus = LocalPrometheusConfig(root=Path.cwd())
    try:
        create_topics()
        migrate_all()
        key_file = Path(".run/api-key")
        ensure_dev_key(IntakeSettings().auth.database_url, key_file)
        typer.echo(f"development API key for source 'demo' is in {key_file}")
        typer.echo(start_if_installed(prometheus))
        code = asyncio.run(_run(_parts(), ready_timeout))
    finally:
        with contextlib.suppress(LocalPrometheusError):
            stop_prometheus(prometheus)
        if not keep_kafka:
            typer.echo("stopping Kafka ...")
            with contextlib.suppress(LocalKafkaError):
                stop_kafka(config)
    raise typer.Exit(code)
