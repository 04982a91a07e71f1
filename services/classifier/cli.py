"""`demandscope classifier ...`: every command of the classifier: run it (`serve`), migrate
its database, and train, evaluate, explain and version the text model."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import sklearn
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from services.classifier.config import GENERAL_CORPUS, SEED_EXAMPLES, TAXONOMY, ClassifierSettings
from services.classifier.db.model_versions import LeaseLost, ModelVersions, UnknownVersion
from services.classifier.db.repository import LabelRepository
from services.classifier.failure_share import read_estimated_prior
from services.classifier.model import store
from services.classifier.model.examples import Example, ExamplesFile, read_examples_csv
from services.classifier.model.prior_shift import (
    DEMANDS,
    StoredRates,
    apply_demand_prior,
)
from services.classifier.model.text_model import (
    FORMAT,
    ModelSettings,
    TextModel,
    failure_prior_of,
)
from services.classifier.rules import RuleSet
from services.classifier.taxonomy import Taxonomy, TaxonomyError, load_taxonomy
from services.classifier.training import (
    TrainingSources,
    failure_prior_metadata,
    general_rows,
    is_shipped,
    measure_rates,
    read_recent_demands,
    split_sources,
    train_model,
    use_shipped_share,
)
from services.classifier.versions import (
    RetrainInProgress,
    holder_name,
    import_directory,
    load_version,
    publish,
    training_lease,
)
from shared.database.engine import create_engine

if TYPE_CHECKING:
    # Evaluation (scikit-learn's metrics and model selection) is for `train` and `evaluate`;
    # `serve` imports this module and must not wait for it.
    from services.classifier.model.evaluate import Evaluation, HeadScores

app = typer.Typer(
    help="Labels demands: value or failure, failure kind, purpose. Serve it, migrate its "
    "database, train, evaluate and explain its text model.",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)

T = TypeVar("T")
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
        help="The classifier database, where people's labels and the fleet's model versions "
        "are kept [default: DEMANDSCOPE_CLASSIFIER_DATABASE_URL or .run/classifier.db].",
    ),
]
Version = Annotated[
    str | None,
    typer.Option("--version", help="A stored model version [default: the current one]."),
]


@app.command()
def serve() -> None:
    """Run the classifier: the consumer loop and its HTTP API (default http://127.0.0.1:8001;
    DEMANDSCOPE_CLASSIFIER_* settings). Run `migrate` first."""
    from services.classifier.main import create_app
    from shared.service.serve import instance_name
    from shared.service.serve import serve as run

    settings = ClassifierSettings()
    settings.instance_id = instance_name(settings.instance_id, settings.port)
    run(create_app(settings), settings)


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Alembic revision to upgrade to.")] = "head",
) -> None:
    """Create or upgrade the classifier database (labels, demand texts, model versions); run
    before `serve`."""
    settings = ClassifierSettings()
    from services.classifier.db import migrate as classifier_db  # alembic: not for `serve`

    classifier_db.upgrade(settings.database_url, revision)
    shown = make_url(settings.database_url).render_as_string(hide_password=True)
    typer.echo(f"classifier database at {shown} is at revision {revision}")


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=1)


def _url(database_url: str | None) -> str:
    return database_url or ClassifierSettings().database_url


@asynccontextmanager
async def _opened(database_url: str) -> AsyncIterator[ModelVersions]:
    engine = create_engine(database_url)
    try:
        yield ModelVersions(engine)
    finally:
        await engine.dispose()


def _on_database(database_url: str, work: Callable[[ModelVersions], Awaitable[T]]) -> T:
    """Run ``work`` on the classifier database; an unreachable or unmigrated one, an unknown
    version or a busy trainer end the command with a message."""

    async def run() -> T:
        async with _opened(database_url) as versions:
            return await work(versions)

    try:
        return asyncio.run(run())
    except DBAPIError as exc:
        shown = make_url(database_url).render_as_string(hide_password=True)
        raise _fail(
            f"cannot use the classifier database {shown} "
            f"(run `demandscope classifier migrate`): {exc.orig}"
        ) from exc
    except UnknownVersion as exc:
        raise _fail(f"no model version {exc} in the classifier database") from exc
    except (RetrainInProgress, LeaseLost, store.ModelStoreError) as exc:
        raise _fail(str(exc)) from exc


async def _load(versions: ModelVersions, version: str | None) -> tuple[str, TextModel]:
    chosen, model, _ = await _load_with_metadata(versions, version)
    return chosen, model


def _train_and_publish(
    database_url: str,
    fit: Callable[[], tuple[TextModel, dict[str, Any]]],
    *,
    reason: str,
) -> tuple[str, TextModel, dict[str, Any]]:
    """Hold the fleet's training lease while ``fit`` runs (in a thread), then publish its
    model as the current version for every instance."""
    settings = ClassifierSettings()
    ttl = timedelta(seconds=settings.training_lease_s)

    async def work(versions: ModelVersions) -> tuple[str, TextModel, dict[str, Any]]:
        async with training_lease(versions, holder_name("cli"), ttl) as held:
            model, metadata = await asyncio.to_thread(fit)
            version = await publish(versions, held, model, metadata, reason=reason)
        return version, model, metadata

    return _on_database(database_url, work)


def _split(examples: list[Example], holdout: float) -> tuple[list[Example], list[Example]]:
    from sklearn.model_selection import train_test_split

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
    taxonomy: Annotated[
        Path | None,
        typer.Option("--taxonomy", exists=True, dir_okay=False, help="Taxonomy YAML."),
    ] = None,
    general_corpus: GeneralCorpus = GENERAL_CORPUS,
    holdout: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share held out to report figures.")
    ] = 0.2,
    database_url: DatabaseUrl = None,
) -> None:
    """Train a new model version and make it current for every running classifier.

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
    figures: dict[str, Any] = {}
    # The shipped seed set is not the organisation's: its share is the prior only until the
    # organisation's demands say better (rule 3, docs/services/classifier.md).
    shipped = is_shipped(examples)

    def fit() -> tuple[TextModel, dict[str, Any]]:
        from services.classifier.model.evaluate import evaluate

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
                        train_rows,
                        known,
                        advance(0),
                        settings,
                        general=rows.general,
                        prior_rows=[] if shipped else None,
                    )
                    use_shipped_share(candidate, train_rows, shipped)
                    held_out = evaluate(candidate, test_rows)
                model = TextModel.train(  # the saved model sees every row
                    rows.own,
                    known,
                    advance(steps - 1),
                    settings,
                    general=rows.general,
                    prior_rows=[] if shipped else None,
                )
                use_shipped_share(model, rows.own, shipped)
                bar.update(task, description="error rates for the demands' prior")
                rates = measure_rates(model, rows.own, known, rows.general, settings)
        except ValueError as exc:
            raise _fail(str(exc)) from exc
        seconds = time.perf_counter() - started
        figures.update(held_out=held_out, seconds=seconds)
        metadata: dict[str, Any] = {
            "reason": "command",
            "examples": len(rows.own),
            "skipped_rows": loaded.skipped_empty_text + unused,
            "general_rows": len(rows.general),
            "label_counts": model.label_counts,
            **failure_prior_metadata(model),
            "failure_prior_rates": rates.as_dict() if rates is not None else None,
            "purposes": list(model.purposes),
            "taxonomy_hash": chosen.content_hash() if known else None,
            "taxonomy_given": known is not None,
            "taxonomy_file": str(taxonomy) if taxonomy else None,
            "model_format": FORMAT,
            "sklearn_version": sklearn.__version__,
            "training_seconds": round(seconds, 2),
            "evaluation": (
                {"holdout": holdout, "rows": len(test_rows), **held_out.as_dict()}
                if held_out
                else None
            ),
        }
        return model, metadata

    version, model, _ = _train_and_publish(_url(database_url), fit, reason="command")
    held_out = figures["held_out"]
    if held_out:
        console.print(_scores_table(f"held out ({len(test_rows)} rows)", held_out))
        console.print(f"throughput: {held_out.throughput_per_s or 0:,.0f} demands/s")
    console.print(
        f"trained on {len(rows.own)} examples of the organisation and {len(rows.general)} "
        f"general rows in {figures['seconds']:.1f}s "
        f"({loaded.skipped_empty_text + unused} rows skipped); {len(model.purposes)} purposes"
    )
    console.print(f"new version: [bold]{version}[/bold] (current for every instance)")


@app.command(name="evaluate")
def evaluate_command(
    examples: ExamplesCsv,
    version: Version = None,
    database_url: DatabaseUrl = None,
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
    prior_from_texts: Annotated[
        bool,
        typer.Option(
            "--prior-from-texts/--no-prior-from-texts",
            help="Treat the file's texts as the organisation's demands and set the "
            "value/failure prior as the service would after seeing them, unless the model's "
            "prior is the metrics service's audited estimate or the organisation's own "
            "labels: with --audit of at least own_prior_min_rows rows, the audit labels' "
            "share; else the failure share of the newest "
            "DEMANDSCOPE_CLASSIFIER_FAILURE_PRIOR_DEMANDS_READ texts by black-box shift "
            "estimation (at least DEMANDSCOPE_CLASSIFIER_FAILURE_PRIOR_MIN_DEMANDS, with "
            "the error rates the version keeps). Reported as demand_type.prior.",
        ),
    ] = True,
) -> None:
    """Score the current model (or --version) on labelled examples it has not been trained
    on."""
    from services.classifier.model.evaluate import (
        Evaluation,
        failure_share,
        measure_throughput,
        score_predictions,
    )

    try:
        loaded = read_examples_csv(examples)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    version, model, metadata = _on_database(
        _url(database_url), lambda v: _load_with_metadata(v, version)
    )
    if not loaded.examples:
        raise _fail(f"{examples}: no rows with text")
    prior = _prior_of_file(
        model,
        metadata,
        loaded.examples,
        audit=audit,
        seed=seed,
        from_texts=prior_from_texts,
    )
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
        if "demand_type" in document:
            document["demand_type"]["prior"] = prior
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
    if prior["share"] is not None:
        behind = f" from {prior['texts']} texts" if prior["texts"] else ""
        console.print(f"failure prior: {prior['share']:.3f} ({prior['source']}{behind})")
    console.print(
        f"{len(loaded.examples)} rows, {loaded.skipped_empty_text} skipped (empty text); "
        f"throughput {result.throughput_per_s or 0:,.0f} demands/s"
    )


async def _load_with_metadata(
    versions: ModelVersions, version: str | None
) -> tuple[str, TextModel, dict[str, Any]]:
    chosen = version or await versions.current()
    if chosen is None:
        raise store.ModelStoreError(
            "no model in the classifier database: run `demandscope classifier train` first"
        )
    model, metadata = await load_version(versions, chosen)
    return chosen, model, metadata


def _prior_of_file(
    model: TextModel,
    metadata: dict[str, Any],
    examples: list[Example],
    *,
    audit: int,
    seed: int,
    from_texts: bool,
) -> dict[str, Any]:
    """Set ``model``'s value/failure prior as the service would after seeing the file's
    texts as demands (``from_texts``), and say where it came from: the model's own when it
    is the audited estimate or the organisation's labels; the audit rows' share when there
    are own_prior_min_rows of them (people's labels, drawn as ``failure_share`` draws
    them); else the demands' estimate from the newest texts. JSON's demand_type.prior."""

    def kept() -> dict[str, Any]:
        return {
            "source": model.failure_prior_source
            or ("fit" if model.failure_prior is None else None),
            "share": model.failure_prior,
            "texts": None,
            "rows": model.failure_prior_rows,
        }

    if not from_texts or model.failure_prior_source in ("estimate", "labels"):
        return kept()
    judged = [e for e in examples if e.demand_type in ("value", "failure")]
    if audit > 0 and judged:
        from services.classifier.model.evaluate import audit_draw  # as evaluate_command's

        drawn = audit_draw(len(judged), audit, seed)
        labels = failure_prior_of([judged[i] for i in drawn], model.settings.own_prior_min_rows)
        if labels is not None:
            model.set_failure_prior(labels.share, source=labels.source, rows=labels.rows)
            return kept()
    settings = ClassifierSettings()
    wanted = settings.demand_prior()
    stored = StoredRates.from_dict(metadata.get("failure_prior_rates"))
    # The newest demands: a file's last rows.
    texts = [e.text for e in examples][-wanted.read :][::-1]
    if stored is None or wanted.min_texts <= 0 or len(texts) < wanted.min_texts:
        return kept()
    before = (model.failure_prior, model.failure_prior_source, model.failure_prior_rows)
    share = apply_demand_prior(model, texts, stored, min_texts=wanted.min_texts)
    if share is None:
        model.set_failure_prior(before[0], source=before[1], rows=before[2])
        return kept()
    return {"source": DEMANDS, "share": share, "texts": len(texts), "rows": None}


@app.command()
def explain(
    text: Annotated[str, typer.Argument(help="A demand, in the customer's words.")],
    version: Version = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Show the labels the model gives a text, how sure it is, and the words that drove it."""
    version, model = _on_database(_url(database_url), lambda v: _load(v, version))
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
def versions(database_url: DatabaseUrl = None) -> None:
    """List the model versions the fleet shares; the current one is marked."""
    stored = _on_database(_url(database_url), lambda v: v.list())
    if not stored:
        console.print("no model versions in the classifier database")
        return
    table = Table(title="model versions")
    for column in ("", "version", "created", "by", "reason", "examples", "purpose acc", "dt acc"):
        table.add_column(column, no_wrap=column == "version", overflow="fold")
    for entry in stored:
        figures = entry.metadata.get("evaluation") or {}

        def accuracy(head: str, figures: dict[str, Any] = figures) -> str:
            value = (figures.get(head) or {}).get("accuracy")
            return f"{value:.3f}" if isinstance(value, int | float) else "-"

        table.add_row(
            "*" if entry.is_current else "",
            entry.version,
            f"{entry.created_at:%Y-%m-%d %H:%M}",
            entry.created_by,
            entry.reason,
            str(entry.metadata.get("examples", "-")),
            accuracy("purpose"),
            accuracy("demand_type"),
        )
    console.print(table)


@app.command()
def rollback(
    to: Annotated[str, typer.Option("--to", help="The version to make current.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Make an earlier model version current again, for every running classifier (each
    switches within its watch interval)."""
    _on_database(
        _url(database_url), lambda v: v.make_current(to, by=holder_name("cli"), reason="rollback")
    )
    console.print(f"current version is now [bold]{to}[/bold]")


@app.command()
def prune(
    keep: Annotated[
        int, typer.Option("--keep", min=1, help="How many of the newest versions to keep.")
    ] = 10,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete old model versions: all but the newest ``--keep`` and the current one. Each
    stored version holds its whole model; a fleet that retrains on a schedule piles them up.
    Export a version first (``export``) if you may want it back."""
    deleted = _on_database(_url(database_url), lambda v: v.prune(keep))
    if not deleted:
        console.print(f"nothing to delete: at most {keep} versions besides the current one")
        return
    console.print(f"deleted {len(deleted)} model versions: {', '.join(deleted)}")


@app.command(name="import-models")
def import_models(
    model_dir: Annotated[
        Path,
        typer.Option(
            "--model-dir",
            exists=True,
            file_okay=False,
            help="A model directory of an earlier release (CURRENT + versions/).",
        ),
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Copy the versions of an earlier release's model directory into the classifier database;
    its CURRENT becomes current only if the database has none. (The service does this by
    itself at start when the database holds no version.)"""
    added = _on_database(
        _url(database_url), lambda v: import_directory(v, model_dir, holder_name("cli"))
    )
    console.print(f"imported {added} model versions from {model_dir}")


@app.command()
def export(
    out: Annotated[
        Path, typer.Option("--out", file_okay=False, help="Directory to write the version to.")
    ],
    version: Version = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write a stored version (default: the current one) to OUT/versions/<version>/ (the
    model and its metadata), e.g. to keep it or to bring it to another database with
    `import-models`. No CURRENT is written: the database alone says which version is current."""

    async def read(versions: ModelVersions) -> tuple[str, bytes, dict[str, Any]]:
        chosen = version or await versions.current()
        if chosen is None:
            raise store.ModelStoreError("no model in the classifier database")
        stored = await versions.get(chosen)
        return chosen, stored.payload, stored.metadata

    chosen, payload, metadata = _on_database(_url(database_url), read)
    written = store.write_directory_version(out, chosen, payload, metadata)
    console.print(f"wrote version [bold]{chosen}[/bold] to {written}")


@app.command()
def retrain(
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
    prior_from_metrics: Annotated[
        bool,
        typer.Option(
            "--prior-from-metrics/--prior-from-labels",
            help="Take the value/failure prior from the metrics service's audited failure "
            "share (purpose.metrics, on the classifier's Kafka settings, read for at most "
            "DEMANDSCOPE_CLASSIFIER_FAILURE_ESTIMATE_TIMEOUT_S) when its validated estimates "
            "cover 90% of the value/failure demands, as the service does before it trains "
            "(the default, so a retrain here does not switch the fleet's prior source); "
            "otherwise, or with --prior-from-labels, from the labels.",
        ),
    ] = True,
    database_url: DatabaseUrl = None,
) -> None:
    """Train on the seed examples plus people's labels (kept in the classifier database) and
    make it current for the fleet: every running classifier switches to it within its watch
    interval. Fails while a retraining runs anywhere in the fleet."""
    url = _url(database_url)
    settings = ClassifierSettings()
    sources = TrainingSources(
        seed_examples=seed_examples,
        taxonomy=taxonomy,
        general_corpus=None if _no_corpus(general_corpus) else general_corpus,
        label_weight=label_weight,
    )
    ttl = timedelta(seconds=settings.training_lease_s)

    async def work(versions: ModelVersions) -> tuple[str, int]:
        labels = LabelRepository(versions.engine)
        async with training_lease(versions, holder_name("cli"), ttl) as held:
            count = await labels.count()
            examples = await labels.training_examples()
            estimated = None
            if prior_from_metrics:
                with errors.status("reading the metrics service's failure share"):
                    estimated = await read_estimated_prior(
                        settings.kafka, timeout_s=settings.failure_estimate_timeout_s
                    )
                errors.print(
                    f"failure prior: {'from' if estimated.prior else 'not from'} the "
                    f"metrics service's estimate ({estimated.reason})"
                )
            demands = await read_recent_demands(labels, settings.demand_prior())
            with errors.status("training on seed examples and labels"):
                trained = await asyncio.to_thread(
                    train_model,
                    sources,
                    reason="command",
                    labels=examples,
                    label_rows=count,
                    estimated=estimated,
                    demands=demands.texts,
                    demand_prior=settings.demand_prior(),
                    with_rates=True,
                )
            metadata = {**trained.metadata, **demands.metadata(trained.model)}
            version = await publish(versions, held, trained.model, metadata, reason="command")
        return version, trained.labels

    version, labelled = _on_database(url, work)
    console.print(f"trained with {labelled} labels")
    console.print(f"new version: [bold]{version}[/bold] (current for every instance)")
