"""The fencing scenario's steps, shared by the tests that pause an echo worker
(tests/support/echo_worker.py) past its session timeout and let others take over.

``fencing_run`` publishes the demands on topics of the test's own; ``resume_held`` lets the
paused worker go on once the group has caught up, and returns what it printed then;
``assert_fenced_exactly_once`` checks that nothing was lost or published twice and that the
paused worker was refused by its fencing, not spared by luck.
"""

from __future__ import annotations

import signal
import uuid
from collections import Counter
from dataclasses import dataclass

from shared.kafka.admin import ensure_topics
from shared.kafka.read_to_end import read_all
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name, topic_specs
from tests.support.echo_worker import Worker
from tests.support.factories import demand_received
from tests.support.kafka_io import committed_to_end, publish_events
from tests.support.waiting import wait_until


@dataclass(frozen=True)
class FencingRun:
    settings: KafkaSettings
    group: str
    prefix: str  # one transactional id prefix for the group: the ids differ by partition only
    source: str
    output: str
    ids: list[str]


async def fencing_run(bootstrap: str, name: str, *, demands: int = 400) -> FencingRun:
    """Topics of four partitions and a group of this run's own, ``demands`` published."""
    tag = uuid.uuid4().hex[:10]
    settings = KafkaSettings(
        bootstrap_servers=bootstrap, topic_prefix=f"{name}{tag}.", partitions=4
    )
    await ensure_topics(settings, topic_specs(settings))
    group = f"{name}-{tag}"
    ids = [f"d{i}" for i in range(demands)]
    await publish_events(
        settings, [demand_received(id=i, customer_ref=f"C-{n % 40}") for n, i in enumerate(ids)]
    )
    return FencingRun(
        settings=settings,
        group=group,
        prefix=f"{group}-tx",
        source=topic_name(settings, Topic.DEMAND_RECEIVED),
        output=topic_name(settings, Topic.DEMAND_CLASSIFIED),
        ids=ids,
    )


async def caught_up(run: FencingRun, what: str) -> None:
    await wait_until(
        lambda: committed_to_end(run.settings, run.group, [run.source]),
        timeout=120,
        what=what,
    )


async def resume_held(run: FencingRun, paused: Worker) -> list[str]:
    """Once the others have committed everything, resume ``paused`` (SIGCONT) and wait for it
    to try to commit the batch it held; then for the group to be at the end again. Returns
    the lines it printed after it resumed."""
    await caught_up(run, "the others to take over and commit every partition")
    resumed_at = len(paused.lines)
    paused.process.send_signal(signal.SIGCONT)
    after = await wait_until(
        lambda: paused.lines_from(resumed_at),
        accept=lambda lines: any(line.startswith(("fenced", "committed")) for line in lines),
        timeout=60,
        what="the paused worker to try to commit the batch it held",
        show=lambda lines: repr(lines[-5:]),
    )
    await caught_up(run, "the group at the end of its input again")
    return after


async def assert_fenced_exactly_once(run: FencingRun, paused: Worker, after: list[str]) -> None:
    """Call once every worker has stopped."""
    published = await read_all(run.settings, [run.output], timeout=60)
    counts = Counter((record.value or b"").decode() for record in published)
    assert set(counts) == set(run.ids)  # nothing lost
    assert [i for i, n in counts.items() if n > 1] == []  # nothing published twice
    # Stopped by its fencing, not by luck: it tried, was refused, counted it.
    assert not any(line.startswith("committed") for line in after), after
    assert any(line.startswith("fenced:") for line in after), after
    assert any(
        line.startswith("fenced_total") and int(line.split()[1]) >= 1 for line in paused.lines
    ), paused.lines[-5:]
    assert paused.process.returncode == 0
