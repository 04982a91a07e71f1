"""Producers: idempotent with acks=all by default, transactional where asked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.kafka.codec import OutboundRecord
from shared.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)


def create_producer(
    settings: KafkaSettings, *, client_id: str, transactional_id: str | None = None
) -> AIOKafkaProducer:
    # aiokafka defaults to acks=1 without idempotence: a leader crash can lose an ack'd record.
    return AIOKafkaProducer(
        **settings.client_options(),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        transactional_id=transactional_id,
        linger_ms=2,
        max_batch_size=256 * 1024,
        compression_type=None,
    )


async def send_all(producer: AIOKafkaProducer, records: Iterable[OutboundRecord]) -> None:
    """Send records and wait until the broker has acknowledged every one."""
    futures = [
        await producer.send(r.topic, value=r.value, key=r.key, headers=r.headers) for r in records
    ]
    if futures:
        await asyncio.gather(*futures)


class ManagedProducer:
    """A producer that keeps trying to connect, so a service can start before its broker.

    Intake must answer 503 (not crash) while the broker is away, and accept again when it
    comes back without a restart of its own.
    """

    def __init__(self, settings: KafkaSettings, *, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def producer(self) -> AIOKafkaProducer | None:
        return self._producer

    async def start(self) -> None:
        self._connect_task = asyncio.create_task(self._connect_loop(), name="producer-connect")

    async def _connect_loop(self) -> None:
        delay = 0.5
        while self._producer is None:
            candidate = create_producer(self._settings, client_id=self._client_id)
            try:
                await candidate.start()
            except asyncio.CancelledError:
                # Stopped while still connecting: close what was half opened.
                with contextlib.suppress(Exception):
                    await candidate.stop()
                raise
            except (KafkaError, OSError) as error:
                log.warning("broker not reachable yet (%s); retrying in %.1fs", error, delay)
                with contextlib.suppress(Exception):
                    await candidate.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self._producer = candidate
            log.info("producer connected to %s", self._settings.bootstrap_servers)

    async def send_and_wait(self, records: Iterable[OutboundRecord]) -> None:
        """Publish and wait for acks=all. Raises BrokerUnavailable if that cannot happen in time."""
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("not connected to the Kafka broker yet")
        try:
            await asyncio.wait_for(send_all(producer, records), self._settings.delivery_timeout_s)
        except (TimeoutError, KafkaError) as error:
            raise BrokerUnavailable(f"broker did not acknowledge: {error!r}") from error

    async def is_ready(self) -> bool:
        producer = self._producer
        if producer is None:
            return False
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), 2.0)
        except (TimeoutError, KafkaError, OSError):
            return False
        return True

    async def stop(self) -> None:
        if self._connect_task is not None:
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connect_task
        if self._producer is not None:
            await self._producer.stop()  # flushes what is in flight
            self._producer = None


class BrokerUnavailable(RuntimeError):
    """The broker could not acknowledge in time: the caller must not report success."""
