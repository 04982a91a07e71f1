"""A commit that never finishes is abandoned after ``commit_timeout_s`` (``CommitFailed``),
so that the supervisor starts afresh: aiokafka's transactional producer can wait for ever
once its sender task has died during a broker restart, and a cancelled transaction then
waits again in ``abort_transaction`` (the stuck commit below does the same)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry

from shared.kafka.consumer import CommitFailed, ConsumerRunner, RunnerOptions
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.settings import KafkaSettings


def runner(commit_timeout_s: float) -> tuple[ConsumerRunner, CollectorRegistry]:
    registry = CollectorRegistry()
    made = ConsumerRunner(
        settings=KafkaSettings(),
        topics={},
        handler=None,  # type: ignore[arg-type]
        options=RunnerOptions(
            group_id="g", client_id="c", source="s", commit_timeout_s=commit_timeout_s
        ),
        metrics=ConsumerMetrics(registry),
        producer=object(),
    )
    return made, registry


async def test_a_commit_that_never_ends_fails_the_run_after_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made, registry = runner(commit_timeout_s=0.2)
    cancelled = 0

    async def stuck(*_: Any) -> None:
        nonlocal cancelled
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled += 1
            await asyncio.Event().wait()  # as abort_transaction waits for a dead sender

    monkeypatch.setattr(made, "_commit", stuck)
    run = asyncio.create_task(made._finish_together(None, [], None))
    # Without the deadline the run waits for ever (and shrugs off one cancellation).
    done, _ = await asyncio.wait({run}, timeout=10)
    if not done:
        for _ in range(2):
            run.cancel()
            await asyncio.wait({run}, timeout=1)
        pytest.fail("the commit was still waiting after 10 s")
    with pytest.raises(CommitFailed, match=r"did not finish within 0.2 s"):
        run.result()
    assert cancelled == 1  # the abandoned commit was cancelled, and then out of its abort
    assert registry.get_sample_value("demandscope_consumer_retries_total", {"group": "g"}) == 1


async def test_a_commit_in_time_and_a_commit_error_are_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made, _ = runner(commit_timeout_s=5.0)
    calls: list[str] = []

    async def quick(*_: Any) -> None:
        calls.append("committed")

    monkeypatch.setattr(made, "_commit", quick)
    await made._finish_together(None, [], None)
    assert calls == ["committed"]

    async def refused(*_: Any) -> None:
        raise KafkaConnectionError("gone")

    monkeypatch.setattr(made, "_commit", refused)
    with pytest.raises(CommitFailed, match=r"commit failed .*gone"):
        await made._finish_together(None, [], None)


async def test_a_cancelled_run_cancels_its_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    made, _ = runner(commit_timeout_s=60.0)
    started = asyncio.Event()
    ended: list[str] = []

    async def slow(*_: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    monkeypatch.setattr(made, "_commit", slow)
    run = asyncio.create_task(made._finish_together(None, [], None))
    await asyncio.wait_for(started.wait(), 10)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await asyncio.sleep(0)  # the commit's task takes its cancellation
    assert ended == ["cancelled"]
