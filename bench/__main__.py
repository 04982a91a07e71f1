"""`make bench`: run every benchmark module in bench/ (each has an async or sync `main()`)."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    wanted = set(sys.argv[1:])
    names = sorted(
        info.name
        for info in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not info.name.startswith("_") and (not wanted or info.name in wanted)
    )
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        entry = getattr(module, "main", None)
        if entry is None:
            continue
        print(f"\n=== bench/{name}.py ===", flush=True)
        result = entry()
        if inspect.iscoroutine(result):
            asyncio.run(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
