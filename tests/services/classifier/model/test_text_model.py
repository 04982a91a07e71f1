from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits  # type: ignore[import-untyped]

from services.classifier.model import text_model
from services.classifier.model.examples import Example
from services.classifier.model.lexicon import CueCounter
from services.classifier.model.text_model import TextModel
from services.classifier.taxonomy import FailureKindDefinition, PurposeDefinition, Taxonomy


def test_round_trip_learns_purpose_and_demand_type(examples: list[Example]) -> None:
    model = TextModel.train(examples)

    predictions = model.predict_batch(
        [
            "I would like to set up a direct debit to pay my bill",
            "still waiting for the engineer to fix my broadband, nobody came",
        ]
    )

    assert predictions[0].purpose == "billing / pay my bill"
    assert predictions[0].demand_type == "value"
    assert predictions[1].purpose == "faults / broadband not working"
    assert predictions[1].demand_type == "failure"
    assert predictions[1].failure_kind is not None
    assert 0.5 < predictions[1].demand_type_probability <= 1.0
    assert len(predictions[0].alternatives) == 2
    assert (
        sum(p for _, p in predictions[0].alternatives)
        < 1 - predictions[0].purpose_probability + 1e-6
    )


def test_training_reports_progress_and_counts_labels(examples: list[Example]) -> None:
    steps: list[float] = []

    model = TextModel.train(examples, progress=lambda _step, fraction: steps.append(fraction))

    assert steps[-1] == 1.0
    assert steps == sorted(steps)
    assert model.label_counts["demand_type"] == {"value": 15, "failure": 15}
    assert sum(model.label_counts["failure_kind"].values()) == 15


def test_taxonomy_examples_teach_purposes_without_labelled_rows(examples: list[Example]) -> None:
    taxonomy = Taxonomy(
        purposes=(
            *(PurposeDefinition(slug=p) for p in {e.purpose or "" for e in examples}),
            PurposeDefinition(slug="pets", examples=("my dog needs a vet", "cat food delivery")),
        )
    )

    model = TextModel.train(examples, taxonomy)

    assert "pets" in model.purposes
    assert model.predict("does my dog need a vet").purpose == "pets"


def test_a_single_demand_type_still_predicts(examples: list[Example]) -> None:
    values = [e for e in examples if e.demand_type == "value"]

    prediction = TextModel.train(values).predict("anything at all")

    assert (prediction.demand_type, prediction.demand_type_probability) == ("value", 1.0)
    assert prediction.failure_kind is None


def test_explain_names_the_words_behind_each_head(examples: list[Example]) -> None:
    explanation = TextModel.train(examples).explain("still waiting for my final bill after moving")

    assert explanation.prediction.demand_type == "failure"
    demand_drivers = [d.feature for d in explanation.drivers["demand_type"]]
    assert any("still" in name or "progress_chasing" in name for name in demand_drivers)
    assert all(d.weight > 0 for d in explanation.drivers["purpose"])


def test_cues_match_whole_words_and_taxonomy_phrases() -> None:
    counter = CueCounter({"not_understood": ["gobbledegook"]})
    names = counter.feature_names

    row = counter.transform(["I still didnt get it, pure gobbledegook", "stillness"]).toarray()

    assert row[0, names.index("cue:progress_chasing")] > 0
    assert row[0, names.index("cue:not_done")] > 0  # "didnt" without the apostrophe
    assert row[0, names.index("cue:not_understood")] > 0
    assert row[1].sum() == 0


def test_failure_kind_keywords_from_the_taxonomy_become_cues(examples: list[Example]) -> None:
    taxonomy = Taxonomy(
        purposes=tuple(PurposeDefinition(slug=p) for p in {e.purpose or "" for e in examples}),
        failure_kinds=(FailureKindDefinition(slug="repeat", keywords=("umpteenth",)),),
    )

    model = TextModel.train(examples, taxonomy)

    assert model.explain("umpteenth").drivers is not None
    assert model.taxonomy is taxonomy


def test_block_wise_probabilities_equal_scikit_learns_on_the_stacked_matrix(
    examples: list[Example],
) -> None:
    model = TextModel.train(examples)
    texts = ["still waiting for my final bill", "pay my bill", "", "wifi down again!!"]
    blocks = model._blocks(texts)

    for head, parts, stacked in (
        (model._purpose, model._purpose_parts(blocks), model._purpose_features(blocks)),
        (model._demand_type, model._judgement_parts(blocks), model._judgement_features(blocks)),
    ):
        assert np.allclose(head.probabilities_of(parts), head.probabilities(stacked), atol=1e-5)
    assert model._failure_kind is not None
    assert np.allclose(
        model._failure_kind.probabilities_of(model._judgement_parts(blocks)),
        model._failure_kind.probabilities(model._judgement_features(blocks)),
        atol=1e-5,
    )


def test_the_heads_score_on_one_blas_thread_and_the_count_is_restored(
    examples: list[Example], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = TextModel.train(examples)
    seen: list[list[int]] = []
    score = text_model._StackedHeads.probabilities

    def watched(
        self: text_model._StackedHeads, *parts: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        seen.append([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"])
        return score(self, *parts)

    monkeypatch.setattr(text_model._StackedHeads, "probabilities", watched)
    with threadpool_limits(limits=2, user_api="blas"):
        model.predict_batch(["pay my bill", "still waiting"])
        after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    assert seen
    assert seen[0]
    assert all(count == 1 for count in seen[0])
    assert all(count == 2 for count in after)


def _failure_log_odds(model: TextModel, texts: list[str]) -> np.ndarray:
    predictions = model.predict_batch(texts)
    failure = np.array(
        [
            p.demand_type_probability
            if p.demand_type == "failure"
            else 1 - p.demand_type_probability
            for p in predictions
        ]
    )
    result: np.ndarray = np.log(failure / (1 - failure))
    return result


def test_the_organisations_own_failure_share_becomes_the_value_failure_prior(
    examples: list[Example],
) -> None:
    values = [e for e in examples if e.demand_type == "value"]
    failures = [e for e in examples if e.demand_type == "failure"]
    rare = values + failures[:2]  # an organisation where failure is rare
    texts = [e.text for e in examples]

    balanced = TextModel.train(rare, settings=text_model.ModelSettings(own_prior_min_rows=0))
    own_prior = TextModel.train(
        rare, settings=text_model.ModelSettings(own_prior_min_rows=len(rare))
    )

    assert balanced.failure_prior is None
    assert own_prior.failure_prior == pytest.approx(3 / (len(rare) + 2))
    assert own_prior.failure_prior is not None
    shift = _failure_log_odds(own_prior, texts) - _failure_log_odds(balanced, texts)
    odds = np.log(own_prior.failure_prior / (1 - own_prior.failure_prior))
    assert odds < -1  # rarer failure: every text a little less likely to be judged failure
    np.testing.assert_allclose(shift, odds, atol=1e-6)
    own_prior.set_failure_prior(None)  # back to the balanced fit's 1/2
    np.testing.assert_allclose(
        _failure_log_odds(own_prior, texts), _failure_log_odds(balanced, texts), atol=1e-6
    )
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        own_prior.set_failure_prior(1.0)


def test_audit_labels_count_in_the_prior_as_every_other_row(examples: list[Example]) -> None:
    # The audit is drawn with unequal chances per purpose: its raw share is not taken alone.
    values = [e for e in examples if e.demand_type == "value"]
    failures = [e for e in examples if e.demand_type == "failure"]
    audit = [replace(e, reason="audit") for e in values[:9] + failures[:1]]
    review = [replace(e, reason="review") for e in failures[1:]]
    rows = [*audit, *review]

    model = TextModel.train(rows, settings=text_model.ModelSettings(own_prior_min_rows=10))

    expected = text_model.FailurePrior((len(failures) + 1) / (len(rows) + 2), "labels", len(rows))
    assert text_model.failure_prior_of(rows, len(audit)) == expected
    assert text_model.failure_prior_of(rows, len(rows) + 1) is None
    assert text_model.failure_prior_of(rows, 0) is None
    assert model.failure_prior == pytest.approx(expected.share)
    assert (model.failure_prior_source, model.failure_prior_rows) == ("labels", len(rows))
    model.set_failure_prior(None)
    assert (model.failure_prior_source, model.failure_prior_rows) == (None, None)


def test_the_prior_counts_the_rows_it_is_given_once(examples: list[Example]) -> None:
    # Training weighs a label by counting it several times; the share counts it once.
    settings = text_model.ModelSettings(own_prior_min_rows=len(examples) + 1)

    weighted = TextModel.train(examples * 5, settings=settings)
    once = TextModel.train(examples * 5, settings=settings, prior_rows=examples)

    assert weighted.failure_prior_rows == 5 * len(examples)
    assert once.failure_prior is None  # fewer rows than the setting asks for


def test_too_few_own_rows_or_none_keep_the_balanced_prior(examples: list[Example]) -> None:
    few = TextModel.train(
        examples, settings=text_model.ModelSettings(own_prior_min_rows=len(examples) + 1)
    )
    taxonomy = Taxonomy(
        purposes=(PurposeDefinition(slug="pets", examples=("my dog needs a vet", "cat food")),)
    )
    cold = TextModel.train([], taxonomy, general=examples)  # a cold start: no rows of its own

    assert few.failure_prior is None
    assert cold.failure_prior is None


def test_the_prior_moves_from_the_one_the_weighted_fit_assumed(examples: list[Example]) -> None:
    # "balanced" class weights count rows, not their weights: with own rows counting 3
    # corpus rows and a different failure share, the fit's own prior is not 1/2.
    failures = [e for e in examples if e.demand_type == "failure"]
    values = [e for e in examples if e.demand_type == "value"]
    own = values[:9] + failures[:1]
    general = values[9:] + failures[1:]
    settings = text_model.ModelSettings(own_prior_min_rows=0)

    model = TextModel.train(own, settings=settings, general=general)

    # class weight x row weight per class, each class's mass over its row count
    failure = (3 * 1 + len(failures) - 1) / len(failures)
    value = (3 * 9 + len(values) - 9) / len(values)
    fitted = failure / (failure + value)
    texts = [e.text for e in examples]
    before = _failure_log_odds(model, texts)
    model.set_failure_prior(0.2)
    shift = _failure_log_odds(model, texts) - before
    np.testing.assert_allclose(shift, np.log(0.2 / 0.8) - np.log(fitted / (1 - fitted)), atol=1e-6)
    assert abs(fitted - 0.5) > 0.01  # the test means something
