"""What a person did in the review and audit queues: their last decisions (to list, change
and undo them) and the demands they skipped. It lets the pages move on to the next item
before the metrics consumer has applied the label just published (the labels themselves are
on ``demand.labels``).

Kept in the metrics database per person (``desk_states``, one JSON document): each request
of a queue's page loads the person's desk (``Desk.load``) and one that changes it stores it
again (``Desk.save``), so every replica behind the load balancer, and one restarted, shows
the same last ten and skips the same demands. A person works one item at a time, so the
last write of their own desk wins."""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics.db import desk, measures

Queue = Literal["review", "audit"]
KEPT = 50  # decisions remembered per person and queue; the page lists the last ten
_PURPOSES_TTL_S = 60.0


@dataclass(frozen=True)
class Item:
    """A demand as a queue shows it; ``machine`` only for the review queue (never blind)."""

    demand_id: str
    channel: str
    occurred_at: datetime
    text: str
    demand_type: str | None = None
    purpose: str | None = None
    failure_kind: str | None = None
    confidence: float | None = None
    # The demand's source (a demand is its source and id): the label names it.
    source: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.source, self.demand_id


ANY_SOURCE = "*"  # a skip whose form named no source: the demand of that id in every source


def is_passed(source: str, demand_id: str, passed: set[tuple[str, str]]) -> bool:
    return (source, demand_id) in passed or (ANY_SOURCE, demand_id) in passed


@dataclass(frozen=True)
class Answer:
    demand_type: str
    purpose: str
    failure_kind: str | None


@dataclass
class Decision:
    label_id: str
    queue: Queue
    item: Item
    answer: Answer
    previous: Answer | None  # what undo restores (the machine's suggestion, or an earlier word)
    at: datetime
    undone: bool = False


@dataclass
class Desk:
    """Per person and queue: the last decisions and the skipped demands. The database holds
    them (``load`` before a request reads them, ``save`` after it changes them); what is here
    is this process's copy of the people it served last."""

    decisions: dict[tuple[str, Queue], deque[Decision]] = field(default_factory=dict)
    # (source, demand id): a demand is its source and id. ANY_SOURCE when a form named none.
    skipped: dict[tuple[str, Queue], set[tuple[str, str]]] = field(default_factory=dict)
    returned: dict[tuple[str, Queue], list[Decision]] = field(default_factory=dict)
    batches: dict[str, tuple[str, list[Decision]]] = field(default_factory=dict)  # the last
    _purposes: tuple[float, list[str]] = (0.0, [])

    def recent(self, who: str, queue: Queue) -> deque[Decision]:
        return self.decisions.setdefault((who, queue), deque(maxlen=KEPT))

    def find(self, who: str, queue: Queue, label_id: str) -> Decision | None:
        return next((d for d in self.recent(who, queue) if d.label_id == label_id), None)

    def passed(self, who: str, queue: Queue) -> set[tuple[str, str]]:
        """Demands this person has done with here, as (source, id): decided (not undone) or
        skipped. ``is_passed`` asks of one item."""
        decided = {d.item.key for d in self.recent(who, queue) if not d.undone}
        if queue == "review" and who in self.batches:
            decided |= {d.item.key for d in self.batches[who][1] if not d.undone}
        return decided | self.skipped.get((who, queue), set())

    async def load(self, sessions: async_sessionmaker[AsyncSession], who: str) -> None:
        """This person's desk as stored (every replica's decisions), in place of this
        process's copy."""
        async with sessions() as session:
            stored = await desk.desk_state(session, who)
        state: dict[str, Any] = json.loads(stored) if stored else {}
        for queue in ("review", "audit"):
            kept = state.get("decisions", {}).get(queue, [])
            self.decisions[(who, queue)] = deque(map(_decision, kept), maxlen=KEPT)
            self.skipped[(who, queue)] = {
                (s, d) for s, d in state.get("skipped", {}).get(queue, [])
            }
            self.returned[(who, queue)] = list(
                map(_decision, state.get("returned", {}).get(queue, []))
            )
        batch = state.get("batch")
        if batch:
            self.batches[who] = (batch[0], list(map(_decision, batch[1])))
        else:
            self.batches.pop(who, None)

    async def save(self, sessions: async_sessionmaker[AsyncSession], who: str) -> None:
        """Store this person's desk (after a decision, skip, undo or confirm-all)."""
        queues: tuple[Queue, ...] = ("review", "audit")
        state = {
            "decisions": {q: [_plain(d) for d in self.recent(who, q)] for q in queues},
            "skipped": {q: sorted(self.skipped.get((who, q), set())) for q in queues},
            "returned": {q: [_plain(d) for d in self.returned.get((who, q), [])] for q in queues},
            "batch": (
                [self.batches[who][0], [_plain(d) for d in self.batches[who][1]]]
                if who in self.batches
                else None
            ),
        }
        async with sessions() as session, session.begin():
            await desk.save_desk_state(session, who, json.dumps(state), datetime.now(UTC))

    async def purposes(self, sessions: async_sessionmaker[AsyncSession]) -> list[str]:
        """The purposes to choose from, read at most once a minute (a distinct over the
        figures is not what a keystroke should wait for)."""
        read_at, found = self._purposes
        if not found or time.monotonic() - read_at > _PURPOSES_TTL_S:
            async with sessions() as session:
                found = await measures.all_purposes(session)
            self._purposes = (time.monotonic(), found)
        return found


def _plain(decision: Decision) -> dict[str, Any]:
    plain = asdict(decision)
    plain["at"] = decision.at.isoformat()
    plain["item"]["occurred_at"] = decision.item.occurred_at.isoformat()
    return plain


def _answer(plain: dict[str, Any] | None) -> Answer | None:
    return None if plain is None else Answer(**plain)


def _decision(plain: dict[str, Any]) -> Decision:
    item = dict(plain["item"], occurred_at=datetime.fromisoformat(plain["item"]["occurred_at"]))
    return Decision(
        label_id=plain["label_id"],
        queue=plain["queue"],
        item=Item(**item),
        answer=Answer(**plain["answer"]),
        previous=_answer(plain["previous"]),
        at=datetime.fromisoformat(plain["at"]),
        undone=plain["undone"],
    )
