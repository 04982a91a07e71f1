"""The value/failure prior from the metrics service's audited estimate (failure_share.py):
the rule as a pure function, the bounded read of purpose.metrics, and training through the
service's path (``ModelKeeper``) with the estimate published, missing or out of reach."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from services.classifier import failure_share
from services.classifier.cli import app
from services.classifier.db.migrate import upgrade
from services.classifier.db.model_versions import ModelVersions
from services.classifier.db.repository import LabelRepository
from services.classifier.failure_share import (
    estimated_prior,
    latest_by_purpose,
    latest_values,
    read_estimated_prior,
)
from services.classifier.live_model import ModelKeeper
from services.classifier.training import TrainingSources
from shared.database.engine import create_engine
from shared.events.purpose_metrics import PurposeMetrics
from shared.kafka.codec import decode, encode
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.kafka_io import produce_raw, publish_events, with_own_topics

WINDOW_END = datetime(2026, 11, 23, tzinfo=UTC)


def metrics(
    purpose: str,
    *,
    volume: int,
    estimate: float | None = None,
    audited: int = 40,
    window_end: datetime = WINDOW_END,
    unknown: int = 0,
    computed_at: datetime | None = None,
) -> PurposeMetrics:
    """A PurposeMetrics record (local builder: only the fields the prior reads matter);
    with ``estimate``, validated. ``volume`` includes the ``unknown`` demands."""
    labelled = volume - unknown
    failures = round(labelled * (estimate if estimate is not None else 0.5))
    return PurposeMetrics(
        purpose=purpose,
        window_start=window_end - timedelta(days=28),
        window_end=window_end,
        volume=volume,
        value_count=labelled - failures,
        failure_count=failures,
        unknown_count=unknown,
        failure_share_estimate=estimate,
        failure_share_audited=audited if estimate is not None else 0,
        failure_share_status="validated" if estimate is not None else "not yet validated",
        computed_at=computed_at or window_end,
    )


# -- the rule -------------------------------------------------------------------------------


def test_purposes_are_weighted_by_their_volume() -> None:
    found = estimated_prior(
        [
            metrics("billing", volume=900, estimate=0.2, audited=50),
            metrics("moving", volume=100, estimate=0.8, audited=30),
        ]
    )
    assert found.prior is not None
    # 0.26, not the purposes' plain mean 0.5
    assert found.prior.share == pytest.approx(0.9 * 0.2 + 0.1 * 0.8)
    assert (found.prior.source, found.prior.rows) == ("estimate", 80)
    assert found.window_end == WINDOW_END


def test_validated_purposes_must_cover_nine_tenths_of_the_volume() -> None:
    short = estimated_prior(
        [metrics("billing", volume=850, estimate=0.2), metrics("moving", volume=150)]
    )
    assert short.prior is None
    assert "850 of 1000" in short.reason
    enough = estimated_prior(
        [metrics("billing", volume=900, estimate=0.2), metrics("moving", volume=100)]
    )
    assert enough.prior is not None
    assert enough.prior.share == pytest.approx(0.2)  # the unvalidated tenth is left out


def test_purposes_without_demands_in_the_window_do_not_count() -> None:
    found = estimated_prior(
        [metrics("billing", volume=50, estimate=0.3), metrics("dormant", volume=0)]
    )
    assert found.prior is not None
    assert found.prior.share == pytest.approx(0.3)


def test_nothing_to_weigh_gives_no_prior() -> None:
    assert estimated_prior([]).prior is None
    assert estimated_prior([metrics("dormant", volume=0)]).prior is None
    assert estimated_prior([metrics("billing", volume=10)]).prior is None


@pytest.mark.parametrize(("estimate", "share"), [(0.0, 1 / 50), (1.0, 49 / 50)])
def test_the_share_is_bounded_by_the_audited_demands(estimate: float, share: float) -> None:
    found = estimated_prior([metrics("billing", volume=500, estimate=estimate, audited=48)])
    assert found.prior is not None
    assert found.prior.share == pytest.approx(share)


def test_the_latest_record_of_a_purpose_wins() -> None:
    earlier = WINDOW_END - timedelta(days=7)
    validated_later = [
        metrics("billing", volume=100, window_end=earlier),
        metrics("billing", volume=120, estimate=0.4, window_end=WINDOW_END),
    ]
    assert latest_by_purpose(validated_later)["billing"].volume == 120
    found = estimated_prior(validated_later)
    assert found.prior is not None
    assert found.prior.share == pytest.approx(0.4)
    assert found.window_end == WINDOW_END
    # The later computed_at, not the order read.
    assert estimated_prior(validated_later[::-1]).prior == found.prior


def test_the_greatest_computed_at_wins_whatever_the_order_read() -> None:
    later = WINDOW_END + timedelta(hours=1)
    newer = metrics("billing", volume=100, estimate=0.3, window_end=later)
    older = metrics("billing", volume=100, estimate=0.7)
    for order in ([newer, older], [older, newer]):
        assert latest_by_purpose(order)["billing"] is newer
        found = estimated_prior(order)
        assert found.prior is not None
        assert found.prior.share == pytest.approx(0.3)


def test_windows_ended_more_than_a_window_before_the_newest_are_left_out() -> None:
    found = estimated_prior(
        [
            metrics("billing", volume=900, estimate=0.2),
            # Within a window (28 days) of the newest: counts.
            metrics("moving", volume=100, estimate=0.6, window_end=WINDOW_END - timedelta(days=20)),
            # A seasonal purpose last seen two months ago: another period, left out.
            metrics(
                "heating", volume=5000, estimate=0.9, window_end=WINDOW_END - timedelta(days=60)
            ),
        ]
    )
    assert found.prior is not None
    assert found.prior.share == pytest.approx(0.9 * 0.2 + 0.1 * 0.6)
    assert found.prior.rows == 80
    assert (found.oldest_window_end, found.window_end) == (
        WINDOW_END - timedelta(days=20),
        WINDOW_END,
    )
    assert "2 of 2 purposes" in found.reason


def test_purposes_are_weighted_by_their_value_and_failure_demands_not_unknown() -> None:
    # billing: 1000 demands, 900 of them 'unknown'; the estimate is of the other 100.
    billing = metrics("billing", volume=1000, unknown=900, estimate=0.2)
    moving = metrics("moving", volume=100, estimate=0.6)
    found = estimated_prior([billing, moving])
    assert found.prior is not None
    assert found.prior.share == pytest.approx(0.5 * 0.2 + 0.5 * 0.6)  # not 0.24 by volume
    # The coverage is on the same base: billing validated alone holds half, not 91%.
    assert estimated_prior([billing, metrics("moving", volume=100)]).prior is None


# -- the bounded read -----------------------------------------------------------------------


async def test_the_estimate_is_read_from_purpose_metrics(kafka_settings: KafkaSettings) -> None:
    await publish_events(
        kafka_settings,
        [
            metrics("billing", volume=100, estimate=0.9),  # replaced below
            metrics("billing", volume=300, estimate=0.1, audited=60),
            metrics("moving", volume=100, estimate=0.5, audited=20),
        ],
    )
    found = await read_estimated_prior(kafka_settings, timeout_s=10)
    assert found.prior is not None
    assert found.prior.share == pytest.approx(0.75 * 0.1 + 0.25 * 0.5)
    assert found.prior.rows == 80


async def test_an_empty_missing_or_unreadable_topic_gives_no_prior(
    kafka_settings: KafkaSettings, kafka_bootstrap: str
) -> None:
    assert (await read_estimated_prior(kafka_settings, timeout_s=10)).prior is None  # empty
    missing = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=f"none{uuid.uuid4()}.")
    assert (await read_estimated_prior(missing, timeout_s=10)).prior is None
    await publish_events(kafka_settings, [metrics("billing", volume=100, estimate=0.3)])
    await produce_raw(
        kafka_settings,
        topic_name(kafka_settings, Topic.PURPOSE_METRICS),
        b"{not json",
        key=b"moving",
    )
    unreadable = await read_estimated_prior(kafka_settings, timeout_s=10)
    assert unreadable.prior is None
    assert "could not read" in unreadable.reason


async def test_the_greatest_computed_at_wins_on_the_topic(kafka_settings: KafkaSettings) -> None:
    # A rebuild may write an older figure after a newer one: the same key, read later.
    newer = metrics("billing", volume=100, estimate=0.3, computed_at=WINDOW_END)
    older = metrics(
        "billing", volume=100, estimate=0.7, computed_at=WINDOW_END - timedelta(minutes=5)
    )
    await publish_events(kafka_settings, [newer, older])
    found = await read_estimated_prior(kafka_settings, timeout_s=10)
    assert found.prior is not None
    assert found.prior.share == pytest.approx(0.3)


async def test_a_long_topic_keeps_only_the_latest_value_of_each_key(
    kafka_settings: KafkaSettings,
) -> None:
    """20,000 rewrites of 5 purposes (the active segment is never compacted): only the last
    value of each key is kept and decoded. The rewrites before it are not even readable
    figures, so decoding any of them would give no prior; a tombstone drops its purpose."""
    topic = topic_name(kafka_settings, Topic.PURPOSE_METRICS)
    purposes = ["billing", "moving", "meters", "tariffs", "closing"]
    shares = [0.1, 0.2, 0.3, 0.4, 0.9]
    producer = AIOKafkaProducer(**kafka_settings.client_options(), linger_ms=20)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, value=b"%d" % i, key=purposes[i % 5].encode())
            for i in range(20_000)
        ]
        for purpose, share in zip(purposes, shares, strict=True):
            record = encode(metrics(purpose, volume=100, estimate=share), topic=topic, source="t")
            sent.append(
                await producer.send(topic, record.value, record.key, headers=record.headers)
            )
        sent.append(await producer.send(topic, value=None, key=b"closing"))  # deleted
        await asyncio.gather(*sent)
    finally:
        await producer.stop()

    values = await latest_values(kafka_settings, topic, timeout_s=60)
    assert sorted(decode(PurposeMetrics, v).purpose for v in values) == sorted(purposes[:4])
    found = await read_estimated_prior(kafka_settings, timeout_s=60)
    assert found.prior is not None
    assert found.prior.share == pytest.approx(0.25)  # the four left, equal weights
    assert found.prior.rows == 160


async def test_a_read_past_its_deadline_is_a_warning(
    kafka_settings: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    await publish_events(kafka_settings, [metrics("billing", volume=100, estimate=0.3)])
    with caplog.at_level(logging.INFO, logger=failure_share.__name__):
        found = await read_estimated_prior(kafka_settings, timeout_s=0.001)
    assert found.prior is None
    assert "could not read" in found.reason
    warned = [
        r for r in caplog.records if r.name == failure_share.__name__ and r.levelno >= logging.INFO
    ]
    assert [r.levelno for r in warned] == [logging.WARNING]
    assert "not used" in warned[0].getMessage()


async def test_a_broker_out_of_reach_gives_no_prior() -> None:
    away = KafkaSettings(bootstrap_servers="127.0.0.1:9", topic_prefix="away.")
    found = await read_estimated_prior(away, timeout_s=1)
    assert found.prior is None
    assert "could not read" in found.reason


# -- training through the service's path ---------------------------------------------------


@pytest.fixture
def own_sources(examples_csv: Path, general_corpus_csv: Path) -> TrainingSources:
    """No taxonomy: the 30 labelled rows are the organisation's own, enough for the labels'
    prior (``own_prior_min_rows``), so the fallback is visible as "labels"."""
    return TrainingSources(
        seed_examples=examples_csv, taxonomy=None, general_corpus=general_corpus_csv
    )


Keeper = Callable[[KafkaSettings | None], ModelKeeper]


@pytest.fixture
async def keeper(sqlite_url: str, own_sources: TrainingSources) -> AsyncIterator[Keeper]:
    await asyncio.to_thread(upgrade, sqlite_url)
    engine = create_engine(sqlite_url)

    def make(kafka: KafkaSettings | None) -> ModelKeeper:
        return ModelKeeper(
            versions=ModelVersions(engine),
            sources=own_sources,
            labels=LabelRepository(engine),
            holder="test",
            watch_interval_s=0.05,
            retrain_interval_s=0,
            on_swap=lambda _model: None,
            failure_estimate=None
            if kafka is None
            else functools.partial(read_estimated_prior, kafka, timeout_s=10),
        )

    try:
        yield make
    finally:
        await engine.dispose()


async def prior_metadata(keeper: ModelKeeper) -> dict[str, Any]:
    stored = await keeper.versions.get(keeper.current.version)
    return {k: v for k, v in stored.metadata.items() if k.startswith("failure_prior")}


async def test_training_takes_the_published_estimate(
    keeper: Keeper, kafka_settings: KafkaSettings
) -> None:
    await publish_events(
        kafka_settings,
        [
            metrics("billing", volume=800, estimate=0.15, audited=70),
            metrics("moving", volume=200, estimate=0.55, audited=30),
        ],
    )
    live = keeper(kafka_settings)
    await live.load()  # a fresh database: the first version is trained here
    expected = 0.8 * 0.15 + 0.2 * 0.55
    assert live.current.model.failure_prior == pytest.approx(expected)
    first = await prior_metadata(live)
    assert first["failure_prior_source"] == "estimate"
    assert first["failure_prior"] == pytest.approx(expected)
    assert first["failure_prior_rows"] == 100
    assert first["failure_prior_window_end"] == WINDOW_END.isoformat()
    assert first["failure_prior_oldest_window_end"] == WINDOW_END.isoformat()

    await live.retrain("test")
    again = await prior_metadata(live)
    assert (again["failure_prior_source"], again["failure_prior_rows"]) == ("estimate", 100)


async def test_training_falls_back_to_the_labels_without_an_estimate(
    keeper: Keeper, kafka_settings: KafkaSettings
) -> None:
    live = keeper(kafka_settings)  # nothing published
    await live.load()
    found = await prior_metadata(live)
    assert (found["failure_prior_source"], found["failure_prior_rows"]) == ("labels", 30)
    assert found["failure_prior"] == pytest.approx(16 / 32)
    assert "no purpose has value or failure demands" in found["failure_prior_estimate"]

    await publish_events(  # too little of the volume validated: still the labels
        kafka_settings,
        [metrics("billing", volume=500, estimate=0.1), metrics("moving", volume=500)],
    )
    await live.retrain("test")
    assert (await prior_metadata(live))["failure_prior_source"] == "labels"


async def test_training_goes_on_with_the_broker_out_of_reach(keeper: Keeper) -> None:
    live = keeper(KafkaSettings(bootstrap_servers="127.0.0.1:9", topic_prefix="away."))
    await live.retrain("test")
    found = await prior_metadata(live)
    assert found["failure_prior_source"] == "labels"
    assert "could not read" in found["failure_prior_estimate"]


def test_the_retrain_command_takes_the_estimate_like_the_service(
    examples_csv: Path,
    general_corpus_csv: Path,
    labels_url: str,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka = asyncio.run(with_own_topics(kafka_bootstrap, partitions=1))
    asyncio.run(publish_events(kafka, [metrics("billing", volume=100, estimate=0.2, audited=25)]))
    monkeypatch.setenv("DEMANDSCOPE_KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    monkeypatch.setenv("DEMANDSCOPE_KAFKA_TOPIC_PREFIX", kafka.topic_prefix)
    common = ["retrain", "--seed-examples", str(examples_csv)]
    common += ["--general-corpus", str(general_corpus_csv), "--database-url", labels_url]

    def prior_source(*option: str) -> tuple[object, object]:
        result = CliRunner().invoke(app, [*common, *option])
        assert result.exit_code == 0, result.output
        metadata = asyncio.run(_current_metadata(labels_url))
        return metadata["failure_prior_source"], metadata["failure_prior"]

    # The default, as the service does: a retrain here keeps the fleet's prior source.
    assert prior_source() == ("estimate", pytest.approx(0.2))
    assert prior_source("--prior-from-labels")[0] != "estimate"
    assert prior_source("--prior-from-metrics") == ("estimate", pytest.approx(0.2))


async def _current_metadata(database_url: str) -> dict[str, Any]:
    engine = create_engine(database_url)
    try:
        versions = ModelVersions(engine)
        version = await versions.current()
        assert version is not None
        return (await versions.get(version)).metadata
    finally:
        await engine.dispose()
