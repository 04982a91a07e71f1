import pytest

from shared.events import DemandReceived
from shared.kafka.codec import DecodeError, decode, encode, header
from tests.support.factories import demand_received

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
