"""The HTTP entrypoint: read the body, admit each event, hand them to the service, answer."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from services.intake.cloudevents import EventKind
from services.intake.components import IntakeComponents
from services.intake.config import IntakeSettings
from services.intake.decoding import (
    Item,
    MalformedBody,
    UnsupportedMediaType,
    batch_items,
    single_item,
    single_mode_of,
)
from services.intake.ledger import LedgerUnavailable
from services.intake.metrics import IntakeMetrics
from services.intake.openapi_docs import BATCH_BODY, CASE_EVENT_BODY, DEMAND_BODY, LABEL_BODY
from services.intake.schemas import Accepted, BatchAnswer
from services.intake.service import IntakeService, Outcome
from services.intake.validation import (
    Admission,
    InvalidEvent,
    admit_case_event,
    admit_demand,
    admit_label,
    masked_problems,
)
from shared.auth.dependencies import require_scope
from shared.auth.keys import ApiKeyRecord, Scope
from shared.events import Event
from shared.kafka.producer import BrokerUnavailable
from shared.privacy.redaction import Redactor
from shared.service.components import components_dependency
from shared.service.problems import FieldProblem, Problem, ProblemError
from shared.service.request_bodies import BodyTooLarge

Admit = Callable[[Any, Admission], Event]
T = TypeVar("T")

Components = Annotated[IntakeComponents, Depends(components_dependency(IntakeComponents))]
EventWriter = Annotated[ApiKeyRecord, Depends(require_scope(Scope.DEMANDS_WRITE))]
LabelWriter = Annotated[ApiKeyRecord, Depends(require_scope(Scope.LABELS_WRITE))]

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": description}
    for code, description in {
        401: "Missing, unknown or revoked API key",
        403: "The key lacks the scope, or the event (a label: its demand) names another "
        "source than the key's",
        409: "Another request is publishing this id right now; retry after Retry-After",
        413: "The body is larger than the configured limit",
        415: "Unsupported content type",
        422: "Invalid event: one entry per problem, with the field path",
        503: "The broker (or the idempotency ledger) cannot acknowledge; retry later",
    }.items()
}

router = APIRouter(prefix="/v1", responses=_PROBLEMS)


@router.post(
    "/demands",
    tags=["demands"],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    summary="Post one customer demand",
    description=(
        "Plain JSON, or a CloudEvent (`application/cloudevents+json`, or binary mode: "
        "`ce-*` headers with an `application/json` body) of type "
        "`org.demandscope.demand.received.v1`. Answers 202 only once the broker has "
        "acknowledged it; a repeated id is answered 200 `duplicate` and not published again."
    ),
    responses={200: {"model": Accepted, "description": "A repeat of an accepted id"}},
    openapi_extra=DEMAND_BODY,
)
async def post_demand(request: Request, components: Components, key: EventWriter) -> JSONResponse:
    return await _single(request, components, key, "demand", admit_demand)


@router.post(
    "/demands:batch",
    tags=["demands"],
    response_model=BatchAnswer,
    summary="Post up to 1,000 demands, with a result per item",
    description=(
        'A JSON array of demands (or `{"items": [...]}`), or a CloudEvents batch '
        "(`application/cloudevents-batch+json`). Each item is accepted, a duplicate, or "
        "rejected with its reasons; one bad item does not sink the others. If the broker "
        "cannot acknowledge, the whole request is answered 503 and can be retried as it is."
    ),
    openapi_extra=BATCH_BODY,
)
async def post_demand_batch(request: Request, components: Components, key: EventWriter) -> Response:
    service, settings, metrics = components.service, components.settings, components.metrics
    body = await _read(request, metrics, "demand", key.source)
    items = _decoded(lambda: batch_items(request.headers, body, "demand"), components, key.source)
    if len(items) > settings.max_batch_items:
        raise ProblemError(
            422,
            "Too many items",
            problems=[
                FieldProblem(
                    field="body", reason=f"{len(items)} items; at most {settings.max_batch_items}"
                )
            ],
        )
    admission = _admission(key, settings, components.redactor)
    # Each item's result as the dict BatchAnswer validates: one validation of the whole
    # answer costs 1.1 µs an item, an ItemResult built per item 1.7 (measured).
    results: list[_Result | None] = [None] * len(items)
    events: list[Event] = []
    positions: list[int] = []
    first_position: dict[str, int] = {}
    repeats: list[tuple[int, int]] = []
    metrics.received.labels("demand", key.source).inc(len(items))
    for index, item in enumerate(items):
        try:
            if item.problems:  # its envelope was refused
                raise InvalidEvent(item.problems)
            event = admit_demand(item.payload, admission)
        except InvalidEvent as error:
            reason = "source_mismatch" if error.source_mismatch else "invalid"
            metrics.rejected.labels("demand", key.source, reason).inc()
            problems = masked_problems(error.problems, components.redactor)
            results[index] = _rejected(index, item.answer_id(), problems)
            continue
        earlier = first_position.setdefault(event.event_id(), index)
        if earlier != index:
            repeats.append((index, earlier))  # the same id twice in one batch
            continue
        events.append(event)
        positions.append(index)
    outcomes = await _ingest(service, events, key, settings)
    if len(events) == len(items) and Outcome.IN_FLIGHT not in outcomes:
        # Every item admitted, each id once, none in flight (the common batch): written
        # straight, the same bytes as below (test_batch_answer). The ids in first_position
        # are the events', in their order.
        answer = admitted_answer_json(list(first_position), outcomes)
        return Response(answer, media_type="application/json")
    for index, admitted, outcome in zip(positions, events, outcomes, strict=True):
        results[index] = _item_result(index, admitted.event_id(), outcome)
    for index, earlier in repeats:
        first = results[earlier]
        assert first is not None
        repeat_status = "rejected" if first["status"] == "rejected" else "duplicate"
        results[index] = _result(index, first["id"], repeat_status, first["errors"])
    final = [result for result in results if result is not None]
    # A Response, not the model: it is served as it is by FastAPI and by DirectRoute alike.
    return Response(batch_answer_json(final), media_type="application/json")


@router.post(
    "/case-events",
    tags=["cases"],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    summary="Post a case lifecycle event (opened, progressed, fulfilled, abandoned, reopened)",
    description=(
        "What the organisation did about a customer's purpose: the metrics service measures "
        "end-to-end time from these. Plain JSON or a CloudEvent of type "
        "`org.demandscope.case.event.v1`. Needs the `demands:write` scope."
    ),
    responses={200: {"model": Accepted, "description": "A repeat of an accepted id"}},
    openapi_extra=CASE_EVENT_BODY,
)
async def post_case_event(
    request: Request, components: Components, key: EventWriter
) -> JSONResponse:
    return await _single(request, components, key, "case_event", admit_case_event)


@router.post(
    "/demands/{demand_id}/labels",
    tags=["labels"],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    summary="Confirm or correct a demand's classification",
    description=(
        "A person's word on a demand (demand type, failure kind, purpose), published as "
        "`DemandLabelled`: the classifier learns from it and the metrics recount. Needs the "
        "`labels:write` scope. A demand is its source and id: a source's key labels its own "
        "source's demands (`demand_source` left out, or its own; any other is 403, whether "
        "or not that source has the id); a key with `sources:all` names `demand_source`. "
        "The note and text are redacted like a demand's text."
    ),
    responses={200: {"model": Accepted, "description": "A repeat of an accepted id"}},
    openapi_extra=LABEL_BODY,
)
async def post_label(
    request: Request, demand_id: str, components: Components, key: LabelWriter
) -> JSONResponse:
    def admit(payload: Any, admission: Admission) -> Event:
        return admit_label(payload, demand_id, admission)

    return await _single(request, components, key, "label", admit)


async def _single(
    request: Request,
    components: Components,
    key: ApiKeyRecord,
    kind: EventKind,
    admit: Admit,
) -> JSONResponse:
    service, settings, metrics = components.service, components.settings, components.metrics
    body = await _read(request, metrics, kind, key.source)
    item = _decoded(lambda: _single_item(request, body, kind), components, key.source)
    metrics.received.labels(kind, key.source).inc()
    try:
        event = admit(item.payload, _admission(key, settings, components.redactor))
    except InvalidEvent as error:
        problems = masked_problems(error.problems, components.redactor)
        if error.source_mismatch:
            metrics.rejected.labels(kind, key.source, "source_mismatch").inc()
            raise ProblemError(
                403,
                "Source does not match the API key",
                detail=f"This key may only label demands of source {key.source!r}."
                if kind == "label"
                else f"This key may only post events of source {key.source!r}.",
                problems=problems,
            ) from error
        metrics.rejected.labels(kind, key.source, "invalid").inc()
        raise ProblemError(422, "Invalid event", problems=problems) from error
    # _ingest's steps, inline: one coroutine frame less that each resumption of the
    # request's task passes through (the claim's and the broker's answers).
    try:
        (outcome,) = await service.ingest([event], key_source=key.source)
    except (BrokerUnavailable, LedgerUnavailable) as error:
        raise _unavailable(error, service, 1, key, settings) from error
    if outcome is Outcome.IN_FLIGHT:
        raise ProblemError(
            409,
            "Already in flight",
            detail="Another request is publishing this id right now. Retry to learn the result.",
            headers={"Retry-After": "1"},
        )
    return _Answer(event.event_id(), outcome is Outcome.ACCEPTED)


class _Answer(JSONResponse):
    """``JSONResponse({"id": ..., "status": ...})`` with ``status_code`` 202 (accepted) or
    200 (duplicate): Accepted's fields (the id is the validated event's), the same bytes and
    headers, written straight: JSONResponse's ``__init__``, ``render`` (an encoder per
    response) and ``init_headers`` took 4.0 µs a single request, this 0.7 (measured)."""

    def __init__(self, event_id: str, accepted: bool) -> None:
        body = b"".join((_ID, _STRING(event_id).encode(), _ACCEPTED if accepted else _DUPLICATE))
        self.status_code = 202 if accepted else 200
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-length", b"%d" % len(body)), _JSON_TYPE]


# The JSON encoder's (ensure_ascii=False) string, and the answer's fixed parts.
_STRING = json.encoder.encode_basestring
_ID = b'{"id":'
_ACCEPTED = b',"status":"accepted"}'
_DUPLICATE = b',"status":"duplicate"}'
_JSON_TYPE = (b"content-type", b"application/json")


async def _read(request: Request, metrics: IntakeMetrics, kind: str, source: str) -> bytes:
    # Bounded while it streams by the skeleton's BodyLimit (max_body_bytes): a 413.
    # A client that disconnects mid-body raises ClientDisconnect, answered (to nobody) and
    # logged at INFO by the skeleton: routine, not an error.
    try:
        return await _body(request)
    except BodyTooLarge:
        metrics.rejected.labels(kind, source, "too_large").inc()
        raise


async def _body(request: Request) -> bytes:
    """What ``request.body()`` reads, read from ``request.receive`` in a plain loop: the
    body() of Starlette reads it through an async generator, which asyncio registers in a
    WeakSet of the loop's and takes out again (with aclosing's wrapper: ~3 µs a single
    request on the loop, profiled). Read once: intake reads each body once."""
    receive = request.receive
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


def _single_item(request: Request, body: bytes, kind: EventKind) -> Item:
    # The mode off the ASGI headers; Starlette's Headers only for a binary CloudEvent's.
    mode = single_mode_of(request.scope["headers"])
    return single_item(request.headers if mode == "binary" else _NO_HEADERS, body, kind, mode)


_NO_HEADERS: dict[str, str] = {}


def _decoded(decode: Callable[[], T], components: IntakeComponents, source: str) -> T:
    metrics = components.metrics
    try:
        return decode()
    except UnsupportedMediaType as error:
        metrics.rejected.labels("unknown", source, "unsupported_media_type").inc()
        detail = components.redactor.redact(str(error)).text  # it names the sent media type
        raise ProblemError(415, "Unsupported media type", detail=detail) from error
    except MalformedBody as error:
        metrics.rejected.labels("unknown", source, "invalid").inc()
        problems = masked_problems(error.problems, components.redactor)
        raise ProblemError(422, "Invalid body", problems=problems) from error


async def _ingest(
    service: IntakeService, events: list[Event], key: ApiKeyRecord, settings: IntakeSettings
) -> list[Outcome]:
    try:
        return await service.ingest(events, key_source=key.source)
    except (BrokerUnavailable, LedgerUnavailable) as error:
        raise _unavailable(error, service, len(events), key, settings) from error


def _unavailable(
    error: BrokerUnavailable | LedgerUnavailable,
    service: IntakeService,
    count: int,
    key: ApiKeyRecord,
    settings: IntakeSettings,
) -> ProblemError:
    """The 503 of an ingest of ``count`` events that ``error`` stopped, counted."""
    retry = {"Retry-After": str(settings.retry_after_s)}
    if isinstance(error, BrokerUnavailable):
        service.metrics.broker_unavailable.inc()
        service.metrics.rejected.labels("any", key.source, "broker_unavailable").inc(count)
        return ProblemError(
            503,
            "Broker unavailable",
            detail=f"Nothing was accepted: {error}. Retry later.",
            headers=retry,
        )
    service.metrics.rejected.labels("any", key.source, "ledger_unavailable").inc(count)
    return ProblemError(
        503,
        "Idempotency ledger unavailable",
        detail="Nothing was accepted: intake cannot check for duplicates. Retry later.",
        headers=retry,
    )


def _admission(key: ApiKeyRecord, settings: IntakeSettings, redactor: Redactor) -> Admission:
    return Admission(
        key_source=key.source,
        now=datetime.now(UTC),
        max_future_skew=_seconds(settings.max_future_skew_s),
        redactor=redactor,
        earliest=settings.earliest_event_time,
        organisation_wide=key.reach is None,
    )


@functools.lru_cache(maxsize=8)
def _seconds(seconds: int) -> timedelta:
    return timedelta(seconds=seconds)  # a setting's; made once, not per request


# An ItemResult's fields, validated with the whole BatchAnswer.
_Result = dict[str, Any]
# What pydantic's model_dump_json writes for plain values: no spaces, UTF-8 as it is.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def batch_answer_json(results: list[_Result]) -> bytes:
    """BatchAnswer's JSON for these results, counted. When none is rejected, every result
    names a validated event's id (an Identifier: ASCII that JSON writes as it is) and no
    error: its fields are written as they are, the same bytes as BatchAnswer's
    model_dump_json, without validating 500 ItemResults first (0.5 µs an item, measured).
    A rejection's reasons and ids may be anything a sender sent: those go through the model."""
    statuses = [result["status"] for result in results]
    rejected = statuses.count("rejected")
    answer = {
        "accepted": statuses.count("accepted"),
        "duplicates": statuses.count("duplicate"),
        "rejected": rejected,
        "results": results,
    }
    if rejected:
        return BatchAnswer.model_validate(answer).model_dump_json().encode()
    return _JSON(answer).encode()


def admitted_answer_json(event_ids: list[str], outcomes: list[Outcome]) -> bytes:
    """``batch_answer_json`` of the results ``_item_result`` gives item ``i`` (``event_ids[i]``,
    ``outcomes[i]``), when no outcome is in flight: each written as a fixed text around its
    index and its id (JSON's own string encoder), without a dict per item and its encoding
    (measured: 1.4 -> 0.5 µs an item)."""
    accepted = outcomes.count(Outcome.ACCEPTED)
    head = b'{"accepted":%d,"duplicates":%d,"rejected":0,"results":[' % (
        accepted,
        len(outcomes) - accepted,
    )
    items = ",".join(
        [
            f'{{"index":{index},"id":{_STRING(event_id)},"status":"'
            f'{"accepted" if outcome is Outcome.ACCEPTED else "duplicate"}","errors":[]}}'
            for index, (event_id, outcome) in enumerate(zip(event_ids, outcomes, strict=True))
        ]
    )
    return b"".join((head, items.encode(), b"]}"))


def _result(
    index: int, event_id: str | None, status_text: str, errors: list[FieldProblem]
) -> _Result:
    return {"index": index, "id": event_id, "status": status_text, "errors": errors}


def _rejected(index: int, event_id: str | None, problems: list[FieldProblem]) -> _Result:
    return _result(index, event_id, "rejected", problems)


def _item_result(index: int, event_id: str, outcome: Outcome) -> _Result:
    if outcome is Outcome.IN_FLIGHT:
        problem = FieldProblem(field="id", reason="being published by another request; retry")
        return _rejected(index, event_id, [problem])
    status_text = "accepted" if outcome is Outcome.ACCEPTED else "duplicate"
    return _result(index, event_id, status_text, [])
