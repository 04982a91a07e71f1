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

import pytest

from tests.support.echo_worker import echo_worker
from tests.support.fencing import assert_fenced_exactly_once, fencing_run, resume_held
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


async def test_a_paused_instance_is_fenced_and_nothing_is_published_twice(
    kafka_bootstrap: str,
) -> None:
    run = await fencing_run(kafka_bootstrap, "fencing")
    # A is slow: it holds each batch 3 s before returning it for commit.
    async with echo_worker(run.settings, run.group, run.prefix, delay_s=3.0) as a:
        holding = await wait_until(
            lambda: a.lines_from(0),
            accept=lambda lines: any(line.startswith("holding") for line in lines),
            timeout=90,
            what="A to hold a batch",
        )
        a.process.send_signal(signal.SIGSTOP)
        assert not any(line.startswith("committed") for line in holding)
        async with echo_worker(run.settings, run.group, run.prefix, delay_s=0.0) as b:
            # B joins; A, silent past its session timeout, is dropped; B gets every
            # partition. Then A finishes the batch it held and tries to commit it.
            after = await resume_held(run, a)
            await b.stop()
        await a.stop()
    await assert_fenced_exactly_once(run, a, after)
