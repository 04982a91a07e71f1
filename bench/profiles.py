"""Where the time goes: a py-spy profile of one service process under a short load, summed by
function (docs/performance.md quotes these). Not one of `make bench`'s benches.

Run: `.venv/bin/python -m bench.profiles intake-single|intake-batch|classifier|metrics`
(py-spy comes with the `bench` extra; it needs ptrace on the service process, which a
process started by this one allows). The service runs as `make run` runs it (its own process,
``python -m services.cli.main <service> serve``, on a broker of its own), and py-spy samples
it for DEMANDSCOPE_BENCH_PROFILE_SECONDS (default 20) while:

- intake-single: 64 keep-alive connections post single demands, back to back;
- intake-batch: 4 connections post batches of 500;
- classifier: it works through demands published before it started;
- metrics: it works through classified demands and case events published before it started.

Samples are of the process's active threads (idle waits are left out), so the shares are of
the CPU the service used, not of wall time, and they stay meaningful on a busy machine.
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
from collections import Counter
from pathlib import Path

from bench.stack import HOST, SERVICES, Service, environment, prepare, ready
from devstack import kafka as local_kafka
from devstack.process import pick_free_ports

ROOT = Path(__file__).resolve().parents[1]
SECONDS = float(os.environ.get("DEMANDSCOPE_BENCH_PROFILE_SECONDS", "20"))
TOP = 20
KINDS = ("intake-single", "intake-batch", "classifier", "metrics")


def summarise(raw: Path, top: int = TOP) -> str:
    """Shares of the samples in py-spy's raw (collapsed) output, three ways: by the kind of
    code on top of the stack (which library burns the CPU), demandscope's own functions
    inclusive (which of ours cause it), and every function, inclusive."""
    kinds: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        total += count
        kinds[_kind(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
            if _is_ours(frame):
                ours[frame] += count
    if not total:
        return "no samples"

    def block(title: str, counts: Counter[str]) -> list[str]:
        # The chain every sample shares (the CLI, uvicorn's run) says nothing: left out.
        shown = [(k, n) for k, n in counts.most_common() if n < 0.7 * total][:top]
        return [title] + [f"  {n / total:6.1%}  {key}" for key, n in shown]

    return "\n".join(
        [
            f"{total} samples of active threads",
            *block("by the code on top of the stack:", kinds),
            *block("demandscope's functions, inclusive (they and what they call):", ours),
            *block("by function, inclusive:", inclusive),
        ]
    )


_KINDS = (
    ("aiosqlite/", "SQLite (aiosqlite thread and calls)"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("aiokafka/", "aiokafka"),
    ("kafka/", "aiokafka"),
    ("pydantic", "pydantic"),
    ("sklearn/", "scikit-learn / numpy / scipy"),
    ("numpy/", "scikit-learn / numpy / scipy"),
    ("scipy/", "scikit-learn / numpy / scipy"),
    ("starlette/", "HTTP framework (starlette, fastapi, uvicorn)"),
    ("fastapi/", "HTTP framework (starlette, fastapi, uvicorn)"),
    ("uvicorn/", "HTTP framework (starlette, fastapi, uvicorn)"),
    ("json/", "json"),
    ("asyncio/", "asyncio / event loop"),
    ("logging/", "logging"),
    ("pythonjsonlogger/", "logging"),
    ("prometheus_client/", "prometheus_client"),
)


def _kind(frame: str) -> str:
    if frame.startswith("_connection_worker_thread "):
        # aiosqlite's worker: at `tx.get()` it waits for the next statement (counted as
        # active when woken and waiting for a core); at `function()` a statement runs.
        return f"aiosqlite worker thread at {frame.split(' (', 1)[1].rstrip(')')}"
    if _is_ours(frame):
        module = frame.rsplit("(", 1)[1].rstrip(")")
        return f"demandscope: {module}"
    for marker, kind in _KINDS:
        if marker in frame:
            return kind
    return "other: " + frame.rsplit("(", 1)[-1].rstrip(")")


def _is_ours(frame: str) -> bool:
    return "(services/" in frame or "(shared/" in frame


def _short(frame: str) -> str:
    """``function (path:line)`` -> ``function (package/module.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")")
    if name != "_connection_worker_thread":
        # Lines merged, except in aiosqlite's worker: one line is its wait for the next
        # statement, another the statement running (sqlite3's C is counted there).
        path = path.rsplit(":", 1)[0]
    for marker in ("site-packages/", f"{ROOT}/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def py_spy(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    # --nonblocking: read the process on the fly instead of pausing it for every sample.
    # (--native, which shows the C below the Python, must pause it: on a busy 2-core machine
    # it fell behind and never finished.)
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--nonblocking",
         "--duration", str(int(seconds)), "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


async def post_load(service: Service, key: str, batch: int, stop: float) -> int:
    """Closed-loop posts until ``stop`` (monotonic); demands accepted."""
    from bench.stack import _accepted, _body, _exchange, _request

    run = uuid.uuid4().hex[:6]
    connections = 64 if batch == 1 else 4
    path = "/v1/demands" if batch == 1 else "/v1/demands:batch"
    accepted = 0
    counter = iter(range(10**9))

    async def connection() -> None:
        nonlocal accepted
        reader, writer = await asyncio.open_connection(HOST, service.port)
        try:
            while time.monotonic() < stop:
                items = [_body(run, next(counter), False) for _ in range(batch)]
                body = json.dumps(items if batch > 1 else items[0]).encode()
                status, answer = await _exchange(reader, writer, _request(path, body, key))
                accepted += _accepted(status, answer)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return accepted


async def publish_backlog(kind: str, bootstrap: str) -> int:
    """Events for the consuming services to work through; how many."""
    from bench.metrics import live_events, publish
    from shared.kafka.codec import encode
    from shared.kafka.producer import create_producer, send_all
    from shared.kafka.settings import KafkaSettings
    from shared.topics import Topic, topic_name

    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    if kind == "metrics":
        events = live_events(int(700 * SECONDS))
        await publish(kafka, list(events))
        return len(events)
    from datetime import UTC, datetime

    from shared.events import Channel, DemandReceived

    now, topic = datetime.now(UTC), topic_name(kafka, Topic.DEMAND_RECEIVED)
    records = [
        encode(
            DemandReceived(
                id=f"p-{n}", occurred_at=now, received_at=now, channel=Channel.CHAT,
                source="bench", customer_ref=f"C{n % 5000}", text=f"where is my engineer {n}",
            ),
            topic=topic,
            source="bench",
        )
        for n in range(int(2500 * SECONDS))
    ]  # fmt: skip
    producer = create_producer(kafka, client_id="bench-profile")
    await producer.start()
    try:
        await send_all(producer, records)
    finally:
        await producer.stop()
    return len(records)


async def profile(kind: str, services: dict[str, Service], key: str, out: Path) -> None:
    import httpx

    name = kind.split("-")[0]
    service = services[name]
    if name != "intake":
        print(f"backlog of {await publish_backlog(kind, service.env[_BOOTSTRAP]):,} events")
    service.start()
    async with httpx.AsyncClient() as client:
        await ready(client, service, 120)
    assert service.process is not None
    if name == "intake":
        await post_load(service, key, 1 if kind == "intake-single" else 500, time.monotonic() + 3)
    spy = py_spy(service.process.pid, out, SECONDS)
    if name == "intake":
        batch = 1 if kind == "intake-single" else 500
        accepted = await post_load(service, key, batch, time.monotonic() + SECONDS + 1)
        print(f"{accepted:,} demands accepted while profiling")
    try:
        _, errors = await asyncio.to_thread(spy.communicate, None, SECONDS + 60)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    if spy.returncode:
        raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")


_BOOTSTRAP = "DEMANDSCOPE_KAFKA_BOOTSTRAP_SERVERS"


def main() -> int:
    kind = sys.argv[1] if len(sys.argv) > 1 else ""
    if kind not in KINDS:
        print(f"usage: python -m bench.profiles {'|'.join(KINDS)}")
        return 2
    run_dir = ROOT / ".run" / f"bench-profile-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True)
    cfg = local_kafka.LocalKafkaConfig.on_free_ports(root=ROOT, run_dir=run_dir / "kafka")
    out = ROOT / ".run" / f"profile-{kind}.txt"
    services: dict[str, Service] = {}
    try:
        local_kafka.start(cfg, timeout=120)
        ports = dict(zip(SERVICES, pick_free_ports(HOST, len(SERVICES)), strict=True))
        env = environment(run_dir, cfg.bootstrap, ports)
        key = asyncio.run(prepare(env, run_dir))
        services = {n: Service(n, ports[n], env, run_dir / f"{n}.log") for n in SERVICES}
        asyncio.run(profile(kind, services, key, out))
    finally:
        for service in services.values():
            with contextlib.suppress(OSError):
                service.signal(signal.SIGTERM)
            service.stop()
        local_kafka.stop(cfg)
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"py-spy raw profile: {out}")
    print(summarise(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
