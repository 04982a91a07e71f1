"""The one result table of `make bench`: each bench records its rows here, and
bench/__main__.py prints them together at the end (the columns of issue 14's table), then one
summary line per part with its target and whether it was met.

A row's verdict is computed by the bench that measured it (only it knows what the target
means); this module only holds and formats. ``None`` means there is no baseline to set the
figure against, or nothing was measured.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Row:
    part: str
    figure: str  # demandscope's figure, formatted ("3,567 events/s, 261 µs CPU/event")
    baseline: str | None  # the baseline's figure and what it is, None where there is none
    ratio: str | None  # demandscope against the baseline ("0.26", "9.4x faster")
    target: str
    met: bool | None  # None: not measured, or the target cannot be judged
    note: str = ""  # what limits the figure (reduced size, a timeout), shown under the table

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "no baseline" if self.baseline is None else "not measured"
        return "met" if self.met else "NOT met"

    def summary(self) -> str:
        against = ""
        if self.baseline and self.ratio:
            # "0.26 of <baseline>", or "9.4x faster than <baseline>"
            word = "than" if self.ratio.endswith(("faster", "slower")) else "of"
            against = f" ({self.ratio} {word} {self.baseline})"
        return f"{self.part}: {self.figure}{against} target {self.target}: {self.verdict}"


_ROWS: list[Row] = []


def record(row: Row) -> None:
    """Add a row to this run's table (printed at the end, in the order recorded)."""
    _ROWS.append(row)


def recorded() -> list[Row]:
    return list(_ROWS)


def clear() -> None:
    _ROWS.clear()


def _cell(text: str | None) -> str:
    return "-" if not text else text.replace("|", "\\|")


def markdown(rows: list[Row]) -> str:
    lines = [
        "| part | demandscope | baseline in the same run | ratio | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {_cell(r.part)} | {_cell(r.figure)} | {_cell(r.baseline)} | {_cell(r.ratio)} "
        f"| {_cell(r.target)} | {r.verdict} |"
        for r in rows
    ]
    return "\n".join(lines)


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs > 0 else "-"


def per_second(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}/s"


# --- the machine and what else ran on it -----------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process (all its threads) from /proc; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _all_cpu() -> dict[int, tuple[str, float]]:
    taken: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat.rsplit(")", 1)[1].split()
        taken[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])))
    return taken


def busy_processes(seconds: float = 1.0, above: float = 0.05) -> list[tuple[str, int, float]]:
    """The processes that used more than ``above`` of a core over ``seconds`` (name, pid,
    share), busiest first: what else was running while the benches started."""
    import time

    if not Path("/proc/self/stat").exists():
        return []
    before = _all_cpu()
    time.sleep(seconds)
    after = _all_cpu()
    ticks = os.sysconf("SC_CLK_TCK") * seconds
    busy = [
        (name, pid, (used - before[pid][1]) / ticks)
        for pid, (name, used) in after.items()
        if pid in before and pid != os.getpid()
    ]
    return sorted((b for b in busy if b[2] > above), key=lambda b: -b[2])


def machine() -> str:
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return f"{cores} cores ({usable} usable), {cpu_model()}; load average {load_average()}"
