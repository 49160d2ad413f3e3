"""The database's grouping of proof-of-play rows equals grouping the raw targets by hand
(issue 16, item 7; ``indicator/evaluate.py`` ``_aimed_played`` and ``_heard``).

The two aggregations reduce recorded targets per (commune, village, airing) and per
(airing, commune) along covering indexes (migration 0015), then merge targets attributed
through the register. A property test on random airings: several clusters per village,
every phase (preempted before and after starting included), cancelled airings, airings
not over yet, targets recorded with the commune and village of dispatch time (which may
differ from today's register: a cluster moved since), targets recorded without them, and
both kinds mixed within one airing and one village. Asked province-wide (the SQLite plan
pinned to the indexes) and for chosen communes (the planner's own plan), the counts and
the airings heard must be exactly those of the raw rows reduced in Python.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indicator import evaluate as ev
from indicator.sqlstream import stream_rows
from indicator.vn import language_key
from scheduler.models import Airing, AiringTarget
from tests.indicator.world import DAY, HOUR, World, ict

START = ict(2026, 11, 1)
END = START + 10 * DAY
NODES = ("a1-n1", "a1-n2", "a2-n", "b1-n")
PHASES = ("finished", "failed", "preempted", "preempted-before-start", "sent", "pending", "started")
_seq = itertools.count()

target = st.tuples(
    st.sampled_from(NODES),
    st.sampled_from(PHASES),
    st.sampled_from(["register", "recorded", "elsewhere"]),
)
airing = st.tuples(
    st.integers(-DAY, 11 * DAY),
    st.sampled_from(["aired", "cancelled"]),
    st.integers(60_000, 2 * HOUR),
    st.sampled_from(["vi", "tay", "nung"]),
    st.lists(target, min_size=1, max_size=5, unique_by=lambda t: t[0]),
)


def build(db) -> dict:
    w = World(db)
    a = w.commune("ls-a", "Xã A")
    b = w.commune("ls-b", "Xã B")
    a1, a2 = w.village("a1", "Thôn 1", a), w.village("a2", "Thôn 2", a)
    b1 = w.village("b1", "Thôn 3", b)
    for node, vid in zip(NODES, (a1, a1, a2, b1), strict=True):
        w.node(node, vid)
    return {
        "world": w,
        "a": a,
        "b": b,
        "where": {"a1-n1": (a, a1), "a1-n2": (a, a1), "a2-n": (a, a2), "b1-n": (b, b1)},
        "elsewhere": (b, b1),
        "elsewhere_b": (a, a2),
    }


def write_airing(db, state: dict, spec: tuple) -> None:
    slot, status, duration, language, targets = spec
    with db.session() as s:
        row = Airing(
            broadcast_id=state["world"]._broadcast(s),
            slot_ms=START + slot,
            duration_ms=duration,
            language=language,
            status=status,
        )
        s.add(row)
        s.flush()
        for node, phase, attribution in targets:
            started = row.slot_ms if phase in ("finished", "preempted", "started") else None
            if phase == "preempted-before-start":
                phase = "preempted"
            where: dict = {}
            if attribution == "recorded":
                where = dict(zip(("commune_id", "village_id"), state["where"][node], strict=True))
            elif attribution == "elsewhere":  # dispatched while placed in another village
                other = state["elsewhere"] if node != "b1-n" else state["elsewhere_b"]
                where = dict(zip(("commune_id", "village_id"), other, strict=True))
            s.add(
                AiringTarget(
                    airing_id=row.id,
                    node_id=node,
                    phase=phase,
                    started_at_ms=started,
                    cmd_id=f"c{next(_seq)}",
                    **where,
                )
            )


def by_hand(session, now: int, commune_ids: list[int] | None):
    """The raw attributed targets (one row each), reduced in Python."""
    sql, params = ev._target_query(session, ev.TARGET_ROWS_SQL, START, END, now, commune_ids)
    airings: dict[tuple[int, int], set[int]] = defaultdict(set)
    played: dict[tuple[int, int], set[int]] = defaultdict(set)
    heard: dict[int, set[tuple]] = defaultdict(set)
    for c, v, aid, p, slot, duration, language in stream_rows(session, sql, params):
        airings[(c, v)].add(aid)
        if p == 1:
            played[(c, v)].add(aid)
            heard[c].add((aid, slot, duration or 0, language_key(language)))
    return (
        {k: (len(ids), len(played[k])) for k, ids in airings.items()},
        {c: sorted(rows) for c, rows in heard.items()},
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(airings=st.lists(airing, min_size=1, max_size=12), now=st.integers(2 * DAY, 12 * DAY))
def test_grouped_targets_equal_raw_targets_reduced_by_hand(
    databases, tmp_path, monkeypatch, airings, now
):
    db = databases.create(tmp_path / f"aggregation-{next(_seq)}.db")
    try:
        state = build(db)
        for spec in airings:
            write_airing(db, state, spec)
        with db.session() as s:
            for commune_ids in (None, [state["a"]], [state["a"], state["b"]]):
                window = (START, END, START + now, commune_ids)
                aimed_played, heard = by_hand(s, START + now, commune_ids)
                # Both SQLite walks of the per-village count: along the targets' index
                # (a long window) and from the window's airings (edge days of a year).
                for short in (False, True):
                    monkeypatch.setattr(ev, "_short_window", lambda *_a, short=short: short)
                    assert ev._aimed_played(s, *window) == aimed_played
                got = ev._heard(s, *window)
                assert {c: sorted(rows) for c, rows in got.items()} == heard
                assert all(len(rows) == len(set(rows)) for rows in got.values())
    finally:
        databases.drop(db)


def test_the_province_wide_plan_walks_the_covering_indexes(db):
    """On SQLite the province-wide statements are pinned to the two indexes (else a year
    sorts millions of rows); the hint is given only where the indexes exist."""
    world = World(db)
    world.airing(START + HOUR, {})
    with db.session() as s:
        sql, _ = ev._target_query(s, ev._HEARD_SQL, START, END, END, None)
        if db.engine.dialect.name == "sqlite":
            assert "INDEXED BY ix_airing_target_outcome" in sql
            assert (
                "INDEXED BY ix_airing_target_village_outcome"
                in ev._target_query(s, ev._PER_VILLAGE_SQL, START, END, END, None)[0]
            )
            # A window holding under a fifth of the airings stored walks from its airings.
            short, _ = ev._target_query(s, ev._PER_VILLAGE_SQL, END, END + DAY, END + DAY, None)
            assert (
                "FROM airing a CROSS JOIN airing_target t INDEXED BY ix_airing_target_outcome"
                in short
            )
        else:
            assert "INDEXED BY" not in sql
        scoped, _ = ev._target_query(s, ev._HEARD_SQL, START, END, END, [1])
        assert "INDEXED BY" not in scoped
