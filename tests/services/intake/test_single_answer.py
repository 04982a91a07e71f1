"""A single event's answer: the bytes and headers JSONResponse writes for Accepted's fields,
202 for accepted and 200 for a duplicate, whatever the id holds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.responses import JSONResponse

from services.intake.api import _Answer
from services.intake.schemas import Accepted

# Ids as the event's Identifier admits them, and any text at all (quotes, backslashes,
# control characters, non-ASCII): the answer is written right for either.
IDS = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,40}\Z") | st.text(max_size=40)


@given(IDS, st.booleans())
@settings(max_examples=400, deadline=None)
def test_the_answer_is_json_responses_of_accepteds_fields(event_id: str, accepted: bool) -> None:
    status = "accepted" if accepted else "duplicate"
    expected = JSONResponse(
        {"id": event_id, "status": status}, status_code=202 if accepted else 200
    )
    answer = _Answer(event_id, accepted)
    assert answer.body == expected.body
    assert answer.raw_headers == expected.raw_headers
    assert answer.status_code == expected.status_code
    assert answer.background is None
    assert Accepted.model_validate_json(bytes(answer.body)) == Accepted(id=event_id, status=status)


def test_a_non_ascii_id_is_written_as_utf_8() -> None:
    answer = _Answer('d-é"\\\n', True)
    assert answer.body == '{"id":"d-é\\"\\\\\\n","status":"accepted"}'.encode()
    assert answer.raw_headers[0] == (b"content-length", str(len(answer.body)).encode())
