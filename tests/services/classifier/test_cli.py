import asyncio
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from services.classifier.cli import app
from services.classifier.db.model_versions import ModelVersions
from services.classifier.model.text_model import TextModel
from services.classifier.versions import load_version
from shared.database.engine import create_engine
from tests.services.classifier.conftest import store_version

runner = CliRunner()


def train(examples_csv: Path, database_url: str, *extra: str) -> str:
    """`classifier train`. The tests that train to have a version give the small general corpus
    (``general_corpus_csv``): the shipped one (2,000+ rows) is ~90% of a fit's CPU."""
    result = runner.invoke(
        app, ["train", "--examples", str(examples_csv), "--database-url", database_url, *extra]
    )
    assert result.exit_code == 0, result.output
    return result.output


def current(database_url: str) -> tuple[str, TextModel, dict[str, Any]]:
    """The database's current version, its model and its metadata."""

    async def read() -> tuple[str, TextModel, dict[str, Any]]:
        engine = create_engine(database_url)
        try:
            versions = ModelVersions(engine)
            version = await versions.current()
            assert version is not None
            model, metadata = await load_version(versions, version)
        finally:
            await engine.dispose()
        return version, model, metadata

    return asyncio.run(read())


def evaluate_json(database_url: str, examples: Path, *extra: str) -> dict[str, Any]:
    """`demandscope classifier evaluate --json` on ``examples``: its JSON document."""
    result = runner.invoke(
        app,
        ["evaluate", "--database-url", database_url, "--examples", str(examples), "--json", *extra],
    )
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_train_then_evaluate_json(
    examples_csv: Path, general_corpus_csv: Path, labels_url: str
) -> None:
    # A small general corpus: the shipped one is most of the two fits' CPU (the held-out one
    # and the final one), and the held-out figures of the examples are what is checked.
    output = train(examples_csv, labels_url, "--general-corpus", str(general_corpus_csv))

    version, _, metadata = current(labels_url)
    assert version in output
    assert "held out" in output
    assert metadata["examples"] == 30
    assert metadata["evaluation"]["rows"] == 6

    result = runner.invoke(
        app,
        [
            "evaluate",
            "--database-url",
            labels_url,
            "--examples",
            str(examples_csv),
            "--json",
        ],
    )

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["purpose"]["accuracy"] > 0.9
    assert document["demand_type"]["accuracy"] > 0.9
    assert 0 < document["demand_type"]["macro_f1"] <= 1
    assert document["throughput_per_s"] > 0


def test_evaluate_survives_untidy_files(
    examples_csv: Path, general_corpus_csv: Path, tmp_path: Path, labels_url: str
) -> None:
    train(examples_csv, labels_url, "--holdout", "0", "--general-corpus", str(general_corpus_csv))
    untidy = tmp_path / "untidy.csv"
    untidy.write_text(
        "\ufeffText,Purpose,Demand_Type,failure_kind,agent\n"
        "I want to pay my bill by card,Billing / Pay my bill,Value,,ann\n"
        "still waiting for my final bill after moving home,moving home,FAILURE,,bob\n"
        "   ,moving home,value,,bob\n"
        "where is my pension statement,pensions / statement,failure,progress_chasing,cy\n",
        encoding="utf-8",
    )

    result = runner.invoke(
        app,
        ["evaluate", "--database-url", labels_url, "--examples", str(untidy), "--json"],
    )

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["skipped_empty_text"] == 1
    assert document["rows"] == 3
    assert document["purpose"]["accuracy"] == 2 / 3  # the unseen purpose is an error
    assert document["unseen_purposes"] == ["pensions / statement"]
    assert document["demand_type"]["count"] == 3


def test_versions_rollback_and_explain(
    examples_csv: Path, general_corpus_csv: Path, labels_url: str
) -> None:
    train(examples_csv, labels_url, "--holdout", "0", "--general-corpus", str(general_corpus_csv))
    first, model, _ = current(labels_url)
    second = asyncio.run(store_version(labels_url, model, {"examples": 1}))
    assert current(labels_url)[0] == second != first

    listed = runner.invoke(app, ["versions", "--database-url", labels_url])
    rolled = runner.invoke(app, ["rollback", "--database-url", labels_url, "--to", first])
    explained = runner.invoke(
        app, ["explain", "still waiting for my refund", "--database-url", labels_url]
    )

    assert first in listed.output
    assert rolled.exit_code == 0
    assert current(labels_url)[0] == first
    assert explained.exit_code == 0
    assert "demand_type" in explained.output

    # The newest version is kept, and so is the current one (rolled back to): the one between
    # them goes.
    newest = asyncio.run(store_version(labels_url, model, make_current=False))
    pruned = runner.invoke(app, ["prune", "--keep", "1", "--database-url", labels_url])
    assert pruned.exit_code == 0, pruned.output
    assert "deleted 1 model versions" in pruned.output
    kept = runner.invoke(app, ["versions", "--database-url", labels_url]).output
    assert first in kept
    assert newest in kept
    assert second not in kept
    again = runner.invoke(app, ["prune", "--keep", "1", "--database-url", labels_url])
    assert "nothing to delete" in again.output


def test_rollback_to_an_unknown_version_exits_non_zero(labels_url: str) -> None:
    result = runner.invoke(app, ["rollback", "--database-url", labels_url, "--to", "nope"])

    assert result.exit_code == 1


def test_train_without_examples_trains_the_default_model(labels_url: str) -> None:
    """The model `make run` starts with: shipped taxonomy, seed set and general corpus."""
    from services.classifier.config import TAXONOMY
    from services.classifier.taxonomy import load_taxonomy

    result = runner.invoke(app, ["train", "--database-url", labels_url, "--holdout", "0"])

    assert result.exit_code == 0, result.output
    _, model, metadata = current(labels_url)
    taxonomy = load_taxonomy(TAXONOMY)
    assert set(model.purposes) == set(taxonomy.purpose_slugs)
    assert metadata["taxonomy_hash"] == taxonomy.content_hash()
    assert metadata["examples"] > 700  # the seed set
    # The shipped seed set's rows, each once, set the failure prior, marked as shipped: the
    # organisation's demands replace it (rule 3), so the version keeps the error rates.
    assert (metadata["failure_prior_source"], metadata["failure_prior_rows"]) == (
        "shipped examples",
        metadata["examples"],
    )
    rates = metadata["failure_prior_rates"]
    assert rates["prior"] == metadata["failure_prior"]
    assert rates["true_positive"] > rates["false_positive"]
    assert metadata["general_rows"] >= 2_000  # the general corpus


def test_train_with_a_taxonomy_alone_is_a_cold_start_for_that_organisation(
    tmp_path: Path, general_corpus_csv: Path, labels_url: str
) -> None:
    taxonomy = tmp_path / "pets.yaml"
    taxonomy.write_text(
        "purposes:\n"
        "  vet appointment:\n"
        "    description: The customer wants to book or change a vet appointment.\n"
        "    examples: [book my dog in with the vet, can I move my cat's appointment]\n"
        "  pet food order:\n"
        "    description: The customer wants to order pet food or ask about an order.\n"
        "    examples: [I want to order dog food, where is my cat food delivery]\n",
        encoding="utf-8",
    )
    result = runner.invoke(
        app,
        [
            "train",
            "--database-url",
            labels_url,
            "--taxonomy",
            str(taxonomy),
            "--general-corpus",
            str(general_corpus_csv),
        ],
    )

    assert result.exit_code == 0, result.output
    _, model, _ = current(labels_url)
    assert set(model.purposes) == {"vet appointment", "pet food order"}
    answers = model.predict_batch(
        ["I'd like to order some dog food", "still waiting for the vet to call me back"]
    )
    assert answers[0].purpose == "pet food order"
    assert (answers[1].purpose, answers[1].demand_type) == ("vet appointment", "failure")


def test_evaluate_json_reports_the_failure_share_and_an_audited_estimate(
    examples_csv: Path, labels_url: str, general_corpus_csv: Path
) -> None:
    train(examples_csv, labels_url, "--holdout", "0", "--general-corpus", str(general_corpus_csv))

    def evaluate(*extra: str) -> dict[str, Any]:
        return evaluate_json(labels_url, examples_csv, *extra)

    plain = evaluate()
    audited = evaluate("--audit", "20", "--seed", "3")

    for document in (plain, audited):  # the keys that were there before stay
        assert {"accuracy", "confused"} <= set(document["demand_type"])
        assert {"accuracy", "confused"} <= set(document["purpose"])
        assert document["throughput_per_s"] > 0
    assert plain["demand_type"]["failure_share"] == {
        "true": 0.5,
        "predicted": plain["demand_type"]["failure_share"]["predicted"],
    }
    share = audited["demand_type"]["failure_share"]
    assert share["true"] == 0.5
    assert share["audited"] == 20
    assert share["ci_low"] <= share["estimate"] <= share["ci_high"]
    assert evaluate("--audit", "20", "--seed", "3")["demand_type"]["failure_share"] == share


def test_a_version_exported_from_one_database_is_imported_into_another(
    examples_csv: Path, general_corpus_csv: Path, labels_url: str, tmp_path: Path
) -> None:
    from services.classifier.db.migrate import upgrade

    train(examples_csv, labels_url, "--holdout", "0", "--general-corpus", str(general_corpus_csv))
    version, model, _ = current(labels_url)
    other = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    upgrade(other)

    exported = runner.invoke(
        app, ["export", "--database-url", labels_url, "--out", str(tmp_path / "out")]
    )
    imported = runner.invoke(
        app, ["import-models", "--database-url", other, "--model-dir", str(tmp_path / "out")]
    )

    assert exported.exit_code == 0, exported.output
    assert imported.exit_code == 0, imported.output
    assert "imported 1 model versions" in imported.output
    assert not (tmp_path / "out" / "CURRENT").exists()  # the database says what is current
    rolled = runner.invoke(app, ["rollback", "--database-url", other, "--to", version])
    assert rolled.exit_code == 0, rolled.output
    again, loaded, _ = current(other)
    assert again == version
    assert loaded.purposes == model.purposes
