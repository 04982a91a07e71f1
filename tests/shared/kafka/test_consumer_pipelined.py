"""Transactional tasks in flight together: a task's records are handled while another task's
commit is in flight only when the earlier batch says they cannot see what it changes
(``BatchResult.conflicts_with``); otherwise, and within one task, a batch is handled only
once the batches before it have committed and applied their changes (``after_commit``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from shared.kafka.consumer import BatchResult, Inbound
from shared.kafka.settings import KafkaSettings
from tests.support.factories import demand_received
from tests.support.gated_runner import Gated, gated_runner, output_topic, published
from tests.support.kafka_io import publish_events

pytestmark = pytest.mark.integration

DEMANDS = 200


class Applier(Gated):
    """Echoes each demand's id; its in-memory state (the ids applied) changes only in
    ``after_commit``. Notes, at every call, the batches handled but not applied yet. Its
    first call waits at ``gate`` (the runner holds its assignment paused meanwhile), so the
    test decides what the next poll finds."""

    def __init__(self, output: str, *, independent: bool) -> None:
        super().__init__(output)
        self._independent = independent
        self.unapplied: list[frozenset[int]] = []  # the partitions of each such batch
        self.applied: list[str] = []
        self.seen_unapplied_of_other_tasks = 0
        self.seen_unapplied_of_own_task = 0

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        await self.hold_first()
        mine = frozenset(m.partition for m in messages)
        for earlier in self.unapplied:
            if earlier & mine:
                self.seen_unapplied_of_own_task += 1
            else:
                self.seen_unapplied_of_other_tasks += 1
        self.unapplied.append(mine)
        ids = [m.event.id for m in messages]

        def apply() -> None:
            self.unapplied.remove(mine)
            self.applied += ids

        return BatchResult(
            outbound=self.echo(messages),
            after_commit=apply,
            conflicts_with=lambda later: not self._independent,
        )


MAX_BATCH = 10  # a poll takes up to a batch per task: 20 records over the two partitions
# Published while the first batch is held: fewer than a poll takes, over both partitions
# (20 customers), so the next poll holds both partitions' records (two tasks) for sure.
SECOND_WAVE = 2 * MAX_BATCH - 1
# Then many per partition: several batches per task and poll.
THIRD_WAVE = 180


@pytest.mark.parametrize("independent", [True, False], ids=["independent", "conflicting"])
async def test_a_commit_in_flight_overlaps_only_what_cannot_see_its_changes(
    kafka_settings: KafkaSettings, independent: bool
) -> None:
    waves = [
        [demand_received(id=f"d{n}", customer_ref=f"C-{n % 20}") for n in range(start, end)]
        for start, end in [
            (0, 1),
            (1, 1 + SECOND_WAVE),
            (1 + SECOND_WAVE, 1 + SECOND_WAVE + THIRD_WAVE),
        ]
    ]
    await publish_events(kafka_settings, waves[0])
    handler = Applier(output_topic(kafka_settings), independent=independent)
    async with gated_runner(kafka_settings, handler, max_batch=MAX_BATCH) as run:
        # Nothing is fetched while the first batch is in hand: the next poll's fetch finds
        # the whole second wave, in both partitions, at once.
        await publish_events(kafka_settings, waves[1])
        handler.gate.set()
        await run.committed("the first two waves committed")
        second_wave_overlaps = handler.seen_unapplied_of_other_tasks
        await publish_events(kafka_settings, waves[2])
        await run.committed("every record committed")

    if independent:
        assert second_wave_overlaps > 0  # the second task ran while the first committed
    else:
        assert handler.seen_unapplied_of_other_tasks == 0
    # A task's next batch always waits for its previous one (one producer, and its state).
    assert handler.seen_unapplied_of_own_task == 0
    assert handler.unapplied == []
    ids = [demand.id for wave in waves for demand in wave]
    assert sorted(handler.applied) == sorted(ids)
    assert await published(kafka_settings) == Counter(ids)  # each once
