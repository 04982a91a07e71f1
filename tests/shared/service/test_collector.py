"""One collector policy for every service, undone when the service stops."""

from __future__ import annotations

import gc
from contextlib import AsyncExitStack

from shared.service.collector import YOUNG_COLLECTION_AFTER, collect_young_less_often


async def test_young_collections_are_rarer_while_running_and_as_before_after() -> None:
    before = gc.get_threshold()
    try:
        async with AsyncExitStack() as stack:
            collect_young_less_often(stack)
            assert gc.get_threshold() == (YOUNG_COLLECTION_AFTER, *before[1:])
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)
