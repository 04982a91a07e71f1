"""External check of value/failure on real customer text: first contacts on Twitter (TWCS).

Every value/failure figure of ``bench judgement`` is on text written for this project. This
is a held-out check on text we did not write: the model, the general corpus and every
setting are the shipped ones and **must not be changed because of these figures** (the
protocol below was fixed, and both annotators' labels written, before the model first saw
these texts; it is run once and reported as printed).

**Data.** The Customer Support on Twitter dataset (TWCS; Kaggle
``thoughtvector/customer-support-on-twitter``, CC BY-NC-SA 4.0): tweets between customers and
the support accounts of large, mostly US and UK, companies (2017). It is not shipped and must
not be committed: pass your copy's path. The file needs the TWCS columns
(``,tweet_id,author_id,inbound,created_at,text,response_tweet_id,in_response_to_tweet_id``);
the full ``twcs.csv`` works, and so does any prefix of it. The measurement of 2026-11-27 used
the first 1,987 rows (index 0-1986, about the first 335,900 of its 882,543 characters) of the slice
``twcs.csv`` of the ``monalisapatra26/data_visualization`` repository (commit
``b79b6dcf2a30f84bdfdf66ff9f69f03540bfd6d6``), which starts, as the Kaggle file does, at
tweet id 1. That slice could only be read 16,000 characters at a time, by hand, so the full
slice was not reassembled (its SHA-256 is unknown) and the file measured is a transcription
of those rows reduced to what this script reads: each first contact's row (index and
``created_at`` left empty) and, per first contact answered by a support account, a row with
only that reply's ``author_id``, ``inbound`` False and ``in_response_to_tweet_id``
(84,620 characters, SHA-256
``676b2d9dde4792171eb8012e5c554013ce0da0d7ba89cfd912c6eb2e2a7d7811``; the script prints the
hash of the file it is given). On the full file the same 507 items come first, with the
same numbers.

**Development and test sets.** Those 507 items (labels ``bench/data/twcs_labels.csv``) were
measured once as a held-out check and then became the **development set**: changes to the
model were tried on them (EVALUATION.md, "Choices measured, fourth round"). The **test set**
is the rest of the same slice, rows 1,987-4,999 (from character 334,000 to the end, no tweet
in common with the development set), reduced and transcribed the same way (136,359
characters, SHA-256 ``2f67e85880e833b68b9730070cf28de5fb87bbd8cdcba08a0f4d91223710e602``):
778 first contacts, labels ``bench/data/twcs_test_labels.csv``, both passes written before
any model saw the texts. It was run once, with the model and every setting fixed, the two
BBSE rows included (added before that run). Judge a change on the development set; run
the test set once, after the change is final, and report what it prints.

**Items.** A customer's first contact: a row with ``inbound`` True and no
``in_response_to_tweet_id`` (the opening tweet of a conversation), numbered 1..N in file
order (``first_contacts``). Its company: the author of the support account's reply (an
outbound row answering it), else the first non-numeric @mention (matched without case to
the support accounts in the file), else ``unknown``. Text as in the data (HTML entities
such as ``&amp;`` left as they are).

**Labels** (ours, no text; both passes of 2026-11-27 are in ``bench/data/twcs_labels.csv``,
keyed by tweet id): two annotation passes, A and B (two helpers of one working session, meant
to be blind to each other and to the model; not independent people), with one written rubric
(the Vanguard definitions as ``data/general_corpus.csv`` uses them; a first fault report not
caused by the organisation is value; a fault after the organisation's own update or repair,
a persistent outage, chasing, a repeat, something done wrong, a complaint about the service
are failure). Each item is ``value``, ``failure`` or ``none`` (not a demand on the
organisation: praise, jokes, chatter, marketing), with ``sure`` yes/no.

**Measured** with the shipped classifier's value/failure head (purposes do not matter here),
one core:

1. agreement of A and B: raw and Cohen's kappa on all items (three classes) and on the items
   both call a demand (value/failure); how many ``none``;
2. the gold set: items A and B label the same demand type; a second view, A's label on
   every item A calls a demand;
3. accuracy against always-majority, and the true failure share against the model's, for
   (a) the default model ``demandscope classifier train`` builds without ``--examples``
   (shipped taxonomy and seed set, the general corpus; the seed set's share as the prior)
   and (b) a cold start with a neutral taxonomy only (the shipped council taxonomy, no
   labelled row, the whole general corpus; the balanced fit's prior), the path
   ``bench judgement``'s taxonomy-only cold start takes;
4. the same per company with at least ``MIN_COMPANY`` gold items;
5. the estimate of ``shared.estimates.estimate_share`` with random audits of 100 and 200
   (``bench judgement``'s ``simulate_audits``, ``DRAWS`` draws each): audits drawn without
   replacement from the gold set itself, and from populations of ``POPULATION`` resampled
   from it (``bench judgement``'s convention): coverage of the 95% interval, mean
   half-width, mean absolute error;
6. confusion on the gold set, and ``EXAMPLES`` errors of each kind (printed last, under a
   line saying they are not for EVALUATION.md: the texts are TWCS's).

Run: ``.venv/bin/python -m bench.external_twcs SLICE.csv LABELS_A.csv [LABELS_B.csv]``
(label files ``item,label,sure``) or ``... SLICE.csv bench/data/twcs_labels.csv`` (columns
``tweet_id,label_a,sure_a,label_b,sure_b``; the test set: ``... REST.csv
bench/data/twcs_test_labels.csv``); about 30 seconds.

**Learning curve** (``--curve DEV_SLICE DEV_LABELS`` after the test set's arguments; prints
only this table). How fast the organisation's **own** labels close the gap the shipped model
leaves on real text. Written, with the protocol below, before its first run; a measurement of
the fixed recipe, not a choice: **nothing in the model may change because of it** (run once,
reported as printed).

- The organisation's labels: ``k`` items drawn at random (``random.Random(seed).sample`` of
  the gold items in item order, seeds ``CURVE_SEEDS`` = 0, 1, 2) from the **development**
  gold set (value/failure as both passes agree: 384 items of ``twcs_labels.csv``), ``k`` in
  ``CURVE_SIZES`` = 0, 25, 50, 100, 200 and all of them (every seed draws the same set at 0
  and at all, so those are fitted once). No tweet of the development set is in the test set
  (checked: the run stops if one is).
- How they are trained: exactly as the product trains people's labels,
  ``services.classifier.training.train_model(sources, labels=...)`` (the held-out figures
  off: they are metadata, not the model). A person's label always names a purpose
  (``DemandLabelled.purpose`` is required; the review desk asks for one, from the list or
  typed), and ``train_model`` keeps every label with a purpose and a demand type. Tweets have
  no purpose in any taxonomy of ours, so each label is a ``value``/``failure`` label with the
  typed purpose ``LABEL_PURPOSE``, which neither taxonomy defines: its purpose teaches nothing
  (``TextModel.train`` learns purposes only from the taxonomy's), its value/failure counts
  ``label_weight`` (5) x ``own_weight`` (3) = 15 corpus rows, like any label's, and it is
  one of the rows whose share becomes the failure prior once there are ``own_prior_min_rows``
  (30) of the organisation's rows (Laplace-smoothed). In recipe (a) those rows are the
  shipped seed set's and the labels together (``prior_rows`` of ``train_model`` as committed
  when the curve was written): the labels' own share counts only in proportion to their
  number. No failure kind (the tweets' labels have none); reason ``audit`` (no rule reads it).
- Recipes: (a) the default model + those labels (``TrainingSources()``); (b) the cold start
  + those labels (``TrainingSources(seed_examples=None, taxonomy=COUNCIL_TAXONOMY)``). At
  ``k`` = 0 they are this script's models (a) and (b).
- Scored on the **test** gold set (both files given before ``--curve``): value/failure
  accuracy, always-majority, margin, predicted failure share, and each model's prior; mean
  and range (min-max) over the seeds. The first line says which commit was measured and
  whether ``services/classifier`` differed from it (measure a clean checkout).

Run once, 2026-11-27 23:14 UTC, at 0701514 in a clean worktree (28 fits, 95 s CPU): test
accuracy at 0 / 25 / 100 / 384 labels, (a) 0.717 / 0.742 / 0.767 / 0.767, (b) 0.699 / 0.749
/ 0.770 / 0.781, always-majority 0.708 (the table: EVALUATION.md).
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from bench.code_state import code_state
from bench.judgement import COUNCIL_TAXONOMY, POPULATION, simulate_audits
from services.classifier.config import GENERAL_CORPUS, SEED_EXAMPLES, TAXONOMY
from services.classifier.model.examples import AUDIT, Example, read_examples_csv
from services.classifier.model.prior_shift import confusion_rates, estimate_failure_prior
from services.classifier.model.text_model import ModelSettings, TextModel
from services.classifier.taxonomy import Taxonomy, load_taxonomy
from services.classifier.training import (
    TrainingSources,
    general_rows,
    split_sources,
    train_model,
)

DEMANDS = ("value", "failure")
LABELS = (*DEMANDS, "none")
AUDITS = (100, 200)
DRAWS = 500
MIN_COMPANY = 40
EXAMPLES = 10
SEED = 0
CURVE_SIZES: tuple[int | None, ...] = (0, 25, 50, 100, 200, None)  # None: every gold item
CURVE_SEEDS = (0, 1, 2)
LABEL_PURPOSE = "twcs-unsorted"
"""The purpose typed on every curve label: defined by no taxonomy of ours (checked)."""
_MENTION = re.compile(r"@(\w+)")


@dataclass(frozen=True, slots=True)
class Item:
    item: int
    tweet_id: str
    company: str
    text: str


def _tweet(value: str) -> str:
    """A tweet id as written in either id column (``in_response_to`` holds floats: ``8.0``)."""
    value = value.strip()
    return value[:-2] if value.endswith(".0") else value


def first_contacts(rows: Iterable[Mapping[str, str]]) -> list[Item]:
    """The customers' first contacts in file order, numbered from 1, with their company."""
    rows = list(rows)
    replied: dict[str, str] = {}
    for row in rows:
        if row["inbound"] == "False" and row["in_response_to_tweet_id"].strip():
            replied.setdefault(_tweet(row["in_response_to_tweet_id"]), row["author_id"])
    accounts = {author.lower(): author for author in replied.values()}
    items: list[Item] = []
    for row in rows:
        tweet = _tweet(row["tweet_id"])
        if row["inbound"] != "True" or not tweet or row["in_response_to_tweet_id"].strip():
            continue
        company = replied.get(tweet)
        if company is None:
            names = [n for n in _MENTION.findall(row["text"]) if not n.isdigit()]
            company = accounts.get(names[0].lower(), names[0]) if names else "unknown"
        items.append(Item(len(items) + 1, tweet, company, row["text"]))
    return items


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


Labels = dict[int, tuple[str, str]]
"""item -> (label, sure)"""


def _checked(label: str, sure: str, where: str) -> tuple[str, str]:
    label, sure = label.strip().lower(), sure.strip().lower()
    if label not in LABELS or sure not in ("yes", "no"):
        raise ValueError(f"{where}: label {label!r} / sure {sure!r}")
    return label, sure


def read_labels(path: Path, items: Sequence[Item]) -> tuple[Labels, Labels | None]:
    """One annotator's ``item,label,sure``, or both annotators' ``tweet_id,label_a,...``."""
    rows = read_rows(path)
    if rows and "label_a" in rows[0]:
        by_tweet = {i.tweet_id: i.item for i in items}
        a: Labels = {}
        b: Labels = {}
        for row in rows:
            item = by_tweet[row["tweet_id"]]
            a[item] = _checked(row["label_a"], row["sure_a"], f"{path} {row['tweet_id']}")
            if row.get("label_b"):
                b[item] = _checked(row["label_b"], row["sure_b"], f"{path} {row['tweet_id']}")
        return a, b or None
    return {
        int(r["item"]): _checked(r["label"], r["sure"], f"{path} {r['item']}") for r in rows
    }, None


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float:
    """Cohen's kappa of two raters' labels (nan when chance agreement is certain)."""
    n = len(pairs)
    observed = sum(x == y for x, y in pairs) / n
    first = Counter(x for x, _ in pairs)
    second = Counter(y for _, y in pairs)
    chance = sum(first[c] * second[c] for c in first) / (n * n)
    return float("nan") if chance == 1 else (observed - chance) / (1 - chance)


@dataclass(frozen=True, slots=True)
class Agreement:
    items: int
    raw: float
    kappa: float
    demands: int  # items both call a demand
    demands_raw: float
    demands_kappa: float
    none_a: int
    none_b: int
    none_both: int
    demand_and_none: int  # one annotator a demand, the other none


def agreement(a: Mapping[int, str], b: Mapping[int, str]) -> Agreement:
    shared = sorted(set(a) & set(b))
    pairs = [(a[i], b[i]) for i in shared]
    demands = [(x, y) for x, y in pairs if x in DEMANDS and y in DEMANDS]
    return Agreement(
        items=len(pairs),
        raw=sum(x == y for x, y in pairs) / len(pairs),
        kappa=cohen_kappa(pairs),
        demands=len(demands),
        demands_raw=sum(x == y for x, y in demands) / len(demands),
        demands_kappa=cohen_kappa(demands),
        none_a=sum(x == "none" for x, _ in pairs),
        none_b=sum(y == "none" for _, y in pairs),
        none_both=sum(x == y == "none" for x, y in pairs),
        demand_and_none=sum((x == "none") != (y == "none") for x, y in pairs),
    )


def gold(a: Mapping[int, str], b: Mapping[int, str] | None) -> dict[int, str]:
    """Items both annotators label the same demand type (A's demands when there is no B)."""
    if b is None:
        return {i: label for i, label in a.items() if label in DEMANDS}
    return {i: label for i, label in a.items() if label in DEMANDS and b.get(i) == label}


@dataclass(frozen=True, slots=True)
class Figures:
    items: int
    accuracy: float
    majority: float
    true_share: float
    predicted_share: float

    @property
    def margin(self) -> float:
        return self.accuracy - self.majority


def figures(truth: Sequence[int], machine: Sequence[int]) -> Figures:
    """1 = failure. Always-majority answers the more frequent true class everywhere."""
    share = sum(truth) / len(truth)
    return Figures(
        items=len(truth),
        accuracy=sum(t == m for t, m in zip(truth, machine, strict=True)) / len(truth),
        majority=max(share, 1 - share),
        true_share=share,
        predicted_share=sum(machine) / len(machine),
    )


@dataclass(frozen=True, slots=True)
class Recipe:
    """What a model is trained on: its own rows, its taxonomy and the general corpus."""

    own: list[Example]
    taxonomy: Taxonomy
    general: list[Example]

    def train(self) -> TextModel:
        return TextModel.train(
            self.own, self.taxonomy, settings=ModelSettings(), general=self.general
        )


def default_recipe() -> Recipe:
    """The model ``demandscope classifier train`` builds without ``--examples``."""
    taxonomy = load_taxonomy(TAXONOMY)
    labelled = [e for e in read_examples_csv(SEED_EXAMPLES).examples if e.purpose and e.demand_type]
    rows = split_sources(taxonomy, labelled, general_rows(GENERAL_CORPUS))
    return Recipe(list(rows.own), taxonomy, list(rows.general))


def cold_recipe() -> Recipe:
    """A cold start: the council taxonomy alone (no labelled row) and the general corpus."""
    return Recipe([], load_taxonomy(COUNCIL_TAXONOMY), general_rows(GENERAL_CORPUS))


def default_model() -> TextModel:
    return default_recipe().train()


def cold_model() -> TextModel:
    return cold_recipe().train()


def with_demands_prior(recipe: Callable[[], Recipe]) -> Callable[[Sequence[str]], TextModel]:
    """The recipe's model with its failure prior estimated from the demands it judges
    (``prior_shift``: black-box shift estimation, the error rates by 3-fold cross-validation
    on its training rows at its own prior), as a service that has seen those demands, and no
    label of the organisation, would judge them. Added before the fresh test set was first
    run (EVALUATION.md); the texts are every first contact judged, demands or not."""

    def build(texts: Sequence[str]) -> TextModel:
        chosen = recipe()
        model = chosen.train()
        rates = confusion_rates(
            chosen.own,
            chosen.taxonomy,
            general=chosen.general,
            settings=ModelSettings(),
            prior=model.failure_prior,
        )
        share = None if rates is None else estimate_failure_prior(model, texts, rates)
        if share is not None:
            model.set_failure_prior(share, source="demands", rows=len(texts))
        return model

    return build


def _fixed(build: Callable[[], TextModel]) -> Callable[[Sequence[str]], TextModel]:
    return lambda _texts: build()


MODELS: dict[str, Callable[[Sequence[str]], TextModel]] = {
    "(a) default (seed set + shipped taxonomy + corpus)": _fixed(default_model),
    "(b) cold start (council taxonomy + corpus)": _fixed(cold_model),
    "(a') default, prior from the demands (BBSE)": with_demands_prior(default_recipe),
    "(b') cold start, prior from the demands (BBSE)": with_demands_prior(cold_recipe),
}


def _f(value: float) -> str:
    return f"{value:.3f}"


def _row(model: str, view: str, f: Figures) -> str:
    return (
        f"| {model} | {view} | {f.items} | {_f(f.true_share)} | {_f(f.predicted_share)} | "
        f"**{_f(f.accuracy)}** | {_f(f.majority)} | {f.margin * 100:+.1f} |"
    )


def _short(text: str, limit: int = 140) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run(slice_path: Path, label_paths: Sequence[Path]) -> str:
    started = time.perf_counter()
    load = os.getloadavg()
    raw = slice_path.read_bytes()
    items = first_contacts(read_rows(slice_path))
    a, b = read_labels(label_paths[0], items)
    if len(label_paths) > 1:
        b, _ = read_labels(label_paths[1], items)
    labelled = [i for i in items if i.item in a]
    a_label = {i: label for i, (label, _) in a.items()}
    b_label = None if b is None else {i: label for i, (label, _) in b.items()}
    gold_set = gold(a_label, b_label)
    a_view = gold(a_label, None)
    by_item = {i.item: i for i in items}
    texts = [i.text for i in labelled]
    out: list[str] = []

    machine: dict[str, dict[int, int]] = {}
    seconds: dict[str, float] = {}
    priors: dict[str, tuple[float | None, str | None]] = {}
    for name, build in MODELS.items():
        fit_started = time.perf_counter()
        model = build(texts)
        seconds[name] = time.perf_counter() - fit_started
        priors[name] = (model.failure_prior, model.failure_prior_source)
        predicted = model.predict_batch(texts)
        machine[name] = {
            i.item: int(p.demand_type == "failure")
            for i, p in zip(labelled, predicted, strict=True)
        }

    out.append(
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python -m bench.external_twcs`, "
        f"one core, load average before the run {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}, "
        f"in {time.perf_counter() - started:.0f} s (fits: "
        + ", ".join(f"{s:.0f} s" for s in seconds.values())
        + f"). Data file: {len(raw.decode('utf-8')):,} characters, SHA-256 "
        f"`{hashlib.sha256(raw).hexdigest()}`; {len(items)} first contacts, {len(labelled)} "
        f"labelled by A" + ("" if b is None else f", {len(b)} by B") + "."
    )
    out.append("")
    out.append(
        "Each model's value/failure prior: "
        + "; ".join(
            f"{name}: " + ("the balanced fit's" if prior is None else f"{prior:.3f} ({source})")
            for name, (prior, source) in priors.items()
        )
        + "."
    )
    out.append("")
    out.append("**Annotation.**")
    out.append("")
    out.append(
        "| annotator | items | value | failure | none | failure share of demands | sure = no |"
    )
    out.append("|---|---|---|---|---|---|---|")
    for who, labels in (("A", a), ("B", b)):
        if labels is None:
            continue
        c = Counter(label for label, _ in labels.values())
        out.append(
            f"| {who} | {len(labels)} | {c['value']} | {c['failure']} | {c['none']} | "
            f"{_f(c['failure'] / (c['value'] + c['failure']))} | "
            f"{sum(s == 'no' for _, s in labels.values())} |"
        )
    out.append("")
    if b_label is not None:
        agreed = agreement(a_label, b_label)
        out.append(
            f"Agreement on {agreed.items} items: raw {_f(agreed.raw)}, Cohen's kappa "
            f"{_f(agreed.kappa)} (three classes). On the {agreed.demands} items both call a "
            f"demand: raw {_f(agreed.demands_raw)}, kappa {_f(agreed.demands_kappa)}. `none`: "
            f"A {agreed.none_a}, B {agreed.none_b}, both {agreed.none_both}; one annotator a "
            f"demand and the other `none`: {agreed.demand_and_none}. Gold set (same demand "
            f"type from both): {len(gold_set)} items, failure share "
            f"{_f(sum(v == 'failure' for v in gold_set.values()) / len(gold_set))}."
        )
        sure_both = {i for i in gold_set if b is not None and a[i][1] == "yes" and b[i][1] == "yes"}
    else:
        out.append(
            "**Only annotator A's labels**: no second annotation, no agreement measured; the "
            "gold set below is A's demands."
        )
        sure_both = {i for i in gold_set if a[i][1] == "yes"}
    out.append("")

    out.append(
        "| model | items judged | n | true failure share | predicted share | value/failure "
        "accuracy | always-majority | margin (points) |"
    )
    out.append("|---|---|---|---|---|---|---|---|")
    views = {
        "gold set" if b_label is not None else "A's demands": gold_set,
        "gold set, both sure" if b_label is not None else "A's demands, sure": {
            i: gold_set[i] for i in sure_both
        },
    }
    if b_label is not None:
        views["A's demands (every item A calls a demand)"] = a_view
    for name in MODELS:
        for view, truth in views.items():
            order = sorted(truth)
            out.append(
                _row(
                    name,
                    view,
                    figures(
                        [int(truth[i] == "failure") for i in order],
                        [machine[name][i] for i in order],
                    ),
                )
            )
    out.append("")

    companies = Counter(by_item[i].company for i in gold_set)
    big = [c for c, n in companies.most_common() if n >= MIN_COMPANY and c != "unknown"]
    out.append(
        f"Per company with at least {MIN_COMPANY} gold items ("
        + (", ".join(big) if big else "none")
        + "; gold items per company: "
        + ", ".join(f"{c} {n}" for c, n in companies.most_common(8))
        + "):"
    )
    out.append("")
    if big:
        out.append(
            "| model | company | n | true failure share | predicted share | value/failure "
            "accuracy | always-majority | margin (points) |"
        )
        out.append("|---|---|---|---|---|---|---|---|")
        for name in MODELS:
            for company in big:
                order = sorted(i for i in gold_set if by_item[i].company == company)
                out.append(
                    _row(
                        name,
                        company,
                        figures(
                            [int(gold_set[i] == "failure") for i in order],
                            [machine[name][i] for i in order],
                        ),
                    )
                )
        out.append("")

    out.append(
        f"Estimated failure share with a random audit (`estimate_share`, {DRAWS} draws each; "
        "audits from the gold set itself, or from populations of "
        f"{POPULATION:,} resampled from it):"
    )
    out.append("")
    out.append(
        "| model | population | audit | coverage of the 95% interval | mean half-width "
        "(points) | mean error (points) |"
    )
    out.append("|---|---|---|---|---|---|")
    order = sorted(gold_set)
    for name in MODELS:
        pairs = [(int(gold_set[i] == "failure"), machine[name][i]) for i in order]
        for population in (None, POPULATION):
            for audit in AUDITS:
                if population is None and audit >= len(pairs):
                    continue
                result = simulate_audits(
                    pairs, audit, DRAWS, np.random.default_rng(SEED), population=population
                )
                where = f"the gold set ({len(pairs)})" if population is None else f"{population:,}"
                out.append(
                    f"| {name} | {where} | {audit} | {_f(result.coverage)} | "
                    f"{np.mean(result.half_widths) * 100:.1f} | "
                    f"{np.mean(result.errors) * 100:.1f} |"
                )
    out.append("")

    out.append("Confusion on the gold set:")
    out.append("")
    errors: dict[str, dict[str, list[int]]] = {}
    for name in MODELS:
        kinds: dict[str, list[int]] = {"value called failure": [], "failure called value": []}
        for i in order:
            actual = int(gold_set[i] == "failure")
            if machine[name][i] != actual:
                kinds["failure called value" if actual else "value called failure"].append(i)
        errors[name] = kinds
        values = sum(v == "value" for v in gold_set.values())
        out.append(
            f"- {name}: of {values} value items, {len(kinds['value called failure'])} called "
            f"failure; of {len(gold_set) - values} failure items, "
            f"{len(kinds['failure called value'])} called value."
        )
    out.append("")
    out.append("--- not for EVALUATION.md (TWCS texts, CC BY-NC-SA): errors of model (a) ---")
    rng = random.Random(SEED)
    first = next(iter(MODELS))
    for kind, chosen in errors[first].items():
        out.append(f"{kind}:")
        for i in sorted(rng.sample(chosen, min(EXAMPLES, len(chosen)))):
            out.append(f"- [{i}, {by_item[i].company}] {_short(by_item[i].text)}")
    return "\n".join(out)


def draw(items: Iterable[int], k: int | None, seed: int) -> list[int]:
    """The organisation's labelled items: ``k`` of ``items`` at random (``seed``), in the
    order drawn; every item, in order, when ``k`` is None or not smaller than their number."""
    ordered = sorted(items)
    if k is None or k >= len(ordered):
        return ordered
    return random.Random(seed).sample(ordered, k)


def as_labels(
    drawn: Sequence[int], truth: Mapping[int, str], texts: Mapping[int, str]
) -> list[Example]:
    """People's labels of the drawn items as ``train_model`` receives them: value/failure with
    a typed purpose no taxonomy defines (``LABEL_PURPOSE``), no failure kind."""
    return [Example(texts[i], LABEL_PURPOSE, truth[i], reason=AUDIT) for i in drawn]


def check_label_purpose(sources: TrainingSources) -> None:
    """Stops if ``LABEL_PURPOSE`` is a purpose of the recipe's taxonomy: the labels would then
    teach that purpose too, not value/failure alone."""
    taxonomy = sources.load_taxonomy()
    if taxonomy is not None and LABEL_PURPOSE in taxonomy.purpose_slugs:
        raise SystemExit(f"{LABEL_PURPOSE} is a purpose of {sources.taxonomy}")


def fit_with_labels(
    sources: TrainingSources,
    truth: Mapping[int, str],
    texts: Mapping[int, str],
    k: int | None,
    seed: int,
    reason: str,
) -> TextModel:
    """The recipe trained with ``k`` of the organisation's labels (``draw``: ``truth``'s items,
    ``seed``), through ``train_model`` as people's labels are (``as_labels``), after checking
    the labels' purpose (every fit: a curve's first fit stops before training). The learning
    curves' one fit (this script's and ``external_complaints``')."""
    check_label_purpose(sources)
    labels = as_labels(draw(truth, k, seed), truth, texts)
    return train_model(sources, reason=reason, labels=labels, with_evaluation=False).model


@dataclass(frozen=True, slots=True)
class Spread:
    mean: float
    low: float
    high: float


def spread(values: Sequence[float]) -> Spread:
    """Mean and range of one figure over the seeds."""
    return Spread(sum(values) / len(values), min(values), max(values))


def _spread(value: Spread, scale: float = 1.0, form: str = ".3f") -> str:
    mean = format(value.mean * scale, form)
    if value.low == value.high:
        return mean
    return f"{mean} ({format(value.low * scale, form)} to {format(value.high * scale, form)})"


def curve_sources() -> dict[str, TrainingSources]:
    """The two recipes the organisation's labels are added to (``train_model``'s sources)."""
    return {
        "(a) default + own labels": TrainingSources(),
        "(b) cold start + own labels": TrainingSources(
            seed_examples=None, taxonomy=COUNCIL_TAXONOMY
        ),
    }


def _gold_of(slice_path: Path, label_paths: Sequence[Path]) -> tuple[list[Item], dict[int, str]]:
    items = first_contacts(read_rows(slice_path))
    a, b = read_labels(label_paths[0], items)
    if len(label_paths) > 1:
        b, _ = read_labels(label_paths[1], items)
    return items, gold(
        {i: label for i, (label, _) in a.items()},
        None if b is None else {i: label for i, (label, _) in b.items()},
    )


def curve(
    test_slice: Path, test_labels: Sequence[Path], dev_slice: Path, dev_labels: Sequence[Path]
) -> str:
    """The learning curve of the docstring, as a Markdown table with its header line."""
    started, cpu = time.perf_counter(), time.process_time()
    load = os.getloadavg()
    test_items, test_gold = _gold_of(test_slice, test_labels)
    dev_items, dev_gold = _gold_of(dev_slice, dev_labels)
    shared = {i.tweet_id for i in test_items} & {i.tweet_id for i in dev_items}
    if shared:
        raise SystemExit(f"{len(shared)} tweets are in both sets: not a test set")
    dev_texts = {i.item: i.text for i in dev_items}
    test_texts = {i.item: i.text for i in test_items}
    order = sorted(test_gold)
    texts = [test_texts[i] for i in order]
    truth = [int(test_gold[i] == "failure") for i in order]
    fits = 0
    lines = [
        "| recipe | own labels | fits | failure prior (source) | predicted failure share | "
        "value/failure accuracy | always-majority | margin (points) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, sources in curve_sources().items():
        for k in CURVE_SIZES:
            many = k is not None and 0 < k < len(dev_gold)
            results: list[Figures] = []
            priors: list[tuple[float | None, str | None]] = []
            for seed in CURVE_SEEDS if many else CURVE_SEEDS[:1]:
                model = fit_with_labels(
                    sources, dev_gold, dev_texts, k, seed, reason="bench external_twcs --curve"
                )
                fits += 1
                predicted = model.predict_batch(texts)
                results.append(figures(truth, [int(p.demand_type == "failure") for p in predicted]))
                priors.append((model.failure_prior, model.failure_prior_source))
            shares = [p for p, _ in priors if p is not None]
            kinds = sorted({source or "balanced fit" for _, source in priors})
            prior = (
                "the balanced fit's"
                if not shares
                else _spread(spread(shares)) + f" ({', '.join(kinds)})"
            )
            margin = spread([f.margin for f in results])
            lines.append(
                f"| {name} | {len(dev_gold) if k is None else k} | {len(results)} | {prior} | "
                f"{_spread(spread([f.predicted_share for f in results]))} | "
                f"**{_spread(spread([f.accuracy for f in results]))}** | "
                f"{_f(results[0].majority)} | {_spread(margin, 100, '+.1f')} |"
            )
    dev_failure = sum(v == "failure" for v in dev_gold.values()) / len(dev_gold)
    test_failure = sum(truth) / len(truth)
    head = (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python -m bench.external_twcs "
        f"... --curve ...` ({code_state()}), one core, load average before the run "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}, {fits} fits in "
        f"{time.perf_counter() - started:.0f} s ({time.process_time() - cpu:.0f} s CPU). "
        f"Organisation's labels drawn from the development gold set ({len(dev_gold)} items, "
        f"failure share {_f(dev_failure)}; data SHA-256 "
        f"`{hashlib.sha256(dev_slice.read_bytes()).hexdigest()[:16]}…`), seeds "
        f"{', '.join(map(str, CURVE_SEEDS))}; scored on the test gold set ({len(truth)} items, "
        f"failure share {_f(test_failure)}; data SHA-256 "
        f"`{hashlib.sha256(test_slice.read_bytes()).hexdigest()[:16]}…`). Figures: mean over "
        "the seeds (range in brackets); one fit where every seed draws the same labels."
    )
    return "\n".join([head, "", *lines])


USAGE = (
    "usage: python -m bench.external_twcs SLICE.csv LABELS_A.csv [LABELS_B.csv] "
    "[--curve DEV_SLICE.csv DEV_LABELS.csv [DEV_LABELS_B.csv]]"
)


def main() -> None:
    args = sys.argv[1:]
    curve_args: list[str] | None = None
    if "--curve" in args:
        at = args.index("--curve")
        args, curve_args = args[:at], args[at + 1 :]
        if len(curve_args) not in (2, 3):
            raise SystemExit(USAGE)
    if len(args) not in (2, 3):
        raise SystemExit(USAGE)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    with threadpool_limits(limits=1):  # BLAS threads started before the pin
        if curve_args is None:
            print(run(Path(args[0]), [Path(p) for p in args[1:]]), flush=True)
        else:
            print(
                curve(
                    Path(args[0]),
                    [Path(p) for p in args[1:]],
                    Path(curve_args[0]),
                    [Path(p) for p in curve_args[1:]],
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
