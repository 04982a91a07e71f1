"""A consumer that survives its broker: (re)connects, runs the runner, reports readiness."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from aiokafka.errors import KafkaError

from shared.events import Event
from shared.kafka.consumer import (
    BatchHandler,
    ConsumerRunner,
    PartitionListener,
    RunnerOptions,
)
from shared.kafka.producer import create_producer
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)


class ConsumerService:
    """Owns one consumer runner and its producer for the life of a service.

    A lost broker is not fatal: the runner is restarted with backoff, so a service started
    before its broker, or one whose broker restarts, recovers without a restart of its own.
    """

    def __init__(
        self,
        *,
        settings: KafkaSettings,
        topics: Mapping[str, type[Event]],
        handler: BatchHandler,
        options: RunnerOptions,
        metrics: ConsumerMetrics,
        transactional_id: str | None = None,
        partition_listener: PartitionListener | None = None,
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._handler = handler
        self._options = options
        self._metrics = metrics
        self._transactional_id = transactional_id
        self._partition_listener = partition_listener
        self._runner: ConsumerRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def runner(self) -> ConsumerRunner | None:
        return self._runner

    async def start(self) -> None:
        self._task = asyncio.create_task(
            self._supervise(), name=f"consumer-{self._options.group_id}"
        )

    async def _supervise(self) -> None:
        delay = 0.5
        while not self._stopping:
            producer = create_producer(
                self._settings,
                client_id=self._options.client_id,
                transactional_id=self._transactional_id,
            )
            try:
                await producer.start()
                runner = ConsumerRunner(
                    settings=self._settings,
                    topics=self._topics,
                    handler=self._handler,
                    producer=producer,
                    options=self._options,
                    metrics=self._metrics,
                    partition_listener=self._partition_listener,
                )
                self._runner = runner
                if self._stopping:
                    break
                await runner.run()
                delay = 0.5
            except (KafkaError, OSError) as error:
                log.warning(
                    "consumer %s lost the broker (%r); retrying in %.1fs",
                    self._options.group_id,
                    error,
                    delay,
                )
            finally:
                self._runner = None
                with contextlib.suppress(Exception):
                    await producer.stop()
            if not self._stopping:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def is_ready(self) -> bool:
        runner = self._runner
        if runner is None or not runner.started.is_set() or runner.last_poll_monotonic is None:
            return False
        # A poll loop that has not come round for a while is stuck, or has lost its broker.
        return time.monotonic() - runner.last_poll_monotonic < 30.0

    async def stop(self) -> None:
        self._stopping = True
        if self._runner is not None:
            self._runner.stop()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=30)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
