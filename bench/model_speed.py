"""CPU per demand of the classifier's model alone: `TextModel.predict_batch` on batches of 500.

Run: `.venv/bin/python -m bench.model_speed` (about a minute). Trains the shipped recipe (seed
rows, taxonomy, general corpus, as the service's first start does), then predicts the texts
`bench classifier` sends (the seed rows, in order, 500 at a time) after one warm-up pass, and
prints CPU microseconds per demand from `time.process_time` (the stable measure on a shared
machine; wall-clock rates swing with the load). `--profile` prints cProfile's top functions
instead. Options: DEMANDSCOPE_BENCH_MODEL_BATCHES (default 40 batches of 500).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import time

from bench import results
from services.classifier.config import SEED_EXAMPLES
from services.classifier.model.examples import read_examples_csv
from services.classifier.training import TrainingSources, train_model

BATCH = 500
BATCHES = int(os.environ.get("DEMANDSCOPE_BENCH_MODEL_BATCHES", "40"))


def main() -> None:
    model = train_model(TrainingSources(), reason="bench", with_evaluation=False).model
    texts = [e.text for e in read_examples_csv(SEED_EXAMPLES).examples]
    batches = [[texts[(b * BATCH + i) % len(texts)] for i in range(BATCH)] for b in range(BATCHES)]
    for batch in batches[:3]:  # warm the word caches and lazily built state
        model.predict_batch(batch)
    if "--profile" in sys.argv:
        profile = cProfile.Profile()
        profile.enable()
        for batch in batches:
            model.predict_batch(batch)
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(35)
        return
    per_demand = []
    for _ in range(3):
        started = time.process_time()
        for batch in batches:
            model.predict_batch(batch)
        per_demand.append((time.process_time() - started) / (BATCH * BATCHES) * 1e6)
    print(
        f"  predict_batch, batches of {BATCH}: CPU µs/demand "
        f"{' / '.join(f'{v:.1f}' for v in per_demand)} (load average {results.load_average()})"
    )


if __name__ == "__main__":
    main()
