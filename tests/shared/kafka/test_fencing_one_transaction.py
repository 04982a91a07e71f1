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

import pytest

from tests.support.echo_worker import echo_worker
from tests.support.fencing import assert_fenced_exactly_once, fencing_run, resume_held
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


async def test_a_paused_instance_that_held_every_partition_is_fenced(
    kafka_bootstrap: str,
) -> None:
    run = await fencing_run(kafka_bootstrap, "fencing-all")
    settings, group, prefix = run.settings, run.group, run.prefix
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
            after = await resume_held(run, a)
            await b.stop()
            await c.stop()
        await a.stop()
    await assert_fenced_exactly_once(run, a, after)
