"""A new organisation with a taxonomy and no labelled data gets a classifier whose purposes are
exactly its own, a header-only examples file does not stop it, and a changed taxonomy is
noticed (each test reproduced the bug before the fix)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from services.classifier.config import SHIPPED_DATA, TAXONOMY, ClassifierSettings
from services.classifier.db.migrate import upgrade
from services.classifier.db.model_versions import ModelVersions
from services.classifier.db.repository import LabelRepository
from services.classifier.live_model import ModelInUse, ModelKeeper
from services.classifier.main import create_app
from services.classifier.taxonomy import load_taxonomy
from services.classifier.training import TrainingSources, train_model
from shared.database.engine import create_engine
from shared.events import DemandClassified
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.apps import running
from tests.support.factories import demand_received
from tests.support.kafka_io import publish_events, read_records

COUNCIL = SHIPPED_DATA / "taxonomies" / "council_housing_repairs.yaml"

COUNCIL_TAXONOMY = """
purposes:
  repairs / report a repair:
    description: A tenant reports something broken in their council home.
    examples:
      - my boiler has stopped working
      - the kitchen tap is leaking
      - there is damp and mould in the bedroom
      - the front door lock is broken
  rent / pay my rent:
    description: A tenant wants to pay rent or ask about their rent account.
    examples:
      - I want to pay my rent
      - how much rent do I owe
      - can I pay my rent by direct debit
  bins / missed collection:
    description: A resident's bins were not emptied on collection day.
    examples:
      - my bin was not collected today
      - the recycling lorry missed our street
      - when will my garden waste be collected
"""
COUNCIL_TEXTS = [
    "my radiator is leaking all over the floor",
    "how do I pay this month's rent",
    "the bin men skipped my road again",
    "still waiting for someone to fix the damp, third time I've called",
]


@pytest.fixture
def council_taxonomy(tmp_path: Path) -> Path:
    path = tmp_path / "council.yaml"
    path.write_text(COUNCIL_TAXONOMY, encoding="utf-8")
    return path


@pytest.fixture
async def labels(labels_url: str) -> AsyncIterator[LabelRepository]:
    engine = create_engine(labels_url)
    try:
        yield LabelRepository(engine)
    finally:
        await engine.dispose()


def keeper(sources: TrainingSources, labels: LabelRepository) -> ModelKeeper:
    swaps: list[ModelInUse] = []
    return ModelKeeper(
        versions=ModelVersions(labels.engine),
        sources=sources,
        labels=labels,
        holder="test",
        watch_interval_s=0,
        retrain_interval_s=0,
        on_swap=swaps.append,
    )


def test_replacing_only_the_taxonomy_answers_only_its_purposes(
    tmp_path: Path, council_taxonomy: Path, general_corpus_csv: Path
) -> None:
    """The shipped energy seed examples stay configured: their 16 purposes must not leak. (A
    small general corpus, whose sector purposes must not leak either: the shipped one is most
    of the fit's CPU.)"""
    trained = train_model(
        TrainingSources(taxonomy=council_taxonomy, general_corpus=general_corpus_csv),
        reason="test",
        with_evaluation=False,
    )

    council = set(load_taxonomy(council_taxonomy).purpose_slugs)
    assert set(trained.model.purposes) == council
    answers = {p.purpose for p in trained.model.predict_batch(COUNCIL_TEXTS)}
    assert answers <= council
    assert [p.purpose for p in trained.model.predict_batch(COUNCIL_TEXTS[:3])] == [
        "repairs / report a repair",
        "rent / pay my rent",
        "bins / missed collection",
    ]


async def test_a_header_only_examples_file_still_starts(
    tmp_path: Path, labels: LabelRepository, general_corpus_csv: Path
) -> None:
    empty = tmp_path / "examples.csv"
    empty.write_text("text,purpose,demand_type,failure_kind,channel\n", encoding="utf-8")
    # A small general corpus: the purposes come from the taxonomy alone.
    live = keeper(TrainingSources(seed_examples=empty, general_corpus=general_corpus_csv), labels)

    await live.load()

    assert set(live.current.model.purposes) == set(load_taxonomy(TAXONOMY).purpose_slugs)
    prediction = live.current.model.predict("I'd like to pay my bill by direct debit")
    assert prediction.purpose == "billing / pay my bill"


async def test_a_changed_taxonomy_is_noticed_and_a_model_of_it_is_trained(
    seeded_url: str,
    council_taxonomy: Path,
    labels: LabelRepository,
    caplog: pytest.LogCaptureFixture,
    general_corpus_csv: Path,
) -> None:
    """The database's current model knows the shipped (energy) taxonomy; the organisation
    now configures its own (and a small general corpus, most of a fit's CPU otherwise)."""
    old = await ModelVersions(labels.engine).current()
    assert old is not None
    sources = TrainingSources(taxonomy=council_taxonomy, general_corpus=general_corpus_csv)
    live = keeper(sources, labels)

    with caplog.at_level(logging.WARNING, logger="services.classifier.live_model"):
        await live.load()

    assert live.current.version != old
    assert set(live.current.model.purposes) == set(load_taxonomy(council_taxonomy).purpose_slugs)
    metadata = await ModelVersions(labels.engine).metadata(live.current.version)
    assert metadata["reason"] == "taxonomy changed"
    assert any("taxonomy changed" in r.getMessage() for r in caplog.records)

    # The same taxonomy again: the model just trained is loaded, not trained once more.
    again = keeper(sources, labels)
    await again.load()
    assert again.current.version == live.current.version


@pytest.mark.integration
async def test_a_start_with_the_council_taxonomy_alone_classifies_with_council_purposes(
    tmp_path: Path,
    kafka_settings: KafkaSettings,
    classifier_settings: Callable[..., ClassifierSettings],
    general_corpus_csv: Path,
) -> None:
    """The shipped second taxonomy, no seed examples, a fresh machine, the real broker. The
    general corpus is a small one: it teaches value/failure only, never purposes, and the
    shipped one is most of the bootstrap's CPU."""
    fresh = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"  # no model version yet
    await asyncio.to_thread(upgrade, fresh)
    settings = classifier_settings(
        taxonomy=COUNCIL,
        seed_examples=None,
        general_corpus=general_corpus_csv,
        database_url=fresh,
    )
    texts = [
        "my kitchen tap has been dripping for a week",
        "the boiler is broken and we have no heating",
        "still waiting for the repair you promised last month",
        "there is black mould in the bathroom",
    ]
    async with running(create_app(settings)):
        await publish_events(
            kafka_settings,
            [
                demand_received(id=f"C-{i}", customer_ref=f"T{i}", text=text)
                for i, text in enumerate(texts)
            ],
        )
        records = await read_records(
            kafka_settings, topic_name(kafka_settings, Topic.DEMAND_CLASSIFIED), count=len(texts)
        )

    council = set(load_taxonomy(COUNCIL).purpose_slugs)
    classified = [DemandClassified.model_validate_json(r.value) for r in records]
    assert sorted(c.demand.id for c in classified) == [f"C-{i}" for i in range(len(texts))]
    assert {c.purpose for c in classified} <= council
    engine = create_engine(fresh)
    try:
        versions = ModelVersions(engine)
        version = await versions.current()
        assert version is not None
        metadata = await versions.metadata(version)
    finally:
        await engine.dispose()
    assert metadata["taxonomy_hash"] == load_taxonomy(COUNCIL).content_hash()
    assert (metadata["seed_examples"], metadata["reason"]) == (0, "bootstrap")


def test_an_empty_setting_means_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMANDSCOPE_CLASSIFIER_SEED_EXAMPLES", "")
    monkeypatch.setenv("DEMANDSCOPE_CLASSIFIER_GENERAL_CORPUS", " ")

    settings = ClassifierSettings()

    assert (settings.seed_examples, settings.general_corpus) == (None, None)
    assert settings.taxonomy == TAXONOMY
