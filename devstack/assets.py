"""`python -m devstack assets` (run by `make install`): the pages' front-end libraries from
the npm registry, pinned and integrity-checked (services/metrics/pages/vendor.py)."""

from __future__ import annotations

from pathlib import Path

from services.metrics.pages import vendor


def fetch(target: Path) -> int:
    try:
        fetched = vendor.fetch(target)
    except vendor.AssetError as error:
        print(f"front-end assets NOT fetched: {error}")
        return 1
    print(
        f"front-end assets in {target}: "
        + (f"fetched {', '.join(fetched)}" if fetched else "all present at their pinned versions")
    )
    return 0
