"""The value/failure prior from the metrics service's audited estimate of the failure share.

The metrics service publishes ``PurposeMetrics`` on purpose.metrics (compacted, keyed by
purpose, the latest wins): per purpose and trailing window, the counts and, once enough
demands are audited blind, a prediction-powered estimate of the failure share. What that
estimate targets: **the failure share among the demands the machine labelled value or
failure** (its 'unknown' demands are outside it; an auditor's 'unknown' counts as not
failure), corrected for the machine's errors on those demands and for the audit's unequal
inclusion chances (services/metrics/domain/audit.py, ``estimates_by_group``). The labels'
own share leans the way the labels were chosen (review queue, corrections), the audit's raw
share to small purposes; this one does not, but it is not free of bias either:

- **The prior moves its own target.** Which demands the machine calls value or failure
  depends on the prior: a demand whose value/failure probability is below the unknown
  threshold (judgement.py; 0.55 by default) is 'unknown', outside the estimate. A low prior pushes
  borderline failures into that band (or to value), so the next estimate can come out lower,
  and the prior after it lower again: self-reinforcing, bounded by how many demands sit
  near the threshold, and corrected only as far as the audit sees the demands that remain.
- **Strata and counts differ in purpose.** The estimate's strata are by the machine's first
  purpose, while a record's value/failure counts (the weights below) are by the demand's
  current purpose (services/metrics/service.py, ``purpose_metrics``): a demand whose purpose
  was corrected counts for one purpose's weight and another's estimate. The weights also
  count the chatter the machine called value or failure (only a contact a person answered
  "not a demand" leaves them, as 'unknown'), while the estimate is among demands: a
  purpose with much chatter weighs more than its demands. The weights are close, not
  exact.

The rule ("good enough"), plain on purpose, nothing fitted to any data set:

- per purpose, the latest record (the greatest ``computed_at``); records whose window ended
  more than one window length before the newest one are left out (a seasonal purpose, or
  the metrics service down for weeks: that figure is of another period);
- a purpose's estimate is a share of *that purpose's* value and failure demands, so
  purposes are weighted by ``value_count + failure_count`` (not ``volume``, which holds the
  'unknown' demands too);
- only validated estimates count (the metrics service's own test: enough demands audited
  for an interval), and they must cover at least ``MIN_VALIDATED_VOLUME`` (90%) of the
  value and failure demands. The purposes left out are assumed to fail as often as the rest;
  whatever their true share, that moves the overall figure by at most the share they hold
  (at most 10 points), while the labels' share can be tens of points off
  (0.57 raw against 0.22 true in the example of docs/services/classifier.md). Below that
  coverage the estimate says too little of the whole, and the labels' rule applies;
- the share is clamped to ``[1/(n+2), (n+1)/(n+2)]`` for the n audited demands: a bound, not
  smoothing (the share inside it is not moved), which only keeps it strictly inside (0, 1).
  ``failure_share_audited`` counts those: the audited contacts less the ones a person
  answered "not a demand" (outside a share among demands; the metrics service subtracts
  them, services/metrics/service.py ``purpose_metrics``).

Reading never blocks or breaks training: a missing or empty topic, a broker away, a record
that cannot be read or the deadline passing give no prior (with the reason, logged at
WARNING when the read failed: the estimate then did not take effect), and training falls
back to the labels' rule. The read streams: it keeps the latest value of each key and
decodes only those, so its memory is of the purposes, not of the topic's records (the
active segment of a compacted topic is never compacted; shared/topics.py bounds it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from services.classifier.model.text_model import FailurePrior
from shared.events.purpose_metrics import PurposeMetrics
from shared.kafka.codec import decode, header
from shared.kafka.read_to_end import ReadToEndTimeout, Record, read_to_end
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name

log = logging.getLogger(__name__)

MIN_VALIDATED_VOLUME = 0.9
"""Share of the window's value and failure demands whose purposes must have a validated
estimate."""


@dataclass(frozen=True, slots=True)
class EstimatedPrior:
    """The prior from the metrics service's estimate, or None with the reason why not."""

    prior: FailurePrior | None
    reason: str
    window_end: datetime | None = None
    """The newest window end among the purposes taken (None: no prior)."""
    oldest_window_end: datetime | None = None
    """The oldest window end among the purposes taken (None: no prior)."""


def _weight(m: PurposeMetrics) -> int:
    # The estimate is a share of the value and failure demands; 'unknown' ones are outside it.
    return m.value_count + m.failure_count


def latest_by_purpose(metrics: Iterable[PurposeMetrics]) -> dict[str, PurposeMetrics]:
    """The latest record of each purpose: the greatest ``computed_at``, whatever the order
    read (a purpose's records may sit in two partitions after the partitions were added,
    or be written again by a rebuild)."""
    latest: dict[str, PurposeMetrics] = {}
    for m in metrics:
        held = latest.get(m.purpose)
        if held is None or m.computed_at >= held.computed_at:
            latest[m.purpose] = m
    return latest


def current(latest: Iterable[PurposeMetrics]) -> list[PurposeMetrics]:
    """The records whose window ended at most one window length (the newest record's own)
    before the newest window end: older ones describe another period."""
    records = list(latest)
    if not records:
        return []
    newest = max(records, key=lambda m: m.window_end)
    cutoff = newest.window_end - (newest.window_end - newest.window_start)
    return [m for m in records if m.window_end >= cutoff]


def estimated_prior(
    metrics: Iterable[PurposeMetrics], *, min_validated_volume: float = MIN_VALIDATED_VOLUME
) -> EstimatedPrior:
    """The failure share of the validated purposes, weighted by their value and failure
    demands, if they cover at least ``min_validated_volume`` of them (the module's
    docstring says why)."""
    latest = [m for m in current(latest_by_purpose(metrics).values()) if _weight(m) > 0]
    volume = sum(_weight(m) for m in latest)
    if volume == 0:
        return EstimatedPrior(None, "no purpose has value or failure demands in its window")
    validated = [
        m
        for m in latest
        if m.failure_share_status == "validated" and m.failure_share_estimate is not None
    ]
    covered = sum(_weight(m) for m in validated)
    if covered == 0 or covered / volume < min_validated_volume:
        return EstimatedPrior(
            None,
            f"validated estimates cover {covered} of {volume} value/failure demands "
            f"({covered / volume:.0%}; {min_validated_volume:.0%} needed)",
        )
    share = sum(_weight(m) * (m.failure_share_estimate or 0.0) for m in validated) / covered
    audited = sum(m.failure_share_audited for m in validated)
    smallest = 1 / (max(audited, 1) + 2)
    clamped = min(max(share, smallest), 1 - smallest)
    return EstimatedPrior(
        FailurePrior(clamped, "estimate", audited),
        f"{len(validated)} of {len(latest)} purposes validated, "
        f"{covered / volume:.0%} of {volume} value/failure demands, {audited} audited",
        window_end=max(m.window_end for m in validated),
        oldest_window_end=min(m.window_end for m in validated),
    )


def _computed_at(record: Record) -> datetime | None:
    """The record's ``computed_at`` from its CloudEvents id (``purpose@computed_at``,
    PurposeMetrics.event_id), without decoding the value; None if it has none."""
    ce_id = header(record.headers, "ce_id")
    if ce_id is None or "@" not in ce_id:
        return None
    try:
        return datetime.fromisoformat(ce_id.rpartition("@")[2])
    except ValueError:
        return None


class LatestValues:
    """The latest value of each record key, kept as bytes (memory: one value per key).

    Latest is the greatest ``computed_at`` where both records carry one (``_computed_at``),
    else the one read last; a tombstone (no value) drops its key."""

    def __init__(self) -> None:
        self._held: dict[bytes | None, tuple[datetime | None, bytes]] = {}

    def add(self, records: Iterable[Record]) -> None:
        for record in records:
            if record.value is None:
                self._held.pop(record.key, None)
                continue
            at = _computed_at(record)
            held = self._held.get(record.key)
            if held is not None and at is not None and held[0] is not None and at < held[0]:
                continue
            self._held[record.key] = (at, record.value)

    def values(self) -> list[bytes]:
        return [value for _at, value in self._held.values()]


async def latest_values(settings: KafkaSettings, topic: str, *, timeout_s: float) -> list[bytes]:
    """The latest value of each key of ``topic``, read to its end (no consumer group, at
    most ``timeout_s``), one batch at a time."""
    latest = LatestValues()
    async with read_to_end(settings, [topic], timeout=timeout_s) as reader:
        async for batch in reader:
            latest.add(batch)
    return latest.values()


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
        values = await latest_values(settings, topic, timeout_s=timeout_s)
        # A record that cannot be read leaves its purpose's figures unknown, and a part of
        # the volume unknown: no prior from an incomplete set.
        metrics = [decode(PurposeMetrics, value) for value in values]
    except Exception as error:  # whatever it is, training goes on with the labels
        if isinstance(error, ReadToEndTimeout):
            reason = f"could not read {topic} in {timeout_s}s: {error}"
        else:
            reason = f"could not read {topic}: {error!r}"
        log.warning("failure prior: the metrics service's estimate not used (%s)", reason)
        return EstimatedPrior(None, reason)
    result = estimated_prior(metrics, min_validated_volume=min_validated_volume)
    if result.prior is None:
        log.info("failure prior: not from the metrics service's estimate (%s)", result.reason)
    else:
        log.info(
            "failure prior %.3f from the metrics service's estimate (%s, windows ending %s to %s)",
            result.prior.share,
            result.reason,
            result.oldest_window_end,
            result.window_end,
        )
    return result
