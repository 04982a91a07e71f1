"""`python -m devstack up` (`make run`): the whole system on one machine, in the foreground.

Starts the Kafka broker (with its JMX exporter when the agent can be had), creates the topics,
migrates the databases, writes a development API key, starts Prometheus when it is installed,
then runs the three services under a ``Supervisor``: a part that dies is restarted with back-off
and named on the console; one that keeps dying stops everything. Ctrl-C or SIGTERM stops all.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import typer

from devstack import kafka, prometheus
from devstack.leftovers import reap_leftovers
from devstack.supervisor import Part, ProcessPart, RestartPolicy, ServerPart, Supervisor

BROKER_METRICS_PORT = 9404  # the JMX exporter's port, scraped by the local Prometheus
WIDTH = len("classifier")


@dataclass(frozen=True)
class Service:
    name: str
    command: tuple[str, ...]
    url: str


def services() -> list[Service]:
    from services.classifier.config import ClassifierSettings
    from services.intake.config import IntakeSettings
    from services.metrics.config import MetricsSettings

    intake, classifier, metrics = IntakeSettings(), ClassifierSettings(), MetricsSettings()
    module = (sys.executable, "-m", "services.cli.main")
    return [
        Service("intake", (*module, "intake", "serve"), f"http://{intake.host}:{intake.port}"),
        Service(
            "classifier",
            (*module, "classifier", "serve"),
            f"http://{classifier.host}:{classifier.port}",
        ),
        Service("metrics", (*module, "metrics", "serve"), f"http://{metrics.host}:{metrics.port}"),
    ]


def _echo(line: str) -> None:
    typer.echo(line)


def _notice(line: str) -> None:
    typer.secho(line, fg="yellow")


def broker_part(config: kafka.LocalKafkaConfig, *, keep: bool) -> ServerPart:
    def stop() -> None:
        if not keep:
            typer.echo("stopping Kafka ...")
            if kafka.stop(config):
                typer.echo("Kafka stopped")

    return ServerPart(
        "kafka",
        start=lambda: kafka.start(config),
        stop=stop,
        running_pid=lambda: kafka.running_pid(config),
        exit_code=kafka.exit_code,
    )


def prometheus_part(config: prometheus.LocalPrometheusConfig) -> ServerPart:
    return ServerPart(
        "prometheus",
        start=lambda: prometheus.start(config),
        stop=lambda: prometheus.stop(config),
        running_pid=lambda: prometheus.running_pid(config),
        exit_code=prometheus.exit_code,
    )


async def _not_ready(listed: Sequence[Service], deadline: float) -> list[str]:
    """The services whose /readyz does not answer 200 by the deadline (a part that dies
    meanwhile is the supervisor's business: it restarts it)."""
    pending = {service.name: service for service in listed}
    async with httpx.AsyncClient(timeout=2.0) as client:
        while pending and time.monotonic() < deadline:
            for name, service in list(pending.items()):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{service.url}/readyz")).status_code == 200:
                        del pending[name]
            if pending:
                await asyncio.sleep(0.3)
    return list(pending)


async def supervise(
    parts: Sequence[Part],
    listed: Sequence[Service],
    *,
    ready_timeout: float,
    policy: RestartPolicy | None = None,
    notes: Sequence[str] = (),
) -> int:
    started = time.monotonic()
    supervisor = Supervisor(parts, echo=_notice, policy=policy)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.stop)

    async def report_ready() -> None:
        not_ready = await _not_ready(listed, started + ready_timeout)
        if not_ready:
            supervisor.fail(
                f"not ready within {ready_timeout:.0f}s: {', '.join(not_ready)}; "
                "stopping everything"
            )
            return
        typer.secho(f"\ndemandscope is up in {time.monotonic() - started:.1f}s", fg="green")
        for service in listed:
            docs = " (API docs at /docs)" if service.name != "classifier" else ""
            typer.echo(f"  {service.name:<{WIDTH}} {service.url}{docs}")
        for note in notes:
            typer.secho(note, fg="green")
        typer.echo("A part that dies is restarted. Press Ctrl-C to stop.\n")

    try:
        code = await supervisor.run(on_started=report_ready)
        typer.echo("everything stopped" if code == 0 else "stopped after a failure (see above)")
        return code
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def load_demo(metrics: Service) -> list[str]:
    """The demo data set (devstack/demo.py) and its recorded change to the system onto the
    topics, and the development-only demo account; what to tell the person."""
    from datetime import UTC, datetime

    from devstack import demo
    from services.metrics.config import MetricsSettings
    from shared.kafka.settings import KafkaSettings

    settings = MetricsSettings()
    events, changes = demo.demo_events(datetime.now(UTC))
    asyncio.run(demo.publish([*events, *demo.change_events(changes)], KafkaSettings()))
    typer.echo(f"demo data: {len(events)} events of six weeks published (--no-demo skips it)")
    lines = [f"  pages      {metrics.url}/pages/overview"]
    if (
        settings.people.environment == "development"
        and settings.people.trusted_proxy_header is None
    ):
        username, password = demo.ensure_demo_account(
            settings.auth.database_url, Path(".run/demo-password")
        )
        lines.append(f"  sign in as {username} / {password}  (an admin; development only)")
    return lines


def up(
    keep_kafka: bool,
    ready_timeout: float,
    policy: RestartPolicy | None = None,
    *,
    with_demo: bool = True,
) -> int:
    """Start everything and supervise it until Ctrl-C; the exit code."""
    from devstack.cli import local_config
    from services.cli.service_commands import migrate_all
    from services.cli.topic_commands import create as create_topics
    from services.intake.cli import ensure_dev_key
    from services.intake.config import IntakeSettings

    root = Path.cwd()
    for line in reap_leftovers(root / ".run"):
        typer.echo(line)
    config = local_config()
    try:
        prometheus.fetch_jmx_exporter(
            config.jmx_exporter_jar, pom=root / "deploy" / "kafka" / "jmx-exporter-pom.xml"
        )
        config.jmx_exporter_port = BROKER_METRICS_PORT
    except prometheus.LocalPrometheusError as error:
        typer.echo(f"broker metrics are off: {error}")
    typer.echo(f"starting Kafka on {config.host}:{config.port} ...")
    try:
        kafka.start(config)
    except kafka.LocalKafkaError as error:
        typer.secho(f"Kafka did not start: {error}", fg="red", err=True)
        return 1
    prometheus_config = prometheus.LocalPrometheusConfig(root=root)
    try:
        create_topics()
        migrate_all()
        key_file = Path(".run/api-key")
        ensure_dev_key(IntakeSettings().auth.database_url, key_file)
        typer.echo(f"development API key for source 'demo' is in {key_file}")
        typer.echo(prometheus.start_if_installed(prometheus_config))
        listed = services()
        metrics = next(s for s in listed if s.name == "metrics")
        notes = load_demo(metrics) if with_demo else [f"  pages      {metrics.url}/pages/overview"]
        parts: list[Part] = [broker_part(config, keep=keep_kafka)]
        parts += [ProcessPart(s.name, s.command, echo=_echo, width=WIDTH) for s in listed]
        if prometheus.running_pid(prometheus_config) is not None:
            parts.append(prometheus_part(prometheus_config))
        return asyncio.run(
            supervise(parts, listed, ready_timeout=ready_timeout, policy=policy, notes=notes)
        )
    finally:
        # The supervisor stopped what it ran; this covers a Ctrl-C before it started.
        with contextlib.suppress(prometheus.LocalPrometheusError):
            prometheus.stop(prometheus_config)
        if not keep_kafka:
            with contextlib.suppress(kafka.LocalKafkaError):
                if kafka.stop(config):
                    typer.echo("Kafka stopped")
