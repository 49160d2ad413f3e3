"""What a village's clusters did over a window: the measuring half of a village verdict,
shared by the evaluation (``evaluate``) and the monthly roll-ups (``rollups``) so both
count with the same code.

``f`` is anything with ``available`` (node -> available intervals over a span containing
the window), ``observed`` / ``unobserved`` (the watch and its complement), ``bridges``
(node -> continuity) and ``watched_in(window)``: the evaluation's facts or a month's."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from indicator import intervals as iv
from loa.timeutil import format_datetime


@dataclass
class Measured:
    """Per node ``[placed_ms, up_ms, seen_ms, bridged_ms]``; the first placed instant; the
    available-and-observed intervals of each node (their union is the village's covered
    time); the stretches nodes proved by continuity; the evidence sentences for them."""

    nodes: dict[str, list[int]] = field(default_factory=dict)
    first: int | None = None
    covered: list[list[iv.Interval]] = field(default_factory=list)
    bridges: list[list[iv.Interval]] = field(default_factory=list)
    continuity: list[dict] = field(default_factory=list)


def measure(window: list[iv.Interval], spans: list, f) -> Measured:
    """Each cluster placed in the village during ``window`` (a sorted list of intervals):
    placed, observed (watch + its proven continuity) and available-and-observed time."""
    out = Measured()
    if not window:
        return out
    by_node: dict[str, list[iv.Interval]] = defaultdict(list)
    for span in spans:
        by_node[span.member_id].append((span.start_ms, span.end_ms))
    watched_all = not f.unobserved  # the usual case: the controller watched throughout
    for node, placed in sorted(by_node.items()):
        up = f.available.get(node, [])
        if (
            len(window) == 1
            and len(placed) == 1
            and placed[0][0] <= window[0][0]
            and placed[0][1] >= window[0][1]
            and node not in f.bridges
        ):
            # Placed for the whole window (with roll-ups the window is often the few raw
            # days of a longer placement): what counts is the window itself, and the
            # node's intervals need clipping to it at most.
            placed = window
            seen, bridge = placed, []
            if up and (up[0][0] < window[0][0] or up[-1][1] > window[0][1]):
                up = iv.clip(up, *window[0])
            if not watched_all:
                seen = f.watched_in(window[0])
                up = iv.intersect(up, seen)
        else:
            placed = iv.intersect(window, iv.union(placed))
            if not placed:
                continue
            bridge = iv.intersect(f.bridges.get(node, []), placed) if f.bridges else []
            seen = (
                placed
                if watched_all
                else iv.intersect(placed, iv.union(f.observed, bridge) if bridge else f.observed)
            )
            up = iv.intersect(up, seen)
        first = placed[0][0]
        if out.first is None or first < out.first:
            out.first = first
        out.bridges.append(bridge)
        out.covered.append(up)
        bridged = (
            iv.total(iv.intersect(bridge, iv.intersect(placed, f.unobserved))) if bridge else 0
        )
        out.nodes[node] = [iv.total(placed), iv.total(up), iv.total(seen), bridged]
        if bridged:
            out.continuity.extend(
                {
                    "node_id": node,
                    "from_ms": a,
                    "to_ms": b,
                    "text": f"Cụm {node} chứng minh hoạt động liên tục "
                    f"{format_datetime(a)}–{format_datetime(b)} "
                    "(cùng boot_id, thời gian chạy bao trùm khoảng mất "
                    "giám sát)",
                }
                for a, b in iv.intersect(bridge, f.unobserved)
            )
    return out
