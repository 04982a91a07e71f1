"""The review and audit queues as pages (issue 12, items 4 and 5): one demand at a time,
answered with the keyboard (static/queues.js) or as plain forms without JavaScript.

- **Who**: reviewers and admins. A viewer is refused (403), as the API refuses a key without
  ``labels:write``: the queues show customers' words, which only those who label need.
- **The items** come from the API's own calls (``audit.review_queue``/``audit.audit_queue``):
  the head of the queue, one indexed query, past what this person decided or skipped here.
- **Labels** travel as over the API: a ``DemandLabelled`` on ``demand.labels`` through the
  service's producer (503 when the broker does not take it), ``labelled_by`` the person's
  username, ``reason`` review or audit. Its id is derived from (person, demand, the form's
  decision number, set when the form was drawn), so a double submit publishes the same id
  and consumers keep it once. Undo publishes a new label restoring the previous state
  (labels are events; the latest wins) and puts the demand back in front of the person.
- **Blind audit**: the machine's label of the item being answered is never in the page; once
  answered it is shown, for learning, beside the answer, which it does not change.

The last decisions (and skips) a person made are kept in the metrics database (``Desk``,
loaded per request), which is what lets the page move on before the metrics consumer has
applied the label, on any replica and after a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from services.metrics import audit
from services.metrics.api import Components, ReviewBelow, Sessions
from services.metrics.db import queues
from services.metrics.pages.desk import ANY_SOURCE, Answer, Decision, Item, Queue, is_passed
from services.metrics.pages.web import PREFIX, Reviewer, render
from shared.events import DemandLabelled
from shared.events.classification import FailureKind
from shared.kafka.codec import encode
from shared.kafka.producer import BrokerUnavailable
from shared.service.problems import ProblemError
from shared.topics import Topic, topic_name

router = APIRouter(include_in_schema=False)

SHOWN = 10
CONFIRM_ALL_MAX = 500  # as GET /v1/review/queue's limit
FAILURE_KINDS = [kind.value for kind in FailureKind]


def label_id(who: str, demand_id: str, decision: str) -> str:
    """Deterministic: the same person, demand and form (decision number) give the same id."""
    digest = hashlib.sha256(f"{who}\0{demand_id}\0{decision}".encode()).hexdigest()
    return f"page-{digest[:40]}"


async def publish(components: Components, *labels: DemandLabelled) -> None:
    """The label on ``demand.labels``, as intake's API publishes one; 503 when the broker
    does not acknowledge it (the person submits again: the same id)."""
    topic = topic_name(components.settings.kafka, Topic.DEMAND_LABELS)
    records = [encode(x, topic=topic, source=components.settings.source_name) for x in labels]
    try:
        await components.producer.send_and_wait(records)
    except BrokerUnavailable as error:
        raise ProblemError(
            503,
            "Broker unavailable",
            detail="The label could not be published; submit again.",
            headers={"Retry-After": "5"},
        ) from error


def _label(who: str, item: Item, answer: Answer, reason: Queue, id_: str) -> DemandLabelled:
    not_a_demand = answer.demand_type == NOT_A_DEMAND
    return DemandLabelled(
        id=id_,
        demand_id=item.demand_id,
        # People act for the organisation: a label from the pages names the demand's source.
        demand_source=item.source,
        # "Not a demand" has no type: the event refuses one beside it.
        demand_type="unknown" if not_a_demand else answer.demand_type,
        not_a_demand=not_a_demand,
        failure_kind=answer.failure_kind if answer.demand_type == "failure" else None,
        purpose=answer.purpose,
        labelled_by=who,
        labelled_at=datetime.now(UTC),
        reason=reason,
        text=item.text or None,
    )


def _back(queue: Queue, purpose: str | None = None, **extra: str) -> str:
    params = {k: v for k, v in {"purpose": purpose or "", **extra}.items() if v}
    return f"{PREFIX}/{queue}" + (f"?{urlencode(params)}" if params else "")


NOT_A_DEMAND = "none"  # the form's answer "not a demand" (N)

MISSING = {
    "type": "Choose value (V), failure (F) or not a demand (N) first.",
    "purpose": "Choose a purpose first (1-9, or P and type).",
}


def _parse_answer(demand_type: str, purpose: str, failure_kind: str | None) -> Answer | str:
    """The answer, or what is missing from it (the page says so and keeps the item). "Not
    a demand" takes no purpose, not even one chosen before N: the label keeps the one the
    contact counts under when answered (_filed_under), so no volume moves."""
    if demand_type == NOT_A_DEMAND:
        return Answer(NOT_A_DEMAND, "", None)
    if demand_type not in {"value", "failure"}:
        return "type"
    if not purpose:
        return "purpose"
    kind = (failure_kind or None) if demand_type == "failure" else None
    return Answer(demand_type, purpose, kind)


def _pushed(request: Request, template: str, who: Reviewer, **context: Any) -> HTMLResponse:
    """The page; for htmx (a boosted form followed its redirect here) the address to show."""
    response = render(request, template, who, **context)
    if request.headers.get("HX-Request") == "true":
        query = f"?{request.url.query}" if request.url.query else ""
        response.headers["HX-Push-Url"] = request.url.path + query
    return response


# --- review ---------------------------------------------------------------------------------


async def _review_items(
    sessions: Sessions, below: float, purpose: str | None, passed: set[tuple[str, str]]
) -> tuple[int, Item | None]:
    async with sessions() as session:
        queue = await audit.review_queue(
            session, below=below, purpose=purpose, limit=1 + len(passed)
        )
    waiting = max(queue.waiting - sum(1 for i in queue.items if _passed(i, passed)), 0)
    head = next((i for i in queue.items if not _passed(i, passed)), None)
    if head is None:
        return waiting, None
    return waiting, Item(
        demand_id=head.demand_id,
        channel=head.channel,
        occurred_at=head.occurred_at,
        text=head.text,
        demand_type=head.demand_type,
        purpose=head.purpose,
        failure_kind=head.failure_kind,
        confidence=head.confidence,
        source=head.source,
    )


@router.get(f"{PREFIX}/review", response_class=HTMLResponse)
async def review(
    request: Request,
    who: Reviewer,
    components: Components,
    sessions: Sessions,
    below: ReviewBelow,
    purpose: Annotated[str | None, Query(max_length=120)] = None,
    edit: Annotated[str | None, Query(max_length=60)] = None,
    confirmed: Annotated[int | None, Query(ge=0)] = None,
    batch: Annotated[str | None, Query(max_length=40)] = None,
    missing: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    """The head of the review queue (lowest confidence first), pre-filled with the machine's
    suggestion; or a decision of the last ten again (``edit``), or one undone."""
    me = who.person.username
    purpose = purpose or None
    await components.desk.load(sessions, me)
    editing = components.desk.find(me, "review", edit) if edit else None
    returned = components.desk.returned.get((me, "review"), [])
    waiting, item = await _review_items(
        sessions, below, purpose, components.desk.passed(me, "review")
    )
    current: Item | None
    prefill: Answer | None
    if editing is not None:
        current, prefill = editing.item, editing.answer
    elif returned:
        current, prefill = returned[-1].item, returned[-1].previous
    else:
        current = item
        prefill = (
            Answer(item.demand_type or "", item.purpose or "", item.failure_kind)
            if item is not None
            else None
        )
    return _pushed(
        request,
        "review.html",
        who,
        title="Review queue",
        active="review",
        queue="review",
        item=current,
        prefill=prefill,
        editing=editing,
        waiting=waiting,
        purpose=purpose,
        purposes=await components.desk.purposes(sessions),
        failure_kinds=FAILURE_KINDS,
        decision=str(time.time_ns()),
        recent=list(reversed(components.desk.recent(me, "review")))[:SHOWN],
        confirmed=confirmed,
        batch=batch if batch and components.desk.batches.get(me, ("",))[0] == batch else None,
        confirm_all=min(waiting, CONFIRM_ALL_MAX),
        missing=MISSING.get(missing or ""),
    )


@router.post(f"{PREFIX}/review/decide")
async def review_decide(
    who: Reviewer,
    components: Components,
    demand_id: Annotated[str, Form(min_length=1, max_length=200)],
    decision: Annotated[str, Form(min_length=1, max_length=40)],
    demand_type: Annotated[str, Form(max_length=16)] = "",
    purpose: Annotated[str, Form(max_length=120)] = "",
    failure_kind: Annotated[str | None, Form(max_length=120)] = None,
    filter_purpose: Annotated[str | None, Form(max_length=120)] = None,
    edits: Annotated[str | None, Form(max_length=60)] = None,
    demand_source: Annotated[str | None, Form(max_length=200)] = None,
) -> RedirectResponse:
    """Confirm or correct a demand (reason "review"); with ``edits``, change a decision of
    the last ten (a new label, the latest wins)."""
    return await _decide(
        who, components, "review", demand_id, decision, demand_type, purpose, failure_kind,
        filter_purpose, edits, demand_source or None,
    )  # fmt: skip


async def _decide(
    who: Reviewer,
    components: Components,
    queue: Queue,
    demand_id: str,
    decision: str,
    demand_type: str,
    purpose: str,
    failure_kind: str | None,
    filter_purpose: str | None,
    edits: str | None,
    source: str | None = None,
) -> RedirectResponse:
    me = who.person.username
    answer = _parse_answer(demand_type, purpose, failure_kind)
    if isinstance(answer, str):
        extra = {"missing": answer, "edit": edits or ""}
        return RedirectResponse(_back(queue, filter_purpose, **extra), status_code=303)
    id_ = label_id(me, demand_id, decision)
    await components.desk.load(components.sessions, me)
    known = components.desk.find(me, queue, id_)
    earlier = components.desk.find(me, queue, edits) if edits else None
    item = await _item_for(components, queue, me, demand_id, earlier, source)
    if answer.demand_type == NOT_A_DEMAND:
        answer = Answer(NOT_A_DEMAND, await _filed_under(components, item), None)
    label = _label(me, item, answer, queue, id_)
    if known is not None:
        await publish(components, label)  # a double submit publishes the same id again
    else:
        await _publish_and_record(components, me, queue, label, earlier, item, answer)
    extra = {"answered": id_} if queue == "audit" else {}
    return RedirectResponse(_back(queue, filter_purpose, **extra), status_code=303)


async def _publish_and_record(
    components: Components,
    me: str,
    queue: Queue,
    label: DemandLabelled,
    earlier: Decision | None,
    item: Item,
    answer: Answer,
) -> None:
    """The label published and the decision stored at once: the desk's write starts before
    the label comes back to be applied, whose transaction would otherwise hold SQLite's one
    writer lock while the desk waits (a keystroke's largest wait). Not published: the desk
    as it was, stored again, and the 503."""
    desk = components.desk
    recent = desk.recent(me, queue)
    kept, returned = list(recent), desk.returned.get((me, queue), [])
    previous = earlier.answer if earlier is not None else _machine_answer(item)
    recent.append(Decision(label.id, queue, item, answer, previous, label.labelled_at))
    desk.returned[(me, queue)] = [d for d in returned if d.item.key != item.key]
    published, saved = await asyncio.gather(
        publish(components, label), desk.save(components.sessions, me), return_exceptions=True
    )
    if isinstance(published, BaseException):
        recent.clear()
        recent.extend(kept)
        desk.returned[(me, queue)] = returned
        await desk.save(components.sessions, me)
        raise published
    if isinstance(saved, BaseException):
        raise saved


async def _filed_under(components: Components, item: Item) -> str:
    """The purpose a "not a demand" label keeps: the one the contact counts under at the
    time of the answer (the latest label's, else the machine's), so the figures' volumes
    and cases per purpose do not move. Not the review item's as shown, nor an audit item's
    first machine purpose: a person may have moved the demand since (the label applies the
    purpose it carries, write_path's _LABELS)."""
    async with components.sessions() as session:
        counted = await queues.counted_purpose(session, item.source, item.demand_id)
    if counted is None:
        raise ProblemError(404, "Not in the queue", detail=f"No demand {item.demand_id!r}.")
    return counted


def _machine_answer(item: Item) -> Answer | None:
    if item.demand_type is None or item.purpose is None:
        return None
    return Answer(item.demand_type, item.purpose, item.failure_kind)


async def _item_for(
    components: Components,
    queue: Queue,
    me: str,
    demand_id: str,
    earlier: Decision | None,
    source: str | None = None,
) -> Item:
    """The demand being answered, as its queue shows it (or as this person last saw it).
    A demand is (source, id): the form names the source (None: the first of that id)."""

    def same(item: Item) -> bool:
        return item.demand_id == demand_id and source in (None, item.source)

    if earlier is not None and same(earlier.item):
        return earlier.item
    for decision in reversed(components.desk.returned.get((me, queue), [])):
        if same(decision.item):
            return decision.item
    async with components.sessions() as session:
        if queue == "review":
            found = await queues.review_item(session, source, demand_id)
        else:
            found = await queues.audit_item(session, source, demand_id)
    if found is None:
        raise ProblemError(404, "Not in the queue", detail=f"No demand {demand_id!r} to label.")
    return Item(**found)  # the row's columns are the item's fields


@router.post(f"{PREFIX}/review/skip")
async def review_skip(
    who: Reviewer,
    components: Components,
    demand_id: Annotated[str, Form(min_length=1, max_length=200)],
    filter_purpose: Annotated[str | None, Form(max_length=120)] = None,
    demand_source: Annotated[str | None, Form(max_length=200)] = None,
) -> RedirectResponse:
    return await _skip(who, components, "review", demand_id, filter_purpose, demand_source)


async def _skip(
    who: Reviewer,
    components: Components,
    queue: Queue,
    demand_id: str,
    purpose: str | None,
    source: str | None = None,
) -> RedirectResponse:
    me = who.person.username
    key = (source or ANY_SOURCE, demand_id)
    await components.desk.load(components.sessions, me)
    components.desk.skipped.setdefault((me, queue), set()).add(key)
    returned = components.desk.returned.get((me, queue), [])
    components.desk.returned[(me, queue)] = [
        d for d in returned if not is_passed(d.item.source, d.item.demand_id, {key})
    ]
    await components.desk.save(components.sessions, me)
    return RedirectResponse(_back(queue, purpose), status_code=303)


def _passed(item: Any, passed: set[tuple[str, str]]) -> bool:
    """Whether this person is done with a queue's item (a row with source and demand_id)."""
    return is_passed(item.source, item.demand_id, passed)


@router.post(f"{PREFIX}/review/undo")
async def review_undo(
    who: Reviewer,
    components: Components,
    label: Annotated[str | None, Form(max_length=60)] = None,
    batch: Annotated[str | None, Form(max_length=40)] = None,
    filter_purpose: Annotated[str | None, Form(max_length=120)] = None,
) -> RedirectResponse:
    """Undo a decision (the last, or ``label``): a new label restoring what was there before
    (the machine's suggestion or the person's earlier word), and the demand in front again.
    With ``batch``, a "confirm all": its demands come back in front, one at a time (a
    confirmation restated the machine's word, so there is nothing to restore)."""
    me = who.person.username
    await components.desk.load(components.sessions, me)
    if batch:
        token, decisions = components.desk.batches.get(me, ("", []))
        if token == batch:
            undone = [d for d in decisions if not d.undone]
            for decision in undone:
                decision.undone = True
            components.desk.returned.setdefault((me, "review"), []).extend(reversed(undone))
            await components.desk.save(components.sessions, me)
        return RedirectResponse(_back("review", filter_purpose), status_code=303)
    recent = components.desk.recent(me, "review")
    target = (
        components.desk.find(me, "review", label)
        if label
        else next((d for d in reversed(recent) if not d.undone), None)
    )
    if target is None or target.undone:
        return RedirectResponse(_back("review", filter_purpose), status_code=303)
    if target.previous is not None and target.previous != target.answer:
        restore = _label(
            me, target.item, target.previous, "review", label_id(me, target.label_id, "undo")
        )
        await publish(components, restore)
    target.undone = True
    components.desk.returned.setdefault((me, "review"), []).append(target)
    await components.desk.save(components.sessions, me)
    return RedirectResponse(_back("review", filter_purpose), status_code=303)


@router.post(f"{PREFIX}/review/confirm-all")
async def review_confirm_all(
    who: Reviewer,
    components: Components,
    below: ReviewBelow,
    decision: Annotated[str, Form(min_length=1, max_length=40)],
    expected: Annotated[int, Form(ge=1)],
    filter_purpose: Annotated[str | None, Form(max_length=120)] = None,
) -> RedirectResponse:
    """Confirm the machine's word for every demand waiting under the filter, at most the
    ``expected`` count the person saw (and 500, the API's limit), in one publish. Undone as
    a whole from the notice it leaves."""
    me = who.person.username
    await components.desk.load(components.sessions, me)
    passed = components.desk.passed(me, "review")
    async with components.sessions() as session:
        queue = await audit.review_queue(
            session, below=below, purpose=filter_purpose or None,
            limit=min(expected, CONFIRM_ALL_MAX) + len(passed),
        )  # fmt: skip
    items = [i for i in queue.items if not _passed(i, passed) and i.demand_type != "unknown"]
    now = datetime.now(UTC)
    decisions = []
    for head in items[: min(expected, CONFIRM_ALL_MAX)]:
        item = Item(
            head.demand_id, head.channel, head.occurred_at, head.text,
            head.demand_type, head.purpose, head.failure_kind, head.confidence, head.source,
        )  # fmt: skip
        answer = Answer(head.demand_type, head.purpose, head.failure_kind)
        id_ = label_id(me, head.demand_id, f"all-{decision}")
        decisions.append(Decision(id_, "review", item, answer, answer, now))
    records = [_label(me, d.item, d.answer, "review", d.label_id) for d in decisions]
    await publish(components, *records)
    components.desk.batches[me] = (decision, decisions)
    await components.desk.save(components.sessions, me)
    return RedirectResponse(
        _back("review", filter_purpose, confirmed=str(len(decisions)), batch=decision),
        status_code=303,
    )


# --- audit ----------------------------------------------------------------------------------


@router.get(f"{PREFIX}/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request,
    who: Reviewer,
    components: Components,
    sessions: Sessions,
    answered: Annotated[str | None, Query(max_length=60)] = None,
    edit: Annotated[str | None, Query(max_length=60)] = None,
    missing: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    """The next audit item, blind; the previous answer beside the machine's label of it."""
    me = who.person.username
    await components.desk.load(sessions, me)
    passed = components.desk.passed(me, "audit")
    editing = components.desk.find(me, "audit", edit) if edit else None
    async with sessions() as session:
        queue = await audit.audit_queue(session, limit=1 + len(passed))
        shown = components.desk.find(me, "audit", answered) if answered else None
        machine = (
            await queues.audit_machine_label(session, shown.item.source, shown.item.demand_id)
            if shown is not None
            else None
        )
    head = next((i for i in queue.items if not _passed(i, passed)), None)
    current = (
        editing.item
        if editing is not None
        else (
            Item(head.demand_id, head.channel, head.occurred_at, head.text, source=head.source)
            if head is not None
            else None
        )
    )
    return _pushed(
        request,
        "audit.html",
        who,
        title="Audit queue",
        active="audit",
        queue="audit",
        item=current,
        prefill=editing.answer if editing is not None else None,
        editing=editing,
        waiting=max(queue.open - sum(1 for i in queue.items if _passed(i, passed)), 0),
        shown=shown,
        machine=machine,
        purpose=None,
        purposes=await components.desk.purposes(sessions),
        failure_kinds=FAILURE_KINDS,
        decision=str(time.time_ns()),
        recent=list(reversed(components.desk.recent(me, "audit")))[:SHOWN],
        missing=MISSING.get(missing or ""),
    )


@router.post(f"{PREFIX}/audit/decide")
async def audit_decide(
    who: Reviewer,
    components: Components,
    demand_id: Annotated[str, Form(min_length=1, max_length=200)],
    decision: Annotated[str, Form(min_length=1, max_length=40)],
    demand_type: Annotated[str, Form(max_length=16)] = "",
    purpose: Annotated[str, Form(max_length=120)] = "",
    failure_kind: Annotated[str | None, Form(max_length=120)] = None,
    edits: Annotated[str | None, Form(max_length=60)] = None,
    demand_source: Annotated[str | None, Form(max_length=200)] = None,
) -> RedirectResponse:
    """A blind answer (reason "audit"); with ``edits``, a corrected answer (the latest
    audit label is the one the estimate pairs)."""
    return await _decide(
        who, components, "audit", demand_id, decision, demand_type, purpose, failure_kind,
        None, edits, demand_source or None,
    )  # fmt: skip


@router.post(f"{PREFIX}/audit/skip")
async def audit_skip(
    who: Reviewer,
    components: Components,
    demand_id: Annotated[str, Form(min_length=1, max_length=200)],
    demand_source: Annotated[str | None, Form(max_length=200)] = None,
) -> RedirectResponse:
    return await _skip(who, components, "audit", demand_id, None, demand_source)
