"""A real Prometheus scrapes the running stack while demands, case events and labels flow;
the query of every panel of every dashboard must then return data.

The broker is one of our own with the JMX exporter agent, the three services are served by
uvicorn on free ports in this event loop, and Prometheus (Debian's package) scrapes them every
second with the shipped rules. What it saw (panel figures, alerts) is written to
``.run/deploy-e2e-report.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from devstack import kafka as local_kafka
from devstack import prometheus as local_prometheus
from devstack.process import pick_free_ports
from services.classifier.config import ClassifierSettings
from services.classifier.db.migrate import upgrade as upgrade_classifier
from services.classifier.main import create_app as create_classifier
from services.classifier.training import TrainedModel
from services.intake.config import IntakeSettings
from services.intake.db.migrate import upgrade as upgrade_intake
from services.intake.main import create_app as create_intake
from services.metrics.config import MetricsSettings
from services.metrics.db.migrate import upgrade as upgrade_metrics
from services.metrics.main import create_app as create_metrics
from shared.auth.keys import Scope
from shared.auth.migrate import upgrade as upgrade_auth
from shared.auth.settings import AuthSettings
from shared.auth.store import ApiKeyStore
from shared.kafka.admin import ensure_topics
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name, topic_specs
from tests.deploy.panel_queries import (
    PanelQuery,
    load_dashboards,
    panel_queries,
    query_variables,
)
from tests.services.classifier.conftest import store_version
from tests.support.factories import case_event_body, demand_body, label_body
from tests.support.kafka_io import produce_raw
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / ".run" / "deploy-e2e-report.json"
SOURCE = "e2e-crm"

# A case opens with VALUE_TEXTS[slot] and is followed by FAILURE_TEXTS[slot]. Only the engineer
# chaser is for its case's purpose (the classifier traces it to the case: cause "case"); the
# model files the two billing complaints under another purpose, so they stay untraced.
VALUE_TEXTS = [
    "I'd like to pay my bill by direct debit",
    "I am moving house next month",
    "I want to book an engineer visit",
]
FAILURE_TEXTS = [
    "My bill is wrong again",
    "I called last week and nobody got back to me about my bill",
    "Where is my engineer? Still waiting since Monday",  # chases the engineer visit booked
]
CHANNELS = ["phone", "email", "web", "chat"]


# ---------------------------------------------------------------------------------------------
# the stack
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def broker_with_jmx_exporter() -> Iterator[local_kafka.LocalKafkaConfig]:
    cfg = local_kafka.LocalKafkaConfig.on_free_ports(
        root=ROOT,
        run_dir=ROOT / ".run" / f"deploy-e2e-kafka-{uuid.uuid4().hex[:8]}",
        heap="384m",
        jmx_exporter=True,
    )
    local_prometheus.fetch_jmx_exporter(
        cfg.jmx_exporter_jar, pom=ROOT / "deploy" / "kafka" / "jmx-exporter-pom.xml"
    )
    local_kafka.start(cfg, timeout=120)
    try:
        yield cfg
    finally:
        local_kafka.stop(cfg)
        shutil.rmtree(cfg.run_path, ignore_errors=True)


@asynccontextmanager
async def served(app: FastAPI, port: int) -> AsyncIterator[str]:
    """The app on a real port (lifespan included), as Prometheus will see it."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_until(
        lambda: _started(server, task), timeout=60, interval=0.05, what=f"server on {port}"
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()  # raises what made the server stop
    return server.started


class Prometheus:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def query(self, expr: str) -> dict[str, Any]:
        response = await self.client.get("/api/v1/query", params={"query": expr})
        body: dict[str, Any] = response.json()
        return body

    async def label_values(self, label: str, metric: str) -> list[str]:
        """What Grafana's label_values(metric, label) variable query lists."""
        response = await self.client.get(
            f"/api/v1/label/{label}/values", params={"match[]": metric}
        )
        values: list[str] = response.json()["data"]
        return values

    async def value(self, expr: str) -> float:
        body = await self.query(expr)
        result = body.get("data", {}).get("result", [])
        return float(result[0]["value"][1]) if result else math.nan


def has_figures(body: dict[str, Any]) -> bool:
    """A successful query with at least one finite value (NaN is what an empty window gives)."""
    if body.get("status") != "success":
        return False
    data = body["data"]
    samples = [data["result"]] if data["resultType"] == "scalar" else data["result"]
    values = [s[1] if data["resultType"] == "scalar" else s["value"][1] for s in samples]
    return any(math.isfinite(float(value)) for value in values)


def figures(body: dict[str, Any]) -> list[str]:
    if body.get("status") != "success":
        return [f"error: {body.get('error')}"]
    data = body["data"]
    if data["resultType"] == "scalar":
        return [data["result"][1]]
    shown = []
    for sample in data["result"]:
        labels = {k: v for k, v in sample["metric"].items() if k not in {"job", "instance"}}
        label = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        shown.append(f"{label or 'value'}: {float(sample['value'][1]):.4g}")
    return shown


# ---------------------------------------------------------------------------------------------
# the traffic
# ---------------------------------------------------------------------------------------------


# The traffic's ids: demand i, customer C-n and their case CASE-n (the bodies: factories).
def demand(index: int, text: str, *, at: datetime, case: int) -> dict[str, Any]:
    return demand_body(
        id=f"e2e-demand-{index}",
        occurred_at=at,
        channel=CHANNELS[index % len(CHANNELS)],
        source=SOURCE,
        customer_ref=f"C-{case}",
        case_ref=f"CASE-{case}",
        text=text,
    )


def case_event(case: int, kind: str, *, at: datetime, purpose: str | None = None) -> dict[str, Any]:
    return case_event_body(
        id=f"e2e-case-{case}-{kind}",
        case_ref=f"CASE-{case}",
        customer_ref=f"C-{case}",
        type=kind,
        occurred_at=at,
        source=SOURCE,
        purpose=purpose or ...,
    )


async def post_history(intake: httpx.AsyncClient, now: datetime) -> int:
    """Ten days of cases: each opened by a value demand, chased by failure demand, fulfilled
    (all but today's engineer visit, which is still open).

    The last day has far more failure demand than the days before: a signal to be seen.
    Returns how many demands were accepted.
    """
    accepted = 0
    index = 0
    for days_ago in range(10, -1, -1):
        day = now - timedelta(days=days_ago, hours=1)
        chasers = 6 if days_ago == 0 else 1
        for slot in range(3):
            case = days_ago * 10 + slot
            opened = day + timedelta(minutes=slot)
            texts = [VALUE_TEXTS[slot]] + [FAILURE_TEXTS[slot]] * chasers
            for offset, text in enumerate(texts):
                at = opened + timedelta(minutes=5 * offset)
                response = await intake.post(
                    "/v1/demands", json=demand(index, text, at=at, case=case)
                )
                assert response.status_code == 202, response.text
                index += 1
                accepted += 1
            took = timedelta(hours=2 * (slot + 1), minutes=7 * days_ago)  # varies, day to day
            fulfilled = min(opened + took, now - timedelta(minutes=1))
            events = [("opened", opened), ("fulfilled", fulfilled)]
            if days_ago == 0 and slot == 2:
                # Today's engineer visit stays open: its chasers trace back to the case. (The
                # classifier judges against the case's current state, and the case events of
                # the other cases may reach it before their demands: fulfilled by then.)
                events = events[:1]
            for kind, at in events:
                event = case_event(case, kind, at=at)
                response = await intake.post("/v1/case-events", json=event)
                assert response.status_code == 202, response.text
    # a repeat (duplicate), an invalid demand (refused) and a label (a person's correction)
    repeat = await intake.post("/v1/demands", json=demand(0, VALUE_TEXTS[0], at=now, case=100))
    assert repeat.status_code == 200, repeat.text
    invalid = await intake.post("/v1/demands", json={"id": "e2e-bad", "channel": "pigeon"})
    assert invalid.status_code == 422, invalid.text
    label = label_body(
        id="e2e-label-1", demand_type="failure", failure_kind="progress_chasing", purpose="billing"
    )
    labelled = await intake.post("/v1/demands/e2e-demand-1/labels", json=label)
    assert labelled.status_code == 202, labelled.text
    return accepted


async def trickle(intake: httpx.AsyncClient, stop: asyncio.Event) -> None:
    """A demand every half second, so rates and latency percentiles have a current window."""
    index = 10_000
    while not stop.is_set():
        text = (VALUE_TEXTS + FAILURE_TEXTS)[index % 6]
        body = demand(index, f"{text} (call me on 07700 900123)", at=datetime.now(UTC), case=index)
        await intake.post("/v1/demands", json=body)
        index += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)


# ---------------------------------------------------------------------------------------------
# the test
# ---------------------------------------------------------------------------------------------


async def test_every_dashboard_panel_shows_data_from_the_running_stack(
    broker_with_jmx_exporter: local_kafka.LocalKafkaConfig,
    prometheus_binary: Path,
    tmp_path: Path,
    seed_model: TrainedModel,
) -> None:
    broker = broker_with_jmx_exporter
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, partitions=2)
    await ensure_topics(kafka, topic_specs(kafka))
    auth = AuthSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}")
    intake_db = f"sqlite+aiosqlite:///{tmp_path / 'intake.db'}"
    metrics_db = f"sqlite+aiosqlite:///{tmp_path / 'metrics.db'}"
    for upgrade, url in ((upgrade_auth, auth.database_url), (upgrade_intake, intake_db)):
        await asyncio.to_thread(upgrade, url)
    await asyncio.to_thread(upgrade_metrics, metrics_db)
    classifier_db = f"sqlite+aiosqlite:///{tmp_path / 'classifier.db'}"
    await asyncio.to_thread(upgrade_classifier, classifier_db)
    # The session's seed model as the current version: the classifier does not train at start.
    await store_version(classifier_db, seed_model.model, seed_model.metadata)
    store = ApiKeyStore(auth.database_url)
    api_key, _record = await store.create(
        SOURCE, {Scope.DEMANDS_WRITE, Scope.LABELS_WRITE, Scope.READ}
    )
    await store.close()

    intake_port, classifier_port, metrics_port, prometheus_port = pick_free_ports("127.0.0.1", 4)
    prometheus_cfg = local_prometheus.LocalPrometheusConfig(
        root=ROOT,
        run_dir=tmp_path / "prometheus",
        port=prometheus_port,
        targets={
            "demandscope-intake": [f"127.0.0.1:{intake_port}"],
            "demandscope-classifier": [f"127.0.0.1:{classifier_port}"],
            "demandscope-metrics": [f"127.0.0.1:{metrics_port}"],
            "kafka": [f"127.0.0.1:{broker.jmx_exporter_port}"],
        },
        scrape_interval="1s",
        evaluation_interval="1s",
    )
    group = f"e2e-{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        await asyncio.to_thread(local_prometheus.start, prometheus_cfg)
        stack.callback(local_prometheus.stop, prometheus_cfg)
        intake_url = await stack.enter_async_context(
            served(
                create_intake(
                    IntakeSettings(kafka=kafka, auth=auth, database_url=intake_db, json_logs=False)
                ),
                intake_port,
            )
        )
        await stack.enter_async_context(
            served(
                create_classifier(
                    ClassifierSettings(
                        kafka=kafka,
                        group_id=f"{group}-classifier",
                        transactional_id=f"{group}-tx",
                        model_dir=tmp_path / "models",
                        database_url=classifier_db,
                        auth=auth,
                    )
                ),
                classifier_port,
            )
        )
        await stack.enter_async_context(
            served(
                create_metrics(
                    MetricsSettings(
                        kafka=kafka,
                        auth=auth,
                        database_url=metrics_db,
                        group_id=f"{group}-metrics",
                        baseline_points=5,
                        publish_debounce_s=0.2,
                    )
                ),
                metrics_port,
            )
        )
        intake = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=intake_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10
            )
        )
        prometheus = Prometheus(
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=prometheus_cfg.url, timeout=10)
            )
        )
        await wait_until(
            lambda: prometheus.value('count(up{job=~"demandscope-.+|kafka"} == 1)'),
            accept=lambda up: up == 4,
            timeout=30,
            what="Prometheus scraping the three services and the broker",
        )

        history = await post_history(intake, datetime.now(UTC))
        # a record nobody can read: the classifier must send it to demand.received.dlq
        await produce_raw(kafka, topic_name(kafka, Topic.DEMAND_RECEIVED), b"{not json", key=b"x")
        stop = asyncio.Event()
        trickling = asyncio.create_task(trickle(intake, stop))
        try:
            await wait_until(
                lambda: prometheus.value("sum(demandscope_metrics_demands_total)"),
                accept=lambda counted: counted >= history,
                timeout=60,
                what=f"the metrics service counting the {history} demands",
            )
            choices = await wait_until(
                lambda: _variable_choices(prometheus),
                accept=lambda found: all(found.values()),
                timeout=30,
                what="values for every dashboard variable",
            )
            queries = panel_queries(choices)
            results = await wait_until(
                lambda: _evaluate(prometheus, queries),
                accept=lambda found: not _empty(found),
                timeout=45,
                interval=1.0,
                what="data in every panel",
            )
        except AssertionError:
            results = await _evaluate(
                prometheus, panel_queries(await _variable_choices(prometheus))
            )
            _write_report(results, await prometheus.client.get("/api/v1/alerts"))
            raise
        finally:
            stop.set()
            await trickling
        # the poison record: the alert pipeline works end to end
        await wait_until(
            lambda: _firing(prometheus),
            accept=lambda names: "DemandscopeDeadLetters" in names,
            timeout=30,
            what="DemandscopeDeadLetters firing for the poison record",
        )
        alerts = await prometheus.client.get("/api/v1/alerts")
        _write_report(results, alerts)
        rules = (await prometheus.client.get("/api/v1/rules")).json()["data"]["groups"]

    assert not _empty(results), f"panel queries without data: {_empty(results)}"
    # The chasers of the history join open cases, so some failure demand traces to a cause.
    (causes,) = [
        body for query, body in results.items() if query.where.endswith("kind and cause / A")
    ]
    traced = {s["metric"]["cause"] for s in causes["data"]["result"]} - {"untraced"}
    assert traced, f"no failure demand traced to a case or a demand: {figures(causes)}"
    evaluated = {rule["name"]: rule for group in rules for rule in group["rules"]}
    assert len(evaluated) == 22  # 12 recording rules, 10 alerts: all loaded
    failing = {
        name: rule.get("lastError") for name, rule in evaluated.items() if rule["health"] == "err"
    }
    assert not failing, f"rules that failed to evaluate: {failing}"


Results = dict[PanelQuery, dict[str, Any]]


async def _firing(prometheus: Prometheus) -> set[str]:
    alerts = (await prometheus.client.get("/api/v1/alerts")).json()["data"]["alerts"]
    return {alert["labels"]["alertname"] for alert in alerts if alert["state"] == "firing"}


async def _variable_choices(prometheus: Prometheus) -> dict[str, list[str]]:
    return {
        variable.name: await prometheus.label_values(variable.label, variable.metric)
        for board in load_dashboards().values()
        for variable in query_variables(board)
    }


async def _evaluate(prometheus: Prometheus, queries: list[PanelQuery]) -> Results:
    return {query: await prometheus.query(query.expr) for query in queries}


def _empty(results: Results) -> list[str]:
    """Panel targets with no data for any choice of the dashboard's variables."""
    shown: dict[str, bool] = {}
    for query, body in results.items():
        shown[query.where] = shown.get(query.where, False) or has_figures(body)
    return [where for where, has_data in shown.items() if not has_data]


def _write_report(results: Results, alerts: httpx.Response) -> None:
    report = {
        "panels": {
            f"{query.where} [{query.choice}]" if query.choice else query.where: figures(body)
            for query, body in results.items()
        },
        "empty_or_failed": _empty(results),
        "alerts": [
            {
                "name": a["labels"]["alertname"],
                "state": a["state"],
                "labels": a["labels"],
                "value": a["value"],
            }
            for a in alerts.json()["data"]["alerts"]
        ],
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nreport: {REPORT}\n" + json.dumps(report, indent=2))
