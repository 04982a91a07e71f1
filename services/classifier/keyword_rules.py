"""A first, honest rule set: phrases that betray failure demand, and a purpose by keyword.

Deliberately simple. It is the fallback when no trained model exists, and it says so: its
confidence is low and its output is marked for review.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.events import ClassificationMethod, DemandType, FailureKind

RULESET_VERSION = "keyword-rules-1"

_FAILURE_CUES: tuple[tuple[FailureKind, tuple[str, ...]], ...] = (
    (
        FailureKind.PROGRESS_CHASING,
        (
            "still waiting",
            "where is",
            "where's",
            "chasing",
            "any update",
            "no update",
            "how long",
            "still not",
            "haven't heard",
            "not heard back",
            "still no",
        ),
    ),
    (FailureKind.REPEAT, ("again", "third time", "second time", "already told", "already called")),
    (
        FailureKind.NOT_DONE,
        (
            "didn't turn up",
            "did not turn up",
            "never arrived",
            "no one came",
            "nobody came",
            "didn't happen",
            "never happened",
            "not been done",
            "wasn't done",
        ),
    ),
    (
        FailureKind.NOT_DONE_RIGHT,
        (
            "wrong",
            "still broken",
            "not working",
            "incorrect",
            "overcharged",
            "mistake",
            "error",
        ),
    ),
    (
        FailureKind.NOT_UNDERSTOOD,
        (
            "don't understand",
            "do not understand",
            "confusing",
            "what does this mean",
            "unclear",
        ),
    ),
)

_PURPOSE_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("moving home", ("moving", "move house", "new house", "new address", "move home")),
    ("billing", ("bill", "invoice", "charge", "payment", "pay", "direct debit", "refund")),
    ("faults", ("fault", "broken", "not working", "outage", "no power", "no internet", "leak")),
    ("engineer visit", ("engineer", "appointment", "visit", "technician")),
    ("meter readings", ("meter", "reading")),
    ("tariffs and prices", ("tariff", "price", "plan", "deal", "contract")),
    ("complaint", ("complain", "complaint", "ombudsman", "unacceptable")),
)


@dataclass(frozen=True)
class RuleJudgement:
    demand_type: DemandType
    failure_kind: str | None
    purpose: str
    confidence: float
    method: ClassificationMethod
    needs_review: bool


def _contains(text: str, phrase: str) -> bool:
    return re.search(rf"\b{re.escape(phrase)}\b", text) is not None


def judge_by_keywords(text: str) -> RuleJudgement:
    lowered = text.lower()
    purpose = next(
        (name for name, words in _PURPOSE_KEYWORDS if any(_contains(lowered, w) for w in words)),
        "other",
    )
    failure = next(
        (kind for kind, cues in _FAILURE_CUES if any(_contains(lowered, c) for c in cues)), None
    )
    if failure is not None:
        return RuleJudgement(
            DemandType.FAILURE, failure.value, purpose, 0.6, ClassificationMethod.RULE, True
        )
    return RuleJudgement(DemandType.VALUE, None, purpose, 0.5, ClassificationMethod.RULE, True)
