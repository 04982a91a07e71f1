"""IntakeService.ingest of one event (a single request's own path, ``_ingest_one``) does what
the path for many does with it: the same claim, record, confirmation or release, outcome
or error, and counters, for every claim and with the broker refusing or not."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.intake.db.repository import EventKey
from services.intake.ledger import Claim
from services.intake.metrics import IntakeMetrics
from services.intake.service import IntakeService, Outcome
from shared.events import Event
from shared.kafka.codec import OutboundRecord
from shared.kafka.producer import BrokerUnavailable
from shared.kafka.settings import KafkaSettings
from tests.support.factories import case_event, demand_labelled, demand_received


class Ledger:
    def __init__(self, claim: Claim) -> None:
        self.answer = claim
        self.calls: list[tuple[str, list[EventKey]] | tuple[str, list[EventKey], bool]] = []
        self.token: bytes | None = None

    async def claim(self, keys: Sequence[EventKey], token: bytes | None = None) -> list[Claim]:
        self.calls.append(("claim", list(keys)))
        self.token = token
        return [self.answer] * len(keys)

    def confirm_soon(self, keys: Sequence[EventKey], token: bytes | None = None) -> None:
        # Confirmed by the claim's own token (a random one: compared, not recorded).
        self.calls.append(("confirm", list(keys), token is not None and token == self.token))

    async def release(self, keys: Sequence[EventKey], token: bytes | None = None) -> None:
        self.calls.append(("release", list(keys)))


class Producer:
    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.sent: list[list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]] = []

    async def send_and_wait(self, records: list[OutboundRecord]) -> None:
        # Everything but ce_time, which is the clock's.
        self.sent.append(
            [
                (r.topic, r.key, r.value, [h for h in r.headers if h[0] != "ce_time"])
                for r in records
            ]
        )
        if self.refuse:
            raise BrokerUnavailable("refused")


def counters(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


Ingest = Callable[[IntakeService, Event], Awaitable[list[Outcome]]]


async def steps(ingest: Ingest, event: Event, claim: Claim, refuse: bool) -> tuple[Any, ...]:
    ledger, producer, registry = Ledger(claim), Producer(refuse), CollectorRegistry()
    intake = IntakeService(
        producer=producer,  # type: ignore[arg-type]
        ledger=ledger,  # type: ignore[arg-type]
        kafka=KafkaSettings(bootstrap_servers="localhost:9"),
        source_name="demandscope-intake",
        metrics=IntakeMetrics(registry),
    )
    try:
        answer: Any = await ingest(intake, event)
    except BrokerUnavailable as error:
        answer = repr(error)
    observed = registry.get_sample_value("demandscope_intake_broker_ack_seconds_count")
    return answer, ledger.calls, producer.sent, counters(registry), observed


async def one(intake: IntakeService, event: Event) -> list[Outcome]:
    return await intake.ingest([event], key_source="crm")


async def many(intake: IntakeService, event: Event) -> list[Outcome]:
    return await intake._ingest_all([event], "crm")


def a_demand() -> Event:
    return demand_received(source="crm", text="call 07700 900123 or jo@example.com")


def a_case_event() -> Event:
    return case_event(source="crm")


def a_label() -> Event:
    return demand_labelled()


EVENTS: dict[str, Callable[[], Event]] = {
    "demand": a_demand,
    "case event": a_case_event,
    "label": a_label,
}


@pytest.mark.parametrize("claim", list(Claim))
@pytest.mark.parametrize("refuse", [False, True], ids=["acknowledged", "refused"])
@pytest.mark.parametrize("kind", list(EVENTS))
async def test_one_event_takes_the_steps_of_many(claim: Claim, refuse: bool, kind: str) -> None:
    event = EVENTS[kind]()
    single = await steps(one, event, claim, refuse)
    assert single == await steps(many, event, claim, refuse)
    answer, calls, sent = single[:3]
    if claim is Claim.CLAIMED:
        assert len(sent) == 1
        assert calls[1][0] == ("release" if refuse else "confirm")
        assert refuse or calls[1][2] is True  # by the claim's token
        assert answer == (repr(BrokerUnavailable("refused")) if refuse else [Outcome.ACCEPTED])
    else:
        assert (sent, len(calls)) == ([], 1)
