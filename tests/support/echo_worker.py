"""A transactional consumer in a process of its own, for tests that pause or kill it.

``python -m tests.support.echo_worker GROUP TX_PREFIX DELAY_S`` runs the real runtime
(``ConsumerService`` under a ``Supervisor``, as every service does) on the
``demand.received`` topic of ``DEMANDSCOPE_KAFKA_*`` and copies each demand's id to
``demand.classified`` in the batch's transaction. Each batch is held ``DELAY_S`` seconds
before it is returned for commit. It prints on stdout, one line each, flushed:

- ``holding <n> <topic>[<partition>]...`` when a batch has been handed to it;
- ``committed <n>`` once a batch is committed;
- the runtime's warnings (``fenced: ...``);
- ``fenced_total <n>`` when it stops (SIGTERM).
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
from shared.kafka.codec import OutboundRecord
from shared.kafka.consumer import BatchResult, Inbound, RunnerOptions
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.service import ConsumerService
from shared.kafka.settings import KafkaSettings
from shared.service.supervisor import Supervisor
from shared.topics import Topic, topic_name

SESSION_TIMEOUT_MS = 6_000  # the broker's group.min.session.timeout.ms


class SlowEcho:
    def __init__(self, output: str, delay_s: float) -> None:
        self._output = output
        self._delay_s = delay_s

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
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


async def main(group: str, prefix: str, delay_s: float) -> None:
    settings = KafkaSettings()
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    consumer = ConsumerService(
        settings=settings,
        topics={topic_name(settings, Topic.DEMAND_RECEIVED): DemandReceived},
        handler=SlowEcho(topic_name(settings, Topic.DEMAND_CLASSIFIED), delay_s),
        options=RunnerOptions(
            group_id=group,
            client_id="echo-worker",
            source="test",
            max_batch=20,
            transactional=True,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=1_000,
        ),
        metrics=metrics,
        transactional_id_prefix=prefix,
    )
    supervisor = Supervisor(service="echo-worker", initial_backoff_s=0.2, max_backoff_s=1.0)
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
