"""The figures of an airing's proof, computed in one place.

An alert's page and proof file (``AlertService._airing_proof``), the period's evidence folder
(``alerts.evidence.period_tables``), the filed report's lines (``period_lines``) and the
check of an evidence folder (``alerts.evidence.check_alert_tables``) all state the same
figures: how many clusters were targeted, how many started, the first start, and when 50 %
and 99 % of the targeted clusters had started. They all call ``start_figures``, so a folder
recomputed from its raw cluster rows gives the very numbers the writer wrote, and an
inspector's check cannot drift from the page by a second formula.

Pure: no database, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

# The columns of ``alert_airings.csv`` derived from the per-cluster rows, in file order.
DERIVED = (
    "targeted",
    "started",
    "first_started_ms",
    "first_started_s",
    "p50_ms",
    "p50_s",
    "p99_ms",
    "p99_s",
)


def start_figures(targeted: int, started_ms: Iterable[int], received_ms: int) -> dict[str, Any]:
    """The figures of one airing: ``targeted`` clusters, the start times of those that
    started, seconds counted from the alert's reception. The q-th fraction is reached at the
    ceil(q x targeted)-th start (None while fewer have started: 2 of 5 is not half)."""
    started = sorted(started_ms)
    n = targeted

    def at_fraction(q: float) -> int | None:
        k = max(1, math.ceil(q * n))
        return started[k - 1] if n and len(started) >= k else None

    first = started[0] if started else None
    p50, p99 = at_fraction(0.5), at_fraction(0.99)

    def seconds(ms: int | None) -> float | None:
        return round((ms - received_ms) / 1000, 3) if ms else None

    return {
        "targeted": n,
        "started": len(started),
        "first_started_ms": first,
        "first_started_s": seconds(first),
        "p50_ms": p50,
        "p50_s": seconds(p50),
        "p99_ms": p99,
        "p99_s": seconds(p99),
    }
