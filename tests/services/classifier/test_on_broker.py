"""The classifier on the real broker: context rules, restart, learning, dead letters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.classifier.config import ClassifierSettings
from services.classifier.main import create_app
from shared.events import DemandClassified, Event
from shared.events.case import CaseEventType
from shared.events.classification import DemandType
from shared.kafka.codec import header
from shared.kafka.settings import KafkaSettings
from shared.topics import TOPIC_OF_EVENT, Topic, dlq_name, topic_name
from tests.services.classifier.conftest import ApiKeys
from tests.support.apps import running
from tests.support.factories import case_event, demand_labelled, demand_received
from tests.support.kafka_io import produce_raw, publish_events, read_records

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


async def publish(settings: KafkaSettings, topic: Topic, *events: Event) -> None:
    assert all(TOPIC_OF_EVENT[type(event)] is topic for event in events)
    await publish_events(settings, events)


class Outputs:
    """Reads demand.classified and the context changelog, counting what it has seen."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self.classified: dict[str, DemandClassified] = {}
        self.context_records = 0

    async def classified_count(self, count: int) -> dict[str, DemandClassified]:
        records = await read_records(
            self._settings, topic_name(self._settings, Topic.DEMAND_CLASSIFIED), count=count
        )
        for record in records:
            event = DemandClassified.model_validate_json(record.value)
            self.classified[event.demand.id] = event
        return self.classified

    async def context_count(self, count: int) -> None:
        records = await read_records(
            self._settings, topic_name(self._settings, Topic.CLASSIFIER_CONTEXT), count=count
        )
        self.context_records = len(records)


@asynccontextmanager
async def classifier(settings: ClassifierSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings)) as client:
        yield client


async def test_context_rules_name_the_earlier_case_or_demand_and_survive_a_restart(
    kafka_settings: KafkaSettings, classifier_settings: Callable[..., ClassifierSettings]
) -> None:
    outputs = Outputs(kafka_settings)
    async with classifier(classifier_settings()):
        # A: an open case about moving home; B: an engineer visit, done and fulfilled.
        await publish(
            kafka_settings,
            Topic.CASE_EVENTS,
            case_event(
                customer_ref="A",
                case_ref="K-A",
                type=CaseEventType.OPENED,
                purpose="moving home",
                occurred_at=datetime.now(UTC) - timedelta(seconds=5),
            ),
        )
        await outputs.context_count(1)  # the case is in A's context before A calls
        await publish(
            kafka_settings,
            Topic.DEMAND_RECEIVED,
            demand_received(
                id="A-1",
                customer_ref="A",
                text="I am moving house next month and need to move my energy account",
            ),
            demand_received(
                id="B-1", customer_ref="B", text="I want to book an engineer visit", case_ref="K-B"
            ),
        )
        first = await outputs.classified_count(2)
        await publish(
            kafka_settings,
            Topic.CASE_EVENTS,
            case_event(
                customer_ref="B",
                case_ref="K-B",
                type=CaseEventType.FULFILLED,
                occurred_at=datetime.now(UTC) - timedelta(seconds=5),
            ),
        )
        await outputs.context_count(4)  # A twice, B twice (its demand, then the fulfilment)
        await publish(
            kafka_settings,
            Topic.DEMAND_RECEIVED,
            demand_received(
                id="B-2", customer_ref="B", text="I would like to book an engineer to fix my boiler"
            ),
        )
        second = await outputs.classified_count(3)

    chasing = first["A-1"]
    assert (chasing.demand_type, chasing.failure_kind, chasing.method.value) == (
        DemandType.FAILURE,
        "progress_chasing",
        "context",
    )
    assert chasing.caused_by is not None
    assert (chasing.caused_by.kind, chasing.caused_by.ref) == ("case", "K-A")
    assert first["B-1"].demand_type is DemandType.VALUE
    assert first["B-1"].caused_by is None
    repeat = second["B-2"]
    assert (repeat.demand_type, repeat.failure_kind) == (DemandType.FAILURE, "repeat")
    assert repeat.caused_by is not None
    assert (repeat.caused_by.kind, repeat.caused_by.ref) == ("demand", "B-1")

    # A new instance (same group) rebuilds the context from the changelog: A is still chasing
    # and B's history holds each demand exactly once.
    async with classifier(classifier_settings()) as client:
        await publish(
            kafka_settings,
            Topic.DEMAND_RECEIVED,
            demand_received(
                id="A-2", customer_ref="A", text="we are moving home soon, can you move my account"
            ),
        )
        after = await outputs.classified_count(4)
        app = client._transport.app  # type: ignore[attr-defined]
        context = app.state.components.context
        b_state = context.get("B")
        assert b_state is not None
        assert [d.demand_id for d in b_state.demands] == ["B-1", "B-2"]
        a_state = context.get("A")
        assert a_state is not None
        assert [d.demand_id for d in a_state.demands] == ["A-1", "A-2"]
    again = after["A-2"]
    assert again.caused_by is not None
    assert again.caused_by.ref == "K-A"
    assert again.failure_kind == "progress_chasing"
    assert len(after) == 4


async def test_a_label_changes_the_next_models_answer(
    kafka_settings: KafkaSettings,
    classifier_settings: Callable[..., ClassifierSettings],
    api_keys: ApiKeys,
    general_corpus_csv: Path,
) -> None:
    text = "zorblax quantum frobnicator"
    outputs = Outputs(kafka_settings)
    # The retraining on a small general corpus: the shipped one is most of its CPU, and the
    # label's effect on the next model is what is checked.
    async with classifier(classifier_settings(general_corpus=general_corpus_csv)) as client:
        await publish(
            kafka_settings,
            Topic.DEMAND_RECEIVED,
            demand_received(id="Z-1", customer_ref="Z", text=text),
        )
        before = (await outputs.classified_count(1))["Z-1"]
        assert before.purpose != "complaint"
        # The reviewer's label carries no text: the classifier remembers what it saw.
        await publish(
            kafka_settings,
            Topic.DEMAND_LABELS,
            demand_labelled(
                id="L-1",
                demand_id="Z-1",
                demand_type=DemandType.FAILURE,
                failure_kind="not_done_right",
                purpose="complaint",
                labelled_by="agent-7",
            ),
        )
        await outputs.context_count(2)  # Z's demand, then its relabelled purpose
        response = await client.post("/v1/retrain", headers=api_keys.header(api_keys.operator))
        assert response.status_code == 200
        new_version = response.json()["model_version"]
        assert new_version != before.model_version
        await publish(
            kafka_settings,
            Topic.DEMAND_RECEIVED,
            demand_received(id="Z-2", customer_ref="Y", text=text),
        )
        after = (await outputs.classified_count(2))["Z-2"]

    assert after.model_version == new_version
    assert after.purpose == "complaint"
    assert after.demand_type is DemandType.FAILURE


async def test_poison_messages_go_to_the_dead_letter_topic_and_the_stream_goes_on(
    kafka_settings: KafkaSettings, classifier_settings: Callable[..., ClassifierSettings]
) -> None:
    demands = topic_name(kafka_settings, Topic.DEMAND_RECEIVED)
    outputs = Outputs(kafka_settings)
    async with classifier(classifier_settings()):
        await produce_raw(kafka_settings, demands, b"not json", key=b"P")
        await produce_raw(kafka_settings, demands, b'{"id": "no-fields"}', key=b"P")
        await publish(
            kafka_settings,
            Topic.DEMAND_RECEIVED,
            demand_received(id="OK-1", customer_ref="P", text="pay my bill please"),
        )
        classified = await outputs.classified_count(1)
        dead = await read_records(kafka_settings, dlq_name(demands), count=2)

    assert list(classified) == ["OK-1"]
    assert sorted(r.value for r in dead) == [b"not json", b'{"id": "no-fields"}']
    reasons = [header(list(r.headers), "dlq_reason") or "" for r in dead]
    assert all(reason.startswith("undecodable") for reason in reasons)
