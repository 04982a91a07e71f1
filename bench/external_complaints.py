"""External check of value/failure on complaints labelled by people (Preotiuc-Pietro et al.).

``external_twcs`` is our only other value/failure check on real text, and its labels were
written by AI assistants with our own rubric. This one uses labels written **by people**:
Preotiuc-Pietro, Gaman and Aletras (ACL 2019, "Automatically Identifying Complaints in Social
Media") published 3,449 tweets to the support accounts of companies in nine domains, each
labelled complaint / not complaint by two annotators. A complaint ("a negative mismatch
between reality and expectations") is close to failure demand, not the same thing, so this
checks how well our failure judgement *ranks and separates* what people call complaints
(hence the threshold-free AUC first), and how fast an organisation's own labels teach the
model *its* notion of failure (issue 11: "what counts as failure demand depends on the
organisation"). The model, the general corpus and every setting are the shipped ones.

**Data** (not shipped, not committed: its repository states no licence): ``complaints-data.csv``
of ``danielpreotiuc/complaints-social-media`` (commit
``baec7154669fb51a7a7e0f74a2eff1ce565982d3``, 431,065 characters, SHA-256
``ae687761af2ba2785ee4b92fe50dd14a0f12e0b4c7397c931b7fbd468cbf63ef``): no header, one tweet a
record, ``tweet_id,text,label,domain`` (csv quoting; label 1 = complaint, 0 = not). The script
checks every record (4 fields, label 0/1, a known domain, a numeric id, ids unique), stops if
one fails (with its line), compares the counts with the paper's (``PAPER_TWEETS``,
``PAPER_COMPLAINTS``) and prints the file's SHA-256.

**Which tweets are the check.** 1,974 records are tweets to companies' support accounts in
the nine ``DOMAINS`` (1,232 complaints). The other 1,475 (domain ``random_tweet`` or
``random_reply``, ``RANDOM``) are tweets sampled from Twitter at random, all "not complaint",
that the paper added as negatives: they are addressed to no organisation (follower counts,
news, replies between friends) and no organisation would receive them as demands, so counting
them as value would inflate every figure with easy items. **The figures, the audits and the
curve are on the company tweets**; of the random ones only their count and the share the
model calls failure are reported, apart (no figure mixes them in). Decided when the file was
first read, before any model saw it (the brief that fixed the protocol assumed every record
had one of the nine domains; the lead's addendum then excluded the random tweets from every
measurement).

**Demand type.** Complaint = failure, not complaint = value. "Not complaint" includes tweets
that are no demand at all (praise, chatter, marketing): they count as value here, as a
non-demand would if it reached the classifier.

**The split** (fixed before any result was seen; ``bucket``): ``h = int(sha256(tweet_id))``;
the **development half** is ``h % 2 == 0``, the **test half** the rest. Inside the development
half, the organisation's **labels pool** is ``h % 4 == 0`` and **dev-eval** ``h % 4 == 2``.
The test half is measured only with ``--final``, once, by the lead, after every change is
final; anyone trying a change measures the development half (the default).

**Measured** (value/failure head only, one core) for (a) the default model (what
``demandscope classifier train`` builds without ``--examples``) and (b) a cold start (the
council taxonomy alone + the general corpus), built by ``external_twcs``'s own functions:

1. on the development half (``--final``: the test half): accuracy against always-majority,
   ROC AUC of P(failure), balanced accuracy, predicted failure share against the true share;
   the same per domain;
2. the audited estimate (``shared.estimates.estimate_share`` through ``bench judgement``'s
   ``simulate_audits``): random audits of ``AUDITS`` from populations of ``POPULATION``
   resampled from the scored rows, ``DRAWS`` draws each: coverage of the 95% interval, mean
   half-width, mean absolute error;
3. ``--curve`` (prints only this): the organisation's labels, ``k`` in ``CURVE_SIZES`` drawn
   with ``external_twcs.draw`` (seeds ``CURVE_SEEDS``; at 0 and at all every seed draws the
   same, fitted once) from the labels pool, trained through
   ``services.classifier.training.train_model(sources, labels=...)`` exactly as
   ``external_twcs``'s curve trains them (its ``fit_with_labels``: ``as_labels``,
   value/failure with a typed purpose no taxonomy defines, checked, so each label teaches
   value/failure only; ``curve_sources``: the default recipe and the cold start), scored on
   dev-eval. With ``--final``: labels drawn from the whole development half, scored on the
   test half. ``AUDITS``, ``DRAWS``, ``SEED``, ``CURVE_SEEDS`` are ``external_twcs``'s.

Run: ``.venv/bin/python -m bench.external_complaints complaints-data.csv [--curve] [--json]``
(``--json``: one JSON object on stdout, for comparing changes; progress on stderr); about
15 s, ``--curve`` about 90 s CPU (22 fits).

Run once each on the development half, 2026-11-28 01:15 UTC at e27902c (clean worktree,
load 3.7-4.1): company tweets (994, failure share 0.613): accuracy 0.696 (a) / 0.683 (b)
against always-majority 0.613, ROC AUC 0.774 / 0.767, predicted failure share 0.498 / 0.481;
31-40% of the random negatives called failure; audit of 200: coverage 93.2% / 94.0%,
half-width 7.4 / 7.5 points. Curve (dev-eval, 470): accuracy at 0 / 25 / 100 / 200 / 524
labels (a) 0.685 / 0.692 / 0.699 / 0.743 / 0.781, (b) 0.666 / 0.680 / 0.709 / 0.742 / 0.772,
always-majority 0.606; AUC (a) 0.758 -> 0.838, (b) 0.754 -> 0.841.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from math import nan
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from bench.code_state import code_state
from bench.external_twcs import (
    AUDITS,
    CURVE_SEEDS,
    DRAWS,
    SEED,
    cold_model,
    curve_sources,
    default_model,
    figures,
    fit_with_labels,
    spread,
)
from bench.judgement import POPULATION, simulate_audits
from services.classifier.model.text_model import TextModel

DOMAINS = (
    "food",
    "apparel",
    "software",
    "electronics",
    "services",
    "transport",
    "cars",
    "retail",
    "other",
)
RANDOM = ("random_tweet", "random_reply")
"""The paper's random Twitter negatives: only counted (and the share called failure), never a
label, a scored demand or part of a figure."""
PAPER_TWEETS = 3_449
PAPER_COMPLAINTS = 1_232
CURVE_SIZES: tuple[int | None, ...] = (0, 25, 100, 200, None)  # None: the whole pool
MODELS: dict[str, tuple[str, Callable[[], TextModel]]] = {
    "a": ("(a) default (seed set + shipped taxonomy + corpus)", default_model),
    "b": ("(b) cold start (council taxonomy + corpus)", cold_model),
}
"""Short keys (used in the JSON) -> the name printed and how the model is built."""
JSON_VERSION = 2  # 2: no "with_random" row or random_* domains; "random" apart


# -- data -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tweet:
    item: int  # 1-based record number in file order
    line: int  # the line the record starts on
    tweet_id: str
    text: str
    complaint: int  # 1 = complaint (failure), 0 = not (value)
    domain: str

    @property
    def company(self) -> bool:
        """A tweet to a company's support account (not one of the random negatives)."""
        return self.domain in DOMAINS


def parse(text: str) -> tuple[list[Tweet], list[str]]:
    """Every well-formed record, and one problem string per record that is not (with its
    line); duplicate ids are problems and their later copies are left out."""
    reader = csv.reader(io.StringIO(text, newline=""))
    tweets: list[Tweet] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    line = 1
    for record in reader:
        start, line = line, reader.line_num + 1
        if not record:
            problems.append(f"line {start}: empty record")
            continue
        where = f"line {start} ({record[0][:24]!r})"
        if len(record) != 4:
            problems.append(f"{where}: {len(record)} fields, not 4")
            continue
        tweet_id, body, label, domain = record
        if not tweet_id.isdigit():
            problems.append(f"{where}: tweet id {tweet_id!r} is not a number")
        elif label not in ("0", "1"):
            problems.append(f"{where}: label {label!r} is not 0 or 1")
        elif domain not in DOMAINS and domain not in RANDOM:
            problems.append(f"{where}: domain {domain!r} is not known")
        elif tweet_id in seen:
            problems.append(f"{where}: tweet id {tweet_id} already on line {seen[tweet_id]}")
        else:
            seen[tweet_id] = start
            tweets.append(Tweet(len(tweets) + 1, start, tweet_id, body, int(label), domain))
    return tweets, problems


def bucket(tweet_id: str) -> int:
    """The split's hash of a tweet id, mod 4: even = development half (0 labels pool,
    2 dev-eval), odd = test half. Fixed before any result was seen."""
    return int(hashlib.sha256(tweet_id.encode()).hexdigest(), 16) % 4


@dataclass(frozen=True, slots=True)
class Split:
    dev: list[Tweet]
    test: list[Tweet]
    pool: list[Tweet]  # inside dev: the organisation's labels for the curve
    dev_eval: list[Tweet]  # inside dev: what the curve is scored on


def split(tweets: Sequence[Tweet]) -> Split:
    buckets = [bucket(t.tweet_id) for t in tweets]
    return Split(
        dev=[t for t, b in zip(tweets, buckets, strict=True) if b % 2 == 0],
        test=[t for t, b in zip(tweets, buckets, strict=True) if b % 2 == 1],
        pool=[t for t, b in zip(tweets, buckets, strict=True) if b == 0],
        dev_eval=[t for t, b in zip(tweets, buckets, strict=True) if b == 2],
    )


# -- metrics ----------------------------------------------------------------------------------


def roc_auc(truth: Sequence[int], scores: Sequence[float]) -> float:
    """P(a random failure scores above a random value item), ties counted half (the
    Mann-Whitney U over average ranks); nan when one class is missing. Equal to sklearn's
    ``roc_auc_score`` to about 1e-16 but not bit for bit (it sums trapezoids): on the real
    development half 6 of the 20 AUCs (overall and per domain, both models; (a)'s overall
    among them) differed in the last bit, so runs' JSON before and after a switch would no
    longer compare exactly. Kept for that."""
    y = np.asarray(truth, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_scores = s[order]
    start = 0
    while start < len(s):  # average rank over each run of equal scores
        end = start
        while end + 1 < len(s) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    u = float(ranks[y == 1].sum()) - positives * (positives + 1) / 2
    return u / (positives * negatives)


def balanced_accuracy(truth: Sequence[int], machine: Sequence[int]) -> float:
    """Mean of the recall of failure and of value (over the classes present). Not sklearn's
    ``balanced_accuracy_score``: that warns on every domain holding one class."""
    recalls = []
    for cls in (0, 1):
        answers = [m for t, m in zip(truth, machine, strict=True) if t == cls]
        if answers:
            recalls.append(sum(m == cls for m in answers) / len(answers))
    return sum(recalls) / len(recalls) if recalls else float("nan")


@dataclass(frozen=True, slots=True)
class Scores:
    n: int
    accuracy: float
    majority: float
    auc: float
    balanced_accuracy: float
    true_share: float
    predicted_share: float


def scores(truth: Sequence[int], machine: Sequence[int], probability: Sequence[float]) -> Scores:
    """1 = failure (complaint). ``machine``: the model's label; ``probability``: P(failure)."""
    base = figures(truth, machine)
    return Scores(
        n=base.items,
        accuracy=base.accuracy,
        majority=base.majority,
        auc=roc_auc(truth, probability),
        balanced_accuracy=balanced_accuracy(truth, machine),
        true_share=base.true_share,
        predicted_share=base.predicted_share,
    )


def _scores_of(
    chosen: Iterable[int],
    truth: Sequence[int],
    machine: Sequence[int],
    probability: Sequence[float],
) -> dict[str, Any]:
    """``scores`` of the ``chosen`` positions, as a dict for the JSON."""
    at = list(chosen)
    return asdict(
        scores([truth[i] for i in at], [machine[i] for i in at], [probability[i] for i in at])
    )


def judge(model: TextModel, texts: Sequence[str]) -> tuple[list[int], list[float]]:
    """The model's failure label (as the service would give it) and P(failure) per text."""
    machine = [int(p.demand_type == "failure") for p in model.predict_batch(texts)]
    return machine, [float(p) for p in model.failure_probabilities(texts)]


@dataclass(frozen=True, slots=True)
class Audit:
    population: int
    audit: int
    draws: int
    coverage: float
    half_width: float
    error: float


def audits(truth: Sequence[int], machine: Sequence[int]) -> list[Audit]:
    pairs = list(zip(truth, machine, strict=True))
    out = []
    for audit in AUDITS:
        result = simulate_audits(
            pairs, audit, DRAWS, np.random.default_rng(SEED), population=POPULATION
        )
        out.append(
            Audit(
                POPULATION,
                audit,
                DRAWS,
                result.coverage,
                float(np.mean(result.half_widths)),
                float(np.mean(result.errors)),
            )
        )
    return out


# -- the runs ---------------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(f"[external_complaints {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr)


@dataclass(frozen=True, slots=True)
class Data:
    path: str
    characters: int
    sha256: str
    tweets: list[Tweet]
    parts: Split

    def checks(self) -> dict[str, Any]:
        complaints = sum(t.complaint for t in self.tweets)
        domains = Counter(t.domain for t in self.tweets)
        parts = self.parts
        return {
            "path": self.path,
            "characters": self.characters,
            "sha256": self.sha256,
            "tweets": len(self.tweets),
            "complaints": complaints,
            "paper_tweets": PAPER_TWEETS,
            "paper_complaints": PAPER_COMPLAINTS,
            "matches_paper": len(self.tweets) == PAPER_TWEETS and complaints == PAPER_COMPLAINTS,
            "company_tweets": sum(t.company for t in self.tweets),
            "random_tweets": sum(not t.company for t in self.tweets),
            "random_complaints": sum(t.complaint for t in self.tweets if not t.company),
            "domains": {
                d: {
                    "tweets": domains[d],
                    "complaints": sum(t.complaint for t in self.tweets if t.domain == d),
                }
                for d in (*DOMAINS, *RANDOM)
            },
            "split": {  # every record
                "dev": len(parts.dev),
                "test": len(parts.test),
                "pool": len(parts.pool),
                "dev_eval": len(parts.dev_eval),
            },
            "company_split": {  # the company tweets: what is scored and learnt
                "dev": sum(t.company for t in parts.dev),
                "test": sum(t.company for t in parts.test),
                "pool": sum(t.company for t in parts.pool),
                "dev_eval": sum(t.company for t in parts.dev_eval),
            },
        }


def load(path: Path) -> Data:
    """The file, checked: stops on any malformed record (a broken transcription must not be
    measured as if it were the data)."""
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    tweets, problems = parse(text)
    if problems:
        shown = "\n".join(problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise SystemExit(f"{path}: {len(problems)} malformed records\n{shown}{more}")
    return Data(str(path), len(text), hashlib.sha256(raw).hexdigest(), tweets, split(tweets))


def _context(started: float, cpu: float, load_before: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "measured_at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "code": code_state(),
        "load_before": [round(x, 2) for x in load_before],
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
    }


def _called_failure(chosen: Iterable[int], machine: Sequence[int]) -> dict[str, Any]:
    """How many random negatives, and the share of them the model calls failure (nan: none)."""
    at = list(chosen)
    return {"n": len(at), "called_failure": sum(machine[i] for i in at) / len(at) if at else nan}


def measure(data: Data, final: bool) -> dict[str, Any]:
    """Parts 1 and 2 of the docstring on the development half (``final``: the test half):
    the company tweets; of the random negatives of the same half, judged in the same batch,
    only their count and the share called failure."""
    started, cpu, load_before = time.perf_counter(), time.process_time(), os.getloadavg()
    scored = data.parts.test if final else data.parts.dev  # company tweets first, then random
    scored = [t for t in scored if t.company] + [t for t in scored if not t.company]
    companies = sum(t.company for t in scored)
    texts = [t.text for t in scored]
    truth = [t.complaint for t in scored]
    domains = {
        d: [i for i, t in enumerate(scored) if t.domain == d]
        for d in DOMAINS
        if any(t.domain == d for t in scored)
    }
    kinds = {
        d: [i for i, t in enumerate(scored) if t.domain == d]
        for d in RANDOM
        if any(t.domain == d for t in scored)
    }
    models: dict[str, Any] = {}
    for key, (name, build) in MODELS.items():
        _progress(f"model {key}: training")
        fit_started = time.perf_counter()
        model = build()
        fit_seconds = time.perf_counter() - fit_started
        _progress(f"model {key}: judging {len(texts)} tweets")
        machine, probability = judge(model, texts)
        _progress(f"model {key}: audits")
        judged = (truth, machine, probability)

        models[key] = {
            "name": name,
            "fit_seconds": round(fit_seconds, 1),
            "failure_prior": model.failure_prior,
            "failure_prior_source": model.failure_prior_source,
            "overall": _scores_of(range(companies), *judged),  # company tweets: the check
            "domains": {d: _scores_of(chosen, *judged) for d, chosen in domains.items()},
            "random": {
                "all": _called_failure(range(companies, len(scored)), machine),
                **{d: _called_failure(chosen, machine) for d, chosen in kinds.items()},
            },
            "audits": [asdict(a) for a in audits(truth[:companies], machine[:companies])],
        }
    return {
        "script": "bench.external_complaints",
        "version": JSON_VERSION,
        "mode": "measure",
        "scored_on": "test" if final else "dev",
        "data": data.checks(),
        "models": models,
        **_context(started, cpu, load_before),
    }


def _over_seeds(values: Sequence[float]) -> dict[str, Any]:
    """``external_twcs.spread`` (mean and range over the seeds) and the values, for the JSON."""
    return {**asdict(spread(values)), "values": list(values)}


def curve(data: Data, final: bool) -> dict[str, Any]:
    """Part 3: the organisation's labels from the pool (``final``: the whole development
    half), ``train_model`` with them, scored on dev-eval (``final``: the test half); company
    tweets only (an organisation labels and receives its own demands, not random tweets)."""
    started, cpu, load_before = time.perf_counter(), time.process_time(), os.getloadavg()
    pool = [t for t in (data.parts.dev if final else data.parts.pool) if t.company]
    scored = [t for t in (data.parts.test if final else data.parts.dev_eval) if t.company]
    truth_of = {t.item: ("failure" if t.complaint else "value") for t in pool}
    text_of = {t.item: t.text for t in pool}
    texts = [t.text for t in scored]
    truth = [t.complaint for t in scored]
    rows: list[dict[str, Any]] = []
    fits = 0
    for recipe, sources in curve_sources().items():
        key = recipe[1]  # "(a) ..." -> "a"
        for k in CURVE_SIZES:
            if k is not None and k >= len(pool):
                continue  # the same labels as "all" (the pool is smaller than k)
            several = k is not None and k > 0
            results: list[Scores] = []
            priors: list[tuple[float | None, str | None]] = []
            for seed in CURVE_SEEDS if several else CURVE_SEEDS[:1]:
                _progress(f"curve {key}: k={'all' if k is None else k}, seed {seed}")
                model = fit_with_labels(
                    sources, truth_of, text_of, k, seed, reason="bench external_complaints --curve"
                )
                fits += 1
                machine, probability = judge(model, texts)
                results.append(scores(truth, machine, probability))
                priors.append((model.failure_prior, model.failure_prior_source))
            rows.append(
                {
                    "recipe": key,
                    "name": recipe,
                    "k": len(pool) if k is None else k,
                    "seeds": list(CURVE_SEEDS if several else CURVE_SEEDS[:1]),
                    "accuracy": _over_seeds([r.accuracy for r in results]),
                    "auc": _over_seeds([r.auc for r in results]),
                    "balanced_accuracy": _over_seeds([r.balanced_accuracy for r in results]),
                    "predicted_share": _over_seeds([r.predicted_share for r in results]),
                    "majority": results[0].majority,
                    "true_share": results[0].true_share,
                    "failure_prior": [p for p, _ in priors],
                    "failure_prior_source": sorted({s or "balanced fit" for _, s in priors}),
                }
            )
    return {
        "script": "bench.external_complaints",
        "version": JSON_VERSION,
        "mode": "curve",
        "scored_on": "test" if final else "dev_eval",
        "labels_from": "dev" if final else "pool",
        "labels_available": len(pool),
        "labels_complaint_share": sum(t.complaint for t in pool) / len(pool),
        "scored": len(scored),
        "data": data.checks(),
        "fits": fits,
        "rows": rows,
        **_context(started, cpu, load_before),
    }


# -- printing ---------------------------------------------------------------------------------


def _f(value: float | None) -> str:
    """A fraction to 3 places; "n/a" for nan, or None (nan read back from the JSON)."""
    return "n/a" if value is None or value != value else f"{value:.3f}"  # nan != nan


def _spread(value: Mapping[str, Any]) -> str:
    """As ``external_twcs._spread``, for a figure read back from the JSON (nan is None there)."""
    mean = _f(value["mean"])
    if value["low"] == value["high"]:
        return mean
    return f"{mean} ({_f(value['low'])} to {_f(value['high'])})"


def _head(result: Mapping[str, Any]) -> list[str]:
    data = result["data"]
    all_rows, companies = data["split"], data["company_split"]
    differs = (
        "the paper's counts"
        if data["matches_paper"]
        else f"**not** the paper's {data['paper_tweets']:,} / {data['paper_complaints']:,}"
    )
    return [
        f"Measured {result['measured_at']} with `python -m bench.external_complaints` "
        f"({result['code']}), one core, load average before the run "
        + " / ".join(f"{x:.1f}" for x in result["load_before"])
        + f", {result['seconds']:.0f} s ({result['cpu_seconds']:.0f} s CPU).",
        "",
        f"Data: `{data['path']}`, {data['characters']:,} characters, SHA-256 "
        f"`{data['sha256']}`; {data['tweets']:,} tweets, {data['complaints']:,} complaints "
        f"({differs}); every record 4 fields, label 0/1, a known domain, ids unique. Tweets to "
        f"companies (nine domains): {data['company_tweets']:,}; random Twitter negatives "
        f"(in no figure): {data['random_tweets']:,}, {data['random_complaints']} of them "
        f"complaints. Split by sha256(tweet id), company tweets (all records in brackets): "
        f"development half {companies['dev']:,} ({all_rows['dev']:,}), of it labels pool "
        f"{companies['pool']:,} ({all_rows['pool']:,}) and dev-eval {companies['dev_eval']:,} "
        f"({all_rows['dev_eval']:,}); test half {companies['test']:,} ({all_rows['test']:,}).",
        "",
        "Per domain (whole file): "
        + ", ".join(
            f"{d} {v['tweets']} ({v['complaints']} complaints)" for d, v in data["domains"].items()
        )
        + ".",
        "",
    ]


def _score_row(label: str, where: str, s: Mapping[str, Any]) -> str:
    return (
        f"| {label} | {where} | {s['n']} | {_f(s['true_share'])} | {_f(s['predicted_share'])} | "
        f"**{_f(s['accuracy'])}** | {_f(s['majority'])} | "
        f"{(s['accuracy'] - s['majority']) * 100:+.1f} | **{_f(s['auc'])}** | "
        f"{_f(s['balanced_accuracy'])} |"
    )


def render_measure(result: Mapping[str, Any]) -> str:
    half = "test half" if result["scored_on"] == "test" else "development half"
    out = _head(result)
    out.append(
        f"Value/failure on the {half}'s company tweets (complaint = failure, not complaint = "
        "value, non-demands to a company included). Models' priors: "
        + "; ".join(
            f"{m['name']}: "
            + (
                "the balanced fit's"
                if m["failure_prior"] is None
                else f"{m['failure_prior']:.3f} ({m['failure_prior_source']})"
            )
            for m in result["models"].values()
        )
        + "."
    )
    out.append("")
    header = (
        "| model | tweets | n | true failure share | predicted share | accuracy | "
        "always-majority | margin (points) | ROC AUC | balanced accuracy |"
    )
    out += [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for m in result["models"].values():
        out.append(_score_row(m["name"], "to companies", m["overall"]))
    out.append("")
    out.append("Per domain:")
    out.append("")
    out += [header.replace("| tweets |", "| domain |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for m in result["models"].values():
        for domain, s in m["domains"].items():
            out.append(_score_row(m["name"], domain, s))
    out.append("")
    out.append(
        "The random Twitter negatives of the same half (addressed to no company, all not "
        "complaints; in no figure above), the share each model calls failure: "
        + "; ".join(
            f"{m['name']}: "
            + ", ".join(
                f"{kind} {r['n']} ({_f(r['called_failure'])})" for kind, r in m["random"].items()
            )
            for m in result["models"].values()
        )
        + "."
    )
    out.append("")
    out.append(
        f"Estimated failure share with a random audit (`estimate_share`, {DRAWS} draws each, "
        f"populations of {POPULATION:,} resampled from the scored company tweets):"
    )
    out.append("")
    out.append(
        "| model | population | audit | coverage of the 95% interval | mean half-width "
        "(points) | mean error (points) |"
    )
    out.append("|---|---|---|---|---|---|")
    for m in result["models"].values():
        for a in m["audits"]:
            out.append(
                f"| {m['name']} | {a['population']:,} | {a['audit']} | {_f(a['coverage'])} | "
                f"{a['half_width'] * 100:.1f} | {a['error'] * 100:.1f} |"
            )
    return "\n".join(out)


def render_curve(result: Mapping[str, Any]) -> str:
    out = _head(result)
    out.append(
        "Learning curve: the organisation's labels drawn from the "
        + ("whole development half" if result["labels_from"] == "dev" else "labels pool")
        + f" ({result['labels_available']} tweets, complaint share "
        f"{_f(result['labels_complaint_share'])}), seeds "
        + ", ".join(map(str, CURVE_SEEDS))
        + ", through `train_model(sources, labels=...)`; scored on "
        + ("the test half" if result["scored_on"] == "test" else "dev-eval")
        + f" ({result['scored']} tweets); {result['fits']} fits. Mean over the seeds (range in "
        "brackets); one fit where every seed draws the same labels."
    )
    out.append("")
    out.append(
        "| recipe | own labels | fits | failure prior (source) | predicted failure share | "
        "accuracy | always-majority | ROC AUC | balanced accuracy |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|")
    for row in result["rows"]:
        known = [p for p in row["failure_prior"] if p is not None]
        prior = (
            "the balanced fit's"
            if not known
            else f"{sum(known) / len(known):.3f} ({', '.join(row['failure_prior_source'])})"
        )
        out.append(
            f"| {row['name']} | {row['k']} | {len(row['seeds'])} | {prior} | "
            f"{_spread(row['predicted_share'])} | **{_spread(row['accuracy'])}** | "
            f"{_f(row['majority'])} | **{_spread(row['auc'])}** | "
            f"{_spread(row['balanced_accuracy'])} |"
        )
    return "\n".join(out)


def _plain(value: Any) -> Any:
    """``value`` with nan (an AUC with one class) as null: strict JSON for any reader."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


USAGE = (
    "usage: python -m bench.external_complaints complaints-data.csv [--final] [--curve] [--json]"
)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    flags = {a for a in args if a.startswith("--")}
    paths = [a for a in args if not a.startswith("--")]
    if len(paths) != 1 or flags - {"--final", "--curve", "--json"}:
        raise SystemExit(USAGE)
    final, as_json = "--final" in flags, "--json" in flags
    data = load(Path(paths[0]))
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    with threadpool_limits(limits=1):  # BLAS threads started before the pin
        result = curve(data, final) if "--curve" in flags else measure(data, final)
    if as_json:
        print(json.dumps(_plain(result), indent=1, allow_nan=False), flush=True)
    else:
        print(render_curve(result) if "--curve" in flags else render_measure(result), flush=True)


if __name__ == "__main__":
    main()
