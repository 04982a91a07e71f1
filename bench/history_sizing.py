"""The size of retained history: bytes per record of each system-of-record topic, measured on
a real broker's segment files, and what a year of a large organisation takes.

    python -m bench.history_sizing [--copies 3] [--demands-per-year 30000000]

The records are the devstack demo data set (devstack/demo.py: six weeks of a housing
organisation's demands, case events and labels, with customers' words), encoded as the
services encode them (CloudEvents headers, JSON values, the services' keys), and written to a
broker of its own (started and stopped here) in two ways: one record per producer batch, as
intake and the classifier write at the rate of a year of 30 million demands (about one a
second, a few dozen at peaks), and in large batches (an import or a replay). Each way runs
uncompressed and with each codec as the topic's ``compression.type`` (the broker compresses
each batch as it appends it, so no producer needs a codec library); the size is what the
topic's segment files hold (record batches with their headers, offsets and CRCs; no index
files).

A year is extrapolated per demand: each topic's records per demand in the demo set times
30 million, times its bytes per record, times the replication factor (3).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer

from devstack import kafka as local_kafka
from devstack.demo import change_events, demo_events
from shared.events import DemandClassified, Event
from shared.kafka.admin import ensure_topics
from shared.kafka.codec import OutboundRecord, encode
from shared.kafka.settings import KafkaSettings
from shared.topics import HISTORY_TOPICS, TOPIC_OF_EVENT, Topic, TopicSpec

ROOT = Path(__file__).resolve().parents[1]
CODECS: tuple[str | None, ...] = (None, "lz4", "zstd", "gzip")  # the topic's compression.type
REPLICATION = 3
GB = 1e9


@dataclass(frozen=True)
class Measured:
    topic: str
    records: int
    payload_bytes: int  # key + value + headers, as the producer hands them over
    segment_bytes: dict[tuple[str, str], int]  # (batching, codec) -> bytes on disk


def history(copies: int) -> list[Event]:
    """The demo set ``copies`` times (each a week apart), with demand.received's events."""
    events: list[Event] = []
    for copy in range(copies):
        made, changes = demo_events(datetime.now(UTC) - timedelta(weeks=copy))
        received = [e.demand for e in made if isinstance(e, DemandClassified)]
        events += [*received, *made, *change_events(changes)]
    return events


def records_of(events: Sequence[Event], prefix: str) -> dict[Topic, list[OutboundRecord]]:
    by_topic: dict[Topic, list[OutboundRecord]] = {}
    for event in events:
        topic = TOPIC_OF_EVENT[type(event)]
        by_topic.setdefault(topic, []).append(
            encode(event, topic=f"{prefix}{topic}", source="demandscope-intake")
        )
    return by_topic


async def write(settings: KafkaSettings, records: Sequence[OutboundRecord], *, one: bool) -> None:
    producer = AIOKafkaProducer(
        **settings.client_options(),
        acks="all",
        enable_idempotence=True,
        linger_ms=0 if one else 50,
        max_batch_size=1024 * 1024,
    )
    await producer.start()
    try:
        if one:  # each record its own batch: wait for it before the next is sent
            for r in records:
                await producer.send_and_wait(r.topic, r.value, key=r.key, headers=r.headers)
        else:
            sent = [
                await producer.send(r.topic, r.value, key=r.key, headers=r.headers) for r in records
            ]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


def segment_bytes(data_dir: Path, topic: str) -> int:
    return sum(
        path.stat().st_size
        for folder in data_dir.glob(f"{topic}-*")
        if folder.name.rpartition("-")[0] == topic
        for path in folder.glob("*.log")
    )


async def measure(cfg: local_kafka.LocalKafkaConfig, events: Sequence[Event]) -> list[Measured]:
    sizes: dict[Topic, dict[tuple[str, str], int]] = {t: {} for t in HISTORY_TOPICS}
    payload: dict[Topic, int] = {}
    counts: Counter[Topic] = Counter()
    for one in (True, False):
        for codec in CODECS:
            prefix = f"s{uuid.uuid4().hex[:6]}."
            settings = KafkaSettings(bootstrap_servers=cfg.bootstrap, topic_prefix=prefix)
            by_topic = records_of(events, prefix)
            config = {"retention.ms": "-1", "compression.type": codec or "producer"}
            specs = [TopicSpec(f"{prefix}{t}", 1, 1, config) for t in HISTORY_TOPICS]
            await ensure_topics(settings, specs)
            for topic, records in by_topic.items():
                await write(settings, records, one=one)
                counts[topic] = len(records)
                payload[topic] = sum(
                    len(r.value) + len(r.key or b"") + sum(len(k) + len(v) for k, v in r.headers)
                    for r in records
                )
            await asyncio.sleep(1.0)  # the broker writes its segment files as it appends
            for topic in by_topic:
                sizes[topic][("one per batch" if one else "batched", codec or "none")] = (
                    segment_bytes(cfg.data_dir, f"{prefix}{topic}")
                )
    return [Measured(str(t), counts[t], payload[t], sizes[t]) for t in HISTORY_TOPICS if counts[t]]


KEYS = [(b, c or "none") for b in ("one per batch", "batched") for c in CODECS]


def report(measured: Sequence[Measured], demands: int, per_year: int) -> str:
    lines = [
        f"{demands} demands measured; a year = {per_year:,} demands, replication {REPLICATION}",
        "",
        "Bytes per record on disk (segment files), by batching and the topic's compression:",
        "",
        "| topic | records per demand | payload B | "
        + " | ".join(f"{b}, {c}" for b, c in KEYS)
        + " |",
        "|" + "---|" * (3 + len(KEYS)),
    ]
    totals: Counter[tuple[str, str]] = Counter()
    for m in measured:
        per_demand = m.records / demands
        cells = [m.topic, f"{per_demand:.3f}", f"{m.payload_bytes / m.records:.0f}"]
        cells += [f"{m.segment_bytes[key] / m.records:.0f}" for key in KEYS]
        lines.append("| " + " | ".join(cells) + " |")
        for key in KEYS:
            totals[key] += round(m.segment_bytes[key] / m.records * per_demand * per_year)
    lines += ["", f"A year, all five topics, x{REPLICATION} replicas (one copy in brackets):"]
    for key in KEYS:
        one = totals[key]
        lines.append(
            f"  {key[0]:>13}, {key[1]:>5}: {one * REPLICATION / GB:8.1f} GB  ({one / GB:.1f} GB)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=3, help="Copies of the demo data set.")
    parser.add_argument("--demands-per-year", type=int, default=30_000_000)
    args = parser.parse_args()
    events = history(args.copies)
    demands = sum(isinstance(e, DemandClassified) for e in events)
    run_dir = Path(tempfile.mkdtemp(prefix="history-sizing-", dir=ROOT / ".run"))
    cfg = local_kafka.LocalKafkaConfig.on_free_ports(root=ROOT, run_dir=run_dir, heap="384m")
    try:
        local_kafka.start(cfg, timeout=120)
        measured = asyncio.run(measure(cfg, events))
    finally:
        local_kafka.stop(cfg)
        shutil.rmtree(run_dir, ignore_errors=True)
    print(report(measured, demands, args.demands_per_year))


if __name__ == "__main__":
    main()
