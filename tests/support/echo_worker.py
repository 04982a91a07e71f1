"""A transactional consumer in a process of its own, for tests that pause or kill it.

``python -m tests.support.echo_worker GROUP TX_PREFIX DELAY_S [one-transaction]`` runs the
real runtime (``ConsumerService`` under a ``Supervisor``, as every service does) on the
``demand.received`` topic of ``DEMANDSCOPE_KAFKA_*`` and copies each demand's id to
``demand.classified`` in the batch's transaction. Each batch is held ``DELAY_S`` seconds
before it is returned for commit. ``one-transaction`` turns on
``RunnerOptions.one_transaction_per_poll``. It prints on stdout, one line each, flushed:

- ``one_transaction <true|false>`` before each batch (with ``one-transaction`` only):
  whether the runner commits the poll through the shared producer;
- ``holding <n> <topic>[<partition>]...`` when a batch has been handed to it;
- ``committed <n>`` once a batch is committed;
- the runtime's warnings (``fenced: ...``);
- ``fenced_total <n>`` when it stops (SIGTERM).

``echo_worker(...)`` starts one from a test and collects what it prints (``Worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from shared.events import DemandReceived
from shared.kafka.codec import OutboundRecord
from shared.kafka.consumer import BatchResult, Inbound, RunnerOptions
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.service import ConsumerService
from shared.kafka.settings import KafkaSettings
from shared.service.supervisor import Supervisor
from shared.topics import Topic, topic_name

# A paused worker is dropped one session timeout after its last heartbeat, a wait each fencing
# test makes by design: 2 s (the session broker allows down to 1 s, tests/conftest.py). A
# worker that misses it under load only rebalances once more: fencing holds all the same.
SESSION_TIMEOUT_MS = 2_000
HEARTBEAT_INTERVAL_MS = 500
ONE_TRANSACTION = "one-transaction"
ROOT = Path(__file__).resolve().parents[2]


class SlowEcho:
    def __init__(self, output: str, delay_s: float) -> None:
        self._output = output
        self._delay_s = delay_s
        self.consumer: ConsumerService | None = None  # set to report one_transaction

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        if self.consumer is not None:
            runner = self.consumer.runner
            together = runner is not None and runner.commits_polls_together
            print("one_transaction", str(together).lower(), flush=True)
        where = sorted({f"{m.topic}[{m.partition}]" for m in messages})
        print("holding", len(messages), *where, flush=True)
        await asyncio.sleep(self._delay_s)
        count = len(messages)
        return BatchResult(
            outbound=[
                OutboundRecord(topic=self._output, key=m.key, value=m.event.id.encode(), headers=[])
                for m in messages
            ],
            after_commit=lambda: print("committed", count, flush=True),
        )


async def main(group: str, prefix: str, delay_s: float, one_transaction: bool) -> None:
    settings = KafkaSettings()
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    handler = SlowEcho(topic_name(settings, Topic.DEMAND_CLASSIFIED), delay_s)
    consumer = ConsumerService(
        settings=settings,
        topics={topic_name(settings, Topic.DEMAND_RECEIVED): DemandReceived},
        handler=handler,
        options=RunnerOptions(
            group_id=group,
            client_id="echo-worker",
            source="test",
            max_batch=20,
            transactional=True,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            one_transaction_per_poll=one_transaction,
        ),
        metrics=metrics,
        transactional_id_prefix=prefix,
    )
    if one_transaction:
        handler.consumer = consumer
    supervisor = Supervisor(service="echo-worker", initial_backoff_s=0.2, max_backoff_s=1.0)
    supervisor.add(consumer.background_task())
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    async with supervisor:
        await stopped.wait()
    fenced = registry.get_sample_value("demandscope_consumer_fenced_total", {"group": group})
    print("fenced_total", int(fenced or 0), flush=True)


class Worker:
    """One echo worker process, and every line it has printed so far."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(line.decode().rstrip())

    async def lines_from(self, start: int) -> list[str]:
        return self.lines[start:]

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 60)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await asyncio.wait_for(self._reader, 10)


@contextlib.asynccontextmanager
async def echo_worker(
    settings: KafkaSettings,
    group: str,
    prefix: str,
    delay_s: float,
    *,
    one_transaction: bool = False,
) -> AsyncIterator[Worker]:
    """An echo worker process on ``settings``' broker and topics, stopped on exit."""
    env = {
        **os.environ,
        "DEMANDSCOPE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "DEMANDSCOPE_KAFKA_TOPIC_PREFIX": settings.topic_prefix,
    }
    arguments = [group, prefix, str(delay_s)] + ([ONE_TRANSACTION] if one_transaction else [])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.echo_worker",
        *arguments,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    started = Worker(process)
    try:
        yield started
    finally:
        await started.stop()


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(message)s")
    asyncio.run(
        main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:5] == [ONE_TRANSACTION])
    )
