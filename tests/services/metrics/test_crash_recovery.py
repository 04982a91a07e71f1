"""SIGKILL the metrics service mid-stream, start it again: every count is exact.

The service runs as its own process (`python -m services.cli.main metrics serve`) with
small batches, so the kill lands between a database commit and the offset commit of some
batch, or in the middle of one. After the restart the redelivered batches must change
nothing and the missing ones must be applied: the figures equal the events, exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from devstack.process import pick_free_port
from services.metrics.config import MetricsSettings
from services.metrics.db.measures import Filters
from services.metrics.db.migrate import upgrade
from services.metrics.db.tables import CaseRow, Demand, DemandFactRow
from services.metrics.service import purpose_summaries
from shared.database.engine import create_engine, session_factory
from shared.events import CaseEventType, DemandClassified, DemandType, Event
from shared.kafka.settings import KafkaSettings
from tests.support.factories import case_event, demand_classified
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CUSTOMERS = 400
T0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
PURPOSES = ("repair", "billing", "move home", "complaint")


def events() -> list[Event]:
    """Per customer: a value demand, a progress chase an hour later, fulfilled after
    (c % 5 + 1) days. Customers divisible by 3 stay open."""
    made: list[Event] = []
    for c in range(CUSTOMERS):
        purpose, customer = PURPOSES[c % len(PURPOSES)], f"C{c}"
        for n, (kind, offset) in enumerate(((DemandType.VALUE, 0), (DemandType.FAILURE, 1))):
            at = T0 + timedelta(hours=offset)
            made.append(
                demand_classified(
                    id=f"d{c}-{n}",
                    customer_ref=customer,
                    case_ref=f"K{c}",
                    occurred_at=at,
                    purpose=purpose,
                    demand_type=kind,
                    failure_kind="progress_chasing" if kind is DemandType.FAILURE else None,
                )
            )
        if c % 3:
            made.append(
                case_event(
                    id=f"f{c}",
                    case_ref=f"K{c}",
                    customer_ref=customer,
                    type=CaseEventType.FULFILLED,
                    occurred_at=T0 + timedelta(days=c % 5 + 1),
                )
            )
    return made


@pytest.fixture
def service_env(
    tmp_path: Path, kafka_settings: KafkaSettings, unique_group: str, auth: Any
) -> dict[str, str]:
    env = {
        **os.environ,
        "DEMANDSCOPE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "DEMANDSCOPE_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "DEMANDSCOPE_METRICS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'metrics.db'}",
        "DEMANDSCOPE_METRICS_GROUP_ID": unique_group,
        "DEMANDSCOPE_METRICS_PORT": str(pick_free_port("127.0.0.1")),
        "DEMANDSCOPE_METRICS_MAX_BATCH": "10",
        "DEMANDSCOPE_METRICS_LOG_LEVEL": "WARNING",
        "DEMANDSCOPE_AUTH_DATABASE_URL": auth.settings.database_url,
    }
    return env


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "metrics", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _decoding_workers(pid: int) -> list[int]:
    """The service's decoding worker processes (services/metrics/live_decode.py)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(FileNotFoundError):
                command = Path(f"/proc/{child}/cmdline").read_bytes()
                if b"services.metrics.live_decode" in command:
                    found.append(int(child))
    return found


async def _prepared_by_the_worker(port: str) -> float:
    """The batches the service's decoding worker prepared, from its /metrics."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        exposition = (await client.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "demandscope_metrics_decode_worker_batches_total"
        and sample.labels["prepared_by"] == "worker"
    )


async def _ended(pids: list[int]) -> bool:
    return not any(_running(pid) for pid in pids)


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (not gone, nor a zombie not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_counts_are_exact_after_a_kill_mid_stream(
    service_env: dict[str, str], publish: Any, all_consumed: Any, unique_group: str
) -> None:
    url = service_env["DEMANDSCOPE_METRICS_DATABASE_URL"]
    await asyncio.to_thread(upgrade, url)
    log = events()
    demand_total = sum(isinstance(e, DemandClassified) for e in log)
    await publish(log)
    engine = create_engine(url)
    sessions = session_factory(engine)

    async def stored() -> int:
        async with sessions() as session:
            return int(
                (await session.execute(select(func.count()).select_from(Demand))).scalar_one()
            )

    first = _start(service_env)
    try:
        at_kill = await wait_until(
            stored, accept=lambda n: n > 0, timeout=60, interval=0.02, what="first batches"
        )
        workers = _decoding_workers(first.pid)
    finally:
        first.kill()  # SIGKILL: no shutdown, no final commit
        first.wait(timeout=30)
    assert at_kill < demand_total, "the kill must land mid-stream"
    # The decoding worker (live_decode.py) sees its pipe close and ends with the service.
    assert len(workers) == 1
    await wait_until(lambda: _ended(workers), timeout=30, what="the killed one's worker gone")

    second = _start(service_env)
    try:
        await wait_until(
            lambda: all_consumed(unique_group), timeout=120, interval=0.5, what="catch-up"
        )
        workers = _decoding_workers(second.pid)
        by_worker = await _prepared_by_the_worker(service_env["DEMANDSCOPE_METRICS_PORT"])
    finally:
        second.terminate()
        second.wait(timeout=30)
    assert len(workers) == 1
    # The catch-up went through the worker (at least one of its batches), not all of it
    # decoded in the service.
    assert by_worker > 0
    await wait_until(lambda: _ended(workers), timeout=30, what="the stopped one's worker gone")

    async with sessions() as session:
        facts = (
            await session.execute(select(func.count()).select_from(DemandFactRow))
        ).scalar_one()
        cases = (await session.execute(select(func.count()).select_from(CaseRow))).scalar_one()
        summaries = {s.purpose: s for s in await purpose_summaries(session, Filters())}
    demands = await stored()
    await engine.dispose()

    assert demands == demand_total == facts == 2 * CUSTOMERS
    assert cases == CUSTOMERS
    for index, purpose in enumerate(PURPOSES):
        customers = [c for c in range(CUSTOMERS) if c % len(PURPOSES) == index]
        summary = summaries[purpose]
        assert (summary.volume, summary.value, summary.failure) == (
            2 * len(customers),
            len(customers),
            len(customers),
        )
        assert summary.cases_fulfilled == sum(1 for c in customers if c % 3)
        assert summary.open_cases == sum(1 for c in customers if not c % 3)
        assert summary.contacts_per_case == 2.0


def test_served_it_rejoins_its_group_as_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """`metrics serve` names the instance <host name>:<port> in its consumer group (static
    membership), so the restart above takes its partitions back without waiting for the
    killed process's session to time out; a name that is set is kept."""
    import shared.service.serve
    from services.metrics import cli

    served: list[MetricsSettings] = []
    monkeypatch.setattr(shared.service.serve, "serve", lambda _app, s: served.append(s))
    monkeypatch.setenv("DEMANDSCOPE_METRICS_PORT", "8123")
    monkeypatch.delenv("DEMANDSCOPE_METRICS_INSTANCE_ID", raising=False)
    cli.serve()
    monkeypatch.setenv("DEMANDSCOPE_METRICS_INSTANCE_ID", "metrics-0")
    cli.serve()
    assert [s.instance_id for s in served] == [f"{socket.gethostname()}:8123", "metrics-0"]
