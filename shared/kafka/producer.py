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
    """An idempotent producer that is kept alive for the life of a service.

    ``maintain()`` is a background task (run it under the service's ``Supervisor``): it
    connects, retrying with back-off so a service can start before its broker, and replaces
    the producer whenever it is broken. A broker restart under traffic can leave an
    idempotent producer in a state it never leaves (``OutOfOrderSequenceNumber``: its
    sequence numbers no longer match what the broker kept; aiokafka issue #1017). librdkafka
    treats that as fatal and starts over with a new producer id; so do we: any Kafka error
    from a send, or ``max_timeouts`` sends in a row that time out, retire the producer and
    ``maintain()`` opens a fresh one. Until then callers get ``BrokerUnavailable`` (intake's
    503 with Retry-After), never a success that was not acknowledged.
    """

    def __init__(self, settings: KafkaSettings, *, client_id: str, max_timeouts: int = 3) -> None:
        self._settings = settings
        self._client_id = client_id
        self._max_timeouts = max_timeouts
        self._producer: AIOKafkaProducer | None = None
        self._broken = asyncio.Event()
        self._timeouts_in_a_row = 0
        self.replacements = 0  # producers retired because they were broken

    @property
    def producer(self) -> AIOKafkaProducer | None:
        return self._producer

    async def maintain(self) -> None:
        """Connect, then replace the producer each time it breaks. Runs until cancelled."""
        while True:
            if self._producer is None:
                self._producer = await self._connect()
                self._timeouts_in_a_row = 0
                self._broken.clear()
                log.info(
                    "producer %s connected to %s", self._client_id, self._settings.bootstrap_servers
                )
            await self._broken.wait()
            retired, self._producer = self._producer, None
            self.replacements += 1
            log.warning("producer %s is broken; replacing it with a fresh one", self._client_id)
            if retired is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(retired.stop(), self._settings.delivery_timeout_s)

    async def _connect(self) -> AIOKafkaProducer:
        delay = 0.5
        while True:
            candidate = create_producer(self._settings, client_id=self._client_id)
            try:
                await candidate.start()
            except asyncio.CancelledError:
                # Stopped while still connecting: close what was half opened.
                with contextlib.suppress(Exception):
                    await candidate.stop()
                raise
            except (KafkaError, OSError) as error:
                log.warning("broker not reachable yet (%r); retrying in %.1fs", error, delay)
                with contextlib.suppress(Exception):
                    await candidate.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            return candidate

    async def send_and_wait(self, records: Iterable[OutboundRecord]) -> None:
        """Publish and wait for acks=all. Raises BrokerUnavailable if that cannot happen in time."""
        producer = self._producer
        if producer is None or self._broken.is_set():
            raise BrokerUnavailable("not connected to the Kafka broker")
        try:
            # A timeout scope, not wait_for: on Python 3.11 wait_for wraps every send in a task
            # of its own (10% of an intake request's CPU, profiled).
            async with asyncio.timeout(self._settings.delivery_timeout_s):
                await send_all(producer, records)
        except TimeoutError as error:
            self._timeouts_in_a_row += 1
            if self._timeouts_in_a_row >= self._max_timeouts:
                self._retire(producer, f"{self._timeouts_in_a_row} sends in a row timed out")
            raise BrokerUnavailable(f"broker did not acknowledge in time: {error!r}") from error
        except KafkaError as error:
            self._retire(producer, repr(error))
            raise BrokerUnavailable(f"broker did not acknowledge: {error!r}") from error
        self._timeouts_in_a_row = 0

    def _retire(self, producer: AIOKafkaProducer, reason: str) -> None:
        if producer is self._producer and not self._broken.is_set():
            log.warning("retiring producer %s: %s", self._client_id, reason)
            self._broken.set()

    async def is_ready(self) -> bool:
        """Connected, not broken, and the broker answers a metadata request."""
        producer = self._producer
        if producer is None or self._broken.is_set():
            return False
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), 2.0)
        except (TimeoutError, KafkaError, OSError):
            return False
        return True

    async def close(self) -> None:
        """Flush what is in flight and close (after ``maintain`` has been stopped)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), self._settings.delivery_timeout_s * 2)


class BrokerUnavailable(RuntimeError):
    """The broker could not acknowledge in time: the caller must not report success."""
