"""The supervisor: a dying task is logged, readiness falls at once, and it is restarted or the
process is declared dead, by policy."""

from __future__ import annotations

import asyncio
import logging
from typing import TypeVar

import pytest
from prometheus_client import CollectorRegistry

from shared.service.supervisor import (
    BackgroundTask,
    Policy,
    Supervisor,
    SupervisorMetrics,
    TaskState,
)
from tests.support.waiting import wait_until

T = TypeVar("T")


class Boom(Exception):
    pass


async def test_a_task_that_raises_is_logged_not_ready_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    release = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise Boom("first run fails")
        await release.wait()

    registry = CollectorRegistry()
    supervisor = Supervisor(
        service="test", metrics=SupervisorMetrics.register(registry), initial_backoff_s=1.0
    )
    supervisor.add(BackgroundTask("flaky", flaky))
    caplog.set_level(logging.ERROR)
    async with supervisor:
        # The failure is seen before the restart: not ready while backing off.
        await wait_until(lambda: _state(supervisor, "flaky"), accept=lambda s: s == "backing off")
        assert not supervisor.is_ready()
        assert supervisor.is_live()
        await wait_until(lambda: _value(runs), accept=lambda n: n == 2)
        assert supervisor.is_ready()
        release.set()
    assert any("flaky" in r.getMessage() and r.exc_info for r in caplog.records)
    failures = registry.get_sample_value(
        "demandscope_background_task_failures_total", {"task": "flaky"}
    )
    assert failures == 1


async def test_a_stop_policy_task_that_dies_makes_the_process_not_live() -> None:
    fatal_calls: list[str] = []

    async def dies() -> None:
        raise Boom("cannot go on")

    supervisor = Supervisor(service="test", on_fatal=lambda: fatal_calls.append("stop"))
    supervisor.add(BackgroundTask("critical", dies, policy=Policy.STOP))
    async with supervisor:
        await wait_until(lambda: _value(supervisor.is_live()), accept=lambda live: not live)
        assert not supervisor.is_ready()
        assert fatal_calls == ["stop"]
        assert supervisor.status() == {"critical": TaskState.FAILED.value}
        assert "cannot go on" in (supervisor.fatal_reason or "")


async def test_a_task_that_returns_unexpectedly_counts_as_a_failure() -> None:
    async def returns() -> None:
        return None

    supervisor = Supervisor(service="test", initial_backoff_s=0.05)
    supervisor.add(BackgroundTask("loop", returns, max_failures=3))
    async with supervisor:
        await wait_until(lambda: _value(supervisor.is_live()), accept=lambda live: not live)
        assert "3 failures in a row" in (supervisor.fatal_reason or "")


async def test_a_one_shot_task_may_finish_and_stop_hooks_end_the_others() -> None:
    stopped = asyncio.Event()

    async def once() -> None:
        return None

    async def loop() -> None:
        await stopped.wait()

    supervisor = Supervisor(service="test", shutdown_timeout_s=5)
    supervisor.add(BackgroundTask("once", once, forever=False))
    supervisor.add(BackgroundTask("loop", loop, stop=stopped.set))
    async with supervisor:
        await wait_until(lambda: _state(supervisor, "once"), accept=lambda s: s == "finished")
        assert supervisor.is_ready()
    assert stopped.is_set()
    assert supervisor.status() == {"once": "finished", "loop": "finished"}


async def test_a_task_without_a_stop_hook_is_cancelled_at_once_on_stop() -> None:
    async def sleeps_for_ever() -> None:
        await asyncio.Event().wait()

    supervisor = Supervisor(service="test", shutdown_timeout_s=60)
    supervisor.add(BackgroundTask("purge", sleeps_for_ever))
    async with supervisor:
        await wait_until(lambda: _state(supervisor, "purge"), accept=lambda s: s == "running")
    # Had it waited for the 60 s shutdown timeout, the test's own timeout would tell.
    assert supervisor.status() == {"purge": "finished"}


async def _state(supervisor: Supervisor, name: str) -> str:
    return supervisor.status()[name]


async def _value(value: T) -> T:
    return value


async def test_a_task_stopped_on_its_own_finishes_without_counting_as_a_failure() -> None:
    stopped = asyncio.Event()

    async def loop() -> None:
        await stopped.wait()

    supervisor = Supervisor(service="test")
    supervisor.add(BackgroundTask("consumer", loop, stop=stopped.set, max_failures=1))
    async with supervisor:
        await wait_until(lambda: _state(supervisor, "consumer"), accept=lambda s: s == "running")
        supervisor.stop_task("consumer")
        await wait_until(lambda: _state(supervisor, "consumer"), accept=lambda s: s == "finished")
        assert supervisor.is_live()
