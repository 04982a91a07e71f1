"""Alerts travel from a real Prometheus through a real Alertmanager, configured with the
shipped deploy/alertmanager/alertmanager.yml, to the owning team's receiver.

Only what cannot work on a test machine is changed in the copy Alertmanager reads: every
receiver's webhook points at a capturing server on 127.0.0.1 (one path per receiver), and the
waits before a group's first notification are cut from minutes to a second. Routes, matchers
and receivers are the shipped ones. Prometheus evaluates two always-firing rules shaped like
the shipped alerts: one owned by the billing team, one without an owner.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devstack.process import pick_free_ports
from tests.deploy.conftest import DEPLOY
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SHIPPED = DEPLOY / "alertmanager" / "alertmanager.yml"

RULES = {
    "groups": [
        {
            "name": "delivery-test",
            "rules": [
                {
                    "alert": "DemandscopeSpecialCauseSignal",
                    "expr": "vector(1)",
                    "labels": {"owner": "billing", "purpose": "understand_my_bill"},
                    "annotations": {"summary": "a special cause in billing"},
                },
                {
                    "alert": "DemandscopeServiceDown",
                    "expr": "vector(1)",
                    "labels": {"job": "demandscope-intake"},
                    "annotations": {"summary": "intake is down"},
                },
            ],
        }
    ]
}


def for_this_machine(shipped: dict[str, Any], hook: str) -> dict[str, Any]:
    """The shipped configuration with local webhooks and short waits, nothing else."""
    config: dict[str, Any] = json.loads(json.dumps(shipped))
    for receiver in config["receivers"]:
        for webhook in receiver["webhook_configs"]:
            webhook["url"] = f"{hook}/{receiver['name']}"
    for route in [config["route"], *config["route"].get("routes", [])]:
        route["group_wait"] = "1s"
        route["group_interval"] = "1s"
    return config


class Captured:
    """The notifications the receivers got: (receiver, alertname, labels)."""

    def __init__(self) -> None:
        self.notifications: list[tuple[str, str, dict[str, str]]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length:")
        )
        body = json.loads(await reader.readexactly(length))
        for alert in body["alerts"]:
            labels = alert["labels"]
            self.notifications.append((path.strip("/"), labels["alertname"], labels))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


@contextmanager
def running(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


@asynccontextmanager
async def capturing(port: int) -> AsyncIterator[Captured]:
    captured = Captured()
    server = await asyncio.start_server(captured.serve, "127.0.0.1", port)
    try:
        yield captured
    finally:
        server.close()
        await server.wait_closed()


async def ready(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def test_an_owned_alert_reaches_its_team_and_an_unowned_one_reaches_ops(
    tmp_path: Path, prometheus_binary: Path, alertmanager_binary: Path
) -> None:
    hook_port, am_port, prom_port = pick_free_ports("127.0.0.1", 3)
    config = for_this_machine(yaml.safe_load(SHIPPED.read_text()), f"http://127.0.0.1:{hook_port}")
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(RULES))
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"evaluation_interval": "1s"},
                "rule_files": [str(tmp_path / "rules.yml")],
                "alerting": {
                    "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
                },
            }
        )
    )
    alertmanager = [
        str(alertmanager_binary),
        f"--config.file={tmp_path / 'alertmanager.yml'}",
        f"--storage.path={tmp_path / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{am_port}",
        "--cluster.listen-address=",  # one instance: no gossip to wait for
    ]
    prometheus = [
        str(prometheus_binary),
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'prom-data'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        # Alerts fired before Prometheus has found Alertmanager are dropped and re-sent only
        # after this delay (a minute by default).
        "--rules.alert.resend-delay=1s",
    ]
    async with capturing(hook_port) as captured:
        with running(alertmanager, tmp_path / "alertmanager.log"):
            await wait_until(
                lambda: ready(f"http://127.0.0.1:{am_port}/-/ready"),
                timeout=30,
                what="Alertmanager ready (see alertmanager.log)",
            )
            with running(prometheus, tmp_path / "prometheus.log"):
                await wait_until(
                    lambda: asyncio.sleep(0, list(captured.notifications)),
                    accept=lambda got: (
                        {name for _, name, _ in got}
                        >= {"DemandscopeSpecialCauseSignal", "DemandscopeServiceDown"}
                    ),
                    timeout=60,
                    interval=0.25,
                    what="both alerts delivered to a receiver",
                )

    # Each alert at its one receiver (re-sends repeat a pair, never add another receiver).
    delivered = {(name, receiver) for receiver, name, _ in captured.notifications}
    assert delivered == {
        ("DemandscopeSpecialCauseSignal", "team-billing"),
        ("DemandscopeServiceDown", "ops"),
    }
