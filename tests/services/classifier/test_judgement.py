import random
from datetime import UTC, datetime, timedelta

from services.classifier.judgement import (
    CustomerContext,
    OpenCase,
    RecentDemand,
    Thresholds,
    judge,
)
from services.classifier.model.text_model import Prediction
from services.classifier.rules import RuleSet
from services.classifier.taxonomy import Rule
from shared.events.classification import CausedBy, ClassificationMethod, DemandType

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NO_RULES = RuleSet()


def predicted(
    purpose: str = "moving home",
    demand_type: str = "value",
    *,
    purpose_p: float = 0.9,
    demand_p: float = 0.9,
    kind: str | None = "progress_chasing",
) -> Prediction:
    return Prediction(purpose, purpose_p, demand_type, demand_p, kind, 0.7)


def test_the_model_decides_when_there_is_no_context_or_rule() -> None:
    judgement = judge("moving next week", predicted(), None, rules=NO_RULES, now=NOW)

    assert judgement.demand_type is DemandType.VALUE
    assert judgement.failure_kind is None
    assert judgement.method is ClassificationMethod.MODEL
    assert judgement.confidence == 0.9
    assert not judgement.needs_review


def test_model_failure_carries_its_failure_kind() -> None:
    judgement = judge(
        "x", predicted(demand_type="failure", kind="not_done"), None, rules=NO_RULES, now=NOW
    )

    assert (judgement.demand_type, judgement.failure_kind) == (DemandType.FAILURE, "not_done")


def test_a_demand_for_a_purpose_with_an_open_case_is_progress_chasing() -> None:
    context = CustomerContext(
        open_cases=[
            OpenCase("CASE-2", "moving home", NOW - timedelta(days=1)),
            OpenCase("CASE-1", "moving home", NOW - timedelta(days=5)),
            OpenCase("CASE-9", "billing / pay my bill", NOW - timedelta(days=9)),
        ]
    )

    judgement = judge("hello", predicted(), context, rules=NO_RULES, now=NOW)

    assert judgement.demand_type is DemandType.FAILURE
    assert judgement.failure_kind == "progress_chasing"
    assert judgement.method is ClassificationMethod.CONTEXT
    assert judgement.caused_by == CausedBy(kind="case", ref="CASE-1")


def test_an_open_demand_without_a_case_is_cited_as_a_demand() -> None:
    context = CustomerContext(
        open_cases=[OpenCase("d-1", "moving home", NOW - timedelta(hours=2), ref_kind="demand")]
    )

    judgement = judge("hello", predicted(), context, rules=NO_RULES, now=NOW)

    assert judgement.caused_by == CausedBy(kind="demand", ref="d-1")


def test_a_demand_soon_after_fulfilment_is_a_repeat() -> None:
    context = CustomerContext(
        recent_demands=[
            RecentDemand("d-1", "moving home", NOW - timedelta(days=20), NOW - timedelta(days=3)),
            RecentDemand("d-2", "moving home", NOW - timedelta(days=2), None),
        ]
    )

    judgement = judge("hello", predicted(), context, rules=NO_RULES, now=NOW)

    assert (judgement.demand_type, judgement.failure_kind) == (DemandType.FAILURE, "repeat")
    assert judgement.caused_by == CausedBy(kind="demand", ref="d-1")
    assert judgement.method is ClassificationMethod.CONTEXT


def test_a_repeat_the_model_hears_as_not_fixed_is_not_done_right() -> None:
    context = CustomerContext(
        recent_demands=[RecentDemand("d-1", "moving home", NOW, NOW - timedelta(days=1))]
    )
    prediction = predicted(demand_type="failure", kind="not_done_right")

    judgement = judge("still wrong", prediction, context, rules=NO_RULES, now=NOW)

    assert judgement.failure_kind == "not_done_right"


def test_outside_the_repeat_window_the_model_decides() -> None:
    context = CustomerContext(
        recent_demands=[
            RecentDemand("d-1", "moving home", NOW - timedelta(days=60), NOW - timedelta(days=15))
        ]
    )

    judgement = judge(
        "hello",
        predicted(),
        context,
        rules=NO_RULES,
        now=NOW,
        thresholds=Thresholds(repeat_window=timedelta(days=14)),
    )

    assert judgement.demand_type is DemandType.VALUE
    assert judgement.method is ClassificationMethod.MODEL
    assert judgement.caused_by is None


def test_context_for_another_purpose_does_not_count() -> None:
    context = CustomerContext(open_cases=[OpenCase("C-1", "billing / pay my bill", NOW)])

    assert (
        judge("x", predicted(), context, rules=NO_RULES, now=NOW).method
        is ClassificationMethod.MODEL
    )


def test_a_rule_overrides_model_and_context() -> None:
    rules = RuleSet(
        [
            Rule(
                when_any=("ombudsman",),
                purpose="complaint",
                demand_type=DemandType.FAILURE,
                failure_kind="other",
            )
        ]
    )
    context = CustomerContext(open_cases=[OpenCase("C-1", "complaint", NOW - timedelta(days=1))])

    judgement = judge(
        "I am going to the Ombudsman", predicted(purpose_p=0.2), context, rules=rules, now=NOW
    )

    assert judgement.purpose == "complaint"
    assert (judgement.demand_type, judgement.failure_kind) == (DemandType.FAILURE, "other")
    assert judgement.method is ClassificationMethod.RULE
    assert judgement.confidence == 1.0
    assert judgement.caused_by == CausedBy(kind="case", ref="C-1")


def test_a_rule_that_sets_only_the_purpose_leaves_demand_type_to_context() -> None:
    rules = RuleSet([Rule(when_any=("bailiff",), purpose="payment difficulties")])
    context = CustomerContext(open_cases=[OpenCase("C-7", "payment difficulties", NOW)])

    judgement = judge("the bailiff came", predicted(), context, rules=rules, now=NOW)

    assert judgement.purpose == "payment difficulties"
    assert judgement.method is ClassificationMethod.CONTEXT
    assert judgement.caused_by == CausedBy(kind="case", ref="C-7")


def test_rule_phrases_match_whole_words_only() -> None:
    rules = RuleSet([Rule(when_any=("leave",), purpose="switch or leave")])

    assert rules.match("my sleeve") is None
    assert rules.match("I want to LEAVE") is not None


def test_the_first_rule_in_the_taxonomys_order_wins_wherever_its_phrase_is() -> None:
    rules = RuleSet(
        [
            Rule(when_any=("complaint",), purpose="complaint"),
            Rule(when_any=("bailiff", "debt collector"), purpose="payment difficulties"),
        ]
    )

    first = rules.match("a debt   collector came, this is a complaint")
    second = rules.match("the bailiff came")

    assert first is not None
    assert first.purpose == "complaint"
    assert second is not None
    assert second.phrase == "bailiff"
    assert rules.match("nothing to see") is None


def test_low_confidence_needs_review() -> None:
    judgement = judge(
        "x",
        predicted(purpose_p=0.4),
        None,
        rules=NO_RULES,
        now=NOW,
        thresholds=Thresholds(review_threshold=0.6),
    )

    assert judgement.demand_type is DemandType.VALUE
    assert judgement.confidence == 0.4
    assert judgement.needs_review


def test_an_unsure_demand_type_is_unknown() -> None:
    judgement = judge(
        "x",
        predicted(demand_type="failure", demand_p=0.52),
        None,
        rules=NO_RULES,
        now=NOW,
        thresholds=Thresholds(unknown_threshold=0.55),
    )

    assert judgement.demand_type is DemandType.UNKNOWN
    assert judgement.failure_kind is None
    assert judgement.needs_review


def test_the_first_words_check_never_changes_what_a_rule_set_matches() -> None:
    # The check before the patterns (any phrase's first word anywhere in the text) may only
    # skip texts no pattern matches: held to every pattern searched, on phrases whose first
    # words carry regex metacharacters and texts where they sit mid-text, inside other
    # words, in capitals or after a curly apostrophe.
    rules = RuleSet(
        [
            Rule(when_any=("c++ help", "a.b plan", "1+1 deal"), purpose="odd words"),
            Rule(when_any=("(urgent) gas", "gas leak"), purpose="gas"),
            Rule(when_any=("can't pay", "bailiff"), demand_type=DemandType.FAILURE),
        ]
    )
    words = [
        "c++",
        "help",
        "a.b",
        "axb",
        "plan",
        "(urgent)",
        "urgent",
        "gas",
        "leak",
        "gasleak",
        "1+1",
        "deal",
        "can't",
        "can\u2019t",
        "pay",
        "bailiff",
        "BAILIFF",
        "x",
        "the",
    ]
    rng = random.Random(7)

    def every_pattern(text: str) -> str | None:
        lowered = text.lower().replace("\u2019", "'")
        for compiled in rules._rules:
            for phrase, pattern in compiled.patterns:
                if pattern.search(lowered):
                    return phrase
        return None

    texts = ["1+1 deal", "the 1+1 deal", "axb plan", "(urgent) gas", "x c++ help"]
    texts += [" ".join(rng.choices(words, k=rng.randint(1, 6))) for _ in range(3_000)]
    found = [(match.phrase if (match := rules.match(t)) else None) for t in texts]
    assert found == [every_pattern(t) for t in texts]
    assert sum(phrase is not None for phrase in found) > 1_000  # most texts do match
