"""A batch's answer is BatchAnswer's JSON, byte for byte, whether or not it is written
without validating the model first (no item rejected)."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.api import _item_result, admitted_answer_json, batch_answer_json
from services.intake.schemas import BatchAnswer
from services.intake.service import Outcome
from shared.service.problems import FieldProblem

# Ids as the event's Identifier admits them: what an accepted or duplicate item names.
IDS = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,40}\Z")
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]*")


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


# Any text as an id (the writer must not rely on the ids being Identifiers), and both
# outcomes an admitted item can have.
ANY_IDS = st.text(st.characters(codec="utf-8"), max_size=12)  # no lone surrogates
ADMITTED = st.sampled_from([Outcome.ACCEPTED, Outcome.DUPLICATE])


@given(st.lists(st.tuples(st.one_of(IDS, ANY_IDS), ADMITTED), max_size=40))
@settings(max_examples=500, deadline=None)
def test_an_all_admitted_answer_is_written_as_the_results_would_be(
    items: list[tuple[str, Outcome]],
) -> None:
    ids = [event_id for event_id, _ in items]
    outcomes = [outcome for _, outcome in items]
    results = [
        _item_result(index, event_id, outcome) for index, (event_id, outcome) in enumerate(items)
    ]
    written = admitted_answer_json(ids, outcomes)
    assert written == batch_answer_json(results)
    if all(IDENTIFIER.fullmatch(event_id) for event_id in ids):
        assert written == modelled(results)


def test_an_all_admitted_answer_counts_and_orders_its_items() -> None:
    written = admitted_answer_json(
        ["d-1", 'q"\\\n\u00e9', "d-3"], [Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.ACCEPTED]
    )
    assert json.loads(written) == {
        "accepted": 2,
        "duplicates": 1,
        "rejected": 0,
        "results": [
            {"index": 0, "id": "d-1", "status": "accepted", "errors": []},
            {"index": 1, "id": 'q"\\\n\u00e9', "status": "duplicate", "errors": []},
            {"index": 2, "id": "d-3", "status": "accepted", "errors": []},
        ],
    }
    assert admitted_answer_json([], []) == batch_answer_json([])
