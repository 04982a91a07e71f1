"""The whole stack on one machine under a bounded open-loop load: the sustained rate accepted
and counted, the pipeline latency from HTTP 202 to the metrics API, each process's CPU share,
and the restart of each service after SIGKILL (issue 14's last three rows).

The stack is started the way `make run` starts it (devstack/stack.py): a local broker with
devstack's JVM settings, topics and databases created first (SQLite, as `make run` has
them), then each service as its own process, ``python -m services.cli.main <service>
serve``, configured through its environment only, on free ports of 127.0.0.1.

The load: demands are offered on a fixed schedule whatever the answers (open loop), in
``POST /v1/demands:batch`` requests of DEMANDSCOPE_BENCH_STACK_BATCH demands (default 20
every 20 ms at 1,000/s: what a contact-centre system forwarding its recent contacts sends;
1 sends single ``POST /v1/demands``) over a few keep-alive connections. A request that finds
no free connection waits in the generator's queue, so a stack slower than the offered rate
shows as an accepted rate below it, never as a slower offer.

Latency: one demand in DEMANDSCOPE_BENCH_STACK_PROBE_EVERY (default: five a second, one in
200 at 1,000/s) is a probe with a case reference and customer of its own. From the 202 of
the request that carried it, the metrics API's case timeline (``GET /v1/cases/<ref>``) is
polled until it answers 200, every 10 ms for the first 250 ms, then with gaps of a quarter
of the time since the 202 up to 500 ms (a latency is read at most 10 ms late up to 250 ms,
then at most a quarter or 500 ms late), for at most 60 s: a probe not visible by then
counts as lost.

Counted: ``GET /v1/demand/overall`` every 2 s; the sustained counted rate is its growth over
the second half of the load. CPU: user + system time of each process from /proc/<pid>/stat
over the load, as a share of one core (the machine's total is cores x 100%).

Restart: each service in turn is killed with SIGKILL (with its process group), started again
with the same command, and timed from the start to its first /readyz 200.

Sizes (environment): DEMANDSCOPE_BENCH_STACK_RATE (demands/s, 1000),
DEMANDSCOPE_BENCH_STACK_SECONDS (60), DEMANDSCOPE_BENCH_STACK_DRAIN_S (how long to wait for
the backlog after the load, 45); DEMANDSCOPE_BENCH_STACK_BATCH, _PROBE_EVERY as above.

Stages (DEMANDSCOPE_BENCH_STACK_STAGES=1): a read_committed consumer of the classified
demands beside the load times one in 50 from intake's acceptance to the classifier's send
and from that send to its commit being visible, and each consumer group's time in its
batches over the load (its /metrics) says how busy it was: where the latency goes. The
probes themselves are traced too (their classified records carry their case reference):
202 -> the classifier's send -> read by that consumer -> the metrics API's first 200, and
202 -> the last poll that found nothing, so how late the polling may have read them shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import results
from bench.results import cpu_seconds
from devstack import kafka as local_kafka
from devstack.process import pick_free_ports

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
RATE = float(os.environ.get("DEMANDSCOPE_BENCH_STACK_RATE", "1000"))
SECONDS = float(os.environ.get("DEMANDSCOPE_BENCH_STACK_SECONDS", "60"))
BATCH = int(os.environ.get("DEMANDSCOPE_BENCH_STACK_BATCH", "20"))
# Five probes a second by default (one demand in 200 at 1,000/s): enough for a p99 over a
# minute, few enough that their polling is not a load of its own.
PROBE_EVERY = int(
    os.environ.get("DEMANDSCOPE_BENCH_STACK_PROBE_EVERY", str(max(1, round(RATE / 5))))
)
DRAIN_S = float(os.environ.get("DEMANDSCOPE_BENCH_STACK_DRAIN_S", "45"))
# Where the latency goes, stage by stage: off by default, as its consumer is a little load
# of its own in the generator's process.
STAGES = os.environ.get("DEMANDSCOPE_BENCH_STACK_STAGES", "") == "1"
STAGE_SAMPLE = 50  # one classified demand in this many is timed
CONNECTIONS = 16
READY_TIMEOUT = 120.0  # the first start (imports, migrations done before, model loading)
RESTART_TIMEOUT = 30.0  # the target is 5 s: 30 s tells a slow start from a failed one
PROBE_TIMEOUT = 60.0  # a probe not visible this long after its 202 is lost
# A probe's polls: every 10 ms for the first 250 ms after its 202 (around the 100 ms target
# a probe is read at most 10 ms late), then a quarter of the time since the 202, at most
# 500 ms (read at most a quarter late, as the gaps growing by a quarter from 10 ms did).
PROBE_FINE_GAP, PROBE_FINE_S = 0.01, 0.25
PROBE_GROWTH, PROBE_MAX_GAP = 0.25, 0.5
TARGET_RATE = 1000.0
TARGET_P50, TARGET_P99 = 0.1, 1.0
TARGET_RESTART = 5.0
SERVICES = ("intake", "classifier", "metrics")
TEXTS = (
    "Where is my engineer? I was told Tuesday and nobody came",
    "I'd like to pay my bill by direct debit please",
    "I am moving house next month, what do I need to do",
    "My bill is wrong again, you charged me twice",
    "I want to book an engineer visit for my boiler",
)


# --- the processes --------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", self.name, "serve"],
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed with its children
            )

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 25.0) -> None:
        """SIGTERM (a clean stop), SIGKILL after ``timeout``; always reaped."""
        if self.process is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=10)


async def ready(client: httpx.AsyncClient, service: Service, timeout: float) -> float:
    """Seconds until /readyz answers 200; raises when the process exits or time runs out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if service.process is not None and service.process.poll() is not None:
            code = service.process.returncode
            raise RuntimeError(f"{service.name} exited ({code}); see {service.log}")
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(f"{service.url}/readyz", timeout=2.0)).status_code == 200:
                return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{service.name} not ready within {timeout:.0f}s; see {service.log}")


def environment(run_dir: Path, bootstrap: str, ports: dict[str, int]) -> dict[str, str]:
    """What `make run` sets through settings, with this run's broker, ports and files."""
    sqlite = f"sqlite+aiosqlite:///{run_dir}"
    env = {
        "DEMANDSCOPE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DEMANDSCOPE_AUTH_DATABASE_URL": f"{sqlite}/auth.db",
        "DEMANDSCOPE_INTAKE_DATABASE_URL": f"{sqlite}/intake.db",
        "DEMANDSCOPE_CLASSIFIER_DATABASE_URL": f"{sqlite}/classifier.db",
        "DEMANDSCOPE_CLASSIFIER_MODEL_DIR": str(run_dir / "models"),
        "DEMANDSCOPE_CLASSIFIER_TRANSACTIONAL_ID": f"bench-classifier-{run_dir.name}",
        "DEMANDSCOPE_METRICS_DATABASE_URL": f"{sqlite}/metrics.db",
    }
    for name, port in ports.items():
        prefix = f"DEMANDSCOPE_{name.upper()}"
        env |= {f"{prefix}_HOST": HOST, f"{prefix}_PORT": str(port)}
        env |= {f"{prefix}_LOG_LEVEL": "WARNING"}
    return env


async def prepare(env: dict[str, str], run_dir: Path) -> str:
    """Topics, migrated databases and an API key, as `make run` has them before its services
    start; the key. (The classifier trains its first model at its first start.)"""
    from services.classifier.db.migrate import upgrade as upgrade_classifier
    from services.intake.db.migrate import upgrade_all
    from services.metrics.db.migrate import upgrade as upgrade_metrics
    from shared.auth.keys import Scope
    from shared.auth.store import ApiKeyStore
    from shared.kafka.admin import ensure_topics
    from shared.kafka.settings import KafkaSettings
    from shared.topics import topic_specs

    kafka = KafkaSettings(bootstrap_servers=env["DEMANDSCOPE_KAFKA_BOOTSTRAP_SERVERS"])
    await ensure_topics(kafka, topic_specs(kafka))
    auth = env["DEMANDSCOPE_AUTH_DATABASE_URL"]
    await asyncio.to_thread(upgrade_all, env["DEMANDSCOPE_INTAKE_DATABASE_URL"], auth)
    await asyncio.to_thread(upgrade_classifier, env["DEMANDSCOPE_CLASSIFIER_DATABASE_URL"])
    await asyncio.to_thread(upgrade_metrics, env["DEMANDSCOPE_METRICS_DATABASE_URL"])
    store = ApiKeyStore(auth)
    try:
        key, _ = await store.create("bench", [Scope.DEMANDS_WRITE, Scope.READ])
    finally:
        await store.close()
    return key


# --- the load -------------------------------------------------------------------------------


@dataclass
class Load:
    offered: int = 0  # demands scheduled
    accepted: int = 0  # demands answered 202/200 as accepted
    refused: dict[int, int] = field(default_factory=dict)  # status -> requests
    first_refusal: str = ""  # the first refused request's answer, to say why
    errors: int = 0  # requests that failed on the wire
    late_s: float = 0.0  # longest wait of a request for a free connection
    latencies: list[float] = field(default_factory=list)  # probes: 202 -> visible
    # probes: 202 -> the last poll that did not find it was sent (so it became visible
    # between this and the latency above: how late the polling may have read it)
    not_yet: list[float] = field(default_factory=list)
    # probes by case reference: the wall-clock time of their 202 and of their first 200
    answered_at: dict[str, tuple[float, float]] = field(default_factory=dict)
    lost: int = 0  # probes not visible by their deadline
    probes: int = 0
    counted: list[tuple[float, int]] = field(default_factory=list)  # (time, volume) samples
    seconds: float = 0.0  # the load's own duration
    began: float = 0.0  # wall clock, to find the load in the services' logs and metrics
    probe_tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _body(run: str, n: int, probe: bool) -> dict[str, Any]:
    # A letter before the counter: "bench-082384-1000" reads as a UK phone number, and
    # intake rightly refuses identifiers that look like personal data (one run id in about
    # 200 is a 0 and five digits: the "open finding" of round seven).
    ref = f"{run}-n{n}"
    return {
        "id": f"bench-{ref}",
        "occurred_at": datetime.now(UTC).isoformat(),
        "channel": "phone",
        "source": "bench",
        "customer_ref": f"P-{ref}" if probe else f"C-{run}-c{n % 5000}",
        "case_ref": f"K-{ref}" if probe else None,
        "text": TEXTS[n % len(TEXTS)],
    }


def _request(path: str, body: bytes, key: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return int(head.split(b" ", 2)[1]), await reader.readexactly(length)


def _accepted(status: int, body: bytes) -> int:
    """Demands a 202 (single) or 200 (batch: a status per item) accepted."""
    if status == 202:
        return 1
    if status == 200:
        return int(json.loads(body)["accepted"])
    return 0


async def probe(
    client: httpx.AsyncClient, metrics: Service, case_ref: str, since: float, load: Load
) -> None:
    """Polls the case timeline until the probe is visible; records 202 -> visible."""
    wall = time.time() - (time.monotonic() - since)
    asked = since
    while time.monotonic() - since < PROBE_TIMEOUT:
        asking = time.monotonic()
        with contextlib.suppress(httpx.HTTPError):
            answer = await client.get(f"{metrics.url}/v1/cases/{case_ref}", timeout=5.0)
            if answer.status_code == 200:
                load.latencies.append(time.monotonic() - since)
                load.not_yet.append(asked - since)
                load.answered_at[case_ref] = (wall, wall + load.latencies[-1])
                return
        asked = asking
        elapsed = time.monotonic() - since
        if elapsed < PROBE_FINE_S:
            await asyncio.sleep(PROBE_FINE_GAP)
        else:
            await asyncio.sleep(min(elapsed * PROBE_GROWTH, PROBE_MAX_GAP))
    load.lost += 1


@dataclass
class Stages:
    """Where the latency goes (DEMANDSCOPE_BENCH_STACK_STAGES=1), from records, not probes."""

    # Intake's acceptance (the demand's received_at, just before the broker's ack and the
    # 202) -> the classifier's send inside its transaction (the classified record's
    # CreateTime).
    to_send: list[float] = field(default_factory=list)
    # That send -> read by a read_committed consumer: the rest of its transaction.
    to_visible: list[float] = field(default_factory=list)
    # Share of the load's wall time each consumer group spent in its batches (handling and
    # commit): near 100%, records queue in front of it.
    busy: dict[str, float] = field(default_factory=dict)
    # The probes' classified records by case reference: (the classifier's send, when the
    # read_committed consumer here read it), wall clock.
    probes: dict[str, tuple[float, float]] = field(default_factory=dict)


async def watch_classified(bootstrap: str, stop: asyncio.Event, stages: Stages) -> None:
    """Reads the classified demands as the metrics service does (read_committed), timing one
    in STAGE_SAMPLE."""
    from aiokafka import AIOKafkaConsumer

    from shared.events.classification import DemandClassified
    from shared.kafka.codec import DecodeError, decode
    from shared.kafka.settings import KafkaSettings
    from shared.topics import Topic, topic_name

    topic = topic_name(KafkaSettings(bootstrap_servers=bootstrap), Topic.DEMAND_CLASSIFIED)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="latest",
    )
    await consumer.start()
    seen = 0
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batches.values():
                for record in records:
                    seen += 1
                    # A probe's case reference is "K-..."; the load's demands have none.
                    is_probe = b'"K-' in (record.value or b"")
                    if seen % STAGE_SAMPLE and not is_probe:
                        continue
                    with contextlib.suppress(DecodeError):
                        demand = decode(DemandClassified, record.value).demand
                        sent = record.timestamp / 1000
                        if is_probe and demand.case_ref is not None:
                            stages.probes[demand.case_ref] = (sent, now)
                        if seen % STAGE_SAMPLE == 0:
                            stages.to_send.append(sent - demand.received_at.timestamp())
                            stages.to_visible.append(now - sent)
    finally:
        await consumer.stop()


async def consumer_seconds(client: httpx.AsyncClient, services: list[Service]) -> dict[str, float]:
    """Seconds each consumer group has spent in its batches so far, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    spent: dict[str, float] = {}
    for service in services:
        with contextlib.suppress(httpx.HTTPError):
            answer = await client.get(f"{service.url}/metrics", timeout=10.0)
            for family in text_string_to_metric_families(answer.text):
                for sample in family.samples:
                    if sample.name == "demandscope_consumer_batch_seconds_sum":
                        spent[sample.labels["group"]] = sample.value
    return spent


async def count_samples(
    client: httpx.AsyncClient, metrics: Service, load: Load, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            answer = await client.get(f"{metrics.url}/v1/demand/overall", timeout=10.0)
            if answer.status_code == 200:
                load.counted.append((time.monotonic(), int(answer.json()["volume"])))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)


async def offer(
    load: Load, intake: Service, metrics: Service, key: str, client: httpx.AsyncClient
) -> Load:
    """Open loop: RATE demands/s for SECONDS, whatever the answers; every loop bounded."""
    run = uuid.uuid4().hex[:6]
    per_request = max(1, BATCH)
    interval = per_request / RATE
    ticks = int(SECONDS / interval)
    path = "/v1/demands:batch" if BATCH > 1 else "/v1/demands"
    queue: asyncio.Queue[tuple[float, bytes, list[str]] | None] = asyncio.Queue()
    probes: list[asyncio.Task[None]] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(HOST, intake.port)
        try:
            while (item := await queue.get()) is not None:
                due, request, refs = item
                load.late_s = max(load.late_s, time.monotonic() - due)
                try:
                    status, answer = await _exchange(reader, writer, request)
                except (OSError, asyncio.IncompleteReadError):
                    load.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, intake.port)
                    continue
                answered = time.monotonic()
                if accepted := _accepted(status, answer):
                    load.accepted += accepted
                    probes.extend(
                        asyncio.create_task(probe(client, metrics, ref, answered, load))
                        for ref in refs
                    )
                else:
                    load.refused[status] = load.refused.get(status, 0) + 1
                    if not load.first_refusal:
                        load.first_refusal = f"{status} {answer[:600].decode(errors='replace')}"
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(CONNECTIONS)]
    started, load.began = time.monotonic(), time.time()
    n = 0
    for tick in range(ticks):
        due = started + tick * interval
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        items, refs = [], []
        for _ in range(per_request):
            is_probe = n % PROBE_EVERY == 0
            items.append(_body(run, n, is_probe))
            if is_probe:
                refs.append(items[-1]["case_ref"])
            n += 1
        body = json.dumps(items if BATCH > 1 else items[0]).encode()
        queue.put_nowait((due, _request(path, body, key), refs))
    load.offered, load.probes = n, n // PROBE_EVERY + (1 if n % PROBE_EVERY else 0)
    for _ in workers:
        queue.put_nowait(None)
    # The requests still queued are sent; bounded by how long intake takes to answer them.
    done, pending = await asyncio.wait(workers, timeout=SECONDS + 60)
    for task in pending:
        task.cancel()
    load.seconds = time.monotonic() - started
    for task in done:
        if task.exception() is not None:
            load.errors += 1
    load.probe_tasks = probes
    return load


# --- measuring ------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def with_cpu(pids: dict[str, int], work: Awaitable[Load]) -> tuple[Load, dict[str, float]]:
    """Runs the load; each process's CPU over it as a share of one core."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    load = await work
    seconds = time.monotonic() - started
    shares = {}
    for name, pid in pids.items():
        start, end = before[name], cpu_seconds(pid)
        if start is not None and end is not None:
            shares[name] = (end - start) / seconds
    return load, shares


def counted_rate(load: Load, started: float) -> float | None:
    """Growth of the metrics API's count over the second half of the load."""
    half = started + load.seconds / 2
    window = [(t, v) for t, v in load.counted if half <= t <= started + load.seconds]
    if len(window) < 2 or window[-1][0] <= window[0][0]:
        return None
    return (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])


async def drain(client: httpx.AsyncClient, metrics: Service, load: Load) -> tuple[int, float]:
    """Waits (bounded) until the metrics API counts every accepted demand; (count, seconds)."""
    started, volume = time.monotonic(), 0
    while time.monotonic() - started < DRAIN_S:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            answer = await client.get(f"{metrics.url}/v1/demand/overall", timeout=10.0)
            volume = int(answer.json()["volume"])
            if volume >= load.accepted:
                break
        await asyncio.sleep(0.5)
    return volume, time.monotonic() - started


async def _settled(tasks: list[asyncio.Task[None]]) -> None:
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=PROBE_TIMEOUT + 5)
        for task in pending:
            task.cancel()


async def restarts(client: httpx.AsyncClient, services: list[Service]) -> dict[str, float | None]:
    """SIGKILL each service, start it again, time the start to /readyz 200."""
    taken: dict[str, float | None] = {}
    for service in services:
        service.signal(signal.SIGKILL)
        if service.process is not None:
            await asyncio.to_thread(service.process.wait, 10)
        service.start()
        try:
            taken[service.name] = await ready(client, service, RESTART_TIMEOUT)
        except (RuntimeError, TimeoutError) as error:
            print(f"  {error}")
            taken[service.name] = None
    return taken


async def measure(services: list[Service], key: str, broker_pid: int, bootstrap: str) -> None:
    intake, _, metrics = services
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(headers=headers, limits=limits) as client:
        for service in services:
            await ready(client, service, READY_TIMEOUT)
        pids: dict[str, int] = {"broker": broker_pid, "load generator": os.getpid()}
        pids |= {s.name: s.process.pid for s in services if s.process is not None}
        stop = asyncio.Event()
        load = Load()
        sampler = asyncio.create_task(count_samples(client, metrics, load, stop))
        stages = Stages() if STAGES else None
        watcher = None
        spent: dict[str, float] = {}
        if stages is not None:
            spent = await consumer_seconds(client, services)
            watcher = asyncio.create_task(watch_classified(bootstrap, stop, stages))
        started = time.monotonic()
        try:
            load, shares = await with_cpu(pids, offer(load, intake, metrics, key, client))
        finally:
            stop.set()
            await sampler
            if watcher is not None:
                await watcher
        if stages is not None and load.seconds:
            after = await consumer_seconds(client, services)
            stages.busy = {
                group: (seconds - spent.get(group, 0.0)) / load.seconds
                for group, seconds in after.items()
            }
        # The backlog and the last probes, together: both bounded.
        (counted, drained), _ = await asyncio.gather(
            drain(client, metrics, load), _settled(load.probe_tasks)
        )
        # Every probe sent and not seen is lost (timed out, or cut off by the settle deadline).
        load.lost = len(load.probe_tasks) - len(load.latencies)
        restarted = await restarts(client, services)
    report(load, shares, counted_rate(load, started), counted, drained, restarted)
    if stages is not None:
        report_stages(stages, load)


def report(
    load: Load,
    shares: dict[str, float],
    counted_per_s: float | None,
    counted: int,
    drained: float,
    restarted: dict[str, float | None],
) -> None:
    accepted_per_s = load.accepted / load.seconds if load.seconds else 0.0
    how = f"batches of {BATCH}" if BATCH > 1 else "single POSTs"
    began = datetime.fromtimestamp(load.began, UTC).strftime("%H:%M:%S UTC")
    print(
        f"  offered {RATE:,.0f} demands/s for {SECONDS:.0f}s from {began} as {how} over "
        f"{CONNECTIONS}"
    )
    print(f"  connections: {load.offered:,} offered, {load.accepted:,} accepted")
    print(f"    ({accepted_per_s:,.0f}/s over {load.seconds:.1f}s), refused {load.refused or 0}")
    print(f"    wire errors {load.errors}; longest wait for a free connection {load.late_s:.1f}s")
    if load.first_refusal:
        # A batch answered 200 counts as refused when none of its items was accepted.
        print(f"    the first refused request's answer: {load.first_refusal}")
    rate_text = "unknown" if counted_per_s is None else f"{counted_per_s:,.0f}/s"
    print(f"  counted by the metrics API: {rate_text} over the second half of the load;")
    print(f"    {counted:,} of {load.accepted:,} counted {drained:.1f}s after the load")
    cpu = ", ".join(f"{name} {share:.0%}" for name, share in shares.items())
    print(f"  CPU over the load (share of one core; {os.cpu_count()} cores): {cpu}")
    if load.accepted:
        # The stable measure on a shared machine (a process's share of a core swings with
        # its neighbours; its CPU per demand much less).
        per_demand = ", ".join(
            f"{name} {share * load.seconds / load.accepted * 1e6:,.0f}"
            for name, share in shares.items()
        )
        print(f"    CPU per accepted demand, µs: {per_demand}")
    seen = load.latencies
    # A lost probe took longer than the deadline: it counts, as "over 60 s", so that losing
    # the slow ones cannot make the percentiles look better.
    everything = seen + [float("inf")] * load.lost
    if everything:
        p50, p95, p99 = (percentile(everything, f) for f in (0.5, 0.95, 0.99))
        latency = f"p50 {_ms(p50)}, p95 {_ms(p95)}, p99 {_ms(p99)}"
    else:
        p50 = p99 = float("inf")
        latency = "no probe"
    print(f"  latency 202 -> case visible in the metrics API, {len(everything)} probes: {latency}")
    print(f"    ({load.lost} of {load.probes} probes not visible within {PROBE_TIMEOUT:.0f}s)")
    for name, seconds in restarted.items():
        print(f"  restart after SIGKILL to /readyz 200: {name} {_seconds(seconds)}")

    sustained = min(accepted_per_s, counted_per_s or 0.0)
    reduced = (
        ""
        if RATE >= TARGET_RATE and SECONDS >= 60
        else f"; REDUCED: {RATE:,.0f}/s for {SECONDS:.0f}s"
    )
    results.record(
        results.Row(
            part="whole stack on one machine (intake + classifier + metrics + broker)",
            figure=f"{accepted_per_s:,.0f} demands/s accepted, {rate_text} counted; CPU {cpu}",
            baseline=None,
            ratio=None,
            target=f"≥ {TARGET_RATE:,.0f} demands/s sustained",
            met=sustained >= 0.98 * TARGET_RATE and not load.refused,
            note=f"offered {RATE:,.0f}/s for {SECONDS:.0f}s as {how}; {counted:,} of "
            f"{load.accepted:,} counted {drained:.0f}s after the load{reduced}",
        )
    )
    results.record(
        results.Row(
            part="pipeline latency, HTTP 202 → counted by the metrics API",
            figure=latency,
            baseline=None,
            ratio=None,
            target=f"p50 ≤ {TARGET_P50 * 1000:.0f} ms, p99 ≤ {TARGET_P99:.0f} s at "
            f"{TARGET_RATE:,.0f} demands/s held for a minute",
            met=bool(seen)
            and p50 <= TARGET_P50
            and p99 <= TARGET_P99
            and not load.lost
            and not reduced,
            note=f"{len(everything)} probes (one demand in {PROBE_EVERY}), {load.lost} not "
            f"visible within {PROBE_TIMEOUT:.0f} s (counted as slower); polled "
            f"on GET /v1/cases/<ref>{reduced}",
        )
    )
    worst = [s for s in restarted.values()]
    results.record(
        results.Row(
            part="restart to ready after SIGKILL",
            figure=", ".join(f"{name} {_seconds(s)}" for name, s in restarted.items()),
            baseline=None,
            ratio=None,
            target=f"≤ {TARGET_RESTART:.0f} s each",
            met=all(s is not None and s <= TARGET_RESTART for s in worst),
            note="from the new process's start to its first /readyz 200, the stack idle",
        )
    )


def report_stages(stages: Stages, load: Load) -> None:
    def spread(values: list[float]) -> str:
        if not values:
            return "none seen"
        return " / ".join(_ms(percentile(values, f)) for f in (0.5, 0.95, 0.99))

    print(f"  stages, p50 / p95 / p99, {len(stages.to_send)} classified demands timed:")
    print(f"    accepted -> the classifier's send: {spread(stages.to_send)}")
    print(f"    that send -> visible to read_committed: {spread(stages.to_visible)}")
    # The probes themselves, stage by stage (each percentile of its own stage).
    traced = [
        (answered, sent, read, visible)
        for ref, (answered, visible) in load.answered_at.items()
        if (classified := stages.probes.get(ref)) is not None
        for sent, read in [classified]
    ]
    print(f"  the probes, p50 / p95 / p99, {len(traced)} traced:")
    to_send = spread([s - a for a, s, _, _ in traced])
    to_read = spread([r - s for _, s, r, _ in traced])
    to_api = spread([v - r for _, _, r, v in traced])
    print(f"    202 -> the classifier's send: {to_send}")
    print(f"    that send -> read here (read_committed): {to_read}")
    print(f"    read here -> the metrics API's first 200: {to_api}")
    print(f"    202 -> the last poll that found nothing: {spread(load.not_yet)}")
    busy = ", ".join(f"{group} {share:.0%}" for group, share in sorted(stages.busy.items()))
    print(f"  in their batches over the load (handling and commit): {busy or 'unknown'}")


def _ms(seconds: float) -> str:
    return f"over {PROBE_TIMEOUT:.0f} s" if seconds == float("inf") else f"{seconds * 1000:,.0f} ms"


def _seconds(value: float | None) -> str:
    return "not ready" if value is None else f"{value:.1f} s"


def main() -> None:
    run_dir = ROOT / ".run" / f"bench-stack-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True)
    cfg = local_kafka.LocalKafkaConfig.on_free_ports(root=ROOT, run_dir=run_dir / "kafka")
    services: list[Service] = []
    try:
        local_kafka.start(cfg, timeout=120)
        broker_pid = local_kafka.running_pid(cfg)
        if broker_pid is None:
            raise RuntimeError("the broker did not start")
        ports = dict(zip(SERVICES, pick_free_ports(HOST, len(SERVICES)), strict=True))
        env = environment(run_dir, cfg.bootstrap, ports)
        key = asyncio.run(prepare(env, run_dir))
        for name in SERVICES:
            services.append(Service(name, ports[name], env, run_dir / f"{name}.log"))
            services[-1].start()
        asyncio.run(measure(services, key, broker_pid, cfg.bootstrap))
    finally:
        for service in services:
            service.signal(signal.SIGTERM)
        for service in services:
            service.stop()
        local_kafka.stop(cfg)
        shutil.rmtree(run_dir, ignore_errors=True)
