"""The demo history on the demo province: realistic enough that most communes pass, two fail
for a named village, and a wired/FM commune passes by attestation."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select

from controller.models import NodeTransition
from indicator.demo_history import seed_history
from indicator.evaluate import evaluate
from indicator.periods import parse_period
from loa.timeutil import ms_to_dt
from registry.demo import load_demo_province
from scheduler.models import Airing, AiringTarget
from tests.indicator.world import ict

NOW = ict(2026, 11, 20, 12)


def test_seeded_demo_province(db):
    load_demo_province(db)
    summary = seed_history(db, now_ms=NOW)
    assert not summary.skipped
    assert summary.start_ms <= ict(2026, 7, 1)  # the whole previous quarter is covered
    assert summary.nodes == 89  # commissioned clusters only
    assert summary.low_availability == ("ls-doican", "Thôn Nà Pàn")
    assert summary.low_aired == ("ls-hoacu", "Thôn Bản Hẻo")
    assert summary.attested == "ls-tumich"

    for key in ("last30", "2026-Q3"):
        with db.session() as s:
            e = evaluate(s, parse_period(key, now_ms=NOW), now=NOW)
        assert e.summary.text == "10/13 xã đạt chỉ tiêu truyền thanh cơ sở", key
        failing = {f["code"]: f["reasons"] for f in e.summary.failing}
        assert set(failing) == {"ls-doican", "ls-hoacu", "ls-vule"}
        assert failing["ls-doican"][0].startswith("Thôn Nà Pàn: khả dụng ")
        assert failing["ls-hoacu"] == [
            r for r in failing["ls-hoacu"] if r.startswith("Thôn Bản Hẻo: phát ")
        ]
        huule = next(c for c in e.communes if c.code == "ls-huule")
        assert [(p["name"], p["merged_on"]) for p in huule.predecessors] == [
            ("Yên Phúc", "01/07/2025")
        ]  # the demo's one merger of the 2025 reform
        assert e.districts == []  # after 01/07/2025: communes only
        tumich = next(c for c in e.communes if c.code == "ls-tumich")
        assert tumich.passed and tumich.manual
        assert all(e.aired_ms_by_language[k] > 0 for k in ("vi", "tay", "nung", "dao"))

    with db.session() as s:
        hours = Counter(ms_to_dt(slot).hour for slot in s.scalars(select(Airing.slot_ms)))
        phases = Counter(s.scalars(select(AiringTarget.phase)))
        transitions = s.scalar(select(func.count()).select_from(NodeTransition))
    assert set(hours) == {6, 17, 19}  # morning, evening bulletins; weekly province bulletin
    assert hours[6] > 1000 and hours[17] > 1000
    assert phases["preempted"] > 0 and phases["failed"] > 0 and phases["never_acked"] > 0
    assert phases["finished"] > 0.9 * sum(phases.values())

    again = seed_history(db, now_ms=NOW)
    assert again.skipped
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(NodeTransition)) == transitions
