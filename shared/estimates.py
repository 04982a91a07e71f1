"""Failure shares people can trust: a prediction-powered estimate with a 95% interval.

A machine label is a proposal. The share of failure demand among N demands is estimated from
the machine's labels on all N and people's blind labels on a random audit sample of n of
them (Angelopoulos et al., "Prediction-powered inference", Science 2023; in survey sampling
the same thing is the *difference estimator* with the model as auxiliary variable):

    estimate = mean(machine over all N) + mean(person - machine over the audit)
    variance = var(person - machine) / n  ·  (1 - n / N)

The first term is the model's share, the second corrects its bias with what people found;
the interval is ``estimate ± z · sqrt(variance)``, clipped to [0, 1]. The target is the
share among *these* N demands, a fixed number: the machine's share over all of them is
known exactly, so only the audit's sampling error counts, with the finite-population
correction (an audit of every demand leaves no doubt). It is unbiased whatever
the model's quality, as long as the audit is a random sample drawn independently of the
model's confidence, and the people label blind. A better model only makes it narrower.

Choices, and why:

- **Stratified by purpose** (``stratified_estimate``): each purpose gets its own correction,
  weighted by its share of demand; a purpose whose audit has fewer than
  ``MIN_STRATUM_AUDIT`` items borrows the pooled correction of all audited items (with its
  variance), so a thin stratum neither goes uncorrected nor gets a wild interval.
- **No zero-width intervals**: when every audited item agrees with the machine the sample
  variance of the differences is 0, which would claim certainty from, say, 5 agreements. The
  variance of the differences is computed as if one more disagreement each way had been
  seen (an "add two" rule in the spirit of Agresti-Caffo), which keeps coverage near 95% for
  small audits and changes nothing that matters for large ones.
- **Not yet validated**: with fewer than ``MIN_AUDIT`` audited items there is no interval;
  the machine's share is reported as a prediction only, and says so.
- **Labels that taught the model do not audit it**: an audit pair compares a person's label
  with the label of the model version that classified the demand *before* that person's
  label existed. Callers pair each audited demand with its first machine label (never a
  re-classification by a model retrained on that very label).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

MIN_AUDIT = 10  # audited items before an interval is shown at all
MIN_STRATUM_AUDIT = 10  # audited items before a stratum gets its own correction
CONFIDENCE = 0.95

Status = Literal["validated", "not yet validated"]


@dataclass(frozen=True, slots=True)
class AuditPair:
    """One audited demand: the machine's label and the person's (1 = failure, 0 = value)."""

    machine: int
    person: int


@dataclass(frozen=True, slots=True)
class Stratum:
    """What is known about one stratum (a purpose): its size, the machine's failure count,
    and the audit pairs drawn from it."""

    population: int
    machine_failures: int
    audit: Sequence[AuditPair] = ()


@dataclass(frozen=True, slots=True)
class ShareEstimate:
    population: int  # demands the share is about
    predicted: float | None  # the machine's share alone
    estimate: float | None  # corrected by the audit; None until validated
    ci_low: float | None
    ci_high: float | None
    audited: int
    status: Status
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float | None:
        if self.ci_low is None or self.ci_high is None:
            return None
        return (self.ci_high - self.ci_low) / 2


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


@dataclass(frozen=True, slots=True)
class _Correction:
    mean: float
    variance_of_mean: float


def _correction(pairs: Sequence[AuditPair]) -> _Correction:
    diffs = [pair.person - pair.machine for pair in pairs]
    n = len(diffs)
    mean = sum(diffs) / n
    # "Add two": one pseudo-disagreement each way enters the variance, never the mean.
    padded = [*diffs, 1, -1]
    padded_mean = sum(padded) / len(padded)
    variance = sum((d - padded_mean) ** 2 for d in padded) / (len(padded) - 1)
    return _Correction(mean=mean, variance_of_mean=variance / n)


def estimate_share(
    population: int,
    machine_failures: int,
    audit: Sequence[AuditPair],
    *,
    confidence: float = CONFIDENCE,
) -> ShareEstimate:
    """The failure share of one group of demands, from all machine labels and an audit."""
    return stratified_estimate(
        [Stratum(population, machine_failures, audit)], confidence=confidence
    )


def stratified_estimate(
    strata: Iterable[Stratum], *, confidence: float = CONFIDENCE
) -> ShareEstimate:
    """The failure share over several strata (purposes), each corrected by its own audit
    where it has enough, else by the pooled audit."""
    strata = [s for s in strata if s.population > 0]
    population = sum(s.population for s in strata)
    if population == 0:
        return ShareEstimate(0, None, None, None, None, 0, "not yet validated", confidence)
    predicted = sum(s.machine_failures for s in strata) / population
    pooled_pairs = [pair for s in strata for pair in s.audit]
    audited = len(pooled_pairs)
    if audited < MIN_AUDIT:
        return ShareEstimate(
            population, predicted, None, None, None, audited, "not yet validated", confidence
        )
    pooled = _correction(pooled_pairs)
    estimate = 0.0
    variance = 0.0
    for stratum in strata:
        weight = stratum.population / population
        p_m = stratum.machine_failures / stratum.population
        own = len(stratum.audit) >= MIN_STRATUM_AUDIT
        correction = _correction(stratum.audit) if own else pooled
        estimate += weight * (p_m + correction.mean)
        if own:
            finite = max(0.0, 1 - len(stratum.audit) / stratum.population)
            variance += weight**2 * correction.variance_of_mean * finite
        else:
            variance += weight**2 * correction.variance_of_mean
    # The pooled correction is shared by the strata that borrow it, so their errors are
    # correlated: add the covariance terms for every pair of borrowing strata.
    borrowed = [s.population / population for s in strata if len(s.audit) < MIN_STRATUM_AUDIT]
    if len(borrowed) > 1:
        total = sum(borrowed)
        variance += (total**2 - sum(w**2 for w in borrowed)) * pooled.variance_of_mean
    half = _z(confidence) * math.sqrt(max(variance, 0.0))
    return ShareEstimate(
        population=population,
        predicted=predicted,
        estimate=min(1.0, max(0.0, estimate)),
        ci_low=max(0.0, estimate - half),
        ci_high=min(1.0, estimate + half),
        audited=audited,
        status="validated",
        confidence=confidence,
    )
