"""The value/failure prior from the organisation's own demands (issue 11, rule 3 of the
prior's precedence in docs/services/classifier.md): it replaces the shipped seed set's share
and the balanced fit's, never the audited estimate nor the organisation's own labels; the
service's schedule estimates it once enough demands were seen, then each time they doubled,
one version for the fleet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import services.classifier.live_model as live_model
import services.classifier.training as training
from services.classifier.db.migrate import upgrade
from services.classifier.db.model_versions import ModelVersions
from services.classifier.db.repository import LabelRepository, SeenText
from services.classifier.failure_share import EstimatedPrior
from services.classifier.live_model import ModelKeeper
from services.classifier.model.examples import Example
from services.classifier.model.prior_shift import (
    DEMANDS,
    SHIPPED_EXAMPLES,
    ConfusionRates,
    DemandPrior,
    StoredRates,
    apply_demand_prior,
)
from services.classifier.model.text_model import FailurePrior, ModelSettings
from services.classifier.training import TrainingSources, train_model
from shared.database.engine import create_engine
from tests.services.classifier.conftest import small_examples

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
FEW = DemandPrior(min_texts=20, read=1_000, every_max=1_000)


@pytest.fixture
def shipped(
    examples_csv: Path, general_corpus_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> TrainingSources:
    """The small examples file stands for the shipped seed set (30 rows, half failure): the
    default deployment's case, in seconds of training."""
    monkeypatch.setattr(training, "SEED_EXAMPLES", examples_csv)
    return TrainingSources(
        seed_examples=examples_csv,
        taxonomy=None,
        general_corpus=general_corpus_csv,
        settings=ModelSettings(own_prior_min_rows=30),
    )


def value_demands(count: int) -> list[str]:
    """An organisation where failure is rare: every demand a value one."""
    values = [e.text for e in small_examples() if e.demand_type == "value"]
    return [f"{values[i % len(values)]} ({i})" for i in range(count)]


def people_labels(rows: int) -> list[Example]:
    failing = [e for e in small_examples() if e.demand_type == "failure"]
    values = [e for e in small_examples() if e.demand_type == "value"]
    picked = [failing[i % len(failing)] for i in range(3)]
    picked += [values[i % len(values)] for i in range(rows - 3)]
    return [replace(e, text=f"{e.text} (label {i})") for i, e in enumerate(picked)]


# -- the precedence ---------------------------------------------------------------------------


def test_the_shipped_seed_sets_share_stays_until_there_are_enough_demands(
    shipped: TrainingSources,
) -> None:
    trained = train_model(
        shipped,
        reason="test",
        with_evaluation=False,
        demands=value_demands(19),
        demand_prior=FEW,
        with_rates=True,
    )

    metadata = trained.metadata
    assert metadata["failure_prior_source"] == SHIPPED_EXAMPLES
    assert metadata["failure_prior"] == pytest.approx(16 / 32)
    rates = StoredRates.from_dict(metadata["failure_prior_rates"])
    assert rates is not None
    assert rates.prior == pytest.approx(16 / 32)
    assert rates.source == SHIPPED_EXAMPLES
    assert rates.rates.true_positive > rates.rates.false_positive


def test_the_demands_replace_the_shipped_seed_sets_share(shipped: TrainingSources) -> None:
    demands = value_demands(40)

    trained = train_model(
        shipped,
        reason="test",
        with_evaluation=False,
        demands=demands,
        demand_prior=FEW,
        with_rates=True,
    )

    metadata = trained.metadata
    assert (metadata["failure_prior_source"], metadata["failure_prior_rows"]) == (DEMANDS, 40)
    assert metadata["failure_prior"] < 16 / 32  # the demands are all value ones
    assert trained.model.failure_prior == metadata["failure_prior"]
    # The rates were measured at the shipped share, and say so, for the next estimate.
    assert metadata["failure_prior_rates"]["prior"] == pytest.approx(16 / 32)


def test_peoples_labels_win_over_the_demands_and_the_shipped_rows_do_not_count(
    shipped: TrainingSources,
) -> None:
    trained = train_model(
        shipped,
        reason="test",
        labels=people_labels(30),
        with_evaluation=False,
        demands=value_demands(40),
        demand_prior=FEW,
        with_rates=True,
    )

    metadata = trained.metadata
    # People's labels alone (3 of 30 failure), not the shipped rows beside them.
    assert (metadata["failure_prior_source"], metadata["failure_prior_rows"]) == ("labels", 30)
    assert metadata["failure_prior"] == pytest.approx(4 / 32)
    assert metadata["failure_prior_rates"] is None  # never replaced: no rates needed


def test_the_organisations_own_examples_file_wins_over_the_demands(
    examples_csv: Path, general_corpus_csv: Path
) -> None:
    own = TrainingSources(
        seed_examples=examples_csv,  # not the shipped set: the organisation's own 30 rows
        taxonomy=None,
        general_corpus=general_corpus_csv,
        settings=ModelSettings(own_prior_min_rows=30),
    )

    trained = train_model(
        own,
        reason="test",
        with_evaluation=False,
        demands=value_demands(40),
        demand_prior=FEW,
        with_rates=True,
    )

    assert trained.metadata["failure_prior_source"] == "labels"
    assert trained.metadata["failure_prior_rows"] == 30


def test_an_audited_estimate_wins_over_everything(shipped: TrainingSources) -> None:
    estimated = EstimatedPrior(FailurePrior(0.2, "estimate", 300), "validated")

    trained = train_model(
        shipped,
        reason="test",
        labels=people_labels(30),
        with_evaluation=False,
        estimated=estimated,
        demands=value_demands(40),
        demand_prior=FEW,
        with_rates=True,
    )

    metadata = trained.metadata
    assert (metadata["failure_prior_source"], metadata["failure_prior"]) == ("estimate", 0.2)
    assert metadata["failure_prior_rates"] is None


class Calls:
    """Calls a text failure when it starts with "f"; keeps the prior it is set to."""

    def __init__(self) -> None:
        self.failure_prior: float | None = None
        self.failure_prior_source: str | None = None
        self.set_to: list[float | None] = []

    def failure_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([0.9 if t.startswith("f") else 0.1 for t in texts])

    def set_failure_prior(
        self, prior: float | None, *, source: str | None = None, rows: int | None = None
    ) -> None:
        self.failure_prior, self.failure_prior_source = prior, source
        self.set_to.append(prior)


def test_each_estimate_starts_from_the_rates_prior_so_none_feeds_the_next() -> None:
    stored = StoredRates(ConfusionRates(0.9, 0.1, 50, 50), 0.5, SHIPPED_EXAMPLES, 30)
    model = Calls()
    texts = ["f"] * 18 + ["v"] * 82  # 18% called failure: (0.18 - 0.1) / 0.8 = 0.1

    first = apply_demand_prior(model, texts, stored, min_texts=20)
    second = apply_demand_prior(model, texts, stored, min_texts=20)

    assert first == second == pytest.approx(0.1)
    assert model.set_to == [0.5, first, 0.5, second]
    assert model.failure_prior_source == DEMANDS


def test_the_schedule_estimates_at_the_minimum_then_each_time_the_demands_doubled() -> None:
    wanted = DemandPrior(min_texts=200, read=5_000, every_max=20_000)

    assert not wanted.due(199, None)
    assert wanted.due(200, None)
    assert not wanted.due(399, 400)
    assert wanted.due(400, 400)
    assert not wanted.due(199, 100)  # never sooner than the minimum
    assert wanted.due(20_000, 80_000)  # at least every every_max
    assert not DemandPrior(min_texts=0).due(10**9, None)  # 0: never


# -- the service's schedule -------------------------------------------------------------------


@pytest.fixture
async def fleet(
    sqlite_url: str, shipped: TrainingSources
) -> AsyncIterator[Callable[[str], ModelKeeper]]:
    await asyncio.to_thread(upgrade, sqlite_url)
    engine = create_engine(sqlite_url)

    def keeper(name: str) -> ModelKeeper:
        return ModelKeeper(
            versions=ModelVersions(engine),
            sources=shipped,
            labels=LabelRepository(engine),
            holder=name,
            watch_interval_s=0.05,
            retrain_interval_s=0,
            on_swap=lambda _model: None,
            demand_prior=FEW,
        )

    try:
        yield keeper
    finally:
        await engine.dispose()


async def seen(labels: LabelRepository, start: int, count: int) -> None:
    texts = value_demands(start + count)[start:]
    await labels.remember_texts(
        [
            SeenText("web", f"D{start + i}", text, T0 + timedelta(seconds=start + i))
            for i, text in enumerate(texts)
        ]
    )


async def test_the_service_publishes_a_demands_prior_at_the_minimum_and_again_when_doubled(
    fleet: Callable[[str], ModelKeeper],
) -> None:
    a, b = fleet("a"), fleet("b")
    await a.load()  # a fresh database: trained on the shipped set, no demands yet
    await b.load()
    first = a.current.version
    assert b.current.version == first
    assert a.current.model.failure_prior_source == SHIPPED_EXAMPLES
    # No error rates measured (3 fits) before the demands' minimum: nothing could use them.
    assert "failure_prior_rates" not in (await a.versions.get(first)).metadata
    labels = LabelRepository(a.versions.engine)

    await seen(labels, 0, 19)
    assert await a.retrain_if_new_labels() is None  # below the minimum

    await seen(labels, 19, 1)
    estimated = await a.retrain_if_new_labels()  # retrained once, with the rates
    assert estimated is not None
    stored = await a.versions.get(estimated)
    assert stored.metadata["reason"] == "demands: error rates"
    assert stored.metadata["failure_prior_rates"]["prior"] == pytest.approx(16 / 32)
    assert stored.metadata["failure_prior_source"] == DEMANDS
    assert stored.metadata["failure_prior_rows"] == 20
    assert stored.metadata["failure_prior_demands_seen"] == 20
    assert a.current.model.failure_prior == stored.metadata["failure_prior"] < 0.5
    # The other instance serves it and estimates nothing more: one version for the fleet.
    assert await b.retrain_if_new_labels() is None
    assert b.current.version == estimated

    await seen(labels, 20, 19)
    assert await a.retrain_if_new_labels() is None  # 39 seen: not yet doubled
    assert await b.retrain_if_new_labels() is None
    await seen(labels, 39, 1)
    again = await b.retrain_if_new_labels()
    assert again is not None
    metadata = (await b.versions.get(again)).metadata
    assert (metadata["failure_prior_rows"], metadata["failure_prior_demands_seen"]) == (40, 40)
    assert metadata["based_on_version"] == estimated  # the same fit, not a retraining
    # Estimated from the same fit at the rates' prior, not from the first estimate.
    assert metadata["failure_prior_rates"] == stored.metadata["failure_prior_rates"]
    assert await a.retrain_if_new_labels() is None
    assert [v.version for v in await a.versions.list()] == [first, estimated, again]


async def test_an_estimate_that_cannot_be_made_is_tried_again_when_the_demands_doubled(
    fleet: Callable[[str], ModelKeeper], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = fleet("a")
    await a.load()
    labels = LabelRepository(a.versions.engine)
    await seen(labels, 0, 20)
    with_rates = await a.retrain_if_new_labels()
    assert with_rates is not None
    tried: list[int] = []

    def no_estimate(
        model: object, texts: Sequence[str], stored: StoredRates, *, min_texts: int
    ) -> None:
        tried.append(len(texts))  # as calls that barely separate the classes

    monkeypatch.setattr(live_model, "apply_demand_prior", no_estimate)
    await seen(labels, 20, 20)
    assert await a.retrain_if_new_labels() is None  # 40 seen: due, tried, none
    assert tried == [40]
    await seen(labels, 40, 1)
    assert await a.retrain_if_new_labels() is None  # not again every round
    await seen(labels, 41, 38)
    assert await a.retrain_if_new_labels() is None  # 79: not yet doubled since 40
    assert tried == [40]
    await seen(labels, 79, 1)
    assert await a.retrain_if_new_labels() is None
    assert tried == [40, 80]
    assert a.current.version == with_rates


def test_the_rates_are_measured_at_the_models_prior(
    shipped: TrainingSources, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[float | None] = []

    def rates(*args: object, prior: float | None = None, **kwargs: object) -> ConfusionRates:
        asked.append(prior)
        return ConfusionRates(0.9, 0.1, 10, 10)

    monkeypatch.setattr(training, "confusion_rates", rates)

    trained = train_model(shipped, reason="test", with_evaluation=False, with_rates=True)

    assert asked == [trained.model.failure_prior]
    assert asked[0] == pytest.approx(16 / 32)  # the shipped share, not the balanced fit's


# -- `demandscope classifier evaluate` --------------------------------------------------------


def test_evaluate_takes_the_prior_from_the_files_texts_and_says_so(
    tmp_path: Path,
    general_corpus_csv: Path,
    examples_csv: Path,
    labels_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typing import Any

    from typer.testing import CliRunner

    from services.classifier.cli import app
    from services.classifier.config import TAXONOMY

    runner = CliRunner()
    monkeypatch.setenv("DEMANDSCOPE_CLASSIFIER_FAILURE_PRIOR_MIN_DEMANDS", "20")
    # A cold start (the taxonomy alone): the balanced fit's prior, the rates kept.
    trained = runner.invoke(
        app,
        [
            "train",
            "--taxonomy",
            str(TAXONOMY),
            "--general-corpus",
            str(general_corpus_csv),
            "--database-url",
            labels_url,
        ],
    )
    assert trained.exit_code == 0, trained.output
    # The organisation's demands: 30 rows, 3 failure.
    rows = [(text, "value") for text in value_demands(27)]
    rows += [(e.text, "failure") for e in small_examples() if e.demand_type == "failure"][:3]
    demands = tmp_path / "demands.csv"
    demands.write_text(
        "text,purpose,demand_type\n" + "".join(f'"{t}",moving home,{d}\n' for t, d in rows),
        encoding="utf-8",
    )

    def evaluate(*extra: str) -> dict[str, Any]:
        from tests.services.classifier.test_cli import evaluate_json

        return evaluate_json(labels_url, demands, *extra)

    estimated = evaluate()["demand_type"]
    assert estimated["prior"]["source"] == "demands"
    assert estimated["prior"]["texts"] == len(rows)
    assert {"accuracy", "confused", "failure_share"} <= set(estimated)
    # Exactly the service's estimate (the newest texts first, the version's rates), and the
    # file scored with it.
    from tests.services.classifier.test_cli import current

    _, model, metadata = current(labels_url)
    stored = StoredRates.from_dict(metadata["failure_prior_rates"])
    assert stored is not None
    assert stored.prior is None
    texts = [t for t, _ in rows]
    share = apply_demand_prior(model, texts[::-1], stored, min_texts=20)
    assert estimated["prior"]["share"] == share
    called = model.predict_batch(texts)
    assert estimated["failure_share"]["predicted"] == pytest.approx(
        sum(p.demand_type == "failure" for p in called) / len(texts)
    )

    fitted = evaluate("--no-prior-from-texts")["demand_type"]
    assert fitted["prior"] == {"source": "fit", "share": None, "texts": None, "rows": None}
    model.set_failure_prior(None)
    called = model.predict_batch(texts)
    assert fitted["failure_share"]["predicted"] == pytest.approx(
        sum(p.demand_type == "failure" for p in called) / len(texts)
    )

    # An audit of own_prior_min_rows rows is people's labels: their share is the prior.
    audited = evaluate("--audit", "30", "--seed", "1")["demand_type"]
    assert audited["prior"] == {"source": "labels", "share": 4 / 32, "texts": None, "rows": 30}
    assert audited["failure_share"]["audited"] == 30
    assert evaluate("--audit", "29")["demand_type"]["prior"]["source"] == "demands"


async def test_a_version_from_before_the_rates_is_retrained_once_with_them(
    fleet: Callable[[str], ModelKeeper], sqlite_url: str, shipped: TrainingSources
) -> None:
    from tests.services.classifier.conftest import store_version

    old = train_model(shipped, reason="test", with_evaluation=False)  # no rates measured
    metadata = {k: v for k, v in old.metadata.items() if k != "failure_prior_rates"}
    first = await store_version(sqlite_url, old.model, {**metadata, "label_rows": 0})
    a = fleet("a")
    await a.load()
    assert a.current.version == first
    labels = LabelRepository(a.versions.engine)
    await seen(labels, 0, 19)
    assert await a.retrain_if_new_labels() is None

    await seen(labels, 19, 1)
    retrained = await a.retrain_if_new_labels()

    assert retrained is not None
    stored = (await a.versions.get(retrained)).metadata
    assert stored["failure_prior_rates"] is not None
    assert (stored["failure_prior_source"], stored["failure_prior_rows"]) == (DEMANDS, 20)
    assert await a.retrain_if_new_labels() is None  # not again until the demands doubled


class _CountingTexts:
    """A label store's two text reads, counting the texts it hands out."""

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self.read = 0

    async def count_texts(self, since: datetime | None = None) -> int:
        return self.kept

    async def recent_texts(self, limit: int) -> list[SeenText]:
        now = datetime.now(UTC)
        texts = [SeenText("s", f"d{i}", f"text {i}", now) for i in range(min(limit, self.kept))]
        self.read += len(texts)
        return texts


def test_no_texts_are_read_while_fewer_than_the_minimum_were_kept() -> None:
    wanted = DemandPrior(min_texts=20, read=50)
    young, grown = _CountingTexts(19), _CountingTexts(20)
    before = asyncio.run(training.read_recent_demands(young, wanted))  # type: ignore[arg-type]
    after = asyncio.run(training.read_recent_demands(grown, wanted))  # type: ignore[arg-type]
    assert (before.texts, before.kept, young.read) == ([], 19, 0)
    assert (len(after.texts), after.kept, grown.read) == (20, 20, 20)
