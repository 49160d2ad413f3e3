"""Reused verdict answers equal the raw verdicts (issue 16, item 7; ``indicator/answers.py``).

A property test on random histories: clusters that go up and down (late reports for days
long past included), airings played or not, watch spans (so gaps), continuity, an FM
station's attestation, a commune merged into another during the period (across a day
boundary), thresholds changed, asked again and again within the time bound, over a closed
period and over one still running. After every question the answer served must be exactly
the verdicts judged from the raw rows at the answer's own ``evaluated_ms``: so any write
the stamp missed would show as a difference.
"""

from __future__ import annotations

import itertools
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indicator.answers import AnswerCache, data_stamp
from indicator.evaluate import evaluate, evaluation_as_dict
from indicator.manual_inputs import add_attestation, update_thresholds
from indicator.periods import parse_period
from loa.timeutil import ms_to_dt
from tests.indicator.world import DAY, HOUR, World, ict

START = ict(2026, 11, 1)
PERIOD = "01/11/2026-10/11/2026"  # closed when asked after 11/11; running before
NODES = ("a1-n", "a2-n", "b1-n")
_seq = itertools.count()


def encode(doc: dict) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def build(db) -> dict:
    w = World(db, watched=False)
    w.watch(START - 30 * DAY, START + 2 * DAY)  # a gap from day 2 unless an op fills it
    a = w.commune("ls-a", "Xã A")
    b = w.commune("ls-b", "Xã B")
    fm = w.commune("ls-fm", "Xã FM", station_kind="fm")
    a1, a2 = w.village("a1", "Thôn 1", a), w.village("a2", "Thôn 2", a)
    b1 = w.village("b1", "Thôn 3", b)
    w.village("f1", "Thôn 4", fm)
    for node, vid in zip(NODES, (a1, a2, b1), strict=True):
        w.node(node, vid)
        w.transitions(node, [(START - DAY, True)])
    return {"world": w, "a": a, "b": b, "b1": b1}


op = st.one_of(
    st.tuples(
        st.just("transition"), st.sampled_from(NODES), st.integers(0, 10 * DAY - 1), st.booleans()
    ),
    st.tuples(
        st.just("airing"),
        st.sampled_from(NODES),
        st.integers(0, 10 * DAY - 1),
        st.sampled_from(["finished", "failed", "preempted", "sent"]),
    ),
    st.tuples(st.just("watch"), st.integers(0, 10 * DAY - 1), st.integers(HOUR, 3 * DAY)),
    st.tuples(
        st.just("continuity"),
        st.sampled_from(NODES),
        st.integers(2 * DAY, 9 * DAY),
        st.integers(HOUR, DAY),
    ),
    st.tuples(st.just("attest"), st.integers(0, 9)),
    # the merger falls across a day boundary: 23:00 on some day of the period
    st.tuples(st.just("merge"), st.integers(1, 8)),
    st.tuples(st.just("threshold"), st.sampled_from([0.5, 0.9, 0.95])),
    st.tuples(st.just("ask"), st.integers(0, 20_000)),
)


def apply(state: dict, s, o: tuple) -> None:
    w: World = state["world"]
    kind = o[0]
    if kind == "transition":
        _, node, at, up = o
        w.transitions(node, [(START + at, up)])
    elif kind == "airing":
        _, node, at, phase = o
        w.airing(START + at, {node: phase})
    elif kind == "watch":
        _, at, length = o
        w.watch(START + at, START + at + length, controller_id=f"ctl-{next(_seq)}")
    elif kind == "continuity":
        _, node, at, length = o
        w.continuity(node, START + at, START + at + length)
    elif kind == "attest":
        day = ms_to_dt(START + o[1] * DAY).date()
        add_attestation(
            s,
            "ls-fm",
            inspector="Thanh tra",
            attested_on=day,
            valid_until=day.replace(year=day.year + 1),
            at_ms=START + 40 * DAY,
        )
        s.commit()
    elif kind == "merge" and not state.get("merged"):
        at = START + o[1] * DAY + 23 * HOUR
        w.move_village(state["b1"], state["a"], at)
        w.retire_commune(state["b"], state["a"], at)
        state["merged"] = True
    elif kind == "threshold":
        update_thresholds(s, availability=o[1], by="test", at_ms=START)
        s.commit()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(op, min_size=1, max_size=14), running=st.booleans())
def test_reused_answers_equal_raw_verdicts(databases, tmp_path, ops, running):
    db = databases.create(tmp_path / f"answers-{next(_seq)}.db")
    try:
        state = build(db)
        cache = AnswerCache(ttl_ms=30_000)
        clock = START + (5 * DAY if running else 12 * DAY)
        served = 0
        with db.session() as s:
            for o in [*ops, ("ask", 0)]:
                if o[0] != "ask":
                    apply(state, s, o)
                    continue
                clock += o[1]

                def judge(at_ms: int) -> bytes:
                    return encode(
                        evaluation_as_dict(
                            evaluate(s, parse_period(PERIOD, now_ms=at_ms), now=at_ms)
                        )
                    )

                s.expire_all()  # read what the other sessions wrote
                body = cache.answer(s, ("verdicts", PERIOD), clock, judge)
                doc = json.loads(body)
                raw = json.loads(judge(doc["evaluated_ms"]))
                assert doc == raw, "a reused answer differs from the raw verdicts"
                served += 1
        assert served >= 1
    finally:
        databases.drop(db)


def test_the_stamp_changes_with_every_kind_of_row_a_verdict_reads(db):
    state = build(db)
    w: World = state["world"]
    with db.session() as s:
        seen = {data_stamp(s)}
        steps = [
            lambda: w.transitions("a1-n", [(START + DAY, False)]),  # late or not, a new row
            lambda: w.airing(START + 3 * HOUR, {"a1-n": "finished"}),
            lambda: w.watch(START + 5 * DAY, START + 6 * DAY, controller_id="ctl-x"),
            lambda: w.continuity("a2-n", START + 3 * DAY, START + 4 * DAY),
            lambda: apply(state, s, ("attest", 2)),
            lambda: apply(state, s, ("threshold", 0.8)),
            lambda: w.retire_commune(state["b"], state["a"], START + 4 * DAY),
            lambda: w.move_village(state["b1"], state["a"], START + 4 * DAY),
            lambda: w.rename("village", state["b1"], "Thôn Mới", START + 4 * DAY),
            lambda: w.node("a1-n", state["b1"], from_ms=START + 6 * DAY),
        ]
        for step in steps:
            step()
            s.expire_all()
            stamp = data_stamp(s)
            assert stamp not in seen, step
            seen.add(stamp)


def test_live_telemetry_dated_after_the_answer_keeps_it_and_a_late_row_drops_it(db):
    """Rule 2 of ``indicator.answers``: a live fleet's transitions (dated after the
    answer's ``evaluated_ms``) do not make every question be judged again; a transition
    for a time the answer already judged does."""
    w: World = build(db)["world"]
    cache = AnswerCache(ttl_ms=30_000)
    clock = START + 5 * DAY
    judged: list[int] = []
    with db.session() as s:

        def judge(at_ms: int) -> bytes:
            judged.append(at_ms)
            return encode(
                evaluation_as_dict(evaluate(s, parse_period(PERIOD, now_ms=at_ms), now=at_ms))
            )

        first = cache.answer(s, ("verdicts", PERIOD), clock, judge)
        w.transitions("a1-n", [(clock + 1_000, False)])  # live telemetry, after the answer
        w.watch(clock + 1_500, clock + 9_000, controller_id="ctl-live")
        s.expire_all()
        assert cache.answer(s, ("verdicts", PERIOD), clock + 2_000, judge) == first
        assert judged == [clock]
        w.transitions("a2-n", [(clock - DAY, False)])  # late: a day the answer judged
        s.expire_all()
        again = cache.answer(s, ("verdicts", PERIOD), clock + 3_000, judge)
        assert judged == [clock, clock + 3_000]
        assert again != first
