"""A handler that prepares a poll's batches together (``PollHandler.for_poll``): the runner
hands it all of a poll's records once, then each task's batch to the handler it returned,
and still commits each task on its own, each record once. A preparation that fails leaves
each batch to the handler itself."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from shared.kafka.consumer import BatchHandler, BatchResult, Inbound, PollHandler
from shared.kafka.settings import KafkaSettings
from tests.support.factories import demand_received
from tests.support.gated_runner import Gated, gated_runner, output_topic, published
from tests.support.kafka_io import publish_events

pytestmark = pytest.mark.integration

MAX_BATCH = 10
SECOND_WAVE = 2 * MAX_BATCH - 1  # fewer than a poll takes, over both partitions


class Preparing(Gated):
    """Echoes each demand's id. ``for_poll`` notes the poll's ids and returns a handler that
    notes which poll each batch it handles came from. Its first call waits at ``gate``, so
    the test decides what the next poll finds."""

    def __init__(self, output: str, *, fail_preparing: bool) -> None:
        super().__init__(output)
        self._fail_preparing = fail_preparing
        self.polls: list[frozenset[str]] = []  # the ids of each prepared poll
        self.prepared_batches: list[tuple[int, frozenset[str], frozenset[int]]] = []
        self.plain_batches: list[frozenset[str]] = []

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        await self.hold_first()
        self.plain_batches.append(frozenset(m.event.id for m in messages))
        return BatchResult(outbound=self.echo(messages))

    async def for_poll(self, messages: Sequence[Inbound[Any]]) -> BatchHandler:
        self.polls.append(frozenset(m.event.id for m in messages))
        if self._fail_preparing:
            raise RuntimeError("preparing failed")
        index = len(self.polls) - 1

        async def handle(messages: Sequence[Inbound[Any]]) -> BatchResult:
            ids = frozenset(m.event.id for m in messages)
            self.prepared_batches.append((index, ids, frozenset(m.partition for m in messages)))
            return BatchResult(outbound=self.echo(messages))

        return handle


@pytest.mark.parametrize("fail_preparing", [False, True], ids=["prepared", "preparing-fails"])
async def test_a_polls_batches_are_prepared_together_and_committed_apart(
    kafka_settings: KafkaSettings, fail_preparing: bool
) -> None:
    first = [demand_received(id="d0", customer_ref="C-0")]
    second = [demand_received(id=f"d{n}", customer_ref=f"C-{n % 20}") for n in range(1, 20)]
    await publish_events(kafka_settings, first)
    handler = Preparing(output_topic(kafka_settings), fail_preparing=fail_preparing)
    assert isinstance(handler, PollHandler)
    async with gated_runner(kafka_settings, handler, max_batch=MAX_BATCH) as run:
        # Nothing is fetched while the first batch is in hand: the next poll finds the whole
        # second wave, in both partitions (two tasks), at once.
        await publish_events(kafka_settings, second)
        handler.gate.set()
        await run.committed("every record committed")

    ids = {d.id for d in first + second}
    # The first poll held one batch: not prepared. The second held both tasks' batches.
    assert handler.plain_batches[0] == {"d0"}
    assert frozenset(d.id for d in second) in handler.polls
    if fail_preparing:
        assert handler.prepared_batches == []
        assert set().union(*handler.plain_batches) == ids
    else:
        assert handler.plain_batches == [{"d0"}]
        # Each batch came from the poll prepared for it; each poll's batches are all of it,
        # one task (partition) each.
        by_poll: dict[int, list[frozenset[str]]] = {}
        tasks: dict[int, set[int]] = {}
        for index, batch, partitions in handler.prepared_batches:
            assert batch <= handler.polls[index]
            assert len(partitions) == 1  # a batch is one task's (split at max_batch)
            by_poll.setdefault(index, []).append(batch)
            tasks.setdefault(index, set()).update(partitions)
        for index, batches in by_poll.items():
            assert frozenset().union(*batches) == handler.polls[index]
        second_wave = handler.polls.index(frozenset(d.id for d in second))
        assert tasks[second_wave] == {0, 1}
    assert await published(kafka_settings) == Counter(ids)  # each once
