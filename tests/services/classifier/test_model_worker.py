"""The model's predictions in a worker process (services/classifier/model_worker.py): the
same predictions as in process, bit for bit; only the version a batch is stamped with; a
worker killed mid-stream leaves every demand classified exactly once, predicted here."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Counter as PromCounter

from services.classifier.config import ClassifierSettings
from services.classifier.live_model import in_use
from services.classifier.main import create_app
from services.classifier.model.text_model import Prediction
from services.classifier.model_worker import ModelWorker, PollPredictions, PredictingRunner
from services.classifier.training import TrainedModel
from shared.events import DemandClassified
from shared.kafka.codec import encode
from shared.kafka.consumer import Inbound
from shared.kafka.read_to_end import read_all
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.factories import demand_received
from tests.support.kafka_io import committed_to_end, publish_events
from tests.support.waiting import wait_until

TEXTS = (
    "I want to pay my bill by direct debit",
    "where is my engineer, still waiting",
    "I am moving house next month",
    "my broadband keeps dropping",
    "you charged me twice this month",
    "   ",
    "İ ς £ \u2028 caf\u00e9\u2019s \u201cquotes\u201d \x00 nul",
    "no no no not been fixed still not working after three visits",
)


class _Record:
    """What the runner hands over of a fetched record (aiokafka's ConsumerRecord)."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.value = topic, partition, offset, value


def _records(texts: list[str], topic: str = "demands") -> list[_Record]:
    return [
        _Record(
            topic, 0, i, encode(demand_received(id=f"d-{i}", text=t), topic=topic, source="t").value
        )
        for i, t in enumerate(texts)
    ]


def _inbound(record: _Record) -> Inbound[Any]:
    return Inbound(record.topic, record.partition, record.offset, None, None, [], 0)


async def _held(worker: ModelWorker, version: str) -> None:
    await wait_until(
        lambda: asyncio.sleep(0, worker.holds),
        accept=lambda v: v == version,
        timeout=60,
        what=f"the worker to hold {version}",
    )


async def test_the_workers_predictions_are_the_models_bit_for_bit(
    seed_model: TrainedModel,
) -> None:
    texts = [*TEXTS, *(f"{t} again {n}" for n in range(300) for t in TEXTS[:5])]
    expected = seed_model.model.predict_batch(texts)
    polls = PromCounter("t_polls", "", ["predicted_by"], registry=None)
    worker = ModelWorker(polls=polls)
    await worker.start()
    try:
        model = in_use("v1", seed_model.model)
        worker.use(model)
        await _held(worker, "v1")
        predictions = PollPredictions(worker, "demands")
        records = _records(texts)
        # A value that does not decode: not predicted there (the runner sets it aside).
        records.append(_Record("demands", 0, len(records), b"{not json"))
        # Records of another topic are not sent (the ids are the demands' alone).
        predictions.current = predictions.ask("v1", [*records, *_records(["x"], "cases")])
        assert predictions.current is not None
        answered = await predictions.answered(model, [_inbound(r) for r in records])
    finally:
        await worker.close()
    assert answered is not None
    assert answered[-1] is None
    got = answered[:-1]
    assert all(type(p) is Prediction for p in got)
    assert got == expected  # every float equal (==), not close
    assert [p.alternatives for p in got if p] == [p.alternatives for p in expected]
    assert worker.cpu_s > 0
    assert worker.texts == len(records)


async def test_an_answer_of_another_version_is_not_used(seed_model: TrainedModel) -> None:
    polls = PromCounter("t_polls2", "", ["predicted_by"], registry=None)
    worker = ModelWorker(polls=polls)
    await worker.start()
    try:
        worker.use(in_use("v1", seed_model.model))
        await _held(worker, "v1")
        predictions = PollPredictions(worker, "demands")
        records = _records(list(TEXTS[:3]))
        demands = [_inbound(r) for r in records]
        predictions.current = predictions.ask("v1", records)
        # A swap since the poll was asked: the batch is stamped v2, so v1's answer is
        # dropped and the demands are predicted in the service with v2.
        assert await predictions.answered(in_use("v2", seed_model.model), demands) is None
        assert await predictions.answered(in_use("v1", seed_model.model), demands) is not None
        # Nothing is asked of the worker for a version it does not hold.
        assert predictions.ask("v2", records) is None
        # A record the poll did not ask about: the whole batch is predicted here.
        stray = [*demands, _inbound(_Record("demands", 1, 0, b""))]
        assert await predictions.answered(in_use("v1", seed_model.model), stray) is None
    finally:
        await worker.close()
    assert polls.labels(predicted_by="service")._value.get() == 1
    assert polls.labels(predicted_by="worker")._value.get() == 1


async def test_a_killed_worker_fails_its_poll_and_is_not_asked_again(
    seed_model: TrainedModel, caplog: pytest.LogCaptureFixture
) -> None:
    worker = ModelWorker()
    await worker.start()
    try:
        model = in_use("v1", seed_model.model)
        worker.use(model)
        await _held(worker, "v1")
        predictions = PollPredictions(worker, "demands")
        records = _records(list(TEXTS) * 200)
        predictions.current = predictions.ask("v1", records)
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        assert await predictions.answered(model, [_inbound(r) for r in records]) is None
        assert not worker.usable
        assert predictions.ask("v1", records) is None
    finally:
        await worker.close()
    assert sum("the model worker is gone" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.integration
async def test_a_worker_killed_mid_stream_leaves_every_demand_classified_exactly_once(
    classifier_settings: Callable[..., ClassifierSettings],
    kafka_settings: KafkaSettings,
    unique_group: str,
    tmp_path: Path,
) -> None:
    demands = 6_000
    ids = [f"D-{i}" for i in range(demands)]
    settings = classifier_settings(max_batch=20, model_worker=True)
    app = create_app(settings)
    demands_topic = topic_name(kafka_settings, Topic.DEMAND_RECEIVED)
    async with app.router.lifespan_context(app):
        components = app.state.components
        worker = components.model_worker
        assert isinstance(worker, ModelWorker)
        version = components.model.current.version
        # The backlog comes once the worker holds the model (its start takes seconds).
        await wait_until(
            lambda: asyncio.sleep(0, worker.ready_for(version)),
            timeout=120,
            what="the worker to hold the model in use",
        )
        await publish_events(
            kafka_settings,
            [
                demand_received(id=d, customer_ref=f"C-{i % 300}", text=TEXTS[i % 5])
                for i, d in enumerate(ids)
            ],
        )

        def polls(by: str) -> float:
            name = "demandscope_classifier_model_worker_polls_total"
            return components.registry.get_sample_value(name, {"predicted_by": by}) or 0.0

        await wait_until(
            lambda: asyncio.sleep(0, polls("worker")),
            accept=lambda n: n >= 2,
            timeout=120,
            what="polls predicted by the worker",
        )
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        # Mid-stream: the backlog is not through yet.
        assert not await committed_to_end(kafka_settings, unique_group, [demands_topic])
        await wait_until(
            lambda: committed_to_end(kafka_settings, unique_group, [demands_topic]),
            timeout=180,
            what="every demand classified after the worker's death",
        )
        assert not worker.usable  # the service carried on without it
        assert isinstance(components.consumer.runner, PredictingRunner)
    classified = await read_all(
        kafka_settings, [topic_name(kafka_settings, Topic.DEMAND_CLASSIFIED)], timeout=60
    )
    counts = Counter(
        DemandClassified.model_validate_json(r.value or b"").demand.id for r in classified
    )
    assert set(counts) == set(ids)  # no loss
    assert max(counts.values()) == 1  # no duplicate


class _NoInterpreter(ModelWorker):
    def _command(self) -> list[str]:
        return ["/nonexistent/python-for-the-model-worker"]


async def test_a_worker_that_cannot_be_started_leaves_the_predictions_to_the_service(
    seed_model: TrainedModel, caplog: pytest.LogCaptureFixture
) -> None:
    worker = _NoInterpreter()
    await worker.start()  # no exception: the service starts and predicts itself
    try:
        model = in_use("v1", seed_model.model)
        worker.use(model)
        assert not worker.usable
        assert PollPredictions(worker, "demands").ask("v1", _records(list(TEXTS))) is None
    finally:
        await worker.close()
    assert sum("could not be started" in r.getMessage() for r in caplog.records) == 1


def test_the_worker_is_off_unless_asked_for() -> None:
    # It costs a core and a copy of the model (~300 MB): a deployment opts in.
    assert ClassifierSettings().model_worker is False
