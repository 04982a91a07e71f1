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

**Not every contact is a demand.** A person may answer "not a demand" (praise, jokes,
chatter, marketing: the contact asked nothing of the organisation). The machine calls every
contact a demand, so the share it is built for, failure among *demands*, is a ratio,
``R = F / D``: F the share of contacts that are failure demands, D the share that are
demands. Once the audit holds a "not a demand" answer, ``R`` is estimated by the
*prediction-powered ratio*: the root of the estimating equation ``Z(R) = 0``, where ``Z(R)``
is the estimate above (stratified, lambda tuned, thin strata borrowing) of the mean of
``f - R · d`` (f = 1 for a person's failure demand, d = 1 for a demand, a pseudo-pair a
demand), with the machine's failure label as auxiliary. Its variance is by linearisation
(the delta method): ``var(Z(R̂)) / D̂²``, D̂ the audit's (stratified) share of demands, the
regression estimator of D with a constant machine label. This is Cochran's combined ratio
estimator (ch. 6) with each half by the regression estimator; the estimating-equation form
(rather than ``F̂ / D̂`` with F's own lambda) tunes lambda for ``f - R·d``, the variable
whose error the ratio's is, and gives the variance of the linearised variable at once,
thin strata, covariances and padding included, from the code above. With no "not a demand"
answer, d = 1 everywhere, ``Z(R) = F̂ - R`` and the root is F̂: today's estimate, returned
as computed today (bit for bit). With one, the status needs ``MIN_AUDIT`` audited demands.
The share of contacts that are not demands is estimated alongside, as a share like any
other with a machine label of 0 for every contact (so the audit's own, stratified share,
padded by the "add two" rule). **Its assumption**: the machine's label says nothing of it,
so a thin stratum has nothing to correct by and is taken to carry the pooled audit's share
of non-demands (as it is taken to carry the pooled failure residual, above). Where a thin
stratum's chatter differs, the share is off by the stratum's weight times the difference,
which the interval does not cover: strata of 2,000/1,200/300 contacts with chatter
0.2/0.2/0.6, audits of 110/70/6, 400 draws: bias -3.3 points, coverage 79% (96% with the
thin one at 0.2); the ratio among demands kept 96% (its residual f - R·d has mean 0 in a
stratum with the pooled share among demands, whatever its chatter). Test:
test_a_thin_stratum_with_other_chatter_biases_the_not_a_demand_share.
Measured: on real tweets (TWCS, 22-23% not demands, a
quarter to a third of them called failure by the model) audits of 200 covered the share
among demands 94-96% (the old estimator, chatter called value, 0-1%), intervals 0.4-0.9
points wider than the old ones (``bench.not_a_demand``); simulated designs with strata and
a thin one, 93-96% (tests/shared/test_estimates_not_a_demand.py).
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
    """One audited demand: the machine's label and the person's (1 = failure, 0 = value).
    ``demand`` False: the person said "not a demand" (then ``person`` must be 0)."""

    machine: int
    person: int
    demand: bool = True

    def __post_init__(self) -> None:
        if not self.demand and self.person:
            raise ValueError("a 'not a demand' pair has person 0: it is no failure demand")


@dataclass(frozen=True, slots=True)
class Stratum:
    """What is known about one stratum (a purpose): its size, the machine's failure count,
    and the audit pairs drawn from it."""

    population: int
    machine_failures: int
    audit: Sequence[AuditPair] = ()


@dataclass(frozen=True, slots=True)
class ShareEstimate:
    population: int  # contacts the share is about (the machine calls every one a demand)
    predicted: float | None  # the machine's share alone
    estimate: float | None  # corrected by the audit, among demands; None until validated
    ci_low: float | None
    ci_high: float | None
    audited: int
    status: Status
    confidence: float = CONFIDENCE
    # The weight of the machine's share (lambda) where one fit made the estimate: one
    # stratum's own, or the pooled one all strata borrow; None for several fits or none.
    machine_weight: float | None = None
    # Audited contacts a person called "not a demand", and the estimated share of contacts
    # that are not demands with its interval (None until validated, as the estimate).
    not_a_demand_audited: int = 0
    not_a_demand_share: float | None = None
    not_a_demand_ci_low: float | None = None
    not_a_demand_ci_high: float | None = None

    @property
    def half_width(self) -> float | None:
        if self.ci_low is None or self.ci_high is None:
            return None
        return (self.ci_high - self.ci_low) / 2

    @property
    def not_a_demand_count(self) -> int | None:
        """The estimated number of the contacts that are not demands."""
        if self.not_a_demand_share is None:
            return None
        return round(self.not_a_demand_share * self.population)


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


@dataclass(frozen=True, slots=True)
class _Fit:
    """An audit's regression of the person's value on the machine's label: the weight
    ``lam`` of the machine's share, the correction ``mean(person - lam * machine)``, and
    what the variance needs."""

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


def _fit(
    machines: Sequence[int], persons: Sequence[float], high: float = 1.0, low: float = 0.0
) -> _Fit:
    """The fit of ``persons`` (0/1 labels, or the ratio's f - R·d) on ``machines``; a
    pseudo-pair's person value is ``high`` for a failure and ``low`` for a value."""
    n = len(machines)
    m_mean = sum(machines) / n
    y_mean = sum(persons) / n
    m_ss = sum((m - m_mean) ** 2 for m in machines)
    # lambda = cov(person, machine) / var(machine), clipped to [0, 1] (PPI++). Fixed at 1
    # (the difference estimator) when the machine is constant in the audit (no slope to
    # estimate) or the audit is small (lambda's own error, left out of the variance, is
    # small only once it rests on more than a handful of pairs).
    tuned = n >= MIN_TUNED_AUDIT and m_ss > 0
    lam = 1.0
    if tuned:
        cov = sum((y - y_mean) * (m - m_mean) for y, m in zip(persons, machines, strict=True))
        lam = min(1.0, max(0.0, cov / m_ss))
    residuals = [y - lam * m for y, m in zip(persons, machines, strict=True)]
    correction = sum(residuals) / n
    # No zero width: pseudo-pairs enter the variance, never lambda or the mean. With lambda
    # fixed at 1, today's "add two", one disagreement each way. With lambda estimated, one
    # pair of each kind (person/machine 1/0, 0/1, 1/1, 0/0), whose residuals are 1, -lam,
    # 1 - lam and 0: near lambda = 1 the same add-two, near lambda = 0 (the audit's own
    # share) two failures and two values in the spirit of Agresti-Coull (the variance only),
    # which keeps a rare share's skewed interval honest. One degree of freedom for the mean
    # and, when lambda was estimated, one for the slope (Cochran's n - 2).
    pseudo = [high, low - lam, high - lam, low] if tuned else [high, low - 1.0]
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


@dataclass(frozen=True, slots=True)
class _Cell:
    """A stratum as the estimate sees it: size, the machine's failures, and its audit as
    the machine's labels and the person's values."""

    population: int
    machine_failures: int
    machines: tuple[int, ...]
    persons: tuple[float, ...]


def _combined(
    cells: Sequence[_Cell], population: int, high: float = 1.0, low: float = 0.0
) -> tuple[float, float, list[_Fit]]:
    """The stratified estimate of the persons' mean, its variance, and the fits made."""
    pooled_machines = [m for c in cells for m in c.machines]
    pooled_persons = [y for c in cells for y in c.persons]
    borrowing = [c for c in cells if len(c.machines) < MIN_STRATUM_AUDIT]
    estimate = 0.0
    variance = 0.0
    # (where its pairs start in the pooled audit, its weight, its finite-population
    # correction, its fit) for each stratum with its own correction
    own: list[tuple[int, float, float, _Fit]] = []
    fits: list[_Fit] = []
    start = 0
    for cell in cells:
        if len(cell.machines) >= MIN_STRATUM_AUDIT:
            weight = cell.population / population
            fit = _fit(cell.machines, cell.persons, high, low)
            finite = max(0.0, 1 - fit.n / cell.population)
            own.append((start, weight, finite, fit))
            fits.append(fit)
            estimate += weight * fit.at(cell.machine_failures / cell.population)
            variance += weight**2 * fit.residual_variance / fit.n * finite
        start += len(cell.machines)
    if borrowing:
        # The borrowing strata share one pooled fit, so together they are one prediction at
        # their combined machine share: its variance holds their covariance terms, and, with
        # lambda estimated, lambda's error, which does not cancel at a machine share other
        # than the pooled audit's (the regression's prediction variance).
        pooled = _fit(pooled_machines, pooled_persons, high, low)
        fits.append(pooled)
        weight = sum(c.population for c in borrowing) / population
        share = sum(c.machine_failures for c in borrowing) / (weight * population)
        estimate += weight * pooled.at(share)
        # Each pooled pair's influence on that prediction: its residual, levered by how far
        # its machine label sits from the pooled audit's mean when the prediction is made at
        # another machine share (lambda's error; 0 while lambda is fixed).
        lever = (
            (share - pooled.machine_mean) * pooled.n / pooled.machine_ss if pooled.tuned else 0.0
        )
        influence = [
            r * (1 + lever * (m - pooled.machine_mean))
            for r, m in zip(pooled.residuals, pooled_machines, strict=True)
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
    return estimate, variance, fits


def _padding_only(strata: Sequence[Stratum], population: int) -> float:
    """_combined's variance of the not-a-demand share where no audited contact is one, in
    closed form (half the cost of an estimate otherwise): every residual is 0, so only the
    "add two" padding is left, 2 / (n + 1) per item, and no covariance."""
    variance = 0.0
    pooled = 0
    borrowing = 0
    for s in strata:
        n = len(s.audit)
        pooled += n
        if n >= MIN_STRATUM_AUDIT:
            finite = max(0.0, 1 - n / s.population)
            variance += (s.population / population) ** 2 * 2 / (n + 1) / n * finite
        else:
            borrowing += s.population
    if borrowing:
        variance += (borrowing / population) ** 2 * 2 / (pooled + 1) / pooled
    return variance


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


def _interval(estimate: float, variance: float, confidence: float) -> tuple[float, float, float]:
    half = _z(confidence) * math.sqrt(max(variance, 0.0))
    return min(1.0, max(0.0, estimate)), max(0.0, estimate - half), min(1.0, estimate + half)


# The ratio's root: a first step with the slope -D̂, then secant steps; Z is piecewise
# linear in R, so two or three evaluations reach it.
_ROOT_STEPS = 50
_ROOT_TOLERANCE = 1e-12


def stratified_estimate(
    strata: Iterable[Stratum], *, confidence: float = CONFIDENCE
) -> ShareEstimate:
    """The failure share among demands over several strata (purposes), each corrected by
    its own audit where it has enough, else by the pooled audit; and the share of contacts
    that are not demands."""
    strata = [s for s in strata if s.population > 0]
    population = sum(s.population for s in strata)
    if population == 0:
        return ShareEstimate(0, None, None, None, None, 0, "not yet validated", confidence)
    predicted = sum(s.machine_failures for s in strata) / population
    audited = sum(len(s.audit) for s in strata)
    not_demands = sum(1 for s in strata for pair in s.audit if not pair.demand)
    if audited - not_demands < MIN_AUDIT:
        return ShareEstimate(
            population,
            predicted,
            None,
            None,
            None,
            audited,
            "not yet validated",
            confidence,
            not_a_demand_audited=not_demands,
        )
    machines = [tuple(p.machine for p in s.audit) for s in strata]
    failures = [
        _Cell(s.population, s.machine_failures, m, tuple(float(p.person) for p in s.audit))
        for s, m in zip(strata, machines, strict=True)
    ]
    if not not_demands:
        # Every audited contact a demand: the root is F̂ itself, computed as it always was.
        estimate, variance, fits = _combined(failures, population)
    else:
        # D̂: the machine calls every contact a demand (a constant label, so lambda is 1
        # and this is the audit's own stratified share of demands).
        demand, _, _ = _combined(
            [
                _Cell(c.population, c.population, tuple(1 for _ in c.machines), d)
                for c, d in zip(
                    failures,
                    (tuple(float(p.demand) for p in s.audit) for s in strata),
                    strict=True,
                )
            ],
            population,
        )
        ratio = 0.0  # Z(0) is F̂: the first step is to F̂ / D̂

        def z_at(ratio: float) -> tuple[float, float, list[_Fit]]:
            return _combined(
                [
                    _Cell(
                        c.population,
                        c.machine_failures,
                        c.machines,
                        tuple(p.person - ratio * p.demand for p in s.audit),
                    )
                    for c, s in zip(failures, strata, strict=True)
                ],
                population,
                high=1.0 - ratio,
                low=-ratio,
            )

        evaluated = z_at(ratio)
        before: tuple[float, float] | None = None  # the last (ratio, Z) evaluated
        for _ in range(_ROOT_STEPS):
            z_value = evaluated[0]
            # Z falls with R: slope -D̂ at first, then the secant of the last two (Z is
            # piecewise linear in R, so the secant lands on the root of a linear piece).
            slope = -demand
            if before is not None and ratio != before[0]:
                secant = (z_value - before[1]) / (ratio - before[0])
                slope = secant if secant < 0 else slope
            step = -z_value / slope
            if abs(step) < _ROOT_TOLERANCE:
                break
            before = (ratio, z_value)
            ratio += step
            evaluated = z_at(ratio)
        _, variance, fits = evaluated
        estimate = ratio
        variance /= demand**2
    value, low, high = _interval(estimate, variance, confidence)
    # The share of contacts that are not demands: the machine says 0 for every one.
    if not_demands:
        not_share, not_variance, _ = _combined(
            [
                _Cell(
                    s.population,
                    0,
                    tuple(0 for _ in s.audit),
                    tuple(float(not p.demand) for p in s.audit),
                )
                for s in strata
            ],
            population,
        )
    else:
        not_share, not_variance = 0.0, _padding_only(strata, population)
    not_value, not_low, not_high = _interval(not_share, not_variance, confidence)
    return ShareEstimate(
        population=population,
        predicted=predicted,
        estimate=value,
        ci_low=low,
        ci_high=high,
        audited=audited,
        status="validated",
        confidence=confidence,
        machine_weight=fits[0].lam if len(fits) == 1 else None,
        not_a_demand_audited=not_demands,
        not_a_demand_share=not_value,
        not_a_demand_ci_low=not_low,
        not_a_demand_ci_high=not_high,
    )
