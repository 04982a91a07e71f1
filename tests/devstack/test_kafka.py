"""devstack's local broker: its readiness probe (an aiokafka metadata request), status, start."""

from __future__ import annotations

import time

from devstack import kafka
from devstack.process import pick_free_port


def test_the_session_broker_is_ready_and_a_second_start_returns_at_once(
    kafka_config: kafka.LocalKafkaConfig,
) -> None:
    assert kafka.is_ready(kafka_config.host, kafka_config.port)
    state = kafka.status(kafka_config)
    assert state.running
    assert state.pid == kafka.running_pid(kafka_config)
    assert state.bootstrap == kafka_config.bootstrap
    kafka.start(kafka_config, timeout=5)  # idempotent
    assert kafka.running_pid(kafka_config) == state.pid


async def test_the_probe_works_from_inside_a_running_event_loop(
    kafka_config: kafka.LocalKafkaConfig,
) -> None:
    # Async tests call start/stop directly (tests/e2e/test_broker_outage.py).
    assert kafka.is_ready(kafka_config.host, kafka_config.port)


def test_nothing_listening_is_not_ready_within_the_timeout() -> None:
    port = pick_free_port("127.0.0.1")
    began = time.monotonic()
    assert not kafka.is_ready("127.0.0.1", port, timeout=1.0)
    assert time.monotonic() - began < 10
