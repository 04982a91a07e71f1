"""Several instances, exact (issue 13): two intakes, two classifiers and two metrics services
as separate processes on one broker and one PostgreSQL; demands, case events and labels go
in through both intakes; mid-stream one instance of each part is SIGKILLed and a third of
each starts (the groups rebalance). Once drained: every accepted demand is classified once
and counted once, every label applied once (in the metrics and in its customer's context on
whichever classifier holds it), every classifier serves one model version, no special-cause
signal is raised twice, and the metrics replicas' scrapes show one set of per-purpose
gauges."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from devstack.process import pick_free_port
from services.classifier.changelog import parse_state
from services.classifier.db.migrate import upgrade as upgrade_classifier
from services.classifier.db.tables import LabelRow as ClassifierLabelRow
from services.classifier.training import TrainedModel
from services.intake.db.migrate import upgrade as upgrade_intake
from services.metrics.db import signals as signals_db
from services.metrics.db.migrate import upgrade as upgrade_metrics
from services.metrics.db.tables import DemandFactRow
from services.metrics.db.tables import LabelRow as MetricsLabelRow
from shared.auth.keys import Scope
from shared.auth.migrate import upgrade as upgrade_auth
from shared.auth.store import ApiKeyStore
from shared.database.engine import create_engine, session_factory
from shared.events import DemandClassified, SpecialCauseSignalled
from shared.kafka.admin import ensure_topics
from shared.kafka.read_to_end import read_all
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name, topic_specs
from tests.services.classifier.conftest import store_version
from tests.support.databases import create_databases
from tests.support.factories import DEMO_SOURCE, case_event_body, demand_body, label_body
from tests.support.kafka_io import committed_to_end
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".run" / "scale-out"  # the instances' logs, kept for a failure's reader
PARTITIONS = 4  # room for three instances of a group to share the work
DEMANDS = 3_000  # in batches of BATCH: three quarters before the kills
BATCH = 100
CUSTOMERS = 200
LABELS = 200  # one per demand, on demands of every customer
CASES = 100  # opened, then fulfilled half of them
TEXTS = (
    "I want to pay my bill by direct debit",
    "where is my engineer, still waiting since Monday",
    "I am moving house next month",
    "my broadband keeps dropping",
    "you charged me twice this month",
)
CLASSIFIER_INPUTS = (Topic.DEMAND_RECEIVED, Topic.CASE_EVENTS, Topic.DEMAND_LABELS)
METRICS_INPUTS = (Topic.CASE_EVENTS, Topic.DEMAND_LABELS)
GAUGES = (
    "demandscope_metrics_failure_demand_share{",
    "demandscope_metrics_open_cases{",
    "demandscope_metrics_capability_limit{",
)


@dataclass
class Instance:
    kind: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Fleet:
    kafka: KafkaSettings
    env: dict[str, str]
    tmp: Path
    key: str
    started: list[Instance]

    def start(self, kind: str) -> Instance:
        port = pick_free_port("127.0.0.1")
        log = LOGS / f"{kind}-{len(self.started)}.log"
        env = {**self.env, f"DEMANDSCOPE_{kind.upper()}_PORT": str(port)}
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", kind, "serve"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        instance = Instance(kind, process, port, log)
        self.started.append(instance)
        return instance

    def stop_all(self) -> None:
        for instance in self.started:
            if instance.process.poll() is None:
                instance.process.send_signal(signal.SIGTERM)
        for instance in self.started:
            try:
                instance.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                instance.process.kill()
                instance.process.wait(timeout=30)


def kill(instance: Instance) -> None:
    instance.process.send_signal(signal.SIGKILL)  # no shutdown, no last commit
    instance.process.wait(timeout=30)


async def ready(client: httpx.AsyncClient, instance: Instance) -> bool:
    assert instance.process.poll() is None, instance.log.read_text()[-3000:]
    try:
        return (await client.get(f"{instance.url}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
async def fleet(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path, seed_model: TrainedModel
) -> AsyncIterator[Fleet]:
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        partitions=PARTITIONS,
    )
    await ensure_topics(kafka, topic_specs(kafka))
    tag = uuid.uuid4().hex[:10]
    urls = await create_databases(
        postgres_url, [f"scale_{part}_{tag}" for part in ("intake", "classifier", "metrics")]
    )
    intake_url, classifier_url, metrics_url = urls.values()
    auth_url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    for upgrade, url in (
        (upgrade_auth, auth_url),
        (upgrade_intake, intake_url),
        (upgrade_classifier, classifier_url),
        (upgrade_metrics, metrics_url),
    ):
        await asyncio.to_thread(upgrade, url)
    # The session's seed model as the fleet's current version: no classifier trains at start
    # (the first one to start did, ~12 s of CPU beside five other starting services).
    await store_version(classifier_url, seed_model.model, seed_model.metadata)
    store = ApiKeyStore(auth_url)
    key, _ = await store.create(DEMO_SOURCE, [Scope.DEMANDS_WRITE, Scope.LABELS_WRITE, Scope.READ])
    await store.close()
    env = {
        **os.environ,
        "DEMANDSCOPE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "DEMANDSCOPE_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "DEMANDSCOPE_KAFKA_PARTITIONS": str(PARTITIONS),
        "DEMANDSCOPE_AUTH_DATABASE_URL": auth_url,
        "DEMANDSCOPE_INTAKE_DATABASE_URL": intake_url,
        "DEMANDSCOPE_INTAKE_HOST": "127.0.0.1",
        "DEMANDSCOPE_INTAKE_LOG_LEVEL": "WARNING",
        "DEMANDSCOPE_CLASSIFIER_DATABASE_URL": classifier_url,
        "DEMANDSCOPE_CLASSIFIER_GROUP_ID": f"classifier-{tag}",
        "DEMANDSCOPE_CLASSIFIER_MODEL_DIR": str(tmp_path / "no-models"),  # the stored one
        "DEMANDSCOPE_CLASSIFIER_RETRAIN_INTERVAL_S": "0",
        "DEMANDSCOPE_CLASSIFIER_MAX_BATCH": "100",
        "DEMANDSCOPE_CLASSIFIER_HOST": "127.0.0.1",
        "DEMANDSCOPE_CLASSIFIER_LOG_LEVEL": "WARNING",
        "DEMANDSCOPE_METRICS_DATABASE_URL": metrics_url,
        "DEMANDSCOPE_METRICS_GROUP_ID": f"metrics-{tag}",
        "DEMANDSCOPE_METRICS_MAX_BATCH": "200",
        "DEMANDSCOPE_METRICS_HOST": "127.0.0.1",
        "DEMANDSCOPE_METRICS_LOG_LEVEL": "WARNING",
    }
    LOGS.mkdir(parents=True, exist_ok=True)
    started: list[Instance] = []
    made = Fleet(kafka, env, tmp_path, key, started)
    try:
        yield made
    finally:
        made.stop_all()


def demands(start: int, stop: int) -> Iterator[dict[str, Any]]:
    # Never in the future: intake refuses a time past its clock skew, and "today at 09:00"
    # was nine hours ahead just after midnight UTC (the last day's demands were refused).
    latest = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    for n in range(start, stop):
        yield demand_body(
            id=f"D-{n}",
            customer_ref=f"C-{n % CUSTOMERS}",
            text=TEXTS[n % len(TEXTS)],
            # A week of demands, the last day busiest: charts with points, maybe signals.
            occurred_at=latest - timedelta(days=max(0, 6 - n * 10 // DEMANDS)),
        )


async def classified_count(kafka: KafkaSettings) -> int:
    topic = topic_name(kafka, Topic.DEMAND_CLASSIFIED)
    return len(await read_all(kafka, [topic], timeout=60))


async def unlabelled_in_context(kafka: KafkaSettings, labelled: list[str]) -> set[str]:
    """The labelled demands whose customer's latest context does not hold the label's
    purpose (label_body's), read from the compacted classifier.context topic."""
    topic = topic_name(kafka, Topic.CLASSIFIER_CONTEXT)
    latest = {r.key: r.value for r in await read_all(kafka, [topic], timeout=60)}
    purpose = label_body()["purpose"]
    missing = set()
    for demand_id in labelled:
        customer = f"C-{int(demand_id.removeprefix('D-')) % CUSTOMERS}"
        state = parse_state(latest.get(customer.encode()))
        entry = state.demand(demand_id, DEMO_SOURCE) if state is not None else None
        if entry is None or entry.purpose != purpose:
            missing.add(demand_id)
    return missing


async def counted_demands(fleet: Fleet) -> int:
    engine = create_engine(fleet.env["DEMANDSCOPE_METRICS_DATABASE_URL"])
    try:
        async with engine.connect() as connection:
            count = await connection.scalar(
                select(func.count(func.distinct(DemandFactRow.demand_id)))
            )
    finally:
        await engine.dispose()
    return int(count or 0)


async def post_demands(
    client: httpx.AsyncClient, intakes: list[Instance], key: str, start: int, stop: int
) -> list[str]:
    accepted: list[str] = []
    items = list(demands(start, stop))
    for number, first in enumerate(range(0, len(items), BATCH)):
        intake = intakes[number % len(intakes)]
        answer = await client.post(
            f"{intake.url}/v1/demands:batch",
            json=items[first : first + BATCH],
            headers={"Authorization": f"Bearer {key}"},
        )
        assert answer.status_code == 200, answer.text
        accepted += [r["id"] for r in answer.json()["results"] if r["status"] == "accepted"]
    return accepted


async def post_one(
    client: httpx.AsyncClient, intake: Instance, key: str, path: str, body: dict[str, Any]
) -> bool:
    answer = await client.post(
        f"{intake.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code in (200, 202), answer.text
    return answer.status_code == 202


async def test_two_instances_of_each_part_killed_and_replaced_mid_stream_count_exactly(
    fleet: Fleet,
) -> None:
    began = time.monotonic()
    kafka = fleet.kafka
    intakes = [fleet.start("intake"), fleet.start("intake")]
    classifiers = [fleet.start("classifier"), fleet.start("classifier")]
    metrics = [fleet.start("metrics"), fleet.start("metrics")]
    async with httpx.AsyncClient(timeout=60) as client:
        for instance in intakes + classifiers + metrics:
            await wait_until(
                lambda i=instance: ready(client, i),  # type: ignore[misc]
                timeout=240,
                interval=0.5,
                what=f"{instance.kind} on {instance.port} to be ready",
            )
        accepted = await post_demands(client, intakes, fleet.key, 0, DEMANDS // 2)
        cases = 0
        for c in range(CASES):
            body = case_event_body(
                id=f"E-open-{c}", case_ref=f"K-{c}", customer_ref=f"C-{c}", type="opened"
            )
            cases += await post_one(client, intakes[c % 2], fleet.key, "/v1/case-events", body)
        labelled: list[str] = []
        for n in range(LABELS // 2):
            demand_id = f"D-{n * (DEMANDS // 2) // (LABELS // 2)}"
            body = label_body(id=f"L-{n}")
            if await post_one(
                client, intakes[n % 2], fleet.key, f"/v1/demands/{demand_id}/labels", body
            ):
                labelled.append(demand_id)

        # Mid-stream: while the classifiers work through another batch of demands, one
        # of each part dies without a word, and a third of each joins.
        classified_topic = topic_name(kafka, Topic.DEMAND_CLASSIFIED)
        before = len(accepted)
        accepted += await post_demands(client, intakes, fleet.key, before, DEMANDS * 3 // 4)
        at_kill = await wait_until(
            lambda: classified_count(kafka),
            accept=lambda n: n > before,
            timeout=240,
            interval=0.1,
            what="the classifiers to start on the demands posted last",
        )
        for victims in (intakes, classifiers, metrics):
            kill(victims.pop(0))
        accepted_at_kill = len(accepted)
        intakes.append(fleet.start("intake"))
        classifiers.append(fleet.start("classifier"))
        metrics.append(fleet.start("metrics"))
        await wait_until(
            lambda: ready(client, intakes[-1]), timeout=240, interval=0.5, what="a third intake"
        )

        accepted += await post_demands(client, intakes, fleet.key, DEMANDS * 3 // 4, DEMANDS)
        for c in range(CASES // 2):
            body = case_event_body(
                id=f"E-done-{c}", case_ref=f"K-{c}", customer_ref=f"C-{c}", type="fulfilled"
            )
            cases += await post_one(client, intakes[c % 2], fleet.key, "/v1/case-events", body)
        for n in range(LABELS // 2, LABELS):
            demand_id = f"D-{n * DEMANDS // LABELS}"
            body = label_body(id=f"L-{n}")
            if await post_one(
                client, intakes[n % 2], fleet.key, f"/v1/demands/{demand_id}/labels", body
            ):
                labelled.append(demand_id)

        # Drained: each group has committed to the end of the inputs nobody writes in
        # transactions (the classifier's offsets go in the transactions that write its
        # output), and the outputs hold every accepted demand. The transactional topics
        # (demand.classified, classifier.context-labels) end with a commit marker past the
        # last offset a consumer commits, so they are judged by what was written from them.
        await wait_until(
            lambda: committed_to_end(
                kafka,
                fleet.env["DEMANDSCOPE_CLASSIFIER_GROUP_ID"],
                [topic_name(kafka, t) for t in CLASSIFIER_INPUTS],
            ),
            timeout=300,
            interval=1,
            what="the classifiers to drain their inputs",
        )
        await wait_until(
            lambda: committed_to_end(
                kafka,
                fleet.env["DEMANDSCOPE_METRICS_GROUP_ID"],
                [topic_name(kafka, t) for t in METRICS_INPUTS],
            ),
            timeout=300,
            interval=1,
            what="the metrics services to drain case events and labels",
        )
        await wait_until(
            lambda: counted_demands(fleet),
            accept=lambda n: n >= len(accepted),
            timeout=300,
            interval=1,
            what="the metrics services to count every accepted demand",
        )
        # Every label reaches its customer's context, whichever classifier holds it.
        await wait_until(
            lambda: unlabelled_in_context(kafka, labelled),
            accept=lambda missing: not missing,
            timeout=120,
            interval=1,
            what="every label in its customer's context",
            show=lambda missing: f"{len(missing)}: {sorted(missing)[:5]}",
        )
        # The instances started last may still be starting: with the metrics services quick to
        # drain, the waits above can end first. Ask each only once it answers.
        for instance in classifiers + metrics:
            await wait_until(
                partial(ready, client, instance),
                timeout=240,
                interval=0.5,
                what=f"{instance.kind} on {instance.port} to be ready",
            )
        headers = {"Authorization": f"Bearer {fleet.key}"}
        models = [
            (await client.get(f"{c.url}/v1/model", headers=headers)).json() for c in classifiers
        ]
        signal_counts = [(await client.get(f"{m.url}/metrics")).text for m in metrics]

    classified = Counter(
        DemandClassified.model_validate_json(r.value or b"").demand.id
        for r in await read_all(kafka, [classified_topic], timeout=120)
    )
    # The signals sent, read before the database's: the metrics services are still running
    # and may raise (and send) another signal meanwhile; a signal is stored before it is
    # sent, so everything sent by now is stored by the time the database is read.
    published = Counter(
        SpecialCauseSignalled.model_validate_json(r.value or b"").signal_id
        for r in await read_all(kafka, [topic_name(kafka, Topic.CAPABILITY_SIGNALS)], timeout=60)
    )
    engine = create_engine(fleet.env["DEMANDSCOPE_METRICS_DATABASE_URL"])
    classifier_engine = create_engine(fleet.env["DEMANDSCOPE_CLASSIFIER_DATABASE_URL"])
    try:
        async with session_factory(engine)() as session:
            counted = Counter((await session.scalars(select(DemandFactRow.demand_id))).all())
            labelled_facts = set(
                (
                    await session.scalars(
                        select(DemandFactRow.demand_id).where(DemandFactRow.labelled)
                    )
                ).all()
            )
            metrics_labels = (
                await session.execute(select(func.count()).select_from(MetricsLabelRow))
            ).scalar_one()
            raised = await signals_db.raised(session)
        async with classifier_engine.connect() as connection:
            classifier_labels = (
                await connection.execute(select(func.count()).select_from(ClassifierLabelRow))
            ).scalar_one()
    finally:
        await engine.dispose()
        await classifier_engine.dispose()
    took = time.monotonic() - began
    print(  # the note's figures (pytest -s)
        f"\nscale-out: posted {DEMANDS} demands, accepted {len(accepted)}, "
        f"classified {sum(classified.values())} ({len(classified)} distinct; {at_kill} "
        f"of {accepted_at_kill} accepted at the kills), counted {sum(counted.values())}, "
        f"case events {cases}, "
        f"labels {len(labelled)} (stored {classifier_labels} / {metrics_labels}), "
        f"signals raised {len(raised)}, sent {sum(published.values())}, "
        f"model versions {sorted({m['model_version'] for m in models})}, in {took:.0f} s"
    )

    assert at_kill < accepted_at_kill, "the kills must land mid-stream"
    assert len(accepted) == DEMANDS
    assert set(classified) == set(accepted)
    assert max(classified.values()) == 1, "a demand classified twice"
    assert set(counted) == set(accepted)
    assert max(counted.values()) == 1, "a demand counted twice"
    assert len(labelled) == LABELS
    assert classifier_labels == metrics_labels == LABELS
    assert labelled_facts >= set(labelled)  # each label applied to its demand
    assert len({m["model_version"] for m in models}) == 1
    assert {m["fleet_version"] for m in models} == {models[0]["model_version"]}
    assert len({r.signal_id for r in raised}) == len(raised)
    assert set(published) <= {r.signal_id for r in raised}
    assert not published or max(published.values()) == 1, "a signal sent twice"
    # Each signal counted once, by the replica whose insert raised it (a killed replica's
    # counts died with it): the live replicas' counters add up to no more than the rows.
    counted_signals: Counter[tuple[str, str, str]] = Counter()
    for exposition in signal_counts:
        for family in text_string_to_metric_families(exposition):
            for sample in family.samples:
                if sample.name == "demandscope_metrics_special_cause_signals_total":
                    labels = sample.labels
                    key = (labels["purpose"], labels["measure"], labels["rule"])
                    counted_signals[key] += int(sample.value)
    # One truth per purpose: every replica's scrape reads the gauges from the database.
    gauges = [
        sorted(line for line in exposition.splitlines() if line.startswith(GAUGES))
        for exposition in signal_counts
    ]
    assert gauges[0], "the scrape shows per-purpose gauges"
    assert all(g == gauges[0] for g in gauges), "two replicas show two truths"
    rows = Counter((r.purpose, r.measure, r.rule) for r in raised)
    assert all(counted_signals[key] <= rows[key] for key in counted_signals), (
        counted_signals,
        rows,
    )
