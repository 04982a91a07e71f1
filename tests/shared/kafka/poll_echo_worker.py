"""``tests.support.echo_worker`` with a poll committed in one transaction while it holds every
partition (``RunnerOptions.one_transaction_per_poll``), for the fencing test of that mode.

``python -m tests.shared.kafka.poll_echo_worker GROUP TX_PREFIX DELAY_S``; prints what
echo_worker prints, and ``one_transaction <true|false>`` before each batch it holds: whether
the runner commits the poll through the shared producer.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from shared.events import DemandReceived
from shared.kafka.consumer import BatchResult, Inbound, RunnerOptions
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.service import ConsumerService
from shared.kafka.settings import KafkaSettings
from shared.service.supervisor import Supervisor
from shared.topics import Topic, topic_name
from tests.support.echo_worker import SESSION_TIMEOUT_MS, SlowEcho


class Reporting(SlowEcho):
    def __init__(self, output: str, delay_s: float, consumer: ConsumerService) -> None:
        super().__init__(output, delay_s)
        self._consumer = consumer

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        runner = self._consumer.runner
        together = runner is not None and runner.commits_polls_together
        print("one_transaction", str(together).lower(), flush=True)
        return await super().__call__(messages)


async def main(group: str, prefix: str, delay_s: float) -> None:
    settings = KafkaSettings()
    registry = CollectorRegistry()
    handler: Reporting | None = None

    async def handle(messages: Sequence[Inbound[Any]]) -> BatchResult:
        assert handler is not None
        return await handler(messages)

    consumer = ConsumerService(
        settings=settings,
        topics={topic_name(settings, Topic.DEMAND_RECEIVED): DemandReceived},
        handler=handle,
        options=RunnerOptions(
            group_id=group,
            client_id="poll-echo-worker",
            source="test",
            max_batch=20,
            transactional=True,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=1_000,
            one_transaction_per_poll=True,
        ),
        metrics=ConsumerMetrics(registry),
        transactional_id_prefix=prefix,
    )
    handler = Reporting(topic_name(settings, Topic.DEMAND_CLASSIFIED), delay_s, consumer)
    supervisor = Supervisor(service="poll-echo-worker", initial_backoff_s=0.2, max_backoff_s=1.0)
    supervisor.add(consumer.background_task())
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    async with supervisor:
        await stopped.wait()
    fenced = registry.get_sample_value("demandscope_consumer_fenced_total", {"group": group})
    print("fenced_total", int(fenced or 0), flush=True)


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(message)s")
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
