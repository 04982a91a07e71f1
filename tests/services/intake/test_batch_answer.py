"""A batch's answer is BatchAnswer's JSON, byte for byte, whether or not it is written
without validating the model first (no item rejected)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.api import batch_answer_json
from services.intake.schemas import BatchAnswer
from shared.service.problems import FieldProblem

# Ids as the event's Identifier admits them: what an accepted or duplicate item names.
IDS = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,40}\Z")


def modelled(results: list[dict[str, Any]]) -> bytes:
    statuses = [result["status"] for result in results]
    answer = BatchAnswer(
        accepted=statuses.count("accepted"),
        duplicates=statuses.count("duplicate"),
        rejected=statuses.count("rejected"),
        results=results,
    )
    return answer.model_dump_json().encode()


@given(st.lists(st.tuples(IDS, st.sampled_from(["accepted", "duplicate"])), max_size=30))
@settings(max_examples=300, deadline=None)
def test_an_answer_without_rejections_is_the_models_json(items: list[tuple[str, str]]) -> None:
    results: list[dict[str, Any]] = [
        {"index": index, "id": event_id, "status": status, "errors": []}
        for index, (event_id, status) in enumerate(items)
    ]
    assert batch_answer_json(results) == modelled(results)


def test_an_answer_with_rejections_is_the_models_json() -> None:
    reason = 'is "odd" \u00e9\u2028 \\ \x01'
    results: list[dict[str, Any]] = [
        {"index": 0, "id": "d-1", "status": "accepted", "errors": []},
        {
            "index": 1,
            "id": None,
            "status": "rejected",
            "errors": [FieldProblem(field="id", reason=reason)],
        },
        {"index": 2, "id": "x y", "status": "rejected", "errors": []},
        {"index": 3, "id": "d-1", "status": "duplicate", "errors": []},
    ]
    answer = batch_answer_json(results)
    assert answer == modelled(results)
    assert b'"rejected":2' in answer
