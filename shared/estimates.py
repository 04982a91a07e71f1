"""Failure shares people can trust: a prediction-powered estimate with a 95% interval.

A machine label is a proposal. The share of failure demand among N demands is estimated from
the machine's labels on all N and people's blind labels on a random audit sample of n of
them, by power-tuned prediction-powered inference (Angelopoulos, Duchi and Zrnic, "PPI++:
Efficient prediction-powered inference", 2023; PPI: Angelopoulos et al., *Science* 2023),
which for a share is the *regression estimator* of survey sampling with the model's label as
auxiliary variable (Cochran, *Sampling Techniques*, 3rd ed., 1977, ch. 7):

    lambda   = cov(person, machine) / var(machine) over the audit, clipped to [0, 1]
    estimate = lambda · mean(machine over all N) + mean(person - lambda · machine over the audit)
    variance = var(person - lambda · machine) / n  ·  (1 - n / N)

with var taken on n - 2 degrees of freedom when lambda is estimated (Cochran's 7.11; n - 1
when it is fixed), over the residuals plus a few pseudo-pairs (below).

The first term is the model's share, weighted by how far people's labels follow it; the
second corrects its bias with what people found. The interval is ``estimate ± z ·
sqrt(variance)``, clipped to [0, 1]. The target is the share among *these* N demands, a fixed
number: the machine's share over all of them is known exactly, so only the audit's sampling
error counts, with the finite-population correction (an audit of every demand leaves no
doubt). It is unbiased (to O(1/n)) whatever the model's quality, as long as the audit is a
random sample drawn independently of the model's confidence, and the people label blind.

Why lambda: with lambda = 1 this is the plain *difference estimator* (PPI), whose variance
is that of the disagreements; when the model is weak (on real tweets it disagrees with
people on 28-30% of demands) that is wider than ignoring the model (lambda = 0, the audit's
own share). The tuned lambda minimises the variance, so to first order the interval is never
wider than either (``sqrt(1 - rho^2)`` of the audit's own, rho the correlation of person and
machine), and with a good model lambda is near 1 and nothing changes.

Choices, and why:

- **Small audits keep lambda = 1**: below ``MIN_TUNED_AUDIT`` audited items, or when the
  machine gave the same label to every audited item (no slope to estimate), lambda is 1,
  the difference estimator. The variance above leaves out lambda's own sampling error, which
  is small only once lambda rests on more than a handful of pairs; with lambda estimated
  from as few as 10 items simulations still covered 93-96% (weak models lowest), so 20 is
  a margin, not a measured edge.
- **Stratified by purpose** (``stratified_estimate``): each purpose gets its own lambda and
  correction, weighted by its share of demand; the purposes whose audit has fewer than
  ``MIN_STRATUM_AUDIT`` items borrow the pooled fit of all audited items (its lambda and
  correction), so a thin stratum neither goes uncorrected nor gets a wild interval. Together
  they are one prediction of the pooled fit at their combined machine share, with its
  variance (lambda's error does not cancel at a machine share other than the pooled
  audit's), and its covariance with each stratum whose pairs are in the pooled audit (left
  out, half the demand in thin strata covered 87-89%). That variance is the robust
  (sandwich) one, from each pooled pair's influence: with 0/1 labels the residuals' spread
  differs between the machine's two labels, and the textbook equal-spread form covered
  88.5% (or 98.5%) where the thin strata's machine share was far from the pooled audit's.
  **The assumption**: the thin strata follow the pooled audit's relation of person to
  machine (the same share of people's failures among the machine's failures, and among
  its values). If a thin purpose differs, its estimate is biased and the interval does
  not show it: a purpose with 15% of demand, 6 audited, and another relation than the
  audited ones covered 49% in simulation. The pooled fit also weights each purpose by its
  audited pairs, not its demand (weighting it by demand was tried and not kept:
  docs/services/metrics.md). Where that matters, audit the purpose to
  ``MIN_STRATUM_AUDIT``.
- **No zero-width intervals**: when every audited item agrees with the machine the sample
  variance of the residuals is 0, which would claim certainty from, say, 5 agreements.
  Pseudo-pairs enter the variance, never lambda or the mean: with lambda = 1, one
  disagreement each way (an "add two" rule in the spirit of Agresti-Caffo); with lambda
  estimated, one pair of each kind, which near lambda = 1 is the same and near lambda = 0
  adds two failures and two values to the audit's own share, in the spirit of
  Agresti-Coull (only the variance is padded; the centre is not moved). One each way
  covered 88-93% where failure is rare and the model weak. Small audits of an accurate
  model cover 98-100%: the price of the rule.
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
MIN_TUNED_AUDIT = 20  # audited items before lambda is estimated rather than 1
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
    # The weight of the machine's share (lambda) where one fit made the estimate: one
    # stratum's own, or the pooled one all strata borrow; None for several fits or none.
    machine_weight: float | None = None

    @property
    def half_width(self) -> float | None:
        if self.ci_low is None or self.ci_high is None:
            return None
        return (self.ci_high - self.ci_low) / 2


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


@dataclass(frozen=True, slots=True)
class _Fit:
    """An audit's regression of the person's label on the machine's: the weight ``lam`` of
    the machine's share, the correction ``mean(person - lam * machine)``, and what the
    variance needs."""

    lam: float
    tuned: bool  # lam estimated from the audit (else fixed at 1)
    n: int
    correction: float
    machine_mean: float  # mean(machine over the audit)
    machine_ss: float  # sum((machine - machine_mean)^2) over the audit
    residual_variance: float  # per item, with the "add two" pseudo-disagreements
    residuals: tuple[float, ...]  # centred, real pairs only, in the audit's order

    def at(self, machine_share: float) -> float:
        """The estimate for a group whose machine share is ``machine_share``."""
        return self.lam * machine_share + self.correction

    def slope_term(self, machine_share: float) -> float:
        """(machine_share - machine_mean)^2 / machine_ss: the error of an estimated lambda
        at a machine share other than the audit's own (0 while lambda is fixed)."""
        if not self.tuned:
            return 0.0
        return (machine_share - self.machine_mean) ** 2 / self.machine_ss


def _fit(pairs: Sequence[AuditPair]) -> _Fit:
    n = len(pairs)
    m_mean = sum(p.machine for p in pairs) / n
    y_mean = sum(p.person for p in pairs) / n
    m_ss = sum((p.machine - m_mean) ** 2 for p in pairs)
    # lambda = cov(person, machine) / var(machine), clipped to [0, 1] (PPI++). Fixed at 1
    # (the difference estimator) when the machine is constant in the audit (no slope to
    # estimate) or the audit is small (lambda's own error, left out of the variance, is
    # small only once it rests on more than a handful of pairs).
    tuned = n >= MIN_TUNED_AUDIT and m_ss > 0
    lam = 1.0
    if tuned:
        cov = sum((p.person - y_mean) * (p.machine - m_mean) for p in pairs)
        lam = min(1.0, max(0.0, cov / m_ss))
    residuals = [p.person - lam * p.machine for p in pairs]
    correction = sum(residuals) / n
    # No zero width: pseudo-pairs enter the variance, never lambda or the mean. With lambda
    # fixed at 1, today's "add two", one disagreement each way. With lambda estimated, one
    # pair of each kind (person/machine 1/0, 0/1, 1/1, 0/0), whose residuals are 1, -lam,
    # 1 - lam and 0: near lambda = 1 the same add-two, near lambda = 0 (the audit's own
    # share) two failures and two values in the spirit of Agresti-Coull (the variance only),
    # which keeps a rare share's skewed interval honest. One degree of freedom for the mean
    # and, when lambda was estimated, one for the slope (Cochran's n - 2).
    pseudo = [1.0, -lam, 1.0 - lam, 0.0] if tuned else [1.0, -1.0]
    padded = [*residuals, *pseudo]
    padded_mean = sum(padded) / len(padded)
    freedom = len(padded) - 1 - (1 if tuned else 0)
    variance = sum((r - padded_mean) ** 2 for r in padded) / freedom
    return _Fit(
        lam=lam,
        tuned=tuned,
        n=n,
        correction=correction,
        machine_mean=m_mean,
        machine_ss=m_ss,
        residual_variance=variance,
        residuals=tuple(r - correction for r in residuals),
    )


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
    borrowing = [s for s in strata if len(s.audit) < MIN_STRATUM_AUDIT]
    estimate = 0.0
    variance = 0.0
    # (where its pairs start in the pooled audit, its weight, its finite-population
    # correction, its fit) for each stratum with its own correction
    own: list[tuple[int, float, float, _Fit]] = []
    fits: list[_Fit] = []
    start = 0
    for stratum in strata:
        if len(stratum.audit) >= MIN_STRATUM_AUDIT:
            weight = stratum.population / population
            fit = _fit(stratum.audit)
            finite = max(0.0, 1 - fit.n / stratum.population)
            own.append((start, weight, finite, fit))
            fits.append(fit)
            estimate += weight * fit.at(stratum.machine_failures / stratum.population)
            variance += weight**2 * fit.residual_variance / fit.n * finite
        start += len(stratum.audit)
    if borrowing:
        # The borrowing strata share one pooled fit, so together they are one prediction at
        # their combined machine share: its variance holds their covariance terms, and, with
        # lambda estimated, lambda's error, which does not cancel at a machine share other
        # than the pooled audit's (the regression's prediction variance).
        pooled = _fit(pooled_pairs)
        fits.append(pooled)
        weight = sum(s.population for s in borrowing) / population
        share = sum(s.machine_failures for s in borrowing) / (weight * population)
        estimate += weight * pooled.at(share)
        # Each pooled pair's influence on that prediction: its residual, levered by how far
        # its machine label sits from the pooled audit's mean when the prediction is made at
        # another machine share (lambda's error; 0 while lambda is fixed).
        lever = (
            (share - pooled.machine_mean) * pooled.n / pooled.machine_ss if pooled.tuned else 0.0
        )
        influence = [
            r * (1 + lever * (pair.machine - pooled.machine_mean))
            for r, pair in zip(pooled.residuals, pooled_pairs, strict=True)
        ]
        # The prediction's variance in the robust (sandwich) form, sum(psi^2) / n^2: with
        # 0/1 labels the residuals' spread differs between the machine's two labels, so the
        # textbook residual_variance * (1/n + slope_term) is wrong, either way, at a machine
        # share far from the pooled audit's (covered 89-90% or 99%). Scaled to the padded
        # residual variance, so the pseudo-pairs still keep it above 0; with lambda fixed
        # (no lever) it is residual_variance / n, as before.
        plain = sum(r * r for r in pooled.residuals)
        if pooled.tuned and plain > 0:
            borrowed = pooled.residual_variance * sum(p * p for p in influence) / (pooled.n * plain)
        else:  # lambda fixed, or every residual 0 (only the padding is left)
            borrowed = pooled.residual_variance * (1 / pooled.n + pooled.slope_term(share))
        variance += weight**2 * borrowed
        # The pooled audit holds the own strata's pairs too, so each own stratum's error and
        # the borrowed prediction's are correlated through them: add the covariance.
        for start, own_weight, finite, fit in own:
            mine = influence[start : start + fit.n]
            mine_mean = sum(mine) / fit.n
            covariance = sum(
                e * (psi - mine_mean) for e, psi in zip(fit.residuals, mine, strict=True)
            ) / (fit.n - 1)
            variance += 2 * own_weight * weight * finite * covariance / pooled.n
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
        machine_weight=fits[0].lam if len(fits) == 1 else None,
    )
