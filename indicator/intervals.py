"""Sorted, disjoint half-open intervals ``[a, b)`` of epoch milliseconds.

Hand-written rather than a library (``portion`` was considered): the evaluation of a
province handles tens of thousands of short lists, and plain tuples in a sweep are several
times faster than interval objects while the operations needed are only these six."""

from __future__ import annotations

from collections.abc import Iterable

Interval = tuple[int, int]


def total(intervals: Iterable[Interval]) -> int:
    return sum(b - a for a, b in intervals)


def clip(intervals: list[Interval], lo: int, hi: int) -> list[Interval]:
    out = []
    for a, b in intervals:
        a, b = max(a, lo), min(b, hi)
        if b > a:
            out.append((a, b))
    return out


def intersect(xs: list[Interval], ys: list[Interval]) -> list[Interval]:
    """Both inputs sorted and disjoint; a linear two-pointer walk."""
    out: list[Interval] = []
    i = j = 0
    while i < len(xs) and j < len(ys):
        a, b = max(xs[i][0], ys[j][0]), min(xs[i][1], ys[j][1])
        if b > a:
            out.append((a, b))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out


def union(*lists: list[Interval]) -> list[Interval]:
    """Merge any number of lists; touching intervals join (``[0,5)`` + ``[5,9)`` = ``[0,9)``)."""
    nonempty = [lst for lst in lists if lst]
    if len(nonempty) == 1:
        return nonempty[0]
    items = sorted(iv for lst in nonempty for iv in lst)
    out: list[Interval] = []
    for a, b in items:
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def subtract(window: list[Interval], holes: list[Interval]) -> list[Interval]:
    """``window`` minus the sorted, disjoint ``holes``."""
    if not holes:
        return window
    out: list[Interval] = []
    for a, b in window:
        at = a
        for h0, h1 in holes:
            if h1 <= at or h0 >= b:
                continue
            if h0 > at:
                out.append((at, h0))
            at = max(at, h1)
        if b > at:
            out.append((at, b))
    return out


def complement(intervals: list[Interval], lo: int, hi: int) -> list[Interval]:
    """What of ``[lo, hi)`` the sorted ``intervals`` leave uncovered (the unobserved time
    of a watch, the raw days around stored months)."""
    return subtract([(lo, hi)], intervals) if hi > lo else []
