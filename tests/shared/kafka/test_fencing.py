"""A paused instance must not commit once its partitions have moved (issue 13, fencing).

Two transactional consumers run as separate processes (tests/support/echo_worker.py) in
one group. A holds a batch it has not committed yet when it is stopped (SIGSTOP) past its
session timeout; B takes its partitions over and processes everything; then A resumes and
tries to commit the batch it held. aiokafka cannot fence that commit through the group
(no KIP-447), so without one transactional id per input partition A's output lands a
second time and its stale offsets overwrite B's. With them, B's producers fence A's.
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


async def test_a_paused_instance_is_fenced_and_nothing_is_published_twice(
    kafka_bootstrap: str,
) -> None:
    settings = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"f{uuid.uuid4().hex[:10]}.", partitions=4
    )
    await ensure_topics(settings, topic_specs(settings))
    source = topic_name(settings, Topic.DEMAND_RECEIVED)
    output = topic_name(settings, Topic.DEMAND_CLASSIFIED)
    group = f"fencing-{uuid.uuid4().hex[:10]}"
    prefix = f"{group}-tx"  # one prefix for the group: the ids differ by partition only
    ids = [f"d{i}" for i in range(DEMANDS)]
    await publish_events(
        settings, [demand_received(id=i, customer_ref=f"C-{n % 40}") for n, i in enumerate(ids)]
    )

    # A is slow: it holds each batch 3 s before returning it for commit.
    async with echo_worker(settings, group, prefix, delay_s=3.0) as a:
        holding = await wait_until(
            lambda: a.lines_from(0),
            accept=lambda lines: any(line.startswith("holding") for line in lines),
            timeout=90,
            what="A to hold a batch",
        )
        a.process.send_signal(signal.SIGSTOP)
        assert not any(line.startswith("committed") for line in holding)
        async with echo_worker(settings, group, prefix, delay_s=0.0) as b:
            # B joins; A, silent past its session timeout, is dropped; B gets every partition.
            await wait_until(
                lambda: committed_to_end(settings, group, [source]),
                timeout=120,
                what="B to take over and commit every partition",
            )
            resumed_at = len(a.lines)
            a.process.send_signal(signal.SIGCONT)
            # A finishes the batch it held and tries to commit it.
            after = await wait_until(
                lambda: a.lines_from(resumed_at),
                accept=lambda lines: any(
                    line.startswith(("fenced", "committed")) for line in lines
                ),
                timeout=60,
                what="A to try to commit the batch it held",
                show=lambda lines: repr(lines[-5:]),
            )
            await wait_until(
                lambda: committed_to_end(settings, group, [source]),
                timeout=120,
                what="the group at the end of its input again",
            )
            await b.stop()
        await a.stop()
    published = await read_all(settings, [output], timeout=60)
    counts = Counter((record.value or b"").decode() for record in published)
    assert set(counts) == set(ids)  # nothing lost
    assert [i for i, n in counts.items() if n > 1] == []  # nothing published twice
    # A was stopped by its fencing, not by luck: it tried, was refused, counted it.
    assert not any(line.startswith("committed") for line in after), after
    assert any(line.startswith("fenced:") for line in after), after
    assert any(line.startswith("fenced_total") and int(line.split()[1]) >= 1 for line in a.lines)
    assert a.process.returncode == 0
