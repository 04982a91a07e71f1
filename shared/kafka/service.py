"""A consumer run as a supervised background task: each attempt starts afresh, reports readiness."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

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
from shared.kafka.transactions import LeftOpen
from shared.service.supervisor import BackgroundTask


class ConsumerService:
    """One consumer runner and its producers, run as a background task of a service.

    ``run()`` is one attempt: a fresh consumer that joins the group and resumes from the
    committed offsets, with a fresh producer (or, transactional, a fresh producer per
    assigned partition, whose transactional id is ``<transactional_id_prefix>-<topic>-
    <partition>``: see ``transactions.py``). Any error ends the attempt; the service's
    ``Supervisor`` logs it and runs it again with back-off. That is how a lost broker, a
    producer in a fatal state (``FATAL_ERROR -> IN_TRANSACTION`` after a failed
    transactional commit) or a fenced instance recovers: abort, new producers, re-fetch
    positions, carry on.
    """

    def __init__(
        self,
        *,
        settings: KafkaSettings,
        topics: Mapping[str, type[Event]],
        handler: BatchHandler,
        options: RunnerOptions,
        metrics: ConsumerMetrics,
        transactional_id_prefix: str | None = None,
        partition_listener: PartitionListener | None = None,
        stalled_after_s: float = 30.0,
        runner_factory: Callable[..., ConsumerRunner] = ConsumerRunner,
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._handler = handler
        self._options = options
        self._metrics = metrics
        self._transactional_id_prefix = transactional_id_prefix
        self._partition_listener = partition_listener
        self._stalled_after_s = stalled_after_s
        # Called with ConsumerRunner's keywords for each attempt (a service's own subclass).
        self._runner_factory: Callable[..., ConsumerRunner] = runner_factory
        self._runner: ConsumerRunner | None = None
        self._stopping = False
        # Across attempts: what a failed attempt's transactions may have left open on the
        # broker is ended by the next attempt's producers (transactions.py).
        self._left_open = LeftOpen(written=set(options.output_topics))

    @property
    def runner(self) -> ConsumerRunner | None:
        return self._runner

    def background_task(self, name: str = "consumer") -> BackgroundTask:
        return BackgroundTask(name=name, run=self.run, stop=self.request_stop)

    async def run(self) -> None:
        """Consume until ``request_stop()``; raise on anything that ends the attempt."""
        if self._stopping:
            return
        producer = (
            None
            if self._options.transactional
            else create_producer(self._settings, client_id=self._options.client_id)
        )
        try:
            if producer is not None:
                await producer.start()
            runner = self._runner_factory(
                settings=self._settings,
                topics=self._topics,
                handler=self._handler,
                producer=producer,
                transactional_id_prefix=self._transactional_id_prefix,
                options=self._options,
                metrics=self._metrics,
                partition_listener=self._partition_listener,
                left_open=self._left_open,
            )
            self._runner = runner
            if not self._stopping:
                await runner.run()
        finally:
            self._runner = None
            if producer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 10)

    def request_stop(self) -> None:
        """Finish the batch in hand, commit it and leave the group."""
        self._stopping = True
        if self._runner is not None:
            self._runner.stop()

    async def is_ready(self) -> bool:
        """Polling, and not stuck on a batch it cannot commit."""
        runner = self._runner
        if runner is None or not runner.started.is_set() or runner.last_poll_monotonic is None:
            return False
        now = time.monotonic()
        if runner.stalled_since is not None and now - runner.stalled_since > self._stalled_after_s:
            return False
        # A poll loop that has not come round for a while is stuck, or has lost its broker.
        return now - runner.last_poll_monotonic < self._stalled_after_s
