"""What a failure demand traces back to, as a bounded label for Prometheus.

The classifier says whether a failure demand was caused by a case or by an earlier demand;
the reference itself (a case or demand id) would be an unbounded label, so only its kind is
kept, and a failure demand with no cause found is ``untraced``.
"""

from __future__ import annotations

from shared.events import CausedBy

UNTRACED = "untraced"
CAUSES = ("case", "demand", UNTRACED)


def cause_label(caused_by: CausedBy | None) -> str:
    return caused_by.kind if caused_by is not None else UNTRACED
