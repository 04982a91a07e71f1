"""`demandscope classifier ...`: every command of the classifier: run it (`serve`), migrate
its database, and train, evaluate, explain and version the text model."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import sklearn
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sklearn.model_selection import train_test_split
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from services.classifier.config import GENERAL_CORPUS, SEED_EXAMPLES, TAXONOMY, ClassifierSettings
from services.classifier.db import migrate as classifier_db
from services.classifier.db.repository import LabelRepository
from services.classifier.model import store
from services.classifier.model.evaluate import (
    Evaluation,
    HeadScores,
    evaluate,
    failure_share,
    measure_throughput,
    score_predictions,
)
from services.classifier.model.examples import Example, ExamplesFile, read_examples_csv
from services.classifier.model.text_model import FORMAT, ModelSettings, TextModel
from services.classifier.rules import RuleSet
from services.classifier.taxonomy import Taxonomy, TaxonomyError, load_taxonomy
from services.classifier.training import (
    TrainingSources,
    general_rows,
    split_sources,
    train_version,
)
from shared.database.engine import create_engine

app = typer.Typer(
    help="Labels demands: value or failure, failure kind, purpose. Serve it, migrate its "
    "database, train, evaluate and explain its text model.",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)

DEFAULT_MODEL_DIR = Path(".run/models")
ModelDir = Annotated[Path, typer.Option("--model-dir", help="Directory of model versions.")]
ExamplesCsv = Annotated[
    Path,
    typer.Option(
        "--examples", exists=True, dir_okay=False, help="CSV: text,purpose,demand_type[,...]."
    ),
]


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="The classifier database, where people's labels are kept "
        "[default: DEMANDSCOPE_CLASSIFIER_DATABASE_URL or .run/classifier.db].",
    ),
]


@app.command()
def serve() -> None:
    """Run the classifier: the consumer loop and its HTTP API (default http://127.0.0.1:8001;
    DEMANDSCOPE_CLASSIFIER_* settings). Run `migrate` first."""
    from services.classifier.main import create_app
    from shared.service.serve import serve as run

    settings = ClassifierSettings()
    run(create_app(settings), settings)


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Alembic revision to upgrade to.")] = "head",
) -> None:
    """Create or upgrade the classifier database (labels, demand texts); run before `serve`."""
    settings = ClassifierSettings()
    classifier_db.upgrade(settings.database_url, revision)
    shown = make_url(settings.database_url).render_as_string(hide_password=True)
    typer.echo(f"classifier database at {shown} is at revision {revision}")


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=1)


def _split(examples: list[Example], holdout: float) -> tuple[list[Example], list[Example]]:
    if holdout <= 0:
        return examples, []
    purposes = Counter(e.purpose for e in examples)
    test_rows = round(len(examples) * holdout)
    # Stratify by purpose when every purpose can appear on both sides; small sets cannot.
    can_stratify = min(purposes.values()) >= 2 and test_rows >= len(purposes)
    train, test = train_test_split(
        examples,
        test_size=holdout,
        random_state=0,
        stratify=[e.purpose for e in examples] if can_stratify else None,
    )
    return list(train), list(test)


def _scores_table(title: str, result: Evaluation) -> Table:
    table = Table(title=title)
    for column in ("head", "accuracy", "macro-F1", "rows", "most confused (true -> predicted: n)"):
        table.add_column(column)
    for name, scores in result.heads.items():
        confused = "; ".join(f"{t} -> {p}: {n}" for t, p, n in scores.confused[:3])
        table.add_row(
            name, f"{scores.accuracy:.3f}", f"{scores.macro_f1:.3f}", str(scores.count), confused
        )
    return table


def _summary(scores: HeadScores) -> dict[str, Any]:
    return {"accuracy": scores.accuracy, "macro_f1": scores.macro_f1, "count": scores.count}


GeneralCorpus = Annotated[
    Path | None,
    typer.Option(
        "--general-corpus",
        dir_okay=False,
        help="Value/failure examples of many sectors (teach value/failure only, never "
        "purposes); 'none' to train without.",
    ),
]


def _no_corpus(path: Path | None) -> bool:
    return path is None or str(path) in ("", ".", "none")


def _corpus(path: Path | None) -> list[Example]:
    if path is None or _no_corpus(path):
        return []
    if not path.is_file():
        raise _fail(f"{path}: no such general corpus file")
    return general_rows(path)


@app.command()
def train(
    examples: Annotated[
        Path | None,
        typer.Option(
            "--examples",
            exists=True,
            dir_okay=False,
            help="The organisation's labelled CSV: text,purpose,demand_type[,...]. Without "
            "it: the default model (shipped taxonomy and seed set) or, with --taxonomy, a "
            "cold start from that taxonomy alone.",
        ),
    ] = None,
    model_dir: ModelDir = DEFAULT_MODEL_DIR,
    taxonomy: Annotated[
        Path | None,
        typer.Option("--taxonomy", exists=True, dir_okay=False, help="Taxonomy YAML."),
    ] = None,
    general_corpus: GeneralCorpus = GENERAL_CORPUS,
    holdout: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share held out to report figures.")
    ] = 0.2,
) -> None:
    """Train a new model version and make it current.

    Purposes come only from the taxonomy and the examples; value/failure also from the
    general corpus."""
    if examples is None and taxonomy is None:  # the default model, the one `make run` starts
        examples, taxonomy = SEED_EXAMPLES, TAXONOMY
    try:
        loaded = read_examples_csv(examples) if examples else ExamplesFile(examples=[])
        known = load_taxonomy(taxonomy) if taxonomy else None
    except (ValueError, TaxonomyError) as exc:
        raise _fail(str(exc)) from exc
    labelled = [e for e in loaded.examples if e.purpose and e.demand_type]
    if known is None and not labelled:
        raise _fail(f"{examples}: no rows with text, purpose and demand_type")
    general = _corpus(general_corpus)
    rows = split_sources(known, labelled, general)
    unused = len(loaded.examples) - len(labelled)
    if rows.foreign_seed_rows:
        errors.print(
            f"[yellow]warning:[/yellow] {rows.foreign_seed_rows} rows have purposes the "
            "taxonomy does not define; they teach value/failure only"
        )
    chosen = known or Taxonomy.from_labels(e.purpose for e in labelled if e.purpose)

    train_rows, test_rows = _split(rows.own, holdout) if rows.own else ([], [])
    settings = ModelSettings()
    started = time.perf_counter()
    try:
        with Progress(console=errors, transient=True) as bar:
            task = bar.add_task("training", total=1.0)
            steps = 2 if test_rows else 1

            def advance(offset: int) -> Any:
                def report(step: str, fraction: float) -> None:
                    bar.update(task, completed=(offset + fraction) / steps, description=step)

                return report

            held_out: Evaluation | None = None
            if test_rows:
                candidate = TextModel.train(
                    train_rows, known, advance(0), settings, general=rows.general
                )
                held_out = evaluate(candidate, test_rows)
            model = TextModel.train(  # the saved model sees every row
                rows.own, known, advance(steps - 1), settings, general=rows.general
            )
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    seconds = time.perf_counter() - started

    metadata: dict[str, Any] = {
        "reason": "command",
        "examples": len(rows.own),
        "skipped_rows": loaded.skipped_empty_text + unused,
        "general_rows": len(rows.general),
        "label_counts": model.label_counts,
        "purposes": list(model.purposes),
        "taxonomy_hash": chosen.content_hash() if known else None,
        "taxonomy_given": known is not None,
        "taxonomy_file": str(taxonomy) if taxonomy else None,
        "model_format": FORMAT,
        "sklearn_version": sklearn.__version__,
        "training_seconds": round(seconds, 2),
        "evaluation": (
            {"holdout": holdout, "rows": len(test_rows), **held_out.as_dict()} if held_out else None
        ),
    }
    version = store.save(model, model_dir, metadata, now=datetime.now(UTC))
    if held_out:
        console.print(_scores_table(f"held out ({len(test_rows)} rows)", held_out))
        console.print(f"throughput: {held_out.throughput_per_s or 0:,.0f} demands/s")
    console.print(
        f"trained on {len(rows.own)} examples of the organisation and {len(rows.general)} "
        f"general rows in {seconds:.1f}s ({loaded.skipped_empty_text + unused} rows skipped); "
        f"{len(model.purposes)} purposes"
    )
    console.print(f"new version: [bold]{version}[/bold] (current) in {model_dir}")


@app.command(name="evaluate")
def evaluate_command(
    examples: ExamplesCsv,
    model_dir: ModelDir = DEFAULT_MODEL_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object only.")] = False,
    audit: Annotated[
        int,
        typer.Option(
            min=0,
            help="Draw this many random rows as the audit sample (people's labels), treat "
            "the rest as unlabelled, and estimate the failure share with its 95% interval.",
        ),
    ] = 0,
    seed: Annotated[int, typer.Option(help="Random seed of the audit draw.")] = 0,
) -> None:
    """Score the current model on labelled examples it has not been trained on."""
    try:
        version, model = store.load_current(model_dir)
        loaded = read_examples_csv(examples)
    except (ValueError, store.ModelStoreError) as exc:
        raise _fail(str(exc)) from exc
    if not loaded.examples:
        raise _fail(f"{examples}: no rows with text")
    predictions = model.predict_batch([e.text for e in loaded.examples])
    result = Evaluation(
        heads=score_predictions(loaded.examples, predictions),
        throughput_per_s=measure_throughput(model, [e.text for e in loaded.examples]),
    )
    share = failure_share(
        [e.demand_type or "" for e in loaded.examples],
        [p.demand_type for p in predictions],
        audit=audit,
        seed=seed,
    )
    if as_json:
        document: dict[str, Any] = {
            name: {**_summary(s), "confused": [list(c) for c in s.confused]}
            for name, s in result.heads.items()
        }
        if share is not None:
            document["demand_type"]["failure_share"] = share.as_dict()
        document |= {
            "throughput_per_s": result.throughput_per_s,
            "model_version": version,
            "rows": len(loaded.examples),
            "skipped_empty_text": loaded.skipped_empty_text,
            "unseen_purposes": sorted(
                {e.purpose for e in loaded.examples if e.purpose} - set(model.purposes)
            ),
        }
        typer.echo(json.dumps(document))
        return
    console.print(_scores_table(f"model {version} on {examples}", result))
    if share is not None:
        line = f"failure share: true {share.true:.3f}, predicted {share.predicted:.3f}"
        if share.estimate is not None and share.estimate.estimate is not None:
            line += (
                f", estimated {share.estimate.estimate:.3f} "
                f"[{share.estimate.ci_low:.3f}, {share.estimate.ci_high:.3f}] "
                f"from {share.estimate.audited} audited"
            )
        elif share.estimate is not None:
            line += f" ({share.estimate.status}: {share.estimate.audited} audited)"
        console.print(line)
    console.print(
        f"{len(loaded.examples)} rows, {loaded.skipped_empty_text} skipped (empty text); "
        f"throughput {result.throughput_per_s or 0:,.0f} demands/s"
    )


@app.command()
def explain(
    text: Annotated[str, typer.Argument(help="A demand, in the customer's words.")],
    model_dir: ModelDir = DEFAULT_MODEL_DIR,
) -> None:
    """Show the labels the model gives a text, how sure it is, and the words that drove it."""
    try:
        version, model = store.load_current(model_dir)
    except store.ModelStoreError as exc:
        raise _fail(str(exc)) from exc
    explanation = model.explain(text)
    prediction = explanation.prediction
    labels = Table(title=f"model {version}")
    for column in ("head", "label", "probability", "driven by"):
        labels.add_column(column)
    rows = [
        ("purpose", prediction.purpose, prediction.purpose_probability),
        ("demand_type", prediction.demand_type, prediction.demand_type_probability),
        ("failure_kind", prediction.failure_kind or "-", prediction.failure_kind_probability),
    ]
    for head, label, probability in rows:
        drivers = explanation.drivers.get(head, ())
        driven = ", ".join(f"{d.feature} ({d.weight:.2f})" for d in drivers[:6])
        labels.add_row(head, label, f"{probability:.2f}", driven)
    console.print(labels)
    if prediction.alternatives:
        console.print(
            "other purposes: "
            + ", ".join(f"{p} ({probability:.2f})" for p, probability in prediction.alternatives)
        )
    rule = RuleSet.from_taxonomy(model.taxonomy).match(text)
    if rule is not None:
        console.print(f"a taxonomy rule overrides the model here (phrase {rule.phrase!r})")


@app.command()
def versions(model_dir: ModelDir = DEFAULT_MODEL_DIR) -> None:
    """List the stored model versions; the current one is marked."""
    stored = store.list_versions(model_dir)
    if not stored:
        console.print(f"no model versions in {model_dir}")
        return
    table = Table(title=str(model_dir))
    for column in ("", "version", "examples", "purpose acc", "demand_type acc"):
        table.add_column(column)
    for entry in stored:
        figures = entry.metadata.get("evaluation") or {}

        def accuracy(head: str, figures: dict[str, Any] = figures) -> str:
            value = (figures.get(head) or {}).get("accuracy")
            return f"{value:.3f}" if isinstance(value, int | float) else "-"

        table.add_row(
            "*" if entry.is_current else "",
            entry.version,
            str(entry.metadata.get("examples", "-")),
            accuracy("purpose"),
            accuracy("demand_type"),
        )
    console.print(table)


@app.command()
def rollback(
    to: Annotated[str, typer.Option("--to", help="The version to make current.")],
    model_dir: ModelDir = DEFAULT_MODEL_DIR,
) -> None:
    """Make an earlier model version current again."""
    try:
        store.rollback(model_dir, to)
    except store.ModelStoreError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"current version is now [bold]{to}[/bold]")


@app.command()
def retrain(
    model_dir: ModelDir = DEFAULT_MODEL_DIR,
    seed_examples: Annotated[
        Path | None,
        typer.Option(
            "--seed-examples", exists=True, dir_okay=False, help="The organisation's examples CSV."
        ),
    ] = SEED_EXAMPLES,
    taxonomy: Annotated[
        Path | None,
        typer.Option("--taxonomy", exists=True, dir_okay=False, help="Taxonomy YAML."),
    ] = TAXONOMY,
    general_corpus: GeneralCorpus = GENERAL_CORPUS,
    label_weight: Annotated[
        int, typer.Option(min=1, help="Each person's label counts as this many seed rows.")
    ] = 5,
    database_url: DatabaseUrl = None,
) -> None:
    """Train on the seed examples plus people's labels (kept in the classifier database) and
    make it current.

    A running classifier on the same model directory picks the new version up by itself.
    """
    url = database_url or ClassifierSettings().database_url
    try:
        labels = asyncio.run(_training_labels(url))
    except DBAPIError as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        raise _fail(
            f"cannot read the labels in {shown} (run `demandscope classifier migrate`): {exc.orig}"
        ) from exc
    with errors.status("training on seed examples and labels"):
        trained = train_version(
            model_dir,
            TrainingSources(
                seed_examples=seed_examples,
                taxonomy=taxonomy,
                general_corpus=None if _no_corpus(general_corpus) else general_corpus,
                label_weight=label_weight,
            ),
            reason="command",
            labels=labels,
        )
    console.print(f"trained with {trained.labels} labels")
    console.print(f"new version: [bold]{trained.version}[/bold] (current) in {model_dir}")


async def _training_labels(database_url: str) -> list[Example]:
    engine = create_engine(database_url)
    try:
        return await LabelRepository(engine).training_examples()
    finally:
        await engine.dispose()
