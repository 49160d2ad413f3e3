"""Observed time only (issue 16): availability is a share of what Loa watched, coverage below
the province's threshold is "không đủ dữ liệu", and time before a cluster was in service is
"chưa đưa vào sử dụng". Boundaries are exact, on observed time."""

from __future__ import annotations

import pytest

from indicator.evaluate import evaluate, evaluation_as_dict
from indicator.manual_inputs import update_thresholds
from indicator.periods import parse_period
from tests.indicator.world import DAY, World, ict

Q3_START, Q3_END = ict(2026, 7, 1), ict(2026, 10, 1)
Q3_MS = Q3_END - Q3_START
AFTER_Q3 = ict(2026, 10, 5)


@pytest.fixture
def unwatched(db) -> World:
    """A world whose watch each test states itself."""
    return World(db, watched=False)


def _commune(world: World, code: str, node: str, *, placed_ms: int = 0) -> str:
    """Commune ``code`` with one village and one cluster aired twice a day; returns the
    cluster's id."""
    cid = world.commune(code, f"Xã {code}")
    vid = world.village(f"{code}-1", f"Bản {code}", cid)
    world.node(node, vid, from_ms=placed_ms)
    world.daily_airings(max(Q3_START, placed_ms), Q3_END, [node])
    return node


def _judge(db, key: str = "2026-Q3") -> dict:
    with db.session() as s:
        e = evaluate(s, parse_period(key, now_ms=AFTER_Q3), now=AFTER_Q3)
    return {c["code"]: c for c in evaluation_as_dict(e)["communes"]}


def test_availability_boundary_is_exact_on_observed_time(unwatched, db):
    """The controller was stopped 01/08-10/08 (9 days; coverage 83/92 = 90.2%). An outage
    inside the gap counts for nothing; outside it, 10.0% of observed time still passes and
    10.1% fails."""
    gap_from, gap_to = ict(2026, 8, 1), ict(2026, 8, 10)
    unwatched.watch(Q3_START - DAY, gap_from)
    unwatched.watch(gap_to, Q3_END + DAY)
    observed = Q3_MS - (gap_to - gap_from)
    down_900 = observed // 10  # available exactly 90.0% of observed time
    down_899 = observed * 101 // 1000  # available 89.9%
    for code, down in (("P", down_900), ("F", down_899)):
        node = _commune(unwatched, code, f"n-{code}")
        t = ict(2026, 9, 1)
        unwatched.transitions(
            node,
            [
                (Q3_START - DAY, True),
                (gap_from + DAY, False),
                (gap_to - DAY, True),  # in gap
                (t, False),
                (t + down, True),
            ],
        )
    verdicts = _judge(db)
    p, f = verdicts["P"], verdicts["F"]
    assert p["villages"][0]["availability"] == 0.9
    assert (p["verdict"], p["passed"]) == ("pass", True)
    assert p["coverage"] == pytest.approx(observed / Q3_MS)
    assert p["coverage_text"] == "đã giám sát 90,2% thời gian kỳ báo cáo"
    assert (f["verdict"], f["passed"]) == ("fail", False)
    assert f["villages"][0]["reasons"][0]["text"] == "Thôn Bản F: khả dụng 89,9% < 90%"


@pytest.mark.parametrize(
    ("gap_ms", "verdict"),
    [
        (Q3_MS // 10, "pass"),  # observed exactly 90.0% of the quarter
        (Q3_MS * 101 // 1000, "insufficient_data"),  # 89.9%
    ],
)
def test_coverage_boundary_is_exact(unwatched, db, gap_ms, verdict):
    gap_from = ict(2026, 8, 1)
    unwatched.watch(Q3_START, gap_from)
    unwatched.watch(gap_from + gap_ms, Q3_END)
    node = _commune(unwatched, "C", "n-c")
    unwatched.transitions(node, [(Q3_START - DAY, True)])
    c = _judge(db)["C"]
    assert c["verdict"] == verdict
    village = c["villages"][0]
    assert village["verdict"] == verdict
    if verdict == "insufficient_data":
        assert c["passed"] is False and village["passed"] is None
        assert village["reasons"][0]["text"] == (
            "Thôn Bản C: chỉ giám sát được 89,9% thời gian sử dụng trong kỳ (cần 90%): "
            "không đủ dữ liệu"
        )
        assert village["availability"] == 1.0  # measured, but on too little time


def test_province_sets_the_coverage_threshold(unwatched, db):
    unwatched.watch(Q3_START, Q3_START + Q3_MS // 2)
    node = _commune(unwatched, "H", "n-h")
    unwatched.transitions(node, [(Q3_START - DAY, True)])

    assert _judge(db)["H"]["verdict"] == "insufficient_data"
    with db.session() as s:
        update_thresholds(s, coverage=0.5, by="tinh")
    assert _judge(db)["H"]["verdict"] == "pass"


def test_gap_a_node_proved_it_ran_through_is_observed_for_it_alone(unwatched, db):
    gap_from, gap_to = ict(2026, 8, 1), ict(2026, 8, 20)
    unwatched.watch(Q3_START, gap_from)
    unwatched.watch(gap_to, Q3_END)
    for code in ("A", "B"):
        node = _commune(unwatched, code, f"n-{code}")
        unwatched.transitions(node, [(Q3_START - DAY, True)])
    unwatched.continuity("n-A", gap_from - 30_000, gap_to + 5_000)
    verdicts = _judge(db)
    a, b = verdicts["A"], verdicts["B"]
    assert (a["verdict"], a["coverage"]) == ("pass", 1.0)
    evidence = a["villages"][0]["continuity"]
    assert [e["node_id"] for e in evidence] == ["n-A"]
    assert evidence[0]["text"].startswith("Cụm n-A chứng minh hoạt động liên tục 01/08/2026")
    assert b["verdict"] == "insufficient_data"
    assert b["coverage"] == pytest.approx(1 - (gap_to - gap_from) / Q3_MS)


def test_cluster_registered_mid_period_is_judged_from_then(world, db):
    """Mai Pha's first cluster was placed on 15/08: the weeks before are not in service
    (no failed week, no 0% availability), and the verdict says from when it counted."""
    placed = ict(2026, 8, 15)
    node = _commune(world, "M", "n-m", placed_ms=placed)
    world.transitions(node, [(placed + 3_600_000, True)])
    c = _judge(db)["M"]
    assert (c["verdict"], c["passed"]) == ("pass", True)
    assert c["in_service_from"] == "15/08/2026"
    assert c["weeks"][0]["from"] == "15/08/2026"
    village = c["villages"][0]
    assert village["in_service_from"] == "15/08/2026"
    assert village["availability"] == pytest.approx(1 - 3_600_000 / (Q3_END - placed))
    assert "đưa vào sử dụng từ 15/08/2026" in village["reasons"][0]["text"]


def test_commune_whose_first_cluster_comes_after_the_period_is_not_in_service(world, db):
    node = _commune(world, "L", "n-l", placed_ms=ict(2026, 11, 2))
    world.transitions(node, [(ict(2026, 11, 2), True)])
    _commune(world, "K", "n-k")
    world.transitions("n-k", [(Q3_START - DAY, True)])
    with db.session() as s:
        e = evaluate(s, parse_period("2026-Q3", now_ms=AFTER_Q3), now=AFTER_Q3)
    c = next(v for v in e.communes if v.code == "L")
    assert (c.verdict, c.passed) == ("not_in_service", False)
    assert c.reasons[0].text == (
        "Đài IP của xã chưa đưa vào sử dụng trong kỳ (cụm loa đầu tiên từ 02/11/2026)"
    )
    assert e.summary.text == "1/2 xã đạt chỉ tiêu truyền thanh cơ sở; 1 xã chưa đưa vào sử dụng"
    assert e.summary.failed == 0 and e.summary.not_in_service == 1
