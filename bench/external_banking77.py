"""External check of purposes on real customer text: the Banking77 test split.

Banking77 (PolyAI, CC-BY-4.0; Casanueva et al., 2020) holds real online-banking customer
queries labelled with 77 intents. Its test split, ``banking_data/test.csv`` in the
``PolyAI-LDN/task-specific-datasets`` repository (3,080 rows, two columns ``text,category``,
about 40 rows per intent), is not shipped with demandscope and must not be committed: fetch it
yourself and pass its path.

Run: ``.venv/bin/python -m bench.external_banking77 /path/to/test.csv`` (pinned to one core,
as ``bench judgement``; about 5 minutes). Prints markdown tables for
``services/classifier/model/EVALUATION.md``.

What is measured, with the classifier as shipped (``TextModel.train`` with the shipped
settings and the shipped general corpus, the path ``bench judgement`` takes):

- the organisation's taxonomy is the 77 intent names and nothing else
  (``Taxonomy.from_labels``: no description, example or keyword of ours), so nothing written
  for this project teaches a purpose;
- purposes only: Banking77 has no value/failure labels. Training uses only rows with a demand
  type (as ``train_model`` does with people's labels), so every row carries the placeholder
  ``value``; it reaches the value/failure head only, whose figures are not reported;
- few-shot (10 rows per intent, tested on all the rest; mean of 3 seeds) with and without the
  sentence embeddings; a learning curve (5, 10, 20 per intent, one fixed 30% test set); and
  5-fold cross-validation stratified by intent on the 3,080 rows (about 32 training rows per
  intent: far fewer than Banking77's own 10,003-row training split, which is not used).

With ``--train /path/to/train.csv`` (Banking77's official 10,003-row training split, same
columns; also not shipped) the official protocol instead: train on the training split, score
on the whole test split. The shipped recipe trained on every training row, with and without
embeddings (purpose accuracy, macro-F1, training time), and a learning curve of
``OFFICIAL_CURVE`` rows per intent drawn from the training split (seeds 0, 1, 2: mean and
range) up to all of it; test rows whose text is also in the training split (exactly, and
ignoring case, punctuation and spacing) are counted and kept. The header names the code state,
the cores the process may use and each input file's SHA-256.
Run: ``.venv/bin/python -m bench.external_banking77 --train train.csv test.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sklearn.metrics import f1_score
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from bench.code_state import code_state
from bench.judgement import DEFAULT, VARIANTS, by_purpose
from services.classifier.config import GENERAL_CORPUS
from services.classifier.model.evaluate import cross_validate
from services.classifier.model.examples import Example, slug_label
from services.classifier.model.text_model import ModelSettings, TextModel
from services.classifier.taxonomy import Taxonomy
from services.classifier.training import general_rows

SEEDS = (0, 1, 2)
CURVE = (5, 10, 20)
OFFICIAL_CURVE = (10, 20, 50)  # rows per intent drawn from the training split; then all
PLACEHOLDER_TYPE = "value"  # training needs a demand type on every row; never reported
COLUMNS = ("text", "category")  # Banking77's header, exactly (case included)


def read_banking77(path: Path) -> list[Example]:
    """Rows of ``text,category`` as the organisation's labelled examples (purpose = slug of
    the category: ``Refund_not_showing_up`` -> ``refund_not_showing_up``).

    A file that cannot be read, lacks those columns or has no labelled row stops the run
    here (``SystemExit`` naming the file), before any training: otherwise rows are dropped
    silently and the failure surfaces late, e.g. a division by zero after the full fit."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            found = list(reader.fieldnames or [])
    except OSError as e:
        raise SystemExit(f"{path}: cannot read: {e.strerror or e}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise SystemExit(f"{path}: cannot read as a UTF-8 CSV file: {e}") from None
    if not set(COLUMNS) <= set(found):
        raise SystemExit(
            f"{path}: needs the columns {','.join(COLUMNS)}; found "
            + (",".join(found) if found else "no header (empty file)")
        )
    examples = [
        Example(r["text"].strip(), slug_label(r["category"]), PLACEHOLDER_TYPE)
        for r in rows
        if (r.get("text") or "").strip() and (r.get("category") or "").strip()
    ]
    if not examples:
        raise SystemExit(
            f"{path}: no labelled rows left ({len(rows)} rows, none with both text and category)"
        )
    return examples


def purpose_accuracy(
    train: Sequence[Example],
    test: Sequence[Example],
    taxonomy: Taxonomy,
    settings: ModelSettings,
    general: Sequence[Example],
    confusions: Counter[tuple[str, str]] | None = None,
) -> float:
    model = TextModel.train(train, taxonomy, settings=settings, general=general)
    predicted = [p.purpose for p in model.predict_batch([e.text for e in test])]
    if confusions is not None:
        confusions.update((e.purpose or "", p) for e, p in zip(test, predicted, strict=True))
    return sum(p == e.purpose for p, e in zip(predicted, test, strict=True)) / len(test)


def split(
    rows: Sequence[Example], seed: int, *, per_purpose: int | None = None, test_share: float = 0.0
) -> tuple[list[Example], list[Example], list[list[Example]]]:
    """``bench judgement``'s splits: per purpose (shuffled with ``seed``), either the first
    ``per_purpose`` rows to train and the rest to test, or the first ``test_share`` to test
    and the rest as a pool to train from (returned per purpose)."""
    train: list[Example] = []
    test: list[Example] = []
    pools: list[list[Example]] = []
    for group in by_purpose(rows, seed).values():
        if per_purpose is not None:
            train += group[:per_purpose]
            test += group[per_purpose:]
        else:
            cut = max(1, round(len(group) * test_share))
            test += group[:cut]
            pools.append(group[cut:])
    return train, test, pools


def _f(value: float) -> str:
    return f"{value:.3f}"


def run(path: Path) -> str:
    started = time.perf_counter()
    load = os.getloadavg()
    rows = read_banking77(path)
    counts = Counter(e.purpose or "" for e in rows)
    taxonomy = Taxonomy.from_labels(counts)  # the intent names, nothing else
    general = general_rows(GENERAL_CORPUS)
    out: list[str] = []

    def step(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", file=sys.stderr, flush=True)

    few: dict[str, list[float]] = {}
    confusions: Counter[tuple[str, str]] = Counter()
    for name, settings in VARIANTS.items():
        for seed in SEEDS:
            step(f"few-shot 10 per intent, {name}, seed {seed}")
            train, test, _ = split(rows, seed, per_purpose=10)
            few.setdefault(name, []).append(
                purpose_accuracy(
                    train,
                    test,
                    taxonomy,
                    settings,
                    general,
                    confusions if name == "with embeddings" else None,
                )
            )
    curve: dict[str, dict[int, float]] = {}
    for name, settings in VARIANTS.items():
        _, test, pools = split(rows, 0, test_share=0.3)
        for k in CURVE:
            step(f"learning curve {k} per intent, {name}")
            train = [row for pool in pools for row in pool[:k]]
            curve.setdefault(name, {})[k] = purpose_accuracy(
                train, test, taxonomy, settings, general
            )
    full: dict[str, tuple[float, float]] = {}
    for name, settings in VARIANTS.items():
        step(f"5-fold, {name}")
        heads = cross_validate(rows, 5, taxonomy=taxonomy, settings=settings, general=general)
        full[name] = (heads["purpose"].accuracy, heads["purpose"].macro_f1)

    out.append(
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python -m "
        f"bench.external_banking77`, one core, load average before the run {load[0]:.1f} / "
        f"{load[1]:.1f} / {load[2]:.1f}, in {time.perf_counter() - started:.0f} s. Data: "
        f"{len(rows):,} rows, {len(counts)} intents, {min(counts.values())}-"
        f"{max(counts.values())} rows each; general corpus {len(general):,} rows (value/failure "
        "only)."
    )
    out.append("")
    out.append(
        "| protocol | training rows per intent | test rows | purpose accuracy, with "
        "embeddings | without embeddings |"
    )
    out.append("|---|---|---|---|---|")
    _, few_test, _ = split(rows, 0, per_purpose=10)
    out.append(
        f"| few-shot, mean of {len(SEEDS)} seeds (each: "
        + ", ".join(_f(v) for v in few["with embeddings"])
        + f") | 10 | {len(few_test):,} | **{_f(sum(few['with embeddings']) / len(SEEDS))}** | "
        f"{_f(sum(few['without embeddings']) / len(SEEDS))} |"
    )
    _, curve_test, _ = split(rows, 0, test_share=0.3)
    for k in CURVE:
        out.append(
            f"| learning curve (fixed 30% test set, seed 0) | {k} | {len(curve_test):,} | "
            f"{_f(curve['with embeddings'][k])} | {_f(curve['without embeddings'][k])} |"
        )
    per_fold = round(len(rows) * 0.8 / len(counts))
    out.append(
        f"| 5-fold cross-validation, stratified by intent (macro-F1 in brackets) | about "
        f"{per_fold} | {len(rows):,} (each once) | **{_f(full['with embeddings'][0])}** "
        f"({_f(full['with embeddings'][1])}) | {_f(full['without embeddings'][0])} "
        f"({_f(full['without embeddings'][1])}) |"
    )
    out.append("")
    errors = sum(n for (t, p), n in confusions.items() if t != p)
    out.append(
        f"Most frequent confusions, few-shot with embeddings, {len(SEEDS)} seeds pooled "
        f"({errors:,} errors in {sum(confusions.values()):,} predictions):"
    )
    out.append("")
    pairs = Counter({pair: n for pair, n in confusions.items() if pair[0] != pair[1]})
    for (truth, predicted), n in pairs.most_common(12):
        out.append(f"- {truth} -> {predicted}: {n}")
    by_intent = Counter[str]()
    totals = Counter[str]()
    for (truth, predicted), n in confusions.items():
        totals[truth] += n
        if truth != predicted:
            by_intent[truth] += n
    worst = sorted(totals, key=lambda t: by_intent[t] / totals[t], reverse=True)[:8]
    out.append("")
    out.append(
        "Lowest per-intent accuracy, same runs: "
        + "; ".join(f"{t} {1 - by_intent[t] / totals[t]:.2f}" for t in worst)
        + "."
    )
    return "\n".join(out)


@dataclass(frozen=True, slots=True)
class Fit:
    accuracy: float
    macro_f1: float
    seconds: float
    """Training wall time (``TextModel.train`` only)."""
    cpu: float
    """Training CPU time of this process."""
    rows: int


def fit_and_score(
    train: Sequence[Example],
    test: Sequence[Example],
    taxonomy: Taxonomy,
    settings: ModelSettings,
    general: Sequence[Example],
) -> Fit:
    """Train the shipped recipe on ``train``; purpose accuracy and macro-F1 on ``test``."""
    started, cpu = time.perf_counter(), time.process_time()
    model = TextModel.train(train, taxonomy, settings=settings, general=general)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    predicted = [p.purpose for p in model.predict_batch([e.text for e in test])]
    truth = [e.purpose or "" for e in test]
    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(test)
    macro = float(
        f1_score(truth, predicted, labels=sorted(set(truth)), average="macro", zero_division=0)
    )
    return Fit(accuracy, macro, seconds, cpu, len(train))


def draw_per_intent(rows: Sequence[Example], per_intent: int, seed: int) -> list[Example]:
    """``per_intent`` rows of each intent (all of an intent with fewer), shuffled by ``seed``
    as ``bench judgement`` shuffles."""
    return [row for group in by_purpose(rows, seed).values() for row in group[:per_intent]]


def _spread(values: Sequence[float]) -> str:
    """``mean (min-max)``."""
    return f"{_f(sum(values) / len(values))} ({_f(min(values))}-{_f(max(values))})"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _normalised(text: str) -> str:
    """Case, punctuation and spacing dropped: "How do I change my address ?" and "how do i
    change my address" are one text to word and character n-grams, nearly."""
    return re.sub(r"\W+", " ", text.lower()).strip()


def _cores() -> str:
    """The cores this process may run on, as the header states them: ``main`` pins to one,
    a direct call of ``official`` (tests, scripts) may not be pinned."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return "one core" if cores == 1 else f"{cores or '?'} cores (not pinned to one)"


def official(
    train_path: Path,
    test_path: Path,
    *,
    curve: Sequence[int] = OFFICIAL_CURVE,
    seeds: Sequence[int] = SEEDS,
    variants: dict[str, ModelSettings] | None = None,
    general: Sequence[Example] | None = None,
) -> str:
    """The official protocol (module docstring) as markdown."""
    started = time.perf_counter()
    load = os.getloadavg()
    code = code_state()  # at the start: the code that was imported
    variants = VARIANTS if variants is None else variants
    train_rows, test_rows = read_banking77(train_path), read_banking77(test_path)
    counts = Counter(e.purpose or "" for e in train_rows)
    test_counts = Counter(e.purpose or "" for e in test_rows)
    taxonomy = Taxonomy.from_labels([*counts, *test_counts])  # the intent names, nothing else
    general = general_rows(GENERAL_CORPUS) if general is None else general
    # Texts in both splits, counted in test rows: exactly, and once normalised.
    in_train = {e.text for e in train_rows}
    shared = [e for e in test_rows if e.text in in_train]
    train_labels: dict[str, set[str]] = {}
    for e in train_rows:
        train_labels.setdefault(_normalised(e.text), set()).add(e.purpose or "")
    near = [e for e in test_rows if _normalised(e.text) in train_labels]
    relabelled = sum((e.purpose or "") not in train_labels[_normalised(e.text)] for e in near)

    def step(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", file=sys.stderr, flush=True)

    full: dict[str, Fit] = {}
    for name, settings in variants.items():
        step(f"all {len(train_rows):,} training rows, {name}")
        full[name] = fit_and_score(train_rows, test_rows, taxonomy, settings, general)
    drawn: dict[str, dict[int, list[Fit]]] = {}
    for name, settings in variants.items():
        for k in curve:
            for seed in seeds:
                step(f"learning curve {k} per intent, {name}, seed {seed}")
                drawn.setdefault(name, {}).setdefault(k, []).append(
                    fit_and_score(
                        draw_per_intent(train_rows, k, seed), test_rows, taxonomy, settings, general
                    )
                )
    names = list(variants)
    out = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python -m "
        f"bench.external_banking77 --train`, {code}, {_cores()}, load average before "
        f"the run {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}, in "
        f"{time.perf_counter() - started:.0f} s. Training split {len(train_rows):,} rows, "
        f"{len(counts)} intents, {min(counts.values())}-{max(counts.values())} rows each "
        f"(SHA-256 `{_sha256(train_path)}…`); test split {len(test_rows):,} rows, "
        f"{len(test_counts)} intents, {min(test_counts.values())}-{max(test_counts.values())} "
        f"each (SHA-256 `{_sha256(test_path)}…`); general corpus {len(general):,} rows "
        f"(value/failure only). Test rows whose text is also in the training split: "
        f"{len(shared)} exactly, {len(near)} ignoring case, punctuation and spacing (these "
        f"included; {relabelled} of them with another intent there); all kept.",
        "",
        "| training rows per intent (from the training split) | training rows | "
        + " | ".join(f"{n}: purpose accuracy; macro-F1" for n in names)
        + " | training time |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    for k in curve:
        fits = {n: drawn[n][k] for n in names}
        first = fits[names[0]]  # the rows drawn are the same for every variant
        out.append(
            f"| {k}: mean (range) of {len(first)} fits, one per seed | {first[0].rows:,} | "
            + " | ".join(
                f"{_spread([f.accuracy for f in fits[n]])}; "
                f"{_f(sum(f.macro_f1 for f in fits[n]) / len(fits[n]))}"
                for n in names
            )
            + " | "
            + ", ".join(f"{sum(f.seconds for f in fits[n]) / len(fits[n]):.0f} s" for n in names)
            + " |"
        )
    out.append(
        f"| all ({min(counts.values())}-{max(counts.values())}) | {full[names[0]].rows:,} | "
        + " | ".join(
            # the shipped variant in bold
            f"**{_f(full[n].accuracy)}**; {_f(full[n].macro_f1)}"
            if n == DEFAULT
            else f"{_f(full[n].accuracy)}; {_f(full[n].macro_f1)}"
            for n in names
        )
        + " | "
        + ", ".join(f"{full[n].seconds:.0f} s ({full[n].cpu:.0f} s CPU)" for n in names)
        + " |"
    )
    out.append("")
    out.append(
        "Training time: wall seconds of `TextModel.train` (features, the three heads), per "
        "variant in the column order; the curve's is the mean over seeds."
    )
    return "\n".join(out)


USAGE = (
    "usage: python -m bench.external_banking77 [--train /path/to/banking77/train.csv] "
    "/path/to/banking77/test.csv"
)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    train: Path | None = None
    if args[:1] == ["--train"] and len(args) == 3:
        train, args = Path(args[1]), args[2:]
    if len(args) != 1 or args[0].startswith("--"):
        raise SystemExit(USAGE)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    with threadpool_limits(limits=1):  # BLAS threads started before the pin
        if train is None:
            print(run(Path(args[0])), flush=True)
        else:
            print(official(train, Path(args[0])), flush=True)


if __name__ == "__main__":
    main()
