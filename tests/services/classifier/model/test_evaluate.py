from services.classifier.model.evaluate import (
    cross_validate,
    evaluate,
    failure_share,
    leave_purposes_out,
    score_head,
)
from services.classifier.model.examples import Example
from services.classifier.model.text_model import TextModel


def test_score_head_counts_unseen_labels_as_errors() -> None:
    scores = score_head(["a", "a", "b", "never seen"], ["a", "b", "b", "a"])

    assert scores.accuracy == 0.5
    # per-label F1: a = 0.5, b = 2/3, never seen = 0
    assert abs(scores.macro_f1 - (0.5 + 2 / 3 + 0) / 3) < 1e-9
    assert scores.confused[0][2] == 1
    assert len(scores.confused) == 2


def test_evaluate_scores_each_labelled_head(examples: list[Example]) -> None:
    model = TextModel.train(examples)

    result = evaluate(model, examples)

    assert result.heads["purpose"].accuracy == 1.0
    assert result.heads["demand_type"].count == 30
    assert result.heads["failure_kind"].count == 15
    assert result.throughput_per_s is not None
    assert result.throughput_per_s > 0
    assert set(result.as_dict()) == {"demand_type", "purpose", "failure_kind", "throughput_per_s"}


def test_cross_validation_and_leave_purposes_out_report_means(examples: list[Example]) -> None:
    folds = cross_validate(examples, folds=3)
    unseen = leave_purposes_out(examples, folds=3)

    assert folds["purpose"].count == 30
    assert 0.5 < folds["purpose"].accuracy <= 1.0
    assert unseen.count == 30
    assert 0.5 < unseen.accuracy <= 1.0  # failure cues carry to purposes never trained on


def test_failure_share_counts_only_rows_labelled_value_or_failure() -> None:
    share = failure_share(
        ["failure", "value", "value", "failure", "", "unknown"],
        ["failure", "failure", "value", "value", "failure", "value"],
    )

    assert share is not None
    assert (share.true, share.predicted, share.rows) == (0.5, 0.5, 4)
    assert share.as_dict() == {"true": 0.5, "predicted": 0.5}
    assert failure_share(["", ""], ["value", "failure"]) is None


def test_an_audit_corrects_a_biased_model_and_its_interval_covers_the_truth() -> None:
    # 1,000 rows, 30% failure; the model calls a third of the failures value: it says 20%.
    truth = ["failure"] * 300 + ["value"] * 700
    machine = ["failure"] * 200 + ["value"] * 800

    share = failure_share(truth, machine, audit=200, seed=7)

    assert share is not None
    assert share.estimate is not None
    assert (share.true, share.predicted) == (0.3, 0.2)
    document = share.as_dict()
    assert set(document) == {
        "true",
        "predicted",
        "estimate",
        "ci_low",
        "ci_high",
        "audited",
        "status",
    }
    assert document["audited"] == 200
    assert document["ci_low"] <= 0.3 <= document["ci_high"]
    assert abs(document["estimate"] - 0.3) < abs(0.2 - 0.3)
    assert failure_share(truth, machine, audit=200, seed=7) == share  # the seed decides the draw


def test_a_tiny_audit_is_not_yet_validated() -> None:
    share = failure_share(["failure", "value"] * 10, ["value"] * 20, audit=5, seed=0)

    assert share is not None
    assert share.as_dict()["status"] == "not yet validated"
    assert share.as_dict()["estimate"] is None
