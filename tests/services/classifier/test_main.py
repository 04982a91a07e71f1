"""The classifier's consumer loop as main wires it."""

import pytest

from services.classifier.config import ClassifierSettings
from services.classifier.db.model_versions import ModelVersions
from services.classifier.db.repository import LabelRepository
from services.classifier.handler import Topics
from services.classifier.main import make_keeper, runner_options
from services.classifier.model.prior_shift import DemandPrior
from shared.database.engine import create_engine


def test_the_runner_knows_every_topic_the_handler_writes_to() -> None:
    # Without them, a transaction the broker completed without its markers (a broker in its
    # controlled shutdown) is never ended, and a restart waits on its offsets for good.
    topics = Topics(classified="t.classified", context="t.context", forwarded_labels="t.fwd")

    options = runner_options(ClassifierSettings(), topics)

    assert options.transactional
    assert options.output_topics == ("t.classified", "t.context", "t.fwd")
    assert runner_options(ClassifierSettings(), Topics("a", "b")).output_topics == ("a", "b")


async def test_the_demands_prior_settings_reach_the_model_keeper(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMANDSCOPE_CLASSIFIER_FAILURE_PRIOR_MIN_DEMANDS", "7")
    monkeypatch.setenv("DEMANDSCOPE_CLASSIFIER_FAILURE_PRIOR_DEMANDS_READ", "70")
    monkeypatch.setenv("DEMANDSCOPE_CLASSIFIER_FAILURE_PRIOR_EVERY_MAX", "700")
    engine = create_engine(sqlite_url)
    try:
        keeper = make_keeper(
            ClassifierSettings(),
            ModelVersions(engine),
            LabelRepository(engine),
            lambda _model: None,
            lambda _version: None,
        )
    finally:
        await engine.dispose()

    assert keeper.demand_prior == DemandPrior(min_texts=7, read=70, every_max=700)
