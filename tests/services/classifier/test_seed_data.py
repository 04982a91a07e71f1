"""Checks that the example taxonomy and seed examples are well-formed and agree with each other."""

import csv
import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from shared.events.classification import DemandType, FailureKind
from shared.events.demand import Channel

DATA_DIR = Path(__file__).resolve().parents[3] / "services" / "classifier" / "data"
TAXONOMY_PATH = DATA_DIR / "taxonomy.yaml"
SEED_PATH = DATA_DIR / "seed_examples.csv"

SLUG = re.compile(r"^[a-z0-9][a-z0-9_ /&'-]*$")
COLUMNS = ["text", "purpose", "demand_type", "failure_kind", "channel"]
MIN_ROWS = 600
MIN_ROWS_PER_PURPOSE = 25


@cache
def taxonomy() -> dict[str, Any]:
    with TAXONOMY_PATH.open(encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    assert isinstance(loaded, dict)
    return loaded


@cache
def seed_rows() -> tuple[dict[str, str], ...]:
    with SEED_PATH.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == COLUMNS
        return tuple(reader)


def purposes() -> set[str]:
    return set(taxonomy()["purposes"])


def failure_kinds() -> set[str]:
    return set(taxonomy()["failure_kinds"])


def test_taxonomy_purposes_are_valid_slugs_with_description_and_examples() -> None:
    assert 12 <= len(purposes()) <= 16
    for slug, definition in taxonomy()["purposes"].items():
        assert SLUG.match(slug), slug
        assert len(slug) <= 120, slug
        assert definition["description"].strip(), slug
        assert 3 <= len(definition["examples"]) <= 5, slug
        for keyword in definition.get("keywords", []):
            assert keyword == keyword.lower(), (slug, keyword)


def test_taxonomy_defines_every_built_in_failure_kind() -> None:
    assert {kind.value for kind in FailureKind} <= failure_kinds()
    for slug, definition in taxonomy()["failure_kinds"].items():
        assert SLUG.match(slug), slug
        assert definition["description"].strip(), slug


def test_taxonomy_rules_refer_to_defined_labels() -> None:
    for rule in taxonomy().get("rules", []):
        assert rule["when_any"]
        assert all(phrase == phrase.lower() for phrase in rule["when_any"])
        if "purpose" in rule:
            assert rule["purpose"] in purposes()
        if "demand_type" in rule:
            assert rule["demand_type"] in {DemandType.VALUE, DemandType.FAILURE}
        if "failure_kind" in rule:
            assert rule.get("demand_type") == DemandType.FAILURE
            assert rule["failure_kind"] in failure_kinds()


def test_seed_has_enough_rows() -> None:
    assert len(seed_rows()) >= MIN_ROWS


def test_seed_texts_are_present_and_unique() -> None:
    texts = [row["text"].strip().lower() for row in seed_rows()]
    assert all(texts)
    duplicates = [text for text, count in Counter(texts).items() if count > 1]
    assert duplicates == []


def test_seed_purposes_are_in_taxonomy_and_each_has_enough_rows() -> None:
    counts = Counter(row["purpose"] for row in seed_rows())
    assert set(counts) == purposes()
    too_few = {purpose: count for purpose, count in counts.items() if count < MIN_ROWS_PER_PURPOSE}
    assert too_few == {}


def test_seed_demand_types_and_failure_kinds_agree() -> None:
    for row in seed_rows():
        assert row["demand_type"] in {DemandType.VALUE, DemandType.FAILURE}, row
        if row["demand_type"] == DemandType.FAILURE:
            assert row["failure_kind"] in failure_kinds(), row
        else:
            assert row["failure_kind"] == "", row


def test_seed_channels_are_known() -> None:
    channels = {channel.value for channel in Channel}
    assert {row["channel"] for row in seed_rows()} <= channels


def test_seed_failure_share_is_realistic() -> None:
    failures = sum(row["demand_type"] == DemandType.FAILURE for row in seed_rows())
    assert 0.35 <= failures / len(seed_rows()) <= 0.65
