from services.classifier.model.evaluate import (
    cross_validate,
    evaluate,
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
