"""A small, realistic demo data set for `make run` (and the pages' browser tests).

Six weeks of a housing association's contact centre, generated deterministically (a seeded
random generator, ids that depend only on the seed): several purposes, value and failure
demand on several channels, cases fulfilled on the customer's clock, failure demand traced to
the case that caused it, and a visible shift: three weeks ago repairs started to be booked
during the first call, so chasing calls about repairs fall and repairs are done sooner. A
change to the system is recorded for rent statements ten days ago ("plain English").

The "machine" that labelled the demo is made to err as a real classifier does (it misses
some failure demand, mostly politely worded chasing, and calls a little value demand
failure), and the demo's auditor has answered the blind audit sample that the metrics
service draws (the same keyed draw, the default audit key): so the overview shows the
machine's share *and* the audit's estimate with its interval, which covers the truth.

`devstack up` publishes the events onto the topics the metrics service consumes (as the
classifier would), so the first look at the pages is not an empty page; `--no-demo` skips it.
Ids are stable, so loading it twice changes nothing (every consumer is idempotent).
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from shared.events import (
    CaseEvent,
    CaseEventType,
    Channel,
    ClassificationMethod,
    DemandClassified,
    DemandLabelled,
    DemandReceived,
    DemandType,
    Event,
)
from shared.events.classification import CausedBy

SOURCE = "demo"
DEMO_USERNAME = "demo"
DEMO_AUDITOR = "demo-auditor"
# How often the demo's "machine" gets the type wrong: it misses failure demand more often
# than it invents it, the bias the audit is there to correct.
MACHINE_MISSES_FAILURE = 0.18
MACHINE_INVENTS_FAILURE = 0.04


@dataclass(frozen=True)
class Purpose:
    name: str
    per_day: float  # new cases a day
    days_to_fulfil: tuple[float, float]  # before the change, after it
    chase_share: tuple[float, float]  # share of cases with a chasing call, before / after
    channels: tuple[Channel, ...]
    words: tuple[str, ...]
    chase_words: tuple[str, ...]


PURPOSES = (
    Purpose(
        "report a repair",
        9,
        (6.0, 2.5),
        (0.45, 0.15),
        (Channel.PHONE, Channel.PHONE, Channel.WEB, Channel.EMAIL),
        (
            "The boiler has stopped working and there is no hot water.",
            "Water is coming through the kitchen ceiling from the flat above.",
            "The front door lock is broken and won't close properly.",
        ),
        (
            "I reported my boiler last week, when is someone coming?",
            "Nobody turned up for the repair appointment yesterday.",
            "Still waiting for the leak to be fixed, this is my third call.",
        ),
    ),
    Purpose(
        "pay my rent",
        7,
        (0.2, 0.2),
        (0.05, 0.05),
        (Channel.PHONE, Channel.WEB, Channel.WEB, Channel.CHAT),
        ("I'd like to pay this month's rent by card.", "Can I set up a direct debit for my rent?"),
        ("I paid last week but it is not showing on my account.",),
    ),
    Purpose(
        "move home",
        3,
        (14.0, 14.0),
        (0.30, 0.30),
        (Channel.PHONE, Channel.EMAIL, Channel.FACE_TO_FACE),
        (
            "We need a bigger place now the baby has arrived, how do I apply for a transfer?",
            "I want to swap my flat with another tenant.",
        ),
        ("I applied to transfer a month ago and heard nothing back.",),
    ),
    Purpose(
        "report antisocial behaviour",
        2,
        (9.0, 9.0),
        (0.35, 0.35),
        (Channel.PHONE, Channel.EMAIL),
        ("The neighbours play loud music every night until 3am.",),
        ("I reported the noise two weeks ago and it is still happening.",),
    ),
)
# Failure demand of another purpose that a case breeds: (cause, purpose, share, kind, words).
KNOCK_ON = (
    ("pay my rent", "understand my rent statement", (0.30, 0.08), "not_understood",
     "I don't understand the new rent statement, why has it gone up?"),
    ("move home", "query a bill", (0.20, 0.20), "not_done_right",
     "I moved out in March but I'm still being charged rent for the old flat."),
    ("report a repair", "query a bill", (0.06, 0.03), "not_done_right",
     "I've been charged for a repair that was never done."),
)  # fmt: skip
CHANGE_PURPOSE = "understand my rent statement"
CHANGE_NOTE = "Rent statements rewritten in plain English, with a line per change."


@dataclass(frozen=True)
class DemoChange:
    purpose: str
    changed_at: datetime
    note: str


@dataclass
class _Builder:
    rng: random.Random
    now: datetime
    events: list[Event]
    number: int = 0
    truth: dict[str, tuple[DemandType, str | None]] = field(default_factory=dict)

    def next_id(self, prefix: str) -> str:
        self.number += 1
        return f"demo-{prefix}-{self.number:05d}"

    def demand(
        self,
        *,
        at: datetime,
        customer: str,
        case: str | None,
        channel: Channel,
        text: str,
        purpose: str,
        demand_type: DemandType,
        failure_kind: str | None = None,
        caused_by: CausedBy | None = None,
    ) -> None:
        if at >= self.now:
            return
        attributes = {}
        if channel is Channel.PHONE:  # the telephony system reports handling time
            attributes["handling_seconds"] = str(int(self.rng.uniform(180, 900)))
        confidence = round(self.rng.uniform(0.45, 0.99), 2)
        true_type, true_kind = demand_type, failure_kind
        if demand_type is DemandType.FAILURE and self.rng.random() < MACHINE_MISSES_FAILURE:
            demand_type, failure_kind, caused_by = DemandType.VALUE, None, None
        elif demand_type is DemandType.VALUE and self.rng.random() < MACHINE_INVENTS_FAILURE:
            demand_type, failure_kind = DemandType.FAILURE, "other"
        demand = DemandReceived(
            id=self.next_id("d"),
            occurred_at=at,
            received_at=at,
            channel=channel,
            source=SOURCE,
            customer_ref=customer,
            case_ref=case,
            text=text,
            team=self.rng.choice(("north", "south")),
            attributes=attributes,
        )
        self.truth[demand.id] = (true_type, true_kind)
        self.events.append(
            DemandClassified(
                demand=demand,
                demand_type=demand_type,
                failure_kind=failure_kind,
                purpose=purpose,
                confidence=confidence,
                method=ClassificationMethod.MODEL,
                model_version="demo-1",
                needs_review=confidence < 0.6,
                caused_by=caused_by,
                classified_at=at,
            )
        )

    def case_event(
        self, *, at: datetime, customer: str, case: str, kind: CaseEventType, purpose: str
    ) -> None:
        if at < self.now:
            self.events.append(
                CaseEvent(
                    id=self.next_id("e"),
                    case_ref=case,
                    customer_ref=customer,
                    type=kind,
                    occurred_at=at,
                    source=SOURCE,
                    purpose=purpose,
                )
            )


def _office_hours(rng: random.Random, day: datetime) -> datetime:
    return day + timedelta(hours=rng.uniform(8, 18))


def demo_events(
    now: datetime, *, days: int = 42, shift_days_ago: int = 21, seed: int = 12
) -> tuple[list[Event], list[DemoChange]]:
    """The demo's events, oldest first, and the change to record; the same for the same
    arguments (``now`` is truncated to its day, so a whole day gives the same set)."""
    today = datetime.combine(now.astimezone(UTC).date(), time.min, tzinfo=UTC)
    rng = random.Random(seed)
    build = _Builder(rng=rng, now=today, events=[])
    shift = today - timedelta(days=shift_days_ago)
    for offset in range(days, 0, -1):
        day = today - timedelta(days=offset)
        after = day >= shift
        weekend = day.weekday() >= 5
        for purpose in PURPOSES:
            cases = int(rng.gauss(purpose.per_day * (0.4 if weekend else 1.0), 1.2))
            for _ in range(max(0, cases)):
                _one_case(build, purpose, _office_hours(rng, day), after)
    build.events.sort(key=lambda e: _when(e))
    build.events += _audit_answers(build)
    change = DemoChange(CHANGE_PURPOSE, today - timedelta(days=10), CHANGE_NOTE)
    return build.events, [change]


def _audit_answers(build: _Builder) -> list[Event]:
    """The auditor's blind labels (the truth) for the demands the metrics service draws
    into the audit: the same keyed draw and strata, so every one completes an audit pair."""
    from services.metrics.domain.audit import AuditPlan, week_start

    plan = AuditPlan()
    classified = [e for e in build.events if isinstance(e, DemandClassified)]
    strata: dict[tuple[str, object], int] = {}
    for event in classified:
        key = (event.purpose, week_start(event.demand.occurred_at.astimezone(UTC)))
        strata[key] = strata.get(key, 0) + 1
    answers: list[Event] = []
    for event in classified:
        key = (event.purpose, week_start(event.demand.occurred_at.astimezone(UTC)))
        if plan.draw(event.demand.id) >= plan.inclusion_probability(strata[key]):
            continue
        true_type, true_kind = build.truth[event.demand.id]
        answered = event.demand.occurred_at + timedelta(hours=20)
        if answered >= build.now:
            continue  # not answered yet: still in the audit queue
        answers.append(
            DemandLabelled(
                id=f"{event.demand.id}-audit",
                demand_id=event.demand.id,
                demand_source=event.demand.source,
                demand_type=true_type,
                failure_kind=true_kind,
                purpose=event.purpose,
                labelled_by=DEMO_AUDITOR,
                labelled_at=answered,
                reason="audit",
            )
        )
    return answers


def _when(event: Event) -> datetime:
    if isinstance(event, DemandClassified):
        return event.demand.occurred_at
    if isinstance(event, DemandLabelled):
        return event.labelled_at
    assert isinstance(event, CaseEvent)
    return event.occurred_at


def _one_case(build: _Builder, purpose: Purpose, start: datetime, after: bool) -> None:
    rng = build.rng
    customer = build.next_id("C")
    case = build.next_id("K")
    phase = 1 if after else 0
    build.demand(
        at=start, customer=customer, case=case, channel=rng.choice(purpose.channels),
        text=rng.choice(purpose.words), purpose=purpose.name, demand_type=DemandType.VALUE,
    )  # fmt: skip
    build.case_event(
        at=start, customer=customer, case=case, kind=CaseEventType.OPENED, purpose=purpose.name
    )
    days = max(0.05, rng.lognormvariate(0, 0.45) * purpose.days_to_fulfil[phase])
    done = start + timedelta(days=days)
    if rng.random() < purpose.chase_share[phase]:
        chase_at = start + timedelta(days=days * rng.uniform(0.4, 0.9))
        build.demand(
            at=chase_at, customer=customer, case=None, channel=Channel.PHONE,
            text=rng.choice(purpose.chase_words), purpose=purpose.name,
            demand_type=DemandType.FAILURE, failure_kind="progress_chasing",
            caused_by=CausedBy(kind="case", ref=case, source=SOURCE),
        )  # fmt: skip
    for cause, knock_purpose, share, kind, words in KNOCK_ON:
        if cause != purpose.name:
            continue
        changed = knock_purpose == CHANGE_PURPOSE and start >= build.now - timedelta(days=10)
        if rng.random() < share[1 if changed else 0]:
            build.demand(
                at=done + timedelta(days=rng.uniform(1, 6)), customer=customer, case=None,
                channel=rng.choice((Channel.PHONE, Channel.EMAIL)), text=words,
                purpose=knock_purpose, demand_type=DemandType.FAILURE, failure_kind=kind,
                caused_by=CausedBy(kind="case", ref=case, source=SOURCE),
            )  # fmt: skip
    build.case_event(
        at=done, customer=customer, case=case, kind=CaseEventType.FULFILLED, purpose=purpose.name
    )


# --- loading it into a running stack -------------------------------------------------------


async def publish(events: Sequence[Event], kafka_settings: object) -> None:
    """Each event onto the topic that carries it (as the classifier and intake would)."""
    from shared.kafka.codec import encode
    from shared.kafka.producer import create_producer, send_all
    from shared.kafka.settings import KafkaSettings
    from shared.topics import TOPIC_OF_EVENT, topic_name

    assert isinstance(kafka_settings, KafkaSettings)
    records = [
        encode(e, topic=topic_name(kafka_settings, TOPIC_OF_EVENT[type(e)]), source=SOURCE)
        for e in events
    ]
    producer = create_producer(kafka_settings, client_id="demandscope-demo")
    await producer.start()
    try:
        await send_all(producer, records)
    finally:
        await producer.stop()


def change_events(changes: Sequence[DemoChange]) -> list[Event]:
    """The demo's changes to the system as the events the pages would publish, each with an
    id of its own content, so loading the demo twice records each once."""
    from shared.events import SystemChanged

    return [
        SystemChanged(
            id=f"demo-change-{hashlib.sha256(f'{c.purpose}|{c.note}'.encode()).hexdigest()[:24]}",
            purpose=c.purpose,
            changed_at=c.changed_at,
            note=c.note,
            recorded_at=c.changed_at,
            recorded_by=DEMO_USERNAME,
        )
        for c in changes
    ]


def ensure_demo_account(auth_database_url: str, password_file: Path) -> tuple[str, str]:
    """The development-only demo account (an admin): its username and password, made once
    and kept in ``password_file`` (under .run/, never committed)."""
    import asyncio

    from shared.auth.account_store import AccountStore
    from shared.auth.accounts import Role

    known = password_file.read_text().strip() if password_file.is_file() else None
    password = known or secrets.token_urlsafe(12)

    async def ensure() -> bool:
        store = AccountStore(auth_database_url)
        try:
            if await store.find(DEMO_USERNAME) is not None:
                return False
            await store.create(DEMO_USERNAME, Role.ADMIN, password)
            return True
        finally:
            await store.close()

    created = asyncio.run(ensure())
    if created:
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
    elif known is None:
        return DEMO_USERNAME, "(unknown: its file is gone; `demandscope accounts create` another)"
    return DEMO_USERNAME, password
