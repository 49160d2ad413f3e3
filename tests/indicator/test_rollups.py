"""Monthly roll-ups give exactly the verdicts of the raw rows (issue 16, item 7;
``indicator/rollups.py``, docs/indicator.md section 7).

A property test on random histories: clusters placed mid-period and moved, villages moved
between communes, a commune merged, transitions before and inside the period, watch spans
with gaps, a cluster's proven continuity, airings recorded per village (and some written
without the village, attributed through the register), over a half year split at
15/02/2026 by the criteria sets. The whole answer (coverage, verdicts, every figure and
sentence) must be equal with and without roll-ups, the first time (months computed and
stored) and the second (months read back), province-wide and for one commune.

Then late rows: a transition, a proof-of-play update and an airing for a closed, already
rolled-up month must change the answer exactly as the raw rows do.
"""

from __future__ import annotations

import itertools
import threading
import time
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from controller.models import NodeTransition
from indicator.evaluate import evaluate, evaluation_as_dict
from indicator.manual_inputs import update_thresholds
from indicator.models import IndicatorRollupMonth
from indicator.periods import day_range
from scheduler.models import Airing, AiringTarget
from tests.indicator.world import DAY, HOUR, World, ict

START = ict(2026, 1, 1)
END = ict(2026, 7, 1)
NOW = ict(2026, 7, 3)
PERIOD = day_range(date(2026, 1, 1), date(2026, 6, 30))
NODES = ("n1", "n2", "n3", "n4")
PHASES = ("finished", "failed", "preempted", "sent", "never_acked")
_seq = itertools.count()

instant = st.integers(START - 20 * DAY, END + 2 * DAY)
history = st.fixed_dictionaries(
    {
        "placed_from": st.lists(
            st.one_of(st.just(0), st.integers(START - DAY, END - DAY)), min_size=4, max_size=4
        ),
        "moved": st.one_of(st.none(), st.integers(START + DAY, END - DAY)),
        "village_moved": st.one_of(st.none(), st.integers(START + DAY, END - DAY)),
        "merged": st.one_of(st.none(), st.integers(START + DAY, END - DAY)),
        "transitions": st.lists(
            st.lists(st.tuples(instant, st.booleans()), max_size=12), min_size=4, max_size=4
        ),
        "watch": st.one_of(
            st.just([(0, END + 30 * DAY)]),
            st.lists(st.tuples(instant, st.integers(HOUR, 60 * DAY)), min_size=1, max_size=4),
        ),
        "continuity": st.one_of(st.none(), st.tuples(instant, st.integers(HOUR, 5 * DAY))),
        "airings": st.lists(
            st.tuples(
                st.integers(START - DAY, END + DAY),
                st.lists(
                    st.tuples(st.sampled_from(NODES), st.sampled_from(PHASES)),
                    min_size=1,
                    max_size=4,
                    unique_by=lambda t: t[0],
                ),
                st.booleans(),  # recorded with village and commune (else: the register)
                st.sampled_from(["aired", "cancelled"]),
            ),
            max_size=30,
        ),
        "weekly": st.booleans(),
        "coverage": st.sampled_from([0.9, 0.5, 0.1]),
    }
)


def build(db, h: dict) -> dict:
    w = World(db, watched=False)
    a = w.commune("ls-a", "Xã A")
    b = w.commune("ls-b", "Xã B")
    c = w.commune("ls-c", "Xã C")
    v1, v2 = w.village("v1", "Thôn 1", a), w.village("v2", "Thôn 2", a)
    v3, v4 = w.village("v3", "Thôn 3", b), w.village("v4", "Thôn 4", c)
    village = dict(zip(NODES, (v1, v1, v3, v4), strict=True))
    commune = {v1: a, v2: a, v3: b, v4: c}
    for node, start in zip(NODES, h["placed_from"], strict=True):
        if node == "n2" and h["moved"] is not None and h["moved"] > start:
            w.node(node, v1, from_ms=start, to_ms=h["moved"])
            w.node(node, v2, from_ms=h["moved"])
        else:
            w.node(node, village[node], from_ms=start)
    if h["village_moved"] is not None:
        w.move_village(v3, a, h["village_moved"])
    if h["merged"] is not None:
        w.retire_commune(c, b, h["merged"])
    for node, changes in zip(NODES, h["transitions"], strict=True):
        w.transitions(node, sorted(changes))
    for lo, length in h["watch"]:
        w.watch(lo, lo + length)
    if h["continuity"] is not None:
        w.continuity("n1", h["continuity"][0], sum(h["continuity"]))
    slots = [(slot, t, rec, st_) for slot, t, rec, st_ in h["airings"]]
    if h["weekly"]:  # a bulletin heard everywhere each week, so the weekly rule can pass
        slots += [
            (d, [(n, "finished") for n in NODES], True, "aired")
            for d in range(START + 7 * HOUR, END, 3 * DAY)
        ]
    with db.session() as s:
        for slot, targets, recorded, status in slots:
            row = Airing(
                broadcast_id=w._broadcast(s),
                slot_ms=slot,
                duration_ms=20 * 60_000,
                language="vi",
                status=status,
            )
            s.add(row)
            s.flush()
            for node, phase in targets:
                where = (
                    {"village_id": village[node], "commune_id": commune[village[node]]}
                    if recorded
                    else {}
                )
                s.add(
                    AiringTarget(
                        airing_id=row.id,
                        node_id=node,
                        phase=phase,
                        started_at_ms=slot if phase in ("finished", "preempted") else None,
                        cmd_id=f"c{next(_seq)}",
                        **where,
                    )
                )
    with db.session() as s:
        update_thresholds(s, coverage=h["coverage"], by="test")
    return {"a": a, "b": b}


def answers(db, scope: str | None = None) -> tuple[dict, dict]:
    with db.session() as s:
        raw = evaluation_as_dict(evaluate(s, PERIOD, now=NOW, scope=scope))
    with db.session() as s:
        rolled = evaluation_as_dict(evaluate(s, PERIOD, now=NOW, scope=scope, rollups=True))
    return raw, rolled


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(h=history)
def test_verdicts_from_rollups_equal_verdicts_from_raw_rows(databases, tmp_path, h):
    db = databases.create(tmp_path / f"rollups-{next(_seq)}.db")
    try:
        ids = build(db, h)
        raw, rolled = answers(db)
        assert rolled == raw  # first time: the months are computed (and stored)
        raw, rolled = answers(db)
        assert rolled == raw  # second time: read back from the store
        raw, rolled = answers(db, f"commune:{ids['a']}")
        assert rolled == raw
    finally:
        databases.drop(db)


def test_late_rows_for_a_closed_month_recompute_its_rollup(db):
    """A month rolled up, then a transition, a proof-of-play update and an airing arrive
    for it late (written by any process: database triggers count them). The next answer
    from roll-ups equals the raw rows' and differs from the one before."""
    w = World(db)
    a = w.commune("ls-a", "Xã A")
    v1 = w.village("v1", "Thôn 1", a)
    w.node("n1", v1)
    w.transitions("n1", [(START - DAY, True)])
    with db.session() as s:
        for d in range(START + 7 * HOUR, END, DAY):
            row = Airing(
                broadcast_id=w._broadcast(s), slot_ms=d, duration_ms=600_000, status="aired"
            )
            s.add(row)
            s.flush()
            s.add(
                AiringTarget(
                    airing_id=row.id,
                    node_id="n1",
                    phase="finished",
                    started_at_ms=d,
                    cmd_id=f"c{next(_seq)}",
                    village_id=v1,
                    commune_id=a,
                )
            )
    raw, rolled = answers(db)
    assert rolled == raw and raw["communes"][0]["verdict"] == "pass"
    with db.session() as s:
        months = s.scalar(select(func.count()).select_from(IndicatorRollupMonth))
    assert months == 7  # Jan, Feb cut at 15/02 by the criteria sets, Mar-Jun

    # A late transition in March: the cluster was down from 10/03 until 01/05. Its month
    # and April (no transition of its own) must both change.
    with db.session() as s:
        for at, flag in ((ict(2026, 3, 10), False), (ict(2026, 5, 1), True)):
            s.add(
                NodeTransition(
                    node_id="n1",
                    at_ms=at,
                    from_state="online" if not flag else "offline",
                    to_state="offline" if not flag else "online",
                    available=flag,
                    cause="late",
                )
            )
    raw2, rolled2 = answers(db)
    assert rolled2 == raw2
    assert raw2["communes"][0]["verdict"] == "fail"
    assert (
        raw2["communes"][0]["villages"][0]["availability"]
        < raw["communes"][0]["villages"][0]["availability"]
    )

    # A proof of play updated in place for a day of January, and an extra airing in June.
    with db.session() as s:
        t = s.scalars(
            select(AiringTarget)
            .join(Airing, Airing.id == AiringTarget.airing_id)
            .where(Airing.slot_ms < ict(2026, 1, 20))
        ).all()
        for row in t:
            row.phase, row.started_at_ms = "failed", None
        late = Airing(
            broadcast_id=w._broadcast(s), slot_ms=ict(2026, 6, 3, 12), duration_ms=1, status="aired"
        )
        s.add(late)
        s.flush()
        s.add(
            AiringTarget(
                airing_id=late.id,
                node_id="n1",
                phase="finished",
                started_at_ms=late.slot_ms,
                cmd_id="late",
                village_id=v1,
                commune_id=a,
            )
        )
    raw3, rolled3 = answers(db)
    assert rolled3 == raw3
    part1 = raw3["split"]["parts"][0]["communes"][0]["villages"][0]
    assert part1["played"] < raw2["split"]["parts"][0]["communes"][0]["villages"][0]["played"]
    assert raw3["communes"][0]["airings"] == raw2["communes"][0]["airings"] + 1


def test_two_writers_raising_the_same_days_in_opposite_orders_do_not_deadlock(db):
    """PostgreSQL: the day counters are rows locked until commit. Writer 1 holds day 1 and
    goes on to day 2; writer 2's one statement has rows of day 2 then day 1. Per-row
    triggers made writer 2 take day 2 and wait for day 1: a deadlock (one writer aborted).
    The statement-level triggers take a statement's days in ascending order, so writer 2
    waits for day 1 without holding day 2, and both commit (indicator/models.py)."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: nothing to deadlock")
    d1 = ict(2026, 10, 5, 12)
    d2 = d1 + DAY
    row = (
        "INSERT INTO node_transition (node_id, at_ms, from_state, to_state, available, cause) "
        "VALUES "
    )
    one = "('w-{n}', {at}, 'online', 'offline', false, 'test')"
    outcome: dict[str, object] = {}
    pid: list[int] = []

    def writer_2() -> None:
        try:
            with db.engine.connect() as c, c.begin():
                pid.append(c.execute(text("SELECT pg_backend_pid()")).scalar_one())
                c.execute(text(row + one.format(n=2, at=d2) + ", " + one.format(n=2, at=d1)))
            outcome["2"] = "committed"
        except Exception as exc:  # noqa: BLE001 - the failure is what the test reports
            outcome["2"] = repr(exc)

    with db.engine.connect() as c1:
        tx = c1.begin()
        c1.execute(text(row + one.format(n=1, at=d1)))  # writer 1 holds day 1
        t = threading.Thread(target=writer_2)
        t.start()
        deadline = time.monotonic() + 10
        waiting = False
        while time.monotonic() < deadline and not waiting:  # writer 2 waits for day 1
            time.sleep(0.05)
            waiting = bool(pid) and bool(
                c1.execute(
                    text(
                        "SELECT 1 FROM pg_stat_activity WHERE pid = :p AND wait_event_type = 'Lock'"
                    ),
                    {"p": pid[0]},
                ).first()
            )
        assert waiting, "writer 2 never waited for writer 1's day"
        try:
            c1.execute(text(row + one.format(n=1, at=d2)))  # writer 1 goes on to day 2
            tx.commit()
            outcome["1"] = "committed"
        except Exception as exc:  # noqa: BLE001
            tx.rollback()
            outcome["1"] = repr(exc)
        t.join(15)
    assert outcome == {"1": "committed", "2": "committed"}
    with db.session() as s:
        got = dict(s.execute(text("SELECT day, version FROM indicator_day_version")).all())
    day = lambda ms: (ms + 7 * HOUR) // DAY  # noqa: E731
    assert got[day(d1)] == 2 and got[day(d2)] == 2


def test_processes_starting_together_leave_the_triggers_in_place(db):
    """Every process runs ``create_all`` at start. On PostgreSQL that used to drop and
    re-create the triggers each time: the API and three controllers starting together
    failed on each other (CI: a cluster's controller never came up), and a row written
    while they were gone did not invalidate its month. Now the triggers present are left
    alone (the same objects before and after), and four starts at once all succeed."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite: CREATE TRIGGER IF NOT EXISTS, nothing is dropped")
    query = text(
        "SELECT tgname, oid FROM pg_trigger WHERE NOT tgisinternal "
        "AND tgrelid IN ('node_transition'::regclass, 'airing'::regclass, "
        "'airing_target'::regclass) ORDER BY tgname"
    )
    with db.engine.connect() as c:
        before = c.execute(query).all()
    assert len(before) == 9
    errors: list[BaseException] = []

    def start() -> None:
        try:
            db.create_all()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    starters = [threading.Thread(target=start) for _ in range(4)]
    for t in starters:
        t.start()
    for t in starters:
        t.join(60)
    assert errors == []
    with db.engine.connect() as c:
        assert c.execute(query).all() == before
