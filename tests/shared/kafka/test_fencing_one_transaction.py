"""A paused instance that committed whole polls in one transaction (it held every partition,
``RunnerOptions.one_transaction_per_poll``) must not commit once its partitions have moved:
whoever takes over any partition opens, and so fences, the shared producer too.

As ``test_fencing.py``, with the echo worker in its ``one-transaction`` mode: A alone holds every
partition, so it commits through the shared producer; it is stopped (SIGSTOP) holding a batch
past its session timeout; B and C take over half of the partitions each and process
everything; A resumes and tries to commit what it held. Had B and C not opened the shared
producer (they commit through their partitions' own), A's output would land twice.
"""

from __future__ import annotations

import signal
import uuid
from collections import Counter

import pytest

from shared.kafka.admin import ensure_topics
from shared.kafka.read_to_end import read_all
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name, topic_specs
from tests.support.echo_worker import echo_worker
from tests.support.factories import demand_received
from tests.support.kafka_io import committed_to_end, publish_events
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

DEMANDS = 400


async def test_a_paused_instance_that_held_every_partition_is_fenced(
    kafka_bootstrap: str,
) -> None:
    settings = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"g{uuid.uuid4().hex[:10]}.", partitions=4
    )
    await ensure_topics(settings, topic_specs(settings))
    source = topic_name(settings, Topic.DEMAND_RECEIVED)
    output = topic_name(settings, Topic.DEMAND_CLASSIFIED)
    group = f"fencing-all-{uuid.uuid4().hex[:10]}"
    prefix = f"{group}-tx"
    ids = [f"d{i}" for i in range(DEMANDS)]
    await publish_events(
        settings, [demand_received(id=i, customer_ref=f"C-{n % 40}") for n, i in enumerate(ids)]
    )

    async with echo_worker(settings, group, prefix, delay_s=3.0, one_transaction=True) as a:
        # A holds every partition: its polls go out in one transaction, the shared
        # producer's. Stopped while it holds a batch of such a poll (3 s each).
        holding = await wait_until(
            lambda: a.lines_from(0),
            accept=lambda lines: (
                len(lines) >= 2
                and lines[-2] == "one_transaction true"
                and lines[-1].startswith("holding")
            ),
            timeout=90,
            what="A to hold a batch of a poll committed in one transaction",
        )
        a.process.send_signal(signal.SIGSTOP)
        assert holding[-1].startswith("holding")
        # B and C join; A, silent past its session timeout, is dropped; each of them takes
        # over some of the partitions, so neither commits through the shared producer,
        # and both open it all the same, to fence it.
        async with (
            echo_worker(settings, group, prefix, delay_s=0.0, one_transaction=True) as b,
            echo_worker(settings, group, prefix, delay_s=0.0, one_transaction=True) as c,
        ):
            await wait_until(
                lambda: committed_to_end(settings, group, [source]),
                timeout=120,
                what="B and C to take over and commit every partition",
            )
            resumed_at = len(a.lines)
            a.process.send_signal(signal.SIGCONT)
            after = await wait_until(
                lambda: a.lines_from(resumed_at),
                accept=lambda lines: any(
                    line.startswith(("fenced", "committed")) for line in lines
                ),
                timeout=60,
                what="A to try to commit the poll it held",
                show=lambda lines: repr(lines[-5:]),
            )
            await wait_until(
                lambda: committed_to_end(settings, group, [source]),
                timeout=120,
                what="the group at the end of its input again",
            )
            await b.stop()
            await c.stop()
        await a.stop()
    published = await read_all(settings, [output], timeout=60)
    counts = Counter((record.value or b"").decode() for record in published)
    assert set(counts) == set(ids)  # nothing lost
    assert [i for i, n in counts.items() if n > 1] == []  # nothing published twice
    assert not any(line.startswith("committed") for line in after), after
    assert any(line.startswith("fenced:") for line in after), after
    assert a.process.returncode == 0
