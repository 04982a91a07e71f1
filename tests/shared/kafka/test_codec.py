import pytest

from shared.events import DemandLabelled, DemandReceived
from shared.kafka.codec import DecodeError, decode, encode, encode_all, header
from tests.support.factories import demand_labelled, demand_received

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
