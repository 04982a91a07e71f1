"""A tiny labelled set, enough for the model to learn something checkable in well under a second."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from services.classifier.model.examples import Example

_VALUE = {
    "billing / pay my bill": [
        "I want to pay my bill by card",
        "can I set up a direct debit",
        "how do I pay my balance",
        "please change my payment date",
        "I would like to pay what I owe",
    ],
    "moving home": [
        "I am moving house next month",
        "can I take my account to my new address",
        "I have just moved in and want an account",
        "we are moving home soon",
        "setting up supply at my new address",
    ],
    "faults / broadband not working": [
        "my internet is down",
        "the router shows a red light",
        "my wifi keeps dropping",
        "no connection on my broadband today",
        "broadband router not connecting",
    ],
}
_FAILURE = {
    "billing / pay my bill": [
        ("I paid my bill weeks ago and it still shows as owing", "progress_chasing"),
        ("you took my direct debit twice, that is wrong", "not_done_right"),
        ("still waiting for my payment to go through", "progress_chasing"),
        ("third time I have called about paying my bill", "repeat"),
        ("you said you would cancel the direct debit and never did", "not_done"),
    ],
    "moving home": [
        ("I told you I moved and you still bill the old address", "not_done_right"),
        ("still waiting for my final bill after moving home", "progress_chasing"),
        ("nobody has replied about my move, where is it", "progress_chasing"),
        ("calling again about my home move", "repeat"),
        ("you promised to move my account and never did", "not_done"),
    ],
    "faults / broadband not working": [
        ("the engineer came and the internet is still not working", "not_done_right"),
        ("where is the engineer you promised for my broadband", "progress_chasing"),
        ("third time calling about my wifi dropping", "repeat"),
        ("still no internet after two weeks of waiting", "progress_chasing"),
        ("engineer never turned up to fix the router", "not_done"),
    ],
}


def small_examples() -> list[Example]:
    rows = [Example(t, p, "value") for p, texts in _VALUE.items() for t in texts]
    rows += [Example(t, p, "failure", k) for p, pairs in _FAILURE.items() for t, k in pairs]
    return rows


@pytest.fixture
def examples() -> list[Example]:
    return small_examples()


@pytest.fixture
def examples_csv(tmp_path: Path) -> Path:
    path = tmp_path / "examples.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "purpose", "demand_type", "failure_kind", "channel"])
        for e in small_examples():
            writer.writerow([e.text, e.purpose, e.demand_type, e.failure_kind or "", "phone"])
    return path


@pytest.fixture(scope="session")
def seed_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained once per session on the shipped seed data (a few seconds)."""
    from services.classifier.training import TrainingSources, train_version

    directory = tmp_path_factory.mktemp("seed-model")
    train_version(directory, TrainingSources(), reason="test", with_evaluation=False)
    return directory


@pytest.fixture
def model_dir(seed_model_dir: Path, tmp_path: Path) -> Path:
    """This test's own copy of the seed model directory (its own labels and versions)."""
    import shutil

    directory = tmp_path / "models"
    shutil.copytree(seed_model_dir, directory)
    return directory
