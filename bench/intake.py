"""Intake throughput against its two limits, measured in one run on the same machine.

- Single events: requests/s of ``POST /v1/demands`` (auth, validation, redaction, ledger,
  Kafka acks=all) against a bare FastAPI endpoint that only reads and parses the same JSON
  (the HTTP limit). Target: at least 0.6.
- Batches: events/s of ``POST /v1/demands:batch`` (500 per request) against a raw aiokafka
  producer sending the same events with the same producer settings (the Kafka limit).
  Target: at least 0.5.

Each side runs ``ROUNDS`` times (3), alternated with its baseline, and the rows pool the
rounds; each round's ratio is printed too. Both servers run as separate processes under the
same uvicorn settings (one worker, uvloop, httptools, no access log). The load comes from a
minimal keep-alive HTTP/1.1 client on raw asyncio streams: httpx would itself be the
bottleneck against the bare endpoint.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bench import results
from bench.results import cpu_seconds
from devstack.process import pick_free_ports

ROOT = Path(__file__).resolve().parents[1]
LEDGER_VARIABLE = "DEMANDSCOPE_BENCH_LEDGER"  # "postgresql" or unset (SQLite, the default)
SINGLE_REQUESTS = int(os.environ.get("DEMANDSCOPE_BENCH_INTAKE_REQUESTS", "4000"))
SINGLE_CONCURRENCY = 128
BATCH_SIZE = 500
BATCH_REQUESTS = int(os.environ.get("DEMANDSCOPE_BENCH_INTAKE_BATCHES", "40"))
BATCH_CONCURRENCY = 4
# Each side runs this many times, alternated with its baseline (bare, intake, bare, intake,
# ...), and the rows pool the rounds: one run of 4,000 requests lasts under a second, so a
# single pair let the machine's drift decide the verdict (intake single 0.51-0.60 across
# quiet runs of the same code).


def _rounds(value: str) -> int:
    try:
        return max(1, int(value))
    except ValueError:
        raise SystemExit(
            f"DEMANDSCOPE_BENCH_INTAKE_ROUNDS must be a whole number, not {value!r}"
        ) from None


ROUNDS = _rounds(os.environ.get("DEMANDSCOPE_BENCH_INTAKE_ROUNDS", "3"))
WARMUP = 300
TEXT = "Where is my engineer? I was told Tuesday. Call me on 07700 900123 or jo@example.com"


@dataclass(frozen=True)
class Run:
    count: int  # requests or events
    seconds: float
    latencies: list[float]
    cpu_us: dict[str, float] = field(default_factory=dict)  # per request or event, by process

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def demand(event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "occurred_at": datetime.now(UTC).isoformat(),
        "channel": "phone",
        "source": "bench",
        "customer_ref": f"C-{event_id[-4:]}",
        "text": TEXT,
    }


def http_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: bench", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def load(
    port: int,
    requests: list[bytes],
    concurrency: int,
    expect: int,
    check: Callable[[bytes], None] | None = None,
) -> Run:
    """Sends every request over ``concurrency`` keep-alive connections; times each one.
    ``check``: called with each answer's body (raises if the answer is not what was meant)."""
    queue = list(reversed(requests))
    latencies: list[float] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                request = queue.pop()
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                if status != expect:
                    raise RuntimeError(f"expected {expect}, got {status}: {body[:300]!r}")
                latencies.append(time.perf_counter() - started)
                if check is not None:
                    check(body)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return Run(len(requests), time.perf_counter() - started, latencies)


async def settle(pids: list[int], quiet_s: float = 0.1, deadline_s: float = 2.0) -> None:
    """Wait until none of ``pids`` used CPU for ``quiet_s`` (or ``deadline_s`` passed): what
    one side leaves running after its round (the ledger's last confirmations, a WAL
    checkpoint, closing connections) must not cost the next timed window. /proc counts in
    clock ticks (10 ms), so "no tick over 0.1 s" is what idle can mean here."""
    end = time.perf_counter() + deadline_s
    last = [cpu_seconds(pid) for pid in pids]
    while time.perf_counter() < end:
        await asyncio.sleep(quiet_s)
        now = [cpu_seconds(pid) for pid in pids]
        if now == last:
            return
        last = now


def cpu_per_item(
    processes: dict[str, int], before: dict[str, float | None], count: int
) -> dict[str, float]:
    """Each process's CPU since ``before``, in µs per counted request or event."""
    used: dict[str, float] = {}
    for name, pid in processes.items():
        start, end = before[name], cpu_seconds(pid)
        if start is not None and end is not None:
            used[name] = (end - start) / count * 1e6
    return used


async def with_cpu(processes: dict[str, int], measuring: Any) -> Run:
    """Runs ``measuring`` and adds each process's CPU per counted request or event."""
    before = {name: cpu_seconds(pid) for name, pid in processes.items()}
    run: Run = await measuring
    return replace(run, cpu_us=cpu_per_item(processes, before, run.count))


def start_server(kind: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    code = f"from bench.intake import serve; serve({kind!r}, {port})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env})


def serve(kind: str, port: int) -> None:
    """The server side, in its own process: the same uvicorn settings for both apps."""
    import uvicorn

    app = bare_app() if kind == "bare" else intake_app()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


def bare_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/demands")
    async def parse_only(request: Request) -> JSONResponse:
        document = json.loads(await request.body())
        return JSONResponse({"id": document["id"], "status": "accepted"}, status_code=202)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def intake_app() -> Any:
    from services.intake.main import create_app

    return create_app()


async def wait_ready(port: int, path: str) -> None:
    import httpx

    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"http://127.0.0.1:{port}{path}")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"server on {port} not ready")


def encoded_events(kafka: Any, batches: list[list[dict[str, Any]]]) -> list[list[Any]]:
    """The records intake would publish for these demands (redacted, stamped, JSON)."""
    from services.intake.config import EARLIEST_EVENT_TIME
    from services.intake.validation import Admission, admit_demand
    from shared.kafka.codec import encode
    from shared.privacy.redaction import Redactor
    from shared.topics import Topic, topic_name

    admission = Admission(
        key_source="bench",
        now=datetime.now(UTC),
        max_future_skew=timedelta(seconds=300),
        redactor=Redactor(),
        earliest=EARLIEST_EVENT_TIME,
    )
    topic = topic_name(kafka, Topic.DEMAND_RECEIVED)
    return [
        [encode(admit_demand(item, admission), topic=topic, source="bench") for item in batch]
        for batch in batches
    ]


async def raw_send(producer: Any, records: list[Any]) -> None:
    """A plain user of aiokafka: ``send()`` each record, then wait for every acknowledgement.
    Not ``shared.kafka.producer.send_all``, which builds batches itself: the baseline stays the
    client library as one uses it, not intake's own sending code."""
    futures = [
        await producer.send(r.topic, value=r.value, key=r.key, headers=r.headers) for r in records
    ]
    await asyncio.gather(*futures)


async def raw_producer_rate(
    kafka: Any, encoded: list[list[Any]], processes: dict[str, int] | None = None
) -> Run:
    """The Kafka limit: the same records sent by a bare producer with intake's settings.
    ``processes``: whose CPU to count, over the timed sends only (the producer's start, its
    warm-up and its stop are outside, as intake's warm-up is outside its window)."""
    from shared.kafka.producer import create_producer

    producer = create_producer(kafka, client_id="bench-raw")
    await producer.start()
    try:
        await raw_send(producer, encoded[0])  # warm-up: metadata and connections
        queue = list(reversed(encoded[1:]))
        latencies: list[float] = []

        async def sender() -> None:
            while queue:
                batch = queue.pop()
                started = time.perf_counter()
                await raw_send(producer, batch)
                latencies.append(time.perf_counter() - started)

        count = sum(len(b) for b in encoded[1:])
        before = {name: cpu_seconds(pid) for name, pid in (processes or {}).items()}
        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(BATCH_CONCURRENCY)))
        seconds = time.perf_counter() - started
        used = cpu_per_item(processes or {}, before, count)
    finally:
        await producer.stop()
    return Run(count, seconds, latencies, used)


def all_accepted(body: bytes) -> None:
    """A batch answer counts as BATCH_SIZE events only if every one was accepted: a batch of
    duplicates (ids sent before) is also answered 200, with nothing published."""
    answer = json.loads(body)
    if answer.get("accepted") != BATCH_SIZE:
        raise RuntimeError(
            f"a batch answer accepted {answer.get('accepted')} of {BATCH_SIZE} "
            f"(duplicates {answer.get('duplicates')}, rejected {answer.get('rejected')})"
        )


def pooled(runs: list[Run]) -> Run:
    """The rounds of one side as one run: every request or event over the time they took
    together (not a mean of rates), latencies together, CPU per item over all of them."""
    count = sum(run.count for run in runs)
    who = set.intersection(*(set(run.cpu_us) for run in runs))
    return Run(
        count,
        sum(run.seconds for run in runs),
        [latency for run in runs for latency in run.latencies],
        {w: sum(run.cpu_us[w] * run.count for run in runs) / count for w in sorted(who)},
    )


async def _as_events(requests: Any) -> Run:
    run: Run = await requests
    return replace(run, count=run.count * BATCH_SIZE)


def report(name: str, unit: str, run: Run) -> None:
    cpu = ", ".join(f"{who} {us:,.0f}" for who, us in run.cpu_us.items())
    print(
        f"  {name:<34} {run.rate:>9,.0f} {unit}/s   p50 {run.percentile(0.5):7.1f} ms"
        f"   p99 {run.percentile(0.99):7.1f} ms   CPU us/{unit}: {cpu}"
    )


async def measure(
    kafka: Any, workdir: Path, database_url: str | None, broker_pid_file: Path
) -> None:
    from services.intake.db.migrate import upgrade_all
    from shared.auth.keys import Scope
    from shared.auth.store import ApiKeyStore

    ledger_url = database_url or f"sqlite+aiosqlite:///{workdir / 'intake.db'}"
    auth_url = database_url or f"sqlite+aiosqlite:///{workdir / 'auth.db'}"
    print(f"ledger and keys on {ledger_url.split(':', 1)[0]}")
    await asyncio.to_thread(upgrade_all, ledger_url, auth_url)
    store = ApiKeyStore(auth_url)
    key, _ = await store.create("bench", [Scope.DEMANDS_WRITE])
    await store.close()
    env = {
        "DEMANDSCOPE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "DEMANDSCOPE_INTAKE_DATABASE_URL": ledger_url,
        "DEMANDSCOPE_AUTH_DATABASE_URL": auth_url,
        "DEMANDSCOPE_INTAKE_LOG_LEVEL": "WARNING",
    }
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    bare_port, intake_port = pick_free_ports("127.0.0.1", 2)
    servers = [start_server("bare", bare_port, env), start_server("intake", intake_port, env)]
    try:
        await wait_ready(bare_port, "/healthz")
        await wait_ready(intake_port, "/readyz")
        run_id = uuid.uuid4().hex[:6]

        def singles(tag: str, count: int) -> list[bytes]:
            return [
                http_request(
                    "/v1/demands", json.dumps(demand(f"{run_id}-{tag}-{n}")).encode(), headers
                )
                for n in range(count)
            ]

        for port in (bare_port, intake_port):
            await load(port, singles(f"w{port}", WARMUP), SINGLE_CONCURRENCY, 202)
        broker = int((await asyncio.to_thread(broker_pid_file.read_text)).strip())
        processes = {"bare": servers[0].pid, "intake": servers[1].pid}
        ports = {"bare": bare_port, "intake": intake_port}
        singles_by: dict[str, list[Run]] = {"bare": [], "intake": []}
        for r in range(ROUNDS):
            # The order flips each round (bare first, then intake first, ...): what drifts
            # over the run, or what one side leaves running, lands on both alike.
            for side in ("bare", "intake") if r % 2 == 0 else ("intake", "bare"):
                requests = singles(f"{side[0]}{r}", SINGLE_REQUESTS)
                await settle([server.pid for server in servers])
                singles_by[side].append(
                    await with_cpu(
                        {"server": processes[side], "broker": broker},
                        load(ports[side], requests, SINGLE_CONCURRENCY, 202),
                    )
                )

        batches_by: dict[str, list[Run]] = {"raw": [], "intake": []}
        for r in range(ROUNDS):
            batches = [
                [demand(f"{run_id}-k{r}-{b}-{n}") for n in range(BATCH_SIZE)]
                for b in range(BATCH_REQUESTS + 1)
            ]
            records = encoded_events(kafka, batches)
            batch_requests = [
                http_request("/v1/demands:batch", json.dumps(batch).encode(), headers)
                for batch in batches
            ]
            # The records were made outside the timing; so is the collection of what making
            # them left: otherwise whether a full collection of this process's heap lands in
            # the raw phase turns on how many tracked objects the encoding happened to leave
            # (a codec making fewer per record tipped one in: 11.7 -> 13.6 µs an event for
            # the same send, none with this collect, measured in process).
            gc.collect()
            for side in ("raw", "intake") if r % 2 == 0 else ("intake", "raw"):
                await settle([server.pid for server in servers])
                if side == "raw":
                    run = await raw_producer_rate(
                        kafka, records, {"producer": os.getpid(), "broker": broker}
                    )
                else:
                    await load(intake_port, batch_requests[:1], 1, 200, all_accepted)  # warm-up
                    timed = load(
                        intake_port, batch_requests[1:], BATCH_CONCURRENCY, 200, all_accepted
                    )
                    run = await with_cpu(
                        {"server": servers[1].pid, "broker": broker}, _as_events(timed)
                    )
                batches_by[side].append(run)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)

    bares, singles_run = singles_by["bare"], singles_by["intake"]
    raws, batched_runs = batches_by["raw"], batches_by["intake"]
    bare, single = pooled(bares), pooled(singles_run)
    raw, batched = pooled(raws), pooled(batched_runs)
    print(
        f"single events ({ROUNDS} rounds of {SINGLE_REQUESTS} requests, {SINGLE_CONCURRENCY} "
        "connections, alternated with the baseline in flipping order, pooled):"
    )
    report("bare FastAPI, parse JSON only", "req", bare)
    report("intake POST /v1/demands", "req", single)
    print("  rounds (intake / bare): " + rounds_line(singles_run, bares))
    print(
        f"batches ({ROUNDS} rounds of {BATCH_REQUESTS} x {BATCH_SIZE} events, "
        f"{BATCH_CONCURRENCY} in flight, alternated with the baseline in flipping order, "
        "pooled):"
    )
    report("raw aiokafka producer (acks=all)", "ev", raw)
    report("intake POST /v1/demands:batch", "ev", batched)
    print("  rounds (intake / raw): " + rounds_line(batched_runs, raws))
    print("(latencies are per request, measured by the client)")
    ledger = "SQLite" if database_url is None else "PostgreSQL"
    record_rows(
        single,
        bare,
        batched,
        raw,
        ledger=ledger,
        spreads=(spread(singles_run, bares), spread(batched_runs, raws)),
    )


def rounds_line(ours: list[Run], baseline: list[Run]) -> str:
    """Each round's ratio, so that the spread behind the pooled figure is printed too."""
    return ", ".join(
        f"{mine.rate:,.0f} / {base.rate:,.0f} = {mine.rate / base.rate:.2f}"
        for mine, base in zip(ours, baseline, strict=True)
    )


def spread(ours: list[Run], baseline: list[Run]) -> str:
    """The lowest and highest of the rounds' ratios, for the row's note."""
    ratios = [mine.rate / base.rate for mine, base in zip(ours, baseline, strict=True)]
    return f"rounds {min(ratios):.2f}-{max(ratios):.2f}"


def _cpu(run: Run, who: str, unit: str) -> str:
    us = run.cpu_us.get(who)
    return "" if us is None else f", {us:,.0f} µs CPU/{unit}"


def record_rows(
    single: Run,
    bare: Run,
    batched: Run,
    raw: Run,
    *,
    ledger: str,
    spreads: tuple[str, str] = ("", ""),
) -> None:
    results.record(
        results.Row(
            part="intake, single events",
            figure=f"{single.rate:,.0f} req/s{_cpu(single, 'server', 'request')}",
            baseline=f"bare FastAPI parsing the same JSON: {bare.rate:,.0f} req/s"
            f"{_cpu(bare, 'server', 'request')}",
            ratio=results.ratio(single.rate, bare.rate),
            target="≥ 0.6",
            met=single.rate >= 0.6 * bare.rate,
            note=f"{ROUNDS} x {SINGLE_REQUESTS:,} requests over {SINGLE_CONCURRENCY} "
            f"connections, alternated with the baseline and pooled ({spreads[0]}), ledger on "
            f"{ledger}"
            f"{'; REDUCED SIZE' if SINGLE_REQUESTS < 4000 or ROUNDS < 3 else ''}",
        )
    )
    results.record(
        results.Row(
            part=f"intake, batches of {BATCH_SIZE}",
            figure=f"{batched.rate:,.0f} events/s{_cpu(batched, 'server', 'event')}",
            baseline=f"raw aiokafka producer, acks=all: {raw.rate:,.0f} events/s"
            f"{_cpu(raw, 'producer', 'event')}",
            ratio=results.ratio(batched.rate, raw.rate),
            target="≥ 0.5",
            met=batched.rate >= 0.5 * raw.rate,
            note=f"{ROUNDS} x {BATCH_REQUESTS} batches, {BATCH_CONCURRENCY} in flight, "
            f"alternated with the baseline and pooled ({spreads[1]})"
            f"{'; REDUCED SIZE' if BATCH_REQUESTS < 40 or ROUNDS < 3 else ''}",
        )
    )


def _postgres_config() -> Any:
    from devstack import postgres as local_postgres

    return local_postgres.LocalPostgresConfig(
        root=ROOT, run_dir=ROOT / ".run" / f"bench-intake-pg-{uuid.uuid4().hex[:6]}"
    )


def _start_postgres(config: Any) -> str:
    from devstack import postgres as local_postgres

    return str(local_postgres.start(config))


def _stop_postgres(config: Any) -> None:
    from devstack import postgres as local_postgres

    local_postgres.stop(config)
    shutil.rmtree(config.run_dir, ignore_errors=True)


async def main() -> None:
    """DEMANDSCOPE_BENCH_LEDGER=postgresql keeps the ledger and keys in PostgreSQL."""
    from devstack import kafka as local_kafka
    from shared.kafka.admin import ensure_topics
    from shared.kafka.settings import KafkaSettings
    from shared.topics import topic_specs

    config = local_kafka.LocalKafkaConfig.on_free_ports(
        root=ROOT, run_dir=ROOT / ".run" / f"bench-intake-{uuid.uuid4().hex[:6]}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    await asyncio.to_thread(local_kafka.start, config, 120)
    postgres = _postgres_config() if os.environ.get(LEDGER_VARIABLE) == "postgresql" else None
    try:
        kafka = KafkaSettings(bootstrap_servers=config.bootstrap, partitions=3)
        await ensure_topics(kafka, topic_specs(kafka))
        url = None if postgres is None else await asyncio.to_thread(_start_postgres, postgres)
        await measure(kafka, workdir, url, config.pid_file)
    finally:
        if postgres is not None:
            await asyncio.to_thread(_stop_postgres, postgres)
        await asyncio.to_thread(local_kafka.stop, config)
        shutil.rmtree(config.run_dir or "", ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
