"""The serving process's garbage collector: one policy for every service.

A batch (intake's 500 submissions, the classifier's 500 demands and their context entries,
the metrics service's rows) allocates tens of thousands of tracked objects that live until
it is answered or committed; with CPython's default of a young collection every 700 net
allocations, each one walked the batch's survivors again. Measured per service in
docs/performance.md (round six): the classifier's handler 10-15 -> 0.3 µs of collector per
demand at the same peak memory, intake's batch 81-88 -> 68-72 µs CPU per event. Cyclic
garbage, rare here, waits a little longer.
"""

from __future__ import annotations

import gc
from contextlib import AsyncExitStack

# Net allocations of tracked objects between two young collections; CPython's default: 700.
YOUNG_COLLECTION_AFTER = 50_000


def collect_young_less_often(stack: AsyncExitStack) -> None:
    """Young collections every ``YOUNG_COLLECTION_AFTER`` allocations while the service runs;
    the interpreter's thresholds as they were once ``stack`` closes (the collector is
    process-wide, and tests run services in one process)."""
    threshold = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, *threshold[1:])
    stack.callback(gc.set_threshold, *threshold)
