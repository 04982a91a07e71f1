"""Live ingestion's decoding in a worker process (services/metrics/live_decode.py).

- What the worker makes of a batch (ingest.prepare_live), applied by ingest.apply_prepared,
  leaves every table, and every outcome, as apply_events of the same events: redelivered
  and conflicting copies, tail stitches and closes, full recomputations, refused events.
- decode_values sets aside what the runner's _prepare and apply_events set aside, with the
  same reasons; a batch with labels or recorded changes is left to apply_events.
- The worker process answers what decode_values answers; a worker that dies fails its
  batches (the runner decodes them itself) and is not used again; it ends with its service,
  whether stopped or killed.
- Through Kafka: a backlog decoded by the worker dead-letters the undecodable and the
  unstorable records with their reasons and applies the rest exactly once; with the worker
  killed, the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from services.metrics import ingest, live_decode
from services.metrics.audit import AuditPolicy, QueuePolicy
from services.metrics.config import MetricsSettings
from services.metrics.db.migrate import upgrade
from services.metrics.domain.audit import AuditPlan
from services.metrics.handler import Undecoded, demand_counts
from services.metrics.ingest import (
    BatchOutcome,
    apply_events,
    apply_prepared,
    by_kind,
    prepare_live,
    why_unstorable,
)
from services.metrics.live_decode import DecodeWorker, WorkerGone, batches_of, decode_values
from services.metrics.main import create_app
from services.metrics.subscriptions import consumed_topics
from shared.database.engine import create_engine, session_factory
from shared.events import CaseEvent, CaseEventType, DemandClassified, Event
from shared.kafka.codec import DecodeError, decode
from shared.kafka.settings import KafkaSettings
from shared.topics import TOPIC_OF_EVENT, Topic, dlq_name, topic_name
from tests.support.apps import running
from tests.support.databases import database_beside
from tests.support.factories import (
    case_event,
    demand_classified,
    demand_labelled,
    system_changed,
    varied_demands,
)
from tests.support.kafka_io import produce_raw, read_records
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
YEAR_ZERO = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))  # no UTC equivalent
POLICY = AuditPolicy(
    plan=AuditPlan(rate=0.5, min_per_week=0), queues=QueuePolicy(retention_days=100_000)
)
BAD = b"{not json"


def _events() -> list[Event]:
    """Demands of 9 customers (cases, repeats, causes), low-confidence ones with words,
    fulfilments of their cases later, and a demand and a case event that cannot be stored."""
    events: list[Event] = [*varied_demands(40, customers=9, start=T0, case_refs=True)]
    events += [
        demand_classified(id=f"low-{n}", customer_ref=f"C-{n}", occurred_at=T0 + (41 + n) * HOUR,
                          confidence=0.3, needs_review=n % 2 == 0, text=f"words {n}")
        for n in range(12)
    ]  # fmt: skip
    events += [
        case_event(id=f"e-{n}", customer_ref=f"C-{n}", case_ref=f"K-{n}",
                   type=CaseEventType.FULFILLED, occurred_at=T0 + (60 + n) * HOUR)
        for n in range(9)
    ]  # fmt: skip
    events += [
        demand_classified(id="far", customer_ref="C-far", occurred_at=YEAR_ZERO),
        case_event(id="e-far", customer_ref="C-1", occurred_at=YEAR_ZERO),
    ]
    return events


def _id(event: Event) -> str:
    if isinstance(event, DemandClassified):
        return event.demand.id
    assert isinstance(event, CaseEvent)
    return event.id


def _batches() -> list[list[Event]]:
    """The events in their order in batches of 1-12 (so a customer's demands, then its case
    event, come in later batches: stitched and closed at the tail; some together: in full),
    a demand again with other words, then four batches again (redelivery)."""
    rng = random.Random(11)
    events = _events()
    events.insert(7, demand_classified(id="d-3", customer_ref="C-3", occurred_at=T0 + 3 * HOUR,
                                       text="other words", purpose="billing"))  # fmt: skip
    batches: list[list[Event]] = []
    while events:
        size = rng.randint(1, 12)
        batches.append(events[:size])
        events = events[size:]
    return [*batches, *(rng.choice(batches) for _ in range(4))]


async def _tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    from sqlalchemy import inspect, text

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
            found = {}
            for name in names:
                rows = (await connection.execute(text(f'SELECT * FROM "{name}"'))).all()
                found[name] = sorted((tuple(row) for row in rows), key=repr)
            return found
    finally:
        await engine.dispose()


def _outcome(outcome: BatchOutcome) -> tuple[Any, ...]:
    return (
        sorted(outcome.purposes),
        outcome.newly_fulfilled,
        outcome.stitched_at_tail,
        outcome.closed_at_tail,
        outcome.recomputed,
    )


async def _apply_each(url: str, batches: Sequence[Sequence[Event]], prepared: bool) -> list[Any]:
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    outcomes: list[Any] = []
    try:
        for batch in batches:
            async with sessions.begin() as session:
                if prepared:
                    ready = prepare_live(batch, engine.dialect.name)
                    assert ready is not None
                    outcome = await apply_prepared(session, ready, POLICY)
                    refused = [(_id(batch[i]), why) for i, why in ready.refused]
                else:
                    # The events' own implementation, which a batch with labels or recorded
                    # changes still takes (apply_events takes prepare_live's otherwise).
                    refused = [(_id(e), why) for e in batch if (why := why_unstorable(e))]
                    storable = [e for e in batch if why_unstorable(e) is None]
                    outcome = await ingest._apply(session, storable, POLICY, True)
            outcomes.append((_outcome(outcome), refused))
    finally:
        await engine.dispose()
    return outcomes


async def test_prepared_batches_leave_every_table_and_outcome_as_apply_events(
    database_url: str, tmp_path: Path
) -> None:
    batches = _batches()
    beside = await database_beside(database_url, tmp_path)
    expected = await _apply_each(beside, batches, prepared=False)
    found = await _apply_each(database_url, batches, prepared=True)

    assert found == expected
    # Every path of the write path was taken, and something was refused.
    assert sum(o[2] for o, _ in expected) > 0  # stitched at the tail
    assert sum(o[3] for o, _ in expected) > 0  # closed at the tail
    assert sum(o[4] for o, _ in expected) > 0  # recomputed in full
    assert {i for _, refused in expected for i, _ in refused} == {"far", "e-far"}
    tables, stored = await _tables(beside), await _tables(database_url)
    for table in ("demands", "case_events", "demand_facts", "cases", "audit_items", "queue_texts"):
        assert tables[table], table  # a comparison of empty tables would prove nothing
    assert stored == tables


async def test_apply_events_of_demands_and_case_events_is_prepare_live_then_apply_prepared(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 9: one implementation: apply_events of a batch without labels or recorded
    changes applies what prepare_live makes of it, as the worker's path does."""
    await asyncio.to_thread(upgrade, sqlite_url)
    applied: list[Any] = []

    async def spy(session: Any, prepared: Any, audit: Any = None) -> BatchOutcome:
        applied.append(prepared)
        return await apply_prepared(session, prepared, audit)

    monkeypatch.setattr(ingest, "apply_prepared", spy)
    engine = create_engine(sqlite_url)
    try:
        batch = _batches()[0]
        async with session_factory(engine).begin() as session:
            outcome = await apply_events(session, batch, POLICY)
            assert applied == [prepare_live(batch, "sqlite")]
            assert [r.event for r in outcome.refused] == [batch[i] for i, _ in applied[0].refused]
            await apply_events(session, [*batch[:3], demand_labelled(demand_id="d-1")], POLICY)
        assert len(applied) == 1  # a label: the events' own implementation
    finally:
        await engine.dispose()


def _values(events: Sequence[Event], kafka: KafkaSettings) -> tuple[list[str], list[bytes]]:
    names = [topic_name(kafka, TOPIC_OF_EVENT[type(e)]) for e in events]
    return names, [e.model_dump_json().encode() for e in events]


def test_decode_values_sets_aside_what_the_runner_and_apply_events_set_aside() -> None:
    kafka = KafkaSettings(topic_prefix="t.")
    topics = consumed_topics(kafka)
    demands_topic = topic_name(kafka, Topic.DEMAND_CLASSIFIED)
    events = _events()
    names, values = _values(events, kafka)
    names[3:3], values[3:3] = [demands_topic], [BAD]  # the 4th value does not decode
    with pytest.raises(DecodeError) as bad:
        decode(topics[demands_topic], BAD)

    answer = decode_values(topics, "sqlite", (names, values))

    assert answer.undecodable == [(3, f"undecodable: {bad.value}")]
    assert answer.decoded == [i for i in range(len(values)) if i != 3]
    assert answer.prepared is not None
    assert answer.prepared == prepare_live(events, "sqlite")
    refused = {_id(events[i]): why for i, why in answer.prepared.refused}
    assert refused == {
        "far": "demand.occurred_at: 0001-01-01T00:00:00+14:00 is outside the dates that can "
        "be stored (years 1 to 9999 in UTC)",
        "e-far": "occurred_at: 0001-01-01T00:00:00+14:00 is outside the dates that can be "
        "stored (years 1 to 9999 in UTC)",
    }
    applied = [e for e in events if _id(e) not in refused]
    assert answer.counts == demand_counts(by_kind(applied)[0])
    assert answer.counts is not None
    assert answer.counts.consumed
    assert answer.counts.failures

    # Labels and recorded changes need the database first: left to apply_events.
    for other in (demand_labelled(demand_id="d-1"), system_changed(purpose="billing")):
        names, values = _values([*events[:5], other], kafka)
        left = decode_values(topics, "sqlite", (names, values))
        assert (left.prepared, left.counts) == (None, None)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_the_worker_answers_what_decode_values_answers_and_ends_when_closed() -> None:
    kafka = KafkaSettings(topic_prefix="t.")
    topics = consumed_topics(kafka)
    events = _events()
    worker = DecodeWorker(topics, "sqlite")
    await worker.start()
    try:
        assert await worker.started()
        assert worker._process is not None
        pid = worker._process.pid
        batches = [_values(events[:30], kafka), _values(events[30:], kafka)]
        answers = await asyncio.gather(*(worker.submit(*b) for b in batches))
        for seq, (batch, answer) in enumerate(zip(batches, answers, strict=True), 1):
            here = decode_values(topics, "sqlite", batch, seq)
            answer.cpu_s, answer.values = here.cpu_s, here.values
            assert answer == here
        assert worker.values == len(events)
    finally:
        await worker.close()
    assert not _alive(pid)
    assert not worker.usable


async def test_a_worker_that_dies_fails_its_batches_and_is_not_used_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kafka = KafkaSettings(topic_prefix="t.")
    worker = DecodeWorker(consumed_topics(kafka), "sqlite")
    await worker.start()
    try:
        assert await worker.started()
        assert worker._process is not None
        pid = worker._process.pid
        await worker.submit(*_values(_events()[:5], kafka))  # up
        os.kill(pid, signal.SIGKILL)
        with caplog.at_level(logging.ERROR, logger="services.metrics.live_decode"):
            with pytest.raises(WorkerGone):
                await worker.submit(*_values(_events()[:5], kafka))
            assert not worker.usable
            with pytest.raises(WorkerGone):
                await worker.submit(*_values(_events()[:5], kafka))
    finally:
        await worker.close()
    assert len([r for r in caplog.records if "worker is gone" in r.getMessage()]) == 1


def _gone_logged(caplog: pytest.LogCaptureFixture) -> int:
    return len([r for r in caplog.records if "worker is gone" in r.getMessage()])


async def _up(worker: DecodeWorker) -> int:
    await worker.start()
    assert await asyncio.wait_for(worker.started(), 60)
    assert worker._process is not None
    return worker._process.pid


async def test_a_worker_that_does_not_answer_in_time_is_killed_and_not_used_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kafka = KafkaSettings(topic_prefix="t.")
    batch = _values(_events()[:5], kafka)
    worker = DecodeWorker(consumed_topics(kafka), "sqlite", answer_timeout_s=1.0)
    try:
        pid = await _up(worker)
        assert (await worker.answer(worker.submit(*batch))).prepared is not None
        os.kill(pid, signal.SIGSTOP)  # alive, but never answers
        with caplog.at_level(logging.ERROR, logger="services.metrics.live_decode"):
            with pytest.raises(WorkerGone):
                # Bounded here too: without the worker's own deadline this would wait for ever.
                await asyncio.wait_for(worker.answer(worker.submit(*batch)), 30)
            assert not worker.usable
            await wait_until(lambda: _gone(pid), timeout=30, what="the stopped worker killed")
            with pytest.raises(WorkerGone):
                await worker.answer(worker.submit(*batch))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        await worker.close()
    assert _gone_logged(caplog) == 1


async def test_an_answer_is_its_own_requests_after_dropped_ones() -> None:
    """T2: a run that ends mid-poll drops the answers to come; the next run's batch, on the
    same worker, gets its own answer."""
    kafka = KafkaSettings(topic_prefix="t.")
    topics = consumed_topics(kafka)
    events = _events()
    batches = [_values(events[n : n + 7], kafka) for n in (0, 7, 14, 21)]
    worker = DecodeWorker(topics, "sqlite")
    try:
        await _up(worker)
        first, *dropped = [worker.submit(*b) for b in batches[:3]]
        for answer in dropped:
            answer.cancel()
        assert (await worker.answer(first)).decoded == list(range(7))
        fourth = await worker.answer(worker.submit(*batches[3]))
        expected = decode_values(topics, "sqlite", batches[3], 4)
        fourth.cpu_s, fourth.values = expected.cpu_s, expected.values
        assert fourth == expected
        assert worker.usable
    finally:
        await worker.close()


async def test_an_answer_out_of_step_with_its_request_ends_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Answers are matched to requests by number, not by position: one lost from the book
    (as if an answer had gone missing) would have the next batch take the one before's
    rows; the worker is given up instead, and the batch decoded in the service."""
    kafka = KafkaSettings(topic_prefix="t.")
    events = _events()
    worker = DecodeWorker(consumed_topics(kafka), "sqlite")
    try:
        pid = await _up(worker)
        worker.submit(*_values(events[:5], kafka))
        worker._waiting.popleft()  # the first request's answer now has no request of its own
        second = worker.submit(*_values(events[5:10], kafka))
        with (
            caplog.at_level(logging.ERROR, logger="services.metrics.live_decode"),
            pytest.raises(WorkerGone),
        ):
            await worker.answer(second)
        assert not worker.usable
        await wait_until(lambda: _gone(pid), timeout=30, what="the worker killed")
    finally:
        await worker.close()
    assert _gone_logged(caplog) == 1


def test_an_answer_must_cover_its_batch_exactly() -> None:
    kafka = KafkaSettings(topic_prefix="t.")
    topics = consumed_topics(kafka)
    names, values = _values(_events()[:6], kafka)
    names[2:2], values[2:2] = [topic_name(kafka, Topic.DEMAND_CLASSIFIED)], [BAD]
    good = decode_values(topics, "sqlite", (names, values), 3)
    assert good.prepared is not None
    live_decode._check(good, 3, 7)
    for seq, sent in ((4, 7), (3, 6), (3, 8)):
        with pytest.raises(WorkerGone):
            live_decode._check(good, seq, sent)
    for bad in (
        dataclasses.replace(good, decoded=good.decoded[:-1]),
        dataclasses.replace(good, decoded=[*good.decoded, 2]),
        dataclasses.replace(good, undecodable=[]),
        dataclasses.replace(good, prepared=dataclasses.replace(good.prepared, decoded=5)),
    ):
        with pytest.raises(WorkerGone):
            live_decode._check(bad, 3, 7)
    with pytest.raises(WorkerGone):
        live_decode._check("nonsense", 3, 7)


async def test_the_worker_runs_the_services_code_whatever_its_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another checkout's code where the service is started: the worker must not run it.
    shadow = tmp_path / "services" / "metrics"
    shadow.mkdir(parents=True)
    for package in (tmp_path / "services", shadow):
        (package / "__init__.py").write_text("")
    (shadow / "live_decode.py").write_text("raise SystemExit('the other checkout')\n")
    monkeypatch.chdir(tmp_path)
    kafka = KafkaSettings(topic_prefix="t.")
    worker = DecodeWorker(consumed_topics(kafka), "sqlite")
    try:
        await worker.start()
        assert await asyncio.wait_for(worker.started(), 60)
        assert worker.module_file == live_decode.__file__
        assert (await worker.answer(worker.submit(*_values(_events()[:5], kafka)))).prepared
    finally:
        await worker.close()


class _NeverUp(DecodeWorker):
    def _command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(600)"]


async def test_a_worker_not_up_by_its_deadline_is_killed_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = _NeverUp(consumed_topics(KafkaSettings()), "sqlite", start_wait_s=0.5)
    try:
        with caplog.at_level(logging.ERROR, logger="services.metrics.live_decode"):
            await worker.start()
            assert worker.starting
            assert worker._process is not None
            pid = worker._process.pid
            assert not await asyncio.wait_for(worker.started(), 30)
            assert not worker.starting
            assert not worker.usable
            await wait_until(lambda: _gone(pid), timeout=30, what="the stuck worker killed")
    finally:
        await worker.close()
    assert _gone_logged(caplog) == 1


async def test_a_batch_the_worker_cannot_decode_is_answered_not_prepared() -> None:
    kafka = KafkaSettings(topic_prefix="t.")
    worker = DecodeWorker(consumed_topics(kafka), "sqlite")
    try:
        await _up(worker)
        # A topic it was not told of: a KeyError in the worker, not a DecodeError.
        odd = await worker.answer(worker.submit(["t.no-such-topic"], [b"{}"]))
        assert (odd.prepared, odd.counts) == (None, None)
        assert worker.usable
        after = await worker.answer(worker.submit(*_values(_events()[:5], kafka)))
        assert after.prepared is not None
    finally:
        await worker.close()


async def test_the_worker_ignores_sigterm_and_ends_with_its_input() -> None:
    kafka = KafkaSettings(topic_prefix="t.")
    worker = DecodeWorker(consumed_topics(kafka), "sqlite")
    try:
        pid = await _up(worker)
        os.kill(pid, signal.SIGTERM)  # as a stop of the whole process group sends it
        answer = await worker.answer(worker.submit(*_values(_events()[:5], kafka)))
        assert answer.prepared is not None
        assert worker.usable
    finally:
        await worker.close()
    assert not _alive(pid)


SERVICE = """
import asyncio, sys
from services.metrics.live_decode import DecodeWorker
from services.metrics.subscriptions import consumed_topics
from shared.kafka.settings import KafkaSettings

async def main():
    await DecodeWorker(consumed_topics(KafkaSettings()), "sqlite").start()
    print("up", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_the_worker_ends_when_its_service_is_killed() -> None:
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVICE, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert service.stdout is not None
        assert await service.stdout.readline() == b"up\n"
        (worker,) = _children(service.pid)
        assert _alive(worker)
        service.kill()  # SIGKILL: nothing of the service runs
        await service.wait()
        await wait_until(lambda: _gone(worker), timeout=30, what="the worker gone")
    finally:
        if service.returncode is None:
            service.kill()
            await service.wait()


async def _gone(pid: int) -> bool:
    return not _alive(pid)


async def _backlog_through_the_service(
    kafka_settings: KafkaSettings,
    database_url: str,
    group: str,
    auth: Any,
    publish: Any,
    all_consumed: Any,
    kill_worker: bool,
    kill_on_answer: int | None = None,
    stop_ahead: bool = False,
    rebalance_ahead: bool = False,
) -> tuple[dict[str, int], list[Any], int, dict[str, float]]:
    """A backlog of 5-record batches with a record that does not decode and one that
    cannot be stored, through the service: the volumes per purpose, the dead letters, the
    records the worker decoded, and the batches sent to the worker by who prepared them
    (/metrics). ``kill_worker``: the worker killed once up, before any batch;
    ``kill_on_answer``: killed when the runner awaits its n-th answer; ``stop_ahead``: the
    run stopped (and restarted by its supervisor) once a poll was taken ahead;
    ``rebalance_ahead``: then, another consumer joins the group (and leaves it once given
    partitions), the poll's last batch applied once its rebalance waits. The polls taken
    ahead are in the batches' counts as "ahead", the polls read again as "refetched", the
    supervisor's restarts as "restarts"."""
    await asyncio.to_thread(upgrade, database_url)
    settings = MetricsSettings(
        kafka=kafka_settings, database_url=database_url, group_id=group, auth=auth.settings,
        publish_debounce_s=0.2, max_batch=5,
    )  # fmt: skip
    demands_topic = topic_name(kafka_settings, Topic.DEMAND_CLASSIFIED)
    events = _events()
    await publish(events[:20])
    await produce_raw(kafka_settings, demands_topic, BAD)
    await publish(events[20:])
    start = DecodeWorker.start

    async def started(worker: DecodeWorker) -> None:
        # The service waits for its worker here (it does not otherwise: a backlog at its
        # start is decoded in process until the worker is up), so the backlog goes to it.
        await start(worker)
        assert await worker.started()
        if kill_worker:
            assert worker._process is not None
            worker._process.kill()

    answer = DecodeWorker.answer
    answers = 0

    async def answer_killing(worker: DecodeWorker, future: Any) -> Any:
        # The worker killed while a poll's batches are in hand: this batch, and any of the
        # poll not answered yet, are decoded in the service.
        nonlocal answers
        answers += 1
        if answers == kill_on_answer:
            assert worker._process is not None
            worker._process.kill()
            await worker._process.wait()
            await wait_until(lambda: _settled(worker), timeout=30, what="the worker gone")
            raise WorkerGone("killed by the test")
        return await answer(worker, future)

    take = live_decode.OffloadingRunner._take_ahead
    ahead = 0
    joining: list[asyncio.Task[None]] = []

    async def take_ahead(runner: live_decode.OffloadingRunner, consumer: Any) -> None:
        nonlocal ahead
        await take(runner, consumer)
        if runner._ahead is not None:
            ahead += 1
            if stop_ahead and ahead == 1:
                runner.stop()  # as a shutdown does: the poll in hand ends after its batch
            if rebalance_ahead and ahead == 1:
                joining.append(asyncio.create_task(_join_and_leave(kafka_settings, group)))
                await wait_until(lambda: _revoke_waits(runner), timeout=60, what="a rebalance")

    refetch = live_decode.OffloadingRunner._refetch
    refetched = 0

    async def counted_refetch(runner: Any, consumer: Any, batches: Any) -> None:
        nonlocal refetched
        refetched += bool(batches)
        await refetch(runner, consumer, batches)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DecodeWorker, "start", started)
        patch.setattr(DecodeWorker, "answer", answer_killing)
        patch.setattr(live_decode.OffloadingRunner, "_take_ahead", take_ahead)
        patch.setattr(live_decode.OffloadingRunner, "_refetch", counted_refetch)
        app = create_app(settings)
        async with running(app) as client:
            await wait_until(lambda: all_consumed(group), timeout=60, what="all consumed")
            decoded = live_decode.workers_cpu()[1]
            purposes = await client.get("/v1/purposes", headers=auth.read_headers)
            exposition = (await client.get("/metrics")).text
    batches = {
        sample.labels["prepared_by"]: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "demandscope_metrics_decode_worker_batches_total"
    }
    batches["ahead"], batches["refetched"] = ahead, refetched
    # Runs of the background tasks that ended (died, or stopped by the test) and were restarted.
    batches["restarts"] = sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "demandscope_background_task_failures_total"
    )
    for task in joining:
        await task
    letters = await read_records(kafka_settings, dlq_name(demands_topic), count=2)
    letters += await read_records(
        kafka_settings, dlq_name(topic_name(kafka_settings, Topic.CASE_EVENTS)), count=1
    )
    return {p["purpose"]: p["volume"] for p in purposes.json()}, letters, decoded, batches


async def _settled(worker: DecodeWorker) -> bool:
    return not worker.usable


def _expected_volumes() -> dict[str, int]:
    volumes: dict[str, int] = {}
    for event in _events():
        if isinstance(event, DemandClassified) and _id(event) != "far":
            volumes[event.purpose] = volumes.get(event.purpose, 0) + 1
    return volumes


def _reasons(letters: Sequence[Any]) -> list[str]:
    return sorted(dict(letter.headers)["dlq_reason"].decode() for letter in letters)


async def test_a_backlog_decoded_by_the_worker_is_applied_once_and_its_bad_records_dead_lettered(
    kafka_settings: KafkaSettings,
    sqlite_url: str,
    unique_group: str,
    auth: Any,
    publish: Any,
    all_consumed: Any,
) -> None:
    volumes, letters, decoded, batches = await _backlog_through_the_service(
        kafka_settings, sqlite_url, unique_group, auth, publish, all_consumed, kill_worker=False
    )
    assert decoded > 0  # the worker took the backlog
    assert batches.get("worker", 0) > 0
    assert batches["ahead"] > 0  # a poll taken ahead, while the one before was applied
    assert volumes == _expected_volumes()
    reasons = _reasons(letters)
    assert len(reasons) == 3
    assert reasons[0].startswith("cannot be stored: demand.occurred_at: 0001-01-01T00:00:00")
    assert reasons[1].startswith("cannot be stored: occurred_at: 0001-01-01T00:00:00")
    assert reasons[2].startswith("undecodable: ")
    # The refused demand's dead letter is the record as it was sent.
    far = next(e for e in _events() if _id(e) == "far")
    (letter,) = [r for r in letters if b"demand.occurred_at" in dict(r.headers)["dlq_reason"]]
    assert decode(type(far), letter.value) == far


async def test_a_backlog_is_applied_once_when_the_worker_is_killed(
    kafka_settings: KafkaSettings,
    sqlite_url: str,
    unique_group: str,
    auth: Any,
    publish: Any,
    all_consumed: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="services.metrics.live_decode"):
        volumes, letters, _, _ = await _backlog_through_the_service(
            kafka_settings, sqlite_url, unique_group, auth, publish, all_consumed, True
        )
    assert volumes == _expected_volumes()
    assert len(_reasons(letters)) == 3
    assert len([r for r in caplog.records if "worker is gone" in r.getMessage()]) == 1


async def test_a_backlog_is_applied_once_when_the_worker_dies_in_the_middle_of_a_poll(
    kafka_settings: KafkaSettings,
    sqlite_url: str,
    unique_group: str,
    auth: Any,
    publish: Any,
    all_consumed: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """T1: the worker killed at the runner's second answer of a poll of several batches:
    the batches it prepared are applied, the others decoded in the service, all once."""
    with caplog.at_level(logging.ERROR, logger="services.metrics.live_decode"):
        volumes, letters, _, batches = await _backlog_through_the_service(
            kafka_settings, sqlite_url, unique_group, auth, publish, all_consumed, False, 2
        )
    assert batches.get("worker", 0) >= 1
    assert batches.get("service", 0) >= 1
    assert volumes == _expected_volumes()
    reasons = _reasons(letters)
    assert len(reasons) == 3
    assert reasons[2].startswith("undecodable: ")
    assert _gone_logged(caplog) == 1


class _Consumer:
    """What _ends_poll uses of an AIOKafkaConsumer."""

    def __init__(self, owned: set[Any]) -> None:
        self.owned = owned
        self.sought: dict[Any, int] = {}

    def assignment(self) -> set[Any]:
        return self.owned

    def seek(self, tp: Any, offset: int) -> None:
        self.sought[tp] = offset


async def test_a_poll_ends_after_the_batch_in_hand_when_a_rebalance_waits() -> None:
    """Finding 3: a rebalance's listener waits for the processing lock; the poll's other
    batches are then left (uncommitted, read again from the first record not applied), not
    applied first, so the listener waits for one batch, as without the worker."""
    from aiokafka.structs import TopicPartition

    from shared.kafka.consumer import RunnerOptions
    from shared.kafka.runtime_metrics import ConsumerMetrics

    kafka = KafkaSettings(topic_prefix="t.")
    runner = live_decode.OffloadingRunner(
        worker=DecodeWorker(consumed_topics(kafka), "sqlite"),
        settings=kafka,
        topics=consumed_topics(kafka),
        handler=object(),
        options=RunnerOptions(group_id="g", client_id="c", source="s", max_batch=2),
        metrics=ConsumerMetrics(CollectorRegistry()),
        producer=object(),
    )
    a0, a1, gone = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
    record = type("Record", (), {})

    def records(offsets: range) -> list[Any]:
        made = []
        for offset in offsets:
            r = record()
            r.offset = offset
            made.append(r)
        return made

    rest = [{a0: records(range(7, 9))}, {a0: records(range(9, 10)), a1: records(range(3, 4))}]
    rest.append({a1: records(range(4, 6)), gone: records(range(0, 2))})
    consumer = _Consumer({a0, a1})
    async with runner.processing:
        assert not runner._ends_poll(consumer, rest)
        rebalance = asyncio.create_task(runner.processing.acquire())
        await wait_until(lambda: _waits(runner), timeout=30, what="the listener waiting")
        assert runner.revoke_pending
        assert runner._ends_poll(consumer, rest)
    await rebalance
    runner.processing.release()
    assert consumer.sought == {a0: 7, a1: 3}  # the partition no longer ours: left alone
    assert not runner.revoke_pending


async def _waits(runner: Any) -> bool:
    return bool(runner.processing.waiting)


@pytest.mark.parametrize("size", [1, 3, 5, 7, 20])
def test_a_poll_is_cut_in_full_batches_each_partitions_records_in_order(size: int) -> None:
    from aiokafka.structs import TopicPartition

    poll = {
        TopicPartition("a", 0): [("a", 0, n) for n in range(7)],
        TopicPartition("a", 1): [("a", 1, n) for n in range(3)],
        TopicPartition("b", 0): [("b", 0, n) for n in range(5)],
    }
    batches = batches_of(poll, size)

    assert all(all(records) for b in batches for records in b.values())  # no empty slice
    sizes = [sum(len(records) for records in b.values()) for b in batches]
    assert all(n == size for n in sizes[:-1])
    assert 0 < sizes[-1] <= size
    assert sum(sizes) == 15
    for tp, records in poll.items():
        assert [r for b in batches for r in b.get(tp, [])] == records


class _Record:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.value = topic, partition, offset, value
        self.key: bytes | None = None
        self.headers: list[Any] = []
        self.timestamp = 0


async def test_dead_letters_are_the_records_values_in_their_order_on_both_paths() -> None:
    """Finding 6: a refused record's dead letter is its value as sent, whether the worker
    or the service decoded it; the worker path sets records aside in the records' order
    (a record that does not decode before a later one too large), as _prepare does."""
    from aiokafka.structs import TopicPartition

    from shared.kafka.consumer import RunnerOptions
    from shared.kafka.runtime_metrics import ConsumerMetrics

    kafka = KafkaSettings(topic_prefix="t.")
    topics = consumed_topics(kafka)
    demands = topic_name(kafka, Topic.DEMAND_CLASSIFIED)
    worker = DecodeWorker(topics, "sqlite")
    runner = live_decode.OffloadingRunner(
        worker=worker,
        settings=kafka,
        topics=topics,
        handler=object(),
        options=RunnerOptions(
            group_id="g", client_id="c", source="s", max_batch=10, max_record_bytes=2000
        ),
        metrics=ConsumerMetrics(CollectorRegistry()),
        producer=object(),
    )
    far = next(e for e in _events() if _id(e) == "far")
    raw = b" " + far.model_dump_json().encode()  # as sent: not as this service would write it
    assert raw != far.model_dump_json().encode()
    tp = TopicPartition(demands, 0)
    records = [
        _Record(demands, 0, 10, BAD),
        _Record(demands, 0, 11, b" " * 3000),  # too large
        _Record(demands, 0, 12, raw),
    ]
    chunk = {tp: records}
    try:
        await _up(worker)
        here = runner._prepare(chunk)
        kept, dead, answer = runner._send(chunk)
        there = await runner._prepared(chunk, kept, dead, answer)
    finally:
        await worker.close()
    for batch in (here, there):
        assert [(r.offset, why.split(":")[0]) for r, why in batch.dead] == [
            (10, "undecodable"),
            (11, "too large"),
        ]
        (message,) = batch.messages
        letter = runner._dead_letter(message, "cannot be stored: ...")
        assert letter.value == raw


async def test_a_prepared_batchs_messages_are_made_only_when_it_is_isolated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch the worker prepared goes to the handler without a message made for each of
    its records (PreparedMessages makes them on demand); one whose handling fails is
    isolated one by one, each record with its own message, its event the record's value."""
    from aiokafka.structs import TopicPartition

    from services.metrics.handler import PreparedMessages
    from shared.kafka.consumer import BatchResult, Inbound, RunnerOptions
    from shared.kafka.runtime_metrics import ConsumerMetrics

    made: list[int] = []

    def counted(*fields: Any) -> Any:
        made.append(fields[2])
        return Inbound(*fields)

    monkeypatch.setattr(live_decode, "Inbound", counted)
    kafka = KafkaSettings(topic_prefix="t.")
    topics = consumed_topics(kafka)
    demands = topic_name(kafka, Topic.DEMAND_CLASSIFIED)
    worker = DecodeWorker(topics, "sqlite")
    runner = live_decode.OffloadingRunner(
        worker=worker,
        settings=kafka,
        topics=topics,
        handler=object(),
        options=RunnerOptions(group_id="g", client_id="c", source="s", max_batch=10),
        metrics=ConsumerMetrics(CollectorRegistry()),
        producer=object(),
    )
    events = varied_demands(3, customers=2, start=T0)
    records = [
        _Record(demands, 0, 20 + n, e.model_dump_json().encode()) for n, e in enumerate(events)
    ]
    chunk = {TopicPartition(demands, 0): records}
    try:
        await _up(worker)
        kept, dead, answer = runner._send(chunk)
        batch = await runner._prepared(chunk, kept, dead, answer)
    finally:
        await worker.close()
    assert isinstance(batch.messages, PreparedMessages)
    assert len(batch.messages) == 3
    assert made == []
    handled: list[tuple[int, Event]] = []

    async def handler(messages: Sequence[Any]) -> BatchResult:
        if isinstance(messages, PreparedMessages):
            raise RuntimeError("a defect met by the whole batch")
        (message,) = messages
        assert isinstance(message.event, Undecoded)
        handled.append((message.offset, message.event.decoded()))
        return BatchResult()

    await runner._handle_with_retries(batch.messages, handler)
    assert made == [20, 21, 22]
    assert handled == list(zip([20, 21, 22], events, strict=True))


# The prefetch across polls: the next poll taken, and sent to the worker, while a backlog
# poll's last batch is applied (OffloadingRunner._take_ahead, handed on by _poll).


class _Fetching:
    """What OffloadingRunner uses of an AIOKafkaConsumer: the polls aiokafka has fetched
    (each getmany takes the next), the committed offsets, and a log of the calls."""

    def __init__(self, owned: set[Any], polls: Sequence[dict[Any, list[Any]]]) -> None:
        self.owned = owned
        self.polls = list(polls)
        self.committed_at: dict[Any, int] = {}
        self.sought: dict[Any, int] = {}
        self.highwater_at: dict[Any, int] = {}
        self.position_at: dict[Any, int] = {}
        self.log: list[str] = []
        self._subscription = type("Subscription", (), {"reassignment_in_progress": False})()

    def assignment(self) -> set[Any]:
        return self.owned

    def resume(self, *partitions: Any) -> None:
        self.log.append("resume")

    def seek(self, tp: Any, offset: int) -> None:
        self.sought[tp] = offset

    async def committed(self, tp: Any) -> int | None:
        return self.committed_at.get(tp)

    def highwater(self, tp: Any) -> int | None:
        return self.highwater_at.get(tp)

    async def position(self, tp: Any) -> int:
        return self.position_at[tp]

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        self.log.append(f"getmany {timeout_ms}")
        return self.polls.pop(0) if self.polls else {}


def _prefetching(kafka: KafkaSettings, consumer: _Fetching) -> tuple[Any, DecodeWorker]:
    """An OffloadingRunner of batches of 10 whose batches are applied into consumer.log
    (their offsets) instead of a database, and that logs who decoded each batch."""
    from shared.kafka.consumer import RunnerOptions
    from shared.kafka.runtime_metrics import ConsumerMetrics

    worker = DecodeWorker(consumed_topics(kafka), "sqlite")
    runner: Any = live_decode.OffloadingRunner(
        worker=worker,
        settings=kafka,
        topics=consumed_topics(kafka),
        handler=object(),
        options=RunnerOptions(group_id="g", client_id="c", source="s", max_batch=10),
        metrics=ConsumerMetrics(CollectorRegistry()),
        producer=object(),
    )
    prepare, count = runner._prepare, runner._count

    def prepared_here(chunk: Any) -> Any:
        consumer.log.append("here")
        return prepare(chunk)

    def counted(prepared_by: str) -> None:
        consumer.log.append(f"by {prepared_by}")
        count(prepared_by)

    async def handle(messages: Sequence[Any], handler: Any = None) -> Any:
        events = [m.event for m in messages]
        assert all(isinstance(e, (DemandClassified, Undecoded)) for e in events)
        consumer.log.append(f"apply {messages[0].offset}-{messages[-1].offset}")
        return None

    async def finish(*args: Any) -> None:
        return None

    runner._prepare, runner._count = prepared_here, counted
    runner._handle_with_retries, runner._finish = handle, finish
    return runner, worker


def _demand_records(kafka: KafkaSettings, offsets: range) -> list[Any]:
    demands = topic_name(kafka, Topic.DEMAND_CLASSIFIED)
    events = varied_demands(offsets.stop, customers=9, start=T0, case_refs=True)
    return [_Record(demands, 0, n, events[n].model_dump_json().encode()) for n in offsets]


async def test_the_next_poll_is_taken_and_sent_to_the_worker_while_the_last_batch_is_applied() -> (
    None
):
    """A backlog poll's last batch: the next poll is taken (getmany without a wait) before
    it is applied; the run loop gets that poll from _poll, in its generation, and every batch
    of it, the first too, comes from the worker. A poll of one batch takes nothing ahead."""
    from aiokafka.structs import TopicPartition

    kafka = KafkaSettings(topic_prefix="t.")
    tp = TopicPartition(topic_name(kafka, Topic.DEMAND_CLASSIFIED), 0)
    poll1 = {tp: _demand_records(kafka, range(0, 20))}
    poll2 = {tp: _demand_records(kafka, range(20, 40))}
    poll3 = {tp: _demand_records(kafka, range(40, 45))}
    consumer = _Fetching({tp}, [poll2, poll3])
    runner, worker = _prefetching(kafka, consumer)
    try:
        await _up(worker)
        await runner._process_task(consumer, poll1, object())
        assert consumer.log == [
            "resume",
            *("here", "apply 0-9"),
            "getmany 0",  # the next poll taken before the last batch is applied
            *("by worker", "apply 10-19"),
        ]
        consumer.log.clear()
        polled, generation = await runner._poll(consumer)
        assert (polled, generation) == (poll2, runner.generation)
        await runner._process_task(consumer, polled, object())
        assert consumer.log == [
            "resume",
            *("by worker", "apply 20-29"),  # its first batch from the worker too
            "getmany 0",
            *("by worker", "apply 30-39"),
        ]
        consumer.log.clear()
        # Taken ahead, one batch (the head reached): no resume (the pause kept for a
        # consumer near the head), nothing taken ahead of it.
        polled, _ = await runner._poll(consumer)
        assert polled == poll3
        await runner._process_task(consumer, polled, object())
        assert consumer.log == ["by worker", "apply 40-44"]
        consumer.log.clear()
        assert runner.polls_ahead == 2
        # The next poll is the run loop's own (waits for records), decoded here.
        consumer.polls = [{tp: _demand_records(kafka, range(45, 50))}]
        polled, _ = await runner._poll(consumer)
        await runner._process_task(consumer, polled, object())
        assert consumer.log == [f"getmany {runner.options.poll_timeout_ms}", "here", "apply 45-49"]
    finally:
        await worker.close()


async def test_the_lag_counts_a_poll_taken_ahead() -> None:
    """The take-ahead's getmany moves the position past the poll it holds: the lag gauge
    counts that poll's records as not applied yet (from its first offset), not only those
    past the position; once it is applied, the position alone."""
    from aiokafka.structs import TopicPartition

    kafka = KafkaSettings(topic_prefix="t.")
    tp = TopicPartition(topic_name(kafka, Topic.DEMAND_CLASSIFIED), 0)
    consumer = _Fetching({tp}, [{tp: _demand_records(kafka, range(20, 40))}])
    consumer.highwater_at[tp] = 45
    consumer.position_at[tp] = 40  # past the poll taken ahead, as aiokafka's getmany leaves it
    runner, worker = _prefetching(kafka, consumer)

    def lag() -> float:
        value: float = runner.metrics.lag.labels(*runner.lag_labels(tp))._value.get()
        return value

    try:
        await _up(worker)
        await runner._process_task(consumer, {tp: _demand_records(kafka, range(0, 20))}, object())
        assert runner._ahead is not None
        await runner._export_lag(consumer)
        assert lag() == 25  # 20-44: the poll held ahead and the 5 past it
        polled, _ = await runner._poll(consumer)
        await runner._process_task(consumer, polled, object())
        assert runner._ahead is None
        runner._lag_exported_at = None  # the next export now, not an interval later
        await runner._export_lag(consumer)
        assert lag() == 5
        # Held by another run's consumer (a run that ended): not this consumer's lag.
        consumer.polls = [{tp: _demand_records(kafka, range(20, 40))}]
        await runner._process_task(consumer, {tp: _demand_records(kafka, range(0, 20))}, object())
        other = _Fetching({tp}, [])
        other.highwater_at[tp], other.position_at[tp] = 45, 40
        runner._lag_exported_at = None
        await runner._export_lag(other)
        assert lag() == 5
    finally:
        await worker.close()


@pytest.mark.parametrize(
    "why", ["a rebalance begun", "the worker gone", "aiokafka's flag renamed", "no subscription"]
)
async def test_nothing_is_taken_ahead_during_a_rebalance_or_without_the_worker(why: str) -> None:
    """A rebalance begun (its listener not waiting for the lock yet): aiokafka's getmany
    would wait for the new assignment, whose listener waits for the lock the poll holds.
    The worker gone during the poll: the next poll is the run loop's, decoded here. An
    aiokafka whose private names differ: nothing taken ahead, and the poll applied whole."""
    from aiokafka.structs import TopicPartition

    kafka = KafkaSettings(topic_prefix="t.")
    tp = TopicPartition(topic_name(kafka, Topic.DEMAND_CLASSIFIED), 0)
    consumer = _Fetching({tp}, [{tp: _demand_records(kafka, range(20, 40))}])
    runner, worker = _prefetching(kafka, consumer)
    handle = runner._handle_with_retries

    async def first_then_change(messages: Sequence[Any], handler: Any = None) -> Any:
        if messages[0].offset == 0:
            if why == "a rebalance begun":
                consumer._subscription.reassignment_in_progress = True
            elif why == "aiokafka's flag renamed":
                consumer._subscription = object()
            elif why == "no subscription":
                del consumer._subscription
            else:
                assert worker._process is not None
                worker._process.kill()
                await wait_until(lambda: _settled(worker), timeout=30, what="the worker gone")
        return await handle(messages, handler)

    runner._handle_with_retries = first_then_change
    try:
        await _up(worker)
        await runner._process_task(consumer, {tp: _demand_records(kafka, range(0, 20))}, object())
    finally:
        await worker.close()
    assert not any(call.startswith("getmany") for call in consumer.log)
    assert runner._ahead is None
    assert runner.polls_ahead == 0
    assert consumer.log[-1] == "apply 10-19"  # the poll's last batch applied


async def test_a_poll_taken_ahead_is_dropped_by_a_rebalance_and_read_again() -> None:
    """A rebalance after the poll was taken ahead (its listener bumps the generation): _poll
    hands the poll on in the generation it was taken in, so the run loop does not apply it
    but seeks its partitions back to their committed offsets (_refetch). A poll taken ahead
    by another run's consumer (a run that ended) is never handed on."""
    from aiokafka.structs import TopicPartition

    kafka = KafkaSettings(topic_prefix="t.")
    tp = TopicPartition(topic_name(kafka, Topic.DEMAND_CLASSIFIED), 0)
    poll2 = {tp: _demand_records(kafka, range(20, 40))}
    consumer = _Fetching({tp}, [poll2])
    consumer.committed_at[tp] = 20
    runner, worker = _prefetching(kafka, consumer)
    try:
        await _up(worker)
        await runner._process_task(consumer, {tp: _demand_records(kafka, range(0, 20))}, object())
        assert runner.polls_ahead == 1
        runner.generation += 1  # what the rebalance's listener does, the lock held
        polled, generation = await runner._poll(consumer)
        assert polled == poll2
        assert generation != runner.generation  # so run() calls _refetch, not _process
        await runner._refetch(consumer, polled)
        assert consumer.sought == {tp: 20}

        await runner._process_task(consumer, {tp: _demand_records(kafka, range(0, 20))}, object())
        assert runner._ahead is None  # nothing left to take
        consumer.polls = [poll2]
        await runner._process_task(consumer, {tp: _demand_records(kafka, range(0, 20))}, object())
        assert runner._ahead is not None
        other = _Fetching({tp}, [])
        polled, _ = await runner._poll(other)  # another run's consumer
        assert polled == {}
        assert other.log == [f"getmany {runner.options.poll_timeout_ms}"]
    finally:
        await worker.close()


async def test_a_poll_taken_ahead_that_is_handed_in_part_is_prepared_afresh() -> None:
    """The poll taken ahead is recognised by its cut (ahead.cut == _cut(chunks)): handed
    a part of it (a partition dropped, as _process drops one no longer owned), its batches
    are not the worker's answers to the poll's batches but prepared afresh, so no batch is
    applied with another's decoded events."""
    from aiokafka.structs import TopicPartition

    kafka = KafkaSettings(topic_prefix="t.")
    demands = topic_name(kafka, Topic.DEMAND_CLASSIFIED)
    tp0, tp1 = TopicPartition(demands, 0), TopicPartition(demands, 1)
    kept = [_Record(demands, 1, r.offset, r.value) for r in _demand_records(kafka, range(0, 20))]
    # The dropped partition's records come first in the poll, so its batch is the first
    # answer the worker has for it.
    poll2 = {tp0: _demand_records(kafka, range(20, 30)), tp1: kept}
    consumer = _Fetching({tp0, tp1}, [poll2])
    runner, worker = _prefetching(kafka, consumer)
    applied: list[Any] = []
    handle = runner._handle_with_retries

    async def keep(messages: Sequence[Any], handler: Any = None) -> Any:
        applied.extend(messages)
        return await handle(messages, handler)

    runner._handle_with_retries = keep
    try:
        await _up(worker)
        await runner._process_task(consumer, {tp0: _demand_records(kafka, range(0, 20))}, object())
        assert runner._ahead is not None
        polled, generation = await runner._poll(consumer)
        assert (polled, generation) == (poll2, runner.generation)
        consumer.log.clear()
        applied.clear()
        consumer.polls = []
        await runner._process_task(consumer, {tp1: polled[tp1]}, object())
    finally:
        await worker.close()
    assert consumer.log[:3] == ["resume", "here", "apply 0-9"]  # sent afresh, first here
    assert [
        (m.partition, m.offset, m.event.decoded() if isinstance(m.event, Undecoded) else m.event)
        for m in applied
    ] == [(1, r.offset, decode(DemandClassified, r.value)) for r in kept]


async def _answered(worker: DecodeWorker) -> bool:
    return not worker._waiting


async def test_a_poll_taken_ahead_is_decoded_here_when_the_worker_dies() -> None:
    """The worker killed once the next poll was sent to it, before it answered: that
    poll's batches are decoded in the service, as _prepare decodes them, in order."""
    from aiokafka.structs import TopicPartition

    kafka = KafkaSettings(topic_prefix="t.")
    tp = TopicPartition(topic_name(kafka, Topic.DEMAND_CLASSIFIED), 0)
    poll2 = {tp: _demand_records(kafka, range(20, 40))}
    consumer = _Fetching({tp}, [poll2])
    runner, worker = _prefetching(kafka, consumer)
    applied: list[Any] = []
    handle, take = runner._handle_with_retries, runner._take_ahead

    async def keep(messages: Sequence[Any], handler: Any = None) -> Any:
        applied.extend(messages)
        return await handle(messages, handler)

    async def take_then_kill(polled_by: Any) -> None:
        # Stopped before the next poll reaches it (the poll's own batches answered), so it
        # answers none of it; then killed. (Once: the next poll's take finds it gone.)
        if worker.usable:
            await wait_until(lambda: _answered(worker), timeout=30, what="the poll answered")
            os.kill(pid, signal.SIGSTOP)
            await take(polled_by)
            os.kill(pid, signal.SIGKILL)
        else:
            await take(polled_by)

    runner._handle_with_retries, runner._take_ahead = keep, take_then_kill
    try:
        pid = await _up(worker)
        await runner._process_task(consumer, {tp: _demand_records(kafka, range(0, 20))}, object())
        assert consumer.log[-3:] == ["getmany 0", "by worker", "apply 10-19"]
        consumer.log.clear()
        applied.clear()
        polled, _ = await runner._poll(consumer)
        await runner._process_task(consumer, polled, object())
    finally:
        await worker.close()
    assert consumer.log == [
        "resume",
        *("by service", "here", "apply 20-29"),
        *("by service", "here", "apply 30-39"),
    ]
    records = poll2[tp]
    assert [(m.offset, m.event) for m in applied] == [
        (r.offset, decode(DemandClassified, r.value)) for r in records
    ]


async def test_a_run_stopped_with_a_poll_taken_ahead_leaves_it_to_be_read_again(
    kafka_settings: KafkaSettings,
    sqlite_url: str,
    unique_group: str,
    auth: Any,
    publish: Any,
    all_consumed: Any,
) -> None:
    """The run stopped while a poll taken ahead is with the worker: nothing of that poll is
    committed; the run its supervisor starts again reads it from the committed offsets.
    Every record applied once, each dead letter written once."""
    volumes, letters, _, batches = await _backlog_through_the_service(
        kafka_settings, sqlite_url, unique_group, auth, publish, all_consumed, False,
        stop_ahead=True,
    )  # fmt: skip
    assert batches["ahead"] >= 1
    assert volumes == _expected_volumes()
    assert len(letters) == 3  # read once all was consumed: none twice
    assert len(_reasons(letters)) == 3


async def _revoke_waits(runner: live_decode.OffloadingRunner) -> bool:
    return runner.revoke_pending


async def _join_and_leave(kafka: KafkaSettings, group: str) -> None:
    """Another member of ``group``: joins (a rebalance), takes nothing, commits nothing,
    and leaves once given partitions (another rebalance)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    joiner = AIOKafkaConsumer(
        *consumed_topics(kafka),
        **kafka.client_options(),
        group_id=group,
        enable_auto_commit=False,
        partition_assignment_strategy=(RoundRobinPartitionAssignor,),
    )
    await joiner.start()
    try:

        async def assigned() -> bool:
            return bool(joiner.assignment())

        await wait_until(assigned, timeout=60, what="the joiner given partitions")
    finally:
        await joiner.stop()


async def test_a_poll_taken_ahead_when_a_rebalance_begins_is_read_again_from_the_committed(
    kafka_settings: KafkaSettings,
    sqlite_url: str,
    unique_group: str,
    auth: Any,
    publish: Any,
    all_consumed: Any,
) -> None:
    """A consumer joins the group while a poll taken ahead is with the worker: the poll in
    hand ends after its batch, the rebalance runs, and the poll taken ahead is not applied
    but read again from the committed offsets (_refetch). Every record applied once, each
    dead letter written once."""
    volumes, letters, _, batches = await _backlog_through_the_service(
        kafka_settings, sqlite_url, unique_group, auth, publish, all_consumed, False,
        rebalance_ahead=True,
    )  # fmt: skip
    assert batches["ahead"] >= 1
    assert batches["refetched"] >= 1  # the poll taken ahead, dropped
    # The consumer never died: _refetch runs while the rebalance still installs its
    # assignment, and a seek on a partition gone meanwhile raised IllegalStateError.
    assert batches["restarts"] == 0
    assert volumes == _expected_volumes()
    assert len(letters) == 3


async def test_a_worker_closed_while_it_starts_is_killed_not_waited_for() -> None:
    # Its imports take most of a second; a worker that has said it is ready ends on end of
    # file with status 0 (the test above), one still starting is killed (-SIGKILL).
    worker = DecodeWorker(consumed_topics(KafkaSettings()), "sqlite")
    await worker.start()
    assert worker.starting
    assert worker._process is not None
    process = worker._process
    await worker.close()
    assert process.returncode == -signal.SIGKILL
    assert not worker.usable


async def test_a_ready_worker_closed_ends_on_its_input() -> None:
    worker = DecodeWorker(consumed_topics(KafkaSettings()), "sqlite")
    await worker.start()
    assert await worker.started()
    assert worker._process is not None
    process = worker._process
    await worker.close()
    assert process.returncode == 0


class _NoInterpreter(DecodeWorker):
    def _command(self) -> list[str]:
        return ["/nonexistent/python-for-the-decoding-worker"]


async def test_a_worker_that_cannot_be_started_leaves_the_decoding_to_the_service(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = _NoInterpreter(consumed_topics(KafkaSettings()), "sqlite")
    with caplog.at_level(logging.ERROR, logger="services.metrics.live_decode"):
        await worker.start()  # no exception: the service starts and decodes itself
    try:
        assert not await asyncio.wait_for(worker.started(), 5)
        assert not worker.usable
    finally:
        await worker.close()
    assert sum("could not be started" in r.getMessage() for r in caplog.records) == 1
