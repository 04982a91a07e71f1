"""The value/failure prior from the metrics service's audited estimate of the failure share.

The metrics service publishes ``PurposeMetrics`` on purpose.metrics (compacted, keyed by
purpose, the latest wins): per purpose and trailing window, the volume and, once enough
demands are audited blind, a prediction-powered estimate of the failure share, corrected for
the classifier's bias and for the audit's unequal inclusion chances. That is the one
unbiased figure of the organisation's failure share; the labels' own share leans the way the
labels were chosen (review queue, corrections), the audit's raw share to small purposes.

The rule ("good enough"), plain on purpose, nothing fitted to any data set:

- a purpose's estimate is a share of *that purpose's* demands, so purposes are weighted by
  their volume in the window;
- only validated estimates count (the metrics service's own test: enough demands audited
  for an interval), and they must cover at least ``MIN_VALIDATED_VOLUME`` (90%) of the
  window's volume. The purposes left out are assumed to fail as often as the rest; whatever
  their true share, that moves the overall figure by at most the volume they hold (10
  points, in practice far less), while the labels' share can be tens of points off (0.57
  raw against 0.22 true in the example of docs/services/classifier.md). Below that
  coverage the estimate says too little of the whole, and the labels' rule applies;
- the share is clamped as Laplace smoothing of the audited demands would
  (``[1/(n+2), (n+1)/(n+2)]``): an estimate from n audited demands claims no more certainty
  than n labels would, and stays strictly inside (0, 1).

Reading never blocks or breaks training: a missing or empty topic, a broker away, a record
that cannot be read or the deadline passing give no prior (with the reason, logged), and
training falls back to the labels' rule.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from services.classifier.model.text_model import FailurePrior
from shared.events.purpose_metrics import PurposeMetrics
from shared.kafka.codec import decode
from shared.kafka.read_to_end import read_all
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name

log = logging.getLogger(__name__)

MIN_VALIDATED_VOLUME = 0.9
"""Share of the window's volume whose purposes must have a validated estimate."""


@dataclass(frozen=True, slots=True)
class EstimatedPrior:
    """The prior from the metrics service's estimate, or None with the reason why not."""

    prior: FailurePrior | None
    reason: str
    window_end: datetime | None = None
    """The latest window end among the purposes taken (None: no prior)."""


def latest_by_purpose(metrics: Iterable[PurposeMetrics]) -> dict[str, PurposeMetrics]:
    """The last record of each purpose, in the order read (a compacted topic's latest wins;
    one purpose is one key, so its records are in one partition, in order)."""
    return {m.purpose: m for m in metrics}


def estimated_prior(
    metrics: Iterable[PurposeMetrics], *, min_validated_volume: float = MIN_VALIDATED_VOLUME
) -> EstimatedPrior:
    """The volume-weighted failure share of the validated purposes, if they cover at least
    ``min_validated_volume`` of the volume (the module's docstring says why)."""
    latest = [m for m in latest_by_purpose(metrics).values() if m.volume > 0]
    volume = sum(m.volume for m in latest)
    if volume == 0:
        return EstimatedPrior(None, "no purpose has demands in its window")
    validated = [
        m
        for m in latest
        if m.failure_share_status == "validated" and m.failure_share_estimate is not None
    ]
    covered = sum(m.volume for m in validated)
    if covered == 0 or covered / volume < min_validated_volume:
        return EstimatedPrior(
            None,
            f"validated estimates cover {covered} of {volume} demands "
            f"({covered / volume:.0%}; {min_validated_volume:.0%} needed)",
        )
    share = sum(m.volume * (m.failure_share_estimate or 0.0) for m in validated) / covered
    audited = sum(m.failure_share_audited for m in validated)
    smallest = 1 / (max(audited, 1) + 2)
    clamped = min(max(share, smallest), 1 - smallest)
    return EstimatedPrior(
        FailurePrior(clamped, "estimate", audited),
        f"{len(validated)} of {len(latest)} purposes validated, "
        f"{covered / volume:.0%} of {volume} demands, {audited} audited",
        window_end=max(m.window_end for m in validated),
    )


async def read_estimated_prior(
    settings: KafkaSettings,
    *,
    timeout_s: float,
    min_validated_volume: float = MIN_VALIDATED_VOLUME,
) -> EstimatedPrior:
    """Read purpose.metrics to its end (no consumer group, at most ``timeout_s``) and
    ``estimated_prior`` of it. Never raises for the topic or the broker: any failure is no
    prior, with the reason logged."""
    topic = topic_name(settings, Topic.PURPOSE_METRICS)
    if timeout_s <= 0:
        return EstimatedPrior(None, "reading the metrics service's estimate is turned off")
    try:
        records = await read_all(settings, [topic], timeout=timeout_s)
        # A tombstone deletes its purpose; a record that cannot be read leaves its purpose's
        # figures unknown, and a part of the volume unknown: no prior from an incomplete set.
        latest: dict[bytes | None, bytes | None] = {r.key: r.value for r in records}
        metrics = [decode(PurposeMetrics, v) for v in latest.values() if v is not None]
    except Exception as error:  # whatever it is, training goes on with the labels
        result = EstimatedPrior(None, f"could not read {topic}: {error!r}")
    else:
        result = estimated_prior(metrics, min_validated_volume=min_validated_volume)
    if result.prior is None:
        log.info("failure prior: not from the metrics service's estimate (%s)", result.reason)
    else:
        log.info(
            "failure prior %.3f from the metrics service's estimate (%s, window to %s)",
            result.prior.share,
            result.reason,
            result.window_end,
        )
    return result
