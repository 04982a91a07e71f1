import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from shared.events import ALL_EVENTS, DemandLabelled, DemandReceived, Event
from shared.kafka.codec import (
    DecodeError,
    OutboundRecord,
    _time_text,
    decode,
    describe_validation_error,
    encode,
    encode_all,
    header,
)
from shared.topics import EVENT_OF_TOPIC
from tests.support.factories import (
    case_event,
    demand_classified,
    demand_labelled,
    demand_received,
    purpose_metrics,
    special_cause_signalled,
    system_changed,
)

DEMAND = demand_received(id="d-1", customer_ref="C-1")


def test_round_trip_keeps_the_event_and_sets_cloudevents_headers() -> None:
    record = encode(DEMAND, topic="demand.received", source="intake")
    assert decode(DemandReceived, record.value) == DEMAND
    assert record.key == b"C-1"
    assert header(record.headers, "ce_id") == "d-1"
    assert header(record.headers, "ce_type") == "org.demandscope.demand.received.v1"
    assert header(record.headers, "ce_source") == "intake"
    assert header(record.headers, "ce_specversion") == "1.0"
    assert header(record.headers, "ce_time") is not None
    assert record.value == DEMAND.model_dump_json().encode()


def test_a_batch_shares_the_attributes_and_keeps_each_events_own() -> None:
    label = demand_labelled(id="l-1")
    pairs = [(DEMAND, "demand.received"), (label, "demand.labels")]
    records = encode_all(pairs, source="intake")
    for record, (event, topic) in zip(records, pairs, strict=True):
        alone = encode(event, topic=topic, source="intake")
        assert (record.topic, record.key, record.value) == (alone.topic, alone.key, alone.value)
        assert [name for name, _ in record.headers] == [name for name, _ in alone.headers]
        assert {name: value for name, value in record.headers if name != "ce_time"} == {
            name: value for name, value in alone.headers if name != "ce_time"
        }
    assert header(records[1].headers, "ce_type") == DemandLabelled.CE_TYPE
    assert header(records[1].headers, "ce_id") == "l-1"
    assert header(records[0].headers, "ce_time") == header(records[1].headers, "ce_time")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "no value"),
        (b"\xff\xfe not json", "Invalid JSON"),
        (b'{"id": "d-1"}', "occurred_at: Field required"),
        (b"[]", "(value)"),
    ],
)
def test_decode_errors_name_the_problem(value: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode(DemandReceived, value)


def _reference_encode(event: Event, topic: str, source: str) -> OutboundRecord:
    """The record as the codec wrote it before the shared attributes were kept."""
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event.event_id().encode()),
        ("ce_type", event.CE_TYPE.encode()),
        ("ce_source", source.encode()),
        ("ce_time", datetime.now(UTC).isoformat().encode()),
        ("content-type", b"application/json"),
    ]
    return OutboundRecord(
        topic=topic,
        key=event.partition_key().encode(),
        value=event.model_dump_json().encode(),
        headers=headers,
    )


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("source", ["intake", "demandscope-classifier"])
def test_records_are_the_reference_encoders_apart_from_the_time(count: int, source: str) -> None:
    events: list[Event] = [DEMAND, demand_labelled(id="l-1"), demand_received(id="d-2")][:count]
    pairs = [(event, f"topic-{n}") for n, event in enumerate(events)]
    before = datetime.now(UTC)
    records = encode_all(pairs, source=source)
    after = datetime.now(UTC)
    for record, (event, topic) in zip(records, pairs, strict=True):
        reference = _reference_encode(event, topic, source)
        assert (record.topic, record.key, record.value) == (
            reference.topic,
            reference.key,
            reference.value,
        )
        names = [name for name, _ in record.headers]
        assert names == [name for name, _ in reference.headers]
        assert [v for n, v in record.headers if n != "ce_time"] == [
            v for n, v in reference.headers if n != "ce_time"
        ]
        written = dict(record.headers)["ce_time"].decode()
        moment = datetime.fromisoformat(written)
        assert moment.isoformat() == written  # isoformat's own text of that instant
        # The clock is read to the microsecond, datetime.now rounds: within one of both.
        assert before - timedelta(microseconds=1) <= moment <= after + timedelta(microseconds=1)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "micros",
    [
        0,
        1,
        999_999,
        1_000_000,
        1_764_244_209_000_000,  # a whole second: isoformat leaves the fraction out
        1_764_244_209_000_001,
        1_764_244_209_123_456,
        1_764_244_209_999_999,
        1_764_244_210_000_000,
        1_764_244_209_500_000,  # the same second again, after another one
        4_102_444_799_999_999,
    ],
)
def test_the_time_is_written_as_isoformat_writes_it(micros: int) -> None:
    expected = (EPOCH + timedelta(microseconds=micros)).isoformat().encode()
    assert _time_text(micros) == expected
    assert _time_text(micros) == expected  # from the second's kept text


def test_the_time_of_random_instants_is_isoformats() -> None:
    generator = random.Random(14)
    second = 1_764_244_209
    for _ in range(2000):
        # Runs within one second and jumps between seconds, as a clock's reads come.
        if generator.random() < 0.2:
            second += generator.choice([1, -1, 86_399, 3_600 * 24 * 365])
        micros = second * 1_000_000 + generator.choice([0, generator.randrange(1_000_000)])
        expected = (EPOCH + timedelta(microseconds=micros)).isoformat().encode()
        assert _time_text(micros) == expected


class _WithInit(DemandReceived):
    """An event with its own __init__, counting its calls."""

    calls: ClassVar[list[list[str]]] = []

    def __init__(self, **data: Any) -> None:
        type(self).calls.append(sorted(data))
        super().__init__(**data)


def test_decode_calls_a_custom_init_as_model_validate_json_does() -> None:
    # decode() calls the model's validator, not model_validate_json (a wrapper of that same
    # validator): a model's own __init__ is called by both or by neither (today, both:
    # pydantic's validator calls it), so the shortcut holds for such a model too.
    assert _WithInit.__pydantic_custom_init__
    value = DEMAND.model_dump_json().encode()
    _WithInit.calls.clear()
    by_model = _WithInit.model_validate_json(value)
    by_model_calls = list(_WithInit.calls)
    _WithInit.calls.clear()
    decoded = decode(_WithInit, value)
    assert _WithInit.calls == by_model_calls
    assert type(decoded) is _WithInit
    assert decoded == by_model
    assert decoded.model_fields_set == by_model.model_fields_set


_GOOD: list[Event] = [
    DEMAND,
    demand_classified(),
    case_event(),
    demand_labelled(),
    purpose_metrics(),
    special_cause_signalled(),
    system_changed(),
]


def test_the_decode_comparison_covers_every_event_model() -> None:
    assert {type(event) for event in _GOOD} == set(ALL_EVENTS) | set(EVENT_OF_TOPIC.values())


@pytest.mark.parametrize("event", _GOOD, ids=lambda event: type(event).__name__)
def test_decode_is_model_validate_json_on_good_and_poison_values(event: Event) -> None:
    model = type(event)
    good = event.model_dump_json().encode()
    decoded = decode(model, good)
    reference = model.model_validate_json(good)
    assert type(decoded) is model
    assert decoded == reference == event
    assert decoded.model_fields_set == reference.model_fields_set
    assert decoded.model_dump_json() == reference.model_dump_json()
    fields = json.loads(good)
    required = next(name for name, field in model.model_fields.items() if field.is_required())
    poison: list[bytes] = [
        b"\xff\xfe not json",
        b"{",
        b"[]",
        b"null",
        b'"text"',
        json.dumps({**fields, "unexpected": 1}).encode(),
        json.dumps({k: v for k, v in fields.items() if k != required}).encode(),
        json.dumps({**fields, required: [1, 2]}).encode(),
        json.dumps({**fields, "schema_version": 99}).encode(),
        good.replace(b"{", b"{ ", 1) + b" trailing",
    ]
    # Lax input the JSON validator coerces (numbers written as strings), as
    # model_validate_json does: the same event.
    numbers = {
        name: str(number)
        for name, number in fields.items()
        if type(number) in (int, float) and name != "schema_version"
    }
    if numbers:
        coerced = json.dumps({**fields, **numbers}).encode()
        assert decode(model, coerced) == model.model_validate_json(coerced) == event
    for value in poison:
        with pytest.raises(ValidationError) as by_model:
            model.model_validate_json(value)
        with pytest.raises(DecodeError) as by_decode:
            decode(model, value)
        assert str(by_decode.value) == describe_validation_error(by_model.value)
        assert isinstance(by_decode.value.__cause__, ValidationError)
        assert by_decode.value.__cause__.errors() == by_model.value.errors()
