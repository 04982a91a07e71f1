"""`make bench`: run the speed benchmarks, then print one table of every figure against its
baseline and one summary line per part with its target (issue 14).

`python -m bench` runs the default set; `python -m bench intake classifier` runs those only
(``judgement``, the classifier's quality evaluation of about five minutes, runs only when
named). Each module has an async or sync ``main()`` that prints its own detail and records
its rows in bench/results.py; a module that fails is reported and the others still run.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
import time
import traceback

from bench import results

# In this order: the per-part benches first, the whole stack (the heaviest) last.
DEFAULT = ("intake", "classifier", "metrics", "pages", "stack")
ON_REQUEST = ("judgement",)


def run_module(name: str) -> bool:
    """Runs bench/<name>.py; False when it failed (its traceback printed)."""
    started = time.monotonic()
    print(f"\n=== bench/{name}.py (load average {results.load_average()}) ===", flush=True)
    try:
        module = importlib.import_module(f"bench.{name}")  # an import can fail too
        outcome = module.main()
        if inspect.iscoroutine(outcome):
            asyncio.run(outcome)
    except Exception:  # one failing bench must not hide the others' figures
        traceback.print_exc()
        print(f"bench/{name}.py FAILED after {time.monotonic() - started:.0f}s", flush=True)
        return False
    print(f"--- bench/{name}.py took {time.monotonic() - started:.0f}s", flush=True)
    return True


def report(failed: list[str], seconds: float) -> None:
    rows = results.recorded()
    print(f"\n=== results ({seconds / 60:.1f} min, load average {results.load_average()}) ===")
    if rows:
        print(results.markdown(rows))
        notes = [f"- {r.part}: {r.note}" for r in rows if r.note]
        if notes:
            print("\n" + "\n".join(notes))
        print()
        for row in rows:
            print(row.summary())
    for name in failed:
        print(f"bench/{name}.py: FAILED (its rows are missing above)")
    sys.stdout.flush()


def main() -> int:
    wanted = sys.argv[1:] or list(DEFAULT)
    unknown = [n for n in wanted if n not in DEFAULT + ON_REQUEST]
    if unknown:
        print(f"unknown bench {', '.join(unknown)}; known: {', '.join(DEFAULT + ON_REQUEST)}")
        return 2
    print(f"machine: {results.machine()}")
    busy = results.busy_processes()
    others = ", ".join(f"{name} ({pid}) {share:.0%}" for name, pid, share in busy[:8])
    print(f"also running (over 1 s, > 5% of a core): {others or 'nothing'}", flush=True)
    started = time.monotonic()
    failed: list[str] = []
    try:
        for name in wanted:
            if not run_module(name):
                failed.append(name)
    except KeyboardInterrupt:
        print("\ninterrupted: the figures measured so far", flush=True)
        report(failed, time.monotonic() - started)
        return 130
    report(failed, time.monotonic() - started)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
