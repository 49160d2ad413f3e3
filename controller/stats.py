"""What a running controller reports about itself: ingest lag and a stats file.

A controller process has no UI of its own (``loa controller``), yet operators and
``bench/fleet.py`` need to see, per process, how far behind the fleet it is, how much it took
from MQTT and handed on, and whether it leads. The lag histogram is cumulative with fixed
bounds so that two snapshots can be subtracted for a window and histograms of several
controllers can be added.
"""

from __future__ import annotations

from bisect import bisect_left

LAG_BOUNDS_MS = (
    10,
    25,
    50,
    100,
    200,
    300,
    500,
    750,
    1000,
    1500,
    2000,
    3000,
    5000,
    10_000,
    30_000,
    60_000,
)


class LagHistogram:
    """Counts of ``lag <= bounds[i]``; the last count is everything above the last bound."""

    __slots__ = ("bounds", "counts")

    def __init__(self, bounds: tuple[int, ...] = LAG_BOUNDS_MS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)

    def observe(self, lag_ms: int) -> None:
        self.counts[bisect_left(self.bounds, lag_ms)] += 1

    def as_dict(self) -> dict[str, list[int]]:
        return {"bounds": list(self.bounds), "counts": list(self.counts)}


def quantile_ms(hist: dict[str, list[int]], q: float) -> int | None:
    """Upper bound of the bucket holding quantile ``q`` (None when empty; -1 = above all)."""
    total = sum(hist["counts"])
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for bound, count in zip([*hist["bounds"], -1], hist["counts"], strict=True):
        seen += count
        if seen >= rank:
            return bound
    return -1
