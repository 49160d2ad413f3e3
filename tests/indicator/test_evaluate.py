"""Indicator 8.3 verdicts on constructed histories, at the exact boundaries a province signs."""

from __future__ import annotations

from datetime import date

import pytest

from indicator.availability import availability
from indicator.errors import InvalidInputError
from indicator.evaluate import evaluate, evaluation_as_dict
from indicator.manual_inputs import add_attestation, current_thresholds, update_thresholds
from indicator.models import ProvinceIndicatorSettings
from indicator.periods import parse_period
from tests.indicator.world import DAY, HOUR, ict

Q3_START, Q3_END = ict(2026, 7, 1), ict(2026, 10, 1)
Q3_MS = Q3_END - Q3_START
AFTER_Q3 = ict(2026, 10, 15, 9)


def _outages(start_ms: int, total_down_ms: int, pieces: int = 25) -> list[tuple[int, bool]]:
    """Online since before the period, then ``pieces`` equal daytime outages (07:00 ICT on,
    between the 06:00 and 17:00 bulletins) adding up to exactly ``total_down_ms``."""
    assert total_down_ms % pieces == 0
    length = total_down_ms // pieces
    assert length < 9 * HOUR
    changes = [(start_ms - DAY, True)]
    for d in range(pieces):
        down = start_ms + d * DAY + 7 * HOUR
        changes += [(down, False), (down + length, True)]
    return changes


def _commune_with_one_village(
    world, code: str, village: str, node: str, changes: list[tuple[int, bool]]
) -> tuple[int, int]:
    cid = world.commune(code, f"Xã {code}")
    vid = world.village(f"{code}-V1", village, cid)
    world.node(node, vid)
    world.transitions(node, changes)
    world.daily_airings(Q3_START, Q3_END, [node])
    return cid, vid


def _by_code(evaluation):
    return {c.code: c for c in evaluation.communes}


def test_village_at_89_9_percent_fails_and_at_90_0_percent_passes(world, db):
    _commune_with_one_village(world, "A", "Bản Cắm", "n-a", _outages(Q3_START, Q3_MS * 101 // 1000))
    _commune_with_one_village(world, "B", "Nà Phặc", "n-b", _outages(Q3_START, Q3_MS // 10))
    with db.session() as s:
        assert availability(s, "n-b", Q3_START, Q3_END) == pytest.approx(0.9, abs=1e-12)
        result = _by_code(evaluate(s, parse_period("2026-Q3", now_ms=AFTER_Q3), now=AFTER_Q3))
    a, b = result["A"], result["B"]
    assert a.villages[0].availability == pytest.approx(0.899)
    assert not a.passed and not a.villages[0].passed
    assert [r.text for r in a.reasons] == ["Thôn Bản Cắm: khả dụng 89,9% < 90%"]
    assert a.reasons[0].code == "availability_low" and a.reasons[0].village_id == a.villages[0].id
    assert b.passed and b.villages[0].passed and b.reasons == []
    # the same node played every bulletin: only availability separates the two
    assert a.villages[0].aired_ratio == b.villages[0].aired_ratio == 1.0


def test_commune_with_a_village_never_reached_fails_naming_it(world, db):
    cid = world.commune("C", "Xã Hữu Kiên")
    good = world.village("C-1", "Nà Lừa", cid)
    world.village("C-2", "Khuổi Phầy", cid)  # no cluster ever
    silent = world.village("C-3", "Bó Luông", cid)
    world.node("n-good", good)
    world.node("n-silent", silent)  # registered, never heard from: "unknown", unavailable
    world.transitions("n-good", [(Q3_START - DAY, True)])
    world.daily_airings(Q3_START, Q3_END, ["n-good"])
    world.daily_airings(Q3_START, Q3_END, ["n-silent"], phase="never_acked")
    with db.session() as s:
        c = evaluate(s, parse_period("2026-Q3", now_ms=AFTER_Q3), now=AFTER_Q3).communes[0]
    assert not c.passed
    texts = [r.text for r in c.reasons]
    assert "Thôn Khuổi Phầy: không có cụm loa nào trong kỳ" in texts
    assert "Thôn Bó Luông: khả dụng 0% < 90%" in texts
    assert any(t.startswith("Thôn Bó Luông: phát 0/184 buổi (0%)") for t in texts)
    assert not any("Nà Lừa" in t for t in texts)
    failed = {v.name for v in c.failed_villages}
    assert failed == {"Khuổi Phầy", "Bó Luông"}


@pytest.mark.parametrize("recorded", [False, True], ids=["via-register", "recorded-on-target"])
def test_merged_commune_past_quarter_is_judged_on_its_old_villages_and_names(world, db, recorded):
    merge_at = ict(2026, 7, 1)
    old = world.commune("OLD", "Xã Bắc La", created_ms=0)
    keep = world.commune("KEEP", "Xã Tân Đoàn", created_ms=0)
    x1 = world.village("OLD-1", "Pò Cại", old)
    x2 = world.village("OLD-2", "Nà Mò", old)
    y1 = world.village("KEEP-1", "Còn Pheo", keep)
    for node, vid in (("n-x1", x1), ("n-x2", x2), ("n-y1", y1)):
        world.node(node, vid)
    q2_start = ict(2026, 4, 1)
    world.transitions(
        "n-x1", [(q2_start - DAY, True), (q2_start + 20 * DAY, False), (q2_start + 40 * DAY, True)]
    )  # ~22% down in Q2
    world.transitions("n-x2", [(q2_start - DAY, True)])
    world.transitions("n-y1", [(q2_start - DAY, True)])
    # 1 July 2026: Bắc La merges into Tân Đoàn, which takes the name "Xã Văn Lang".
    world.move_village(x1, keep, merge_at)
    world.move_village(x2, keep, merge_at)
    world.retire_commune(old, keep, merge_at)
    world.rename("commune", keep, "Xã Văn Lang", merge_at)
    # the dispatcher wrote each target's village and commune of the slot time (or did not)
    world.daily_airings(q2_start, ict(2026, 11, 1), ["n-x1", "n-x2", "n-y1"], record=recorded)
    with db.session() as s:
        q2 = evaluate(s, parse_period("2026-Q2", now_ms=AFTER_Q3), now=AFTER_Q3)
        q3 = evaluate(s, parse_period("2026-Q3", now_ms=AFTER_Q3), now=AFTER_Q3)
    q2c = _by_code(q2)
    assert set(q2c) == {"OLD", "KEEP"}
    assert [v.name for v in q2c["OLD"].villages] == ["Pò Cại", "Nà Mò"]
    assert [v.name for v in q2c["KEEP"].villages] == ["Còn Pheo"]
    assert q2c["KEEP"].name == "Xã Tân Đoàn"  # the name it bore in Q2
    assert not q2c["OLD"].passed
    assert q2c["OLD"].reasons[0].text.startswith("Thôn Pò Cại: khả dụng 78")
    assert q2c["KEEP"].passed
    assert q2.summary.text == "1/2 xã đạt chỉ tiêu truyền thanh cơ sở"
    q3c = _by_code(q3)
    assert set(q3c) == {"KEEP"}
    assert q3c["KEEP"].name == "Xã Văn Lang"
    assert sorted(v.name for v in q3c["KEEP"].villages) == ["Còn Pheo", "Nà Mò", "Pò Cại"]
    assert q3c["KEEP"].passed  # Pò Cại recovered in May


def test_transition_at_235959_on_the_last_day_of_a_quarter_falls_in_that_quarter(world, db):
    cid = world.commune("E", "Xã Yên Trạch")
    vid = world.village("E-1", "Bản Pjạc", cid)
    world.node("n-e", vid)
    last_second = ict(2026, 9, 30, 23, 59, 59)
    world.transitions(
        "n-e", [(Q3_START - DAY, True), (last_second, False), (ict(2026, 10, 1), True)]
    )
    q3 = parse_period("2026-Q3", now_ms=AFTER_Q3)
    q4 = parse_period("2026-Q4", now_ms=ict(2027, 1, 5))
    assert (q3.start_ms, q3.end_ms) == (Q3_START, Q3_END)
    with db.session() as s:
        # one second down inside Q3, none in Q4: the 1 October 00:00 ICT change is Q4's
        assert availability(s, "n-e", q3.start_ms, q3.end_ms) == (Q3_MS - 1000) / Q3_MS
        assert availability(s, "n-e", q4.start_ms, q4.end_ms) == 1.0
        # a UTC-midnight boundary would have put 17:00-24:00 ICT of 30/09 in Q4
        assert availability(s, "n-e", Q3_END - 7 * HOUR, Q3_END) == (7 * HOUR - 1000) / (7 * HOUR)


def test_threshold_change_reevaluates_without_rewriting_history(world, db):
    down = _outages(Q3_START, Q3_MS * 15 // 100, 60)
    _commune_with_one_village(world, "F", "Nà Pàn", "n-f", down)
    period = parse_period("2026-Q3", now_ms=AFTER_Q3)
    with db.session() as s:
        before = evaluate(s, period, now=AFTER_Q3).communes[0]
    assert not before.passed
    assert before.reasons[0].text == "Thôn Nà Pàn: khả dụng 85% < 90%"
    with db.session() as s:
        update_thresholds(s, availability=0.85, by="so-vhtt", at_ms=AFTER_Q3)
    with db.session() as s:
        after = evaluate(s, period, now=AFTER_Q3).communes[0]
        assert current_thresholds(s).availability == 0.85
        versions = s.query(ProvinceIndicatorSettings).order_by(ProvinceIndicatorSettings.id).all()
    assert after.passed and after.villages[0].availability == before.villages[0].availability
    assert [v.availability_threshold for v in versions] == [0.85]
    with db.session() as s:
        update_thresholds(s, availability=0.9, aired=0.95, at_ms=AFTER_Q3)
        assert s.query(ProvinceIndicatorSettings).count() == 2  # appended, never rewritten
        assert evaluate(s, period, now=AFTER_Q3).communes[0].passed is False


def test_aired_ratio_counts_finished_and_started_then_preempted_only(world, db):
    cid = world.commune("G", "Xã Hoàng Văn Thụ")
    vid = world.village("G-1", "Phai Sen", cid)
    world.node("n-g", vid)
    world.transitions("n-g", [(Q3_START - DAY, True)])
    # one airing a week keeps the station operating; the phases decide the ratio
    phases = (
        ["finished"] * 7
        + ["preempted"]
        + ["preempted-before-start", "failed", "never_acked", "acked"]
        + ["finished"]
    )
    for week, phase in enumerate(phases):
        world.airing(Q3_START + week * 7 * DAY + 6 * HOUR, {"n-g": phase})
    world.airing(Q3_START + 3 * DAY, {"n-g": "failed"}, status="cancelled")  # not counted
    with db.session() as s:
        c = evaluate(s, parse_period("2026-Q3", now_ms=AFTER_Q3), now=AFTER_Q3).communes[0]
    v = c.villages[0]
    assert (v.played, v.aimed) == (9, 13)
    assert [r.text for r in c.reasons] == [
        "Đài không phát đủ 1 buổi/tuần trong 4/13 tuần: 26/08/2026–01/09/2026, "
        "02/09/2026–08/09/2026, 09/09/2026–15/09/2026, 16/09/2026–22/09/2026",
        "Thôn Phai Sen: phát 9/13 buổi (69,2%) < 80%",
    ]
    with db.session() as s:
        update_thresholds(s, aired=0.69, broadcasts_per_week_min=0, at_ms=AFTER_Q3)
        period = parse_period("2026-Q3", now_ms=AFTER_Q3)
        assert evaluate(s, period, now=AFTER_Q3).communes[0].passed


def test_a_week_without_broadcast_fails_the_station(world, db):
    cid = world.commune("H", "Xã Mai Pha")
    vid = world.village("H-1", "Khòn Khuyên", cid)
    world.node("n-h", vid)
    world.transitions("n-h", [(Q3_START - DAY, True)])
    world.daily_airings(Q3_START, ict(2026, 8, 5), ["n-h"])
    world.daily_airings(ict(2026, 8, 12), Q3_END, ["n-h"])  # 05/08-11/08: officer on leave
    with db.session() as s:
        c = evaluate(s, parse_period("2026-Q3", now_ms=AFTER_Q3), now=AFTER_Q3).communes[0]
    assert not c.passed
    assert [r.code for r in c.reasons] == ["weeks_without_broadcast"]
    assert c.reasons[0].text == (
        "Đài không phát đủ 1 buổi/tuần trong 1/13 tuần: 05/08/2026–11/08/2026"
    )


def test_a_cluster_placed_mid_quarter_counts_only_from_its_placement(world, db):
    cid = world.commune("I", "Xã Quảng Lạc")
    vid = world.village("I-1", "Nà Pàn", cid)
    other = world.village("I-2", "Bản Chúc", cid)
    placed = ict(2026, 8, 15)
    world.node("n-i", other, from_ms=0, to_ms=placed)  # moved from Bản Chúc ...
    world.node("n-i", vid, from_ms=placed)  # ... to Nà Pàn on 15/08
    world.transitions("n-i", [(Q3_START - DAY, True)])
    world.daily_airings(Q3_START, Q3_END, ["n-i"])
    with db.session() as s:
        c = evaluate(s, parse_period("2026-Q3", now_ms=AFTER_Q3), now=AFTER_Q3).communes[0]
    villages = {v.name: v for v in c.villages}
    # Nà Pàn is in service from 15/08: the weeks before are "chưa đưa vào sử dụng", not
    # failure (issue 16: they used to count as 0%). Bản Chúc lost its only cluster on 15/08
    # and was not reached afterwards: that is a failure.
    assert villages["Nà Pàn"].availability == 1.0
    assert villages["Nà Pàn"].in_service_ms == Q3_END - placed
    assert villages["Nà Pàn"].verdict == "pass"
    assert "Thôn Nà Pàn: đưa vào sử dụng từ 15/08/2026" in " ".join(
        r.text for r in villages["Nà Pàn"].reasons
    )
    assert villages["Bản Chúc"].availability == pytest.approx((placed - Q3_START) / Q3_MS)
    assert villages["Bản Chúc"].verdict == "fail"
    # bulletins count for the village the cluster stood in at the slot
    assert villages["Nà Pàn"].aimed + villages["Bản Chúc"].aimed == 184
    assert not c.passed


def test_fm_commune_passes_only_with_an_attestation_covering_the_period(world, db):
    fm = world.commune("FM", "Xã Cao Lộc", station_kind="wired")
    world.village("FM-1", "Bản Lìm", fm)
    period = parse_period("2026-Q3", now_ms=AFTER_Q3)
    with db.session() as s:
        c = evaluate(s, period, now=AFTER_Q3).communes[0]
    assert not c.passed and not c.manual
    assert c.reasons[0].text == (
        "Đài hữu tuyến: chưa có xác nhận kiểm tra còn hiệu lực đến 30/09/2026"
    )
    with db.session() as s:
        add_attestation(
            s,
            "FM",
            inspector="Nguyễn Văn Hùng",
            attested_on=date(2026, 3, 2),
            valid_until=date(2026, 8, 31),
            note="Kiểm tra định kỳ",
            at_ms=AFTER_Q3,
        )
        c = evaluate(s, period, now=AFTER_Q3).communes[0]
    assert not c.passed  # expired before the quarter ended
    assert "đã hết hiệu lực từ 31/08/2026" in c.reasons[0].text
    with db.session() as s:
        add_attestation(
            s,
            "FM",
            inspector="Nguyễn Văn Hùng",
            attested_on=date(2026, 9, 10),
            valid_until=date(2027, 9, 9),
            at_ms=AFTER_Q3,
        )
        e = evaluate(s, period, now=AFTER_Q3)
    c = e.communes[0]
    assert c.passed and c.manual and c.station == "wired"
    assert c.reasons[0].level == "info"
    assert c.reasons[0].text == (
        "Đài hữu tuyến: xác nhận thủ công ngày 10/09/2026 "
        "(Nguyễn Văn Hùng), hiệu lực đến 09/09/2027"
    )
    assert c.villages[0].passed is None and c.villages[0].availability is None
    assert e.summary.manual == 1 and e.summary.stations["wired"] == 1


def test_attestation_input_is_checked(world, db):
    world.commune("IP", "Xã Đồng Đăng")
    world.commune("FM2", "Xã Song Giáp", station_kind="fm")
    with db.session() as s:
        with pytest.raises(InvalidInputError, match="dùng đài IP"):
            add_attestation(s, "IP", inspector="A", valid_until=date(2027, 1, 1), at_ms=AFTER_Q3)
        with pytest.raises(InvalidInputError, match="Thiếu tên người kiểm tra"):
            add_attestation(s, "FM2", inspector="  ", valid_until=date(2027, 1, 1), at_ms=AFTER_Q3)
        with pytest.raises(InvalidInputError, match="trước ngày kiểm tra"):
            add_attestation(
                s,
                "FM2",
                inspector="A",
                attested_on=date(2026, 10, 1),
                valid_until=date(2026, 9, 1),
                at_ms=AFTER_Q3,
            )
        with pytest.raises(InvalidInputError, match="ở tương lai"):
            add_attestation(
                s,
                "FM2",
                inspector="A",
                attested_on=date(2026, 12, 1),
                valid_until=date(2027, 9, 1),
                at_ms=AFTER_Q3,
            )


def test_rollups_read_like_the_province_reports(world, db):
    """Before 01/07/2025 the province reported by district, under indicator 8.3; a period
    after it groups by commune only and names the 2026-2030 set (issue 16: a Q3/2026 report
    still had district subtotals and the 8.3 title)."""
    q1_start, q1_end = ict(2025, 1, 1), ict(2025, 4, 1)
    north = world.district("HL", "Huyện Hữu Lũng")
    south = world.district("CL", "Huyện Chi Lăng")
    for i, (district, ok) in enumerate(
        [(north, True), (north, True), (north, False), (south, True), (south, False)]
    ):
        cid = world.commune(f"R{i}", f"Xã R{i}", district_id=district)
        vid = world.village(f"R{i}-1", f"Thôn {i}", cid)
        world.node(f"n-r{i}", vid)
        world.transitions(f"n-r{i}", [(q1_start - DAY, True)] if ok else [])
        world.daily_airings(q1_start, q1_end, [f"n-r{i}"])
        world.daily_airings(Q3_START, Q3_END, [f"n-r{i}"])
    with db.session() as s:
        e = evaluate(s, parse_period("2025-Q1", now_ms=AFTER_Q3), now=AFTER_Q3)
        one = evaluate(
            s, parse_period("2025-Q1", now_ms=AFTER_Q3), now=AFTER_Q3, scope="district:CL"
        )
        later = evaluate(s, parse_period("2026-Q3", now_ms=AFTER_Q3), now=AFTER_Q3)
    assert e.summary.text == "3/5 xã đạt chỉ tiêu 8.3"
    assert [(d.text) for d in e.districts] == [
        "Huyện Chi Lăng: 1/2 xã đạt chỉ tiêu 8.3",
        "Huyện Hữu Lũng: 2/3 xã đạt chỉ tiêu 8.3",
    ]
    assert [f["code"] for f in e.summary.failing] == ["R2", "R4"]
    assert e.summary.failing[0]["reasons"] == ["Thôn 2: khả dụng 0% < 90%"]
    assert one.summary.text == "1/2 xã đạt chỉ tiêu 8.3"
    doc = evaluation_as_dict(e)
    assert doc["summary"]["text"] == "3/5 xã đạt chỉ tiêu 8.3"
    assert doc["criteria"]["code"] == "8.3" and doc["criteria"]["valid_to"] == "14/02/2026"
    assert doc["communes"][2]["villages"][0]["availability"] == 0.0
    assert later.summary.text == "3/5 xã đạt chỉ tiêu truyền thanh cơ sở"
    assert later.districts == []
    assert evaluation_as_dict(later)["summary"]["districts"] == []


def test_ongoing_period_is_judged_so_far_and_future_one_is_refused(world, db):
    _commune_with_one_village(world, "J", "Nà Cạn", "n-j", [(Q3_START - DAY, True)])
    now = ict(2026, 8, 20, 12)
    from indicator.errors import PeriodError

    with db.session() as s:
        e = evaluate(s, parse_period("2026-Q3", now_ms=now), now=now)
        assert e.end_ms == now and e.communes[0].passed
        with pytest.raises(PeriodError, match="chưa bắt đầu"):
            evaluate(s, parse_period("2026-Q4", now_ms=now), now=now)


def test_in_memory_database_runs_sequentially_with_the_same_verdicts(db):
    """The airing aggregations run on extra connections for speed; an in-memory database
    (one connection) takes the sequential path and must say exactly the same."""
    from loa.db import Database
    from tests.indicator.world import World, small_province

    memory = Database("sqlite://")
    memory.create_all()
    docs = []
    for database in (db, memory):
        small_province(World(database), Q3_START, Q3_END)
        with database.session() as s:
            docs.append(
                evaluation_as_dict(
                    evaluate(s, parse_period("2026-Q3", now_ms=AFTER_Q3), now=AFTER_Q3)
                )
            )
    memory.dispose()
    assert docs[0] == docs[1]
    assert docs[0]["summary"]["text"] == "2/3 xã đạt chỉ tiêu truyền thanh cơ sở"


def test_period_spanning_a_merge_shows_the_new_commune_with_its_predecessor(world, db):
    """Bắc La merged into Tân Đoàn (renamed Văn Lang) on 01/08/2026. The quarter is judged
    on the register as it stood each day: Bắc La's villages count for Văn Lang over the
    whole quarter (before the merge under Bắc La, after under Văn Lang), one line, the new
    name, the predecessor listed."""
    merge_at = ict(2026, 8, 1)
    old = world.commune("OLD", "Xã Bắc La", created_ms=0)
    keep = world.commune("KEEP", "Xã Tân Đoàn", created_ms=0)
    x1 = world.village("OLD-1", "Pò Cại", old)
    y1 = world.village("KEEP-1", "Còn Pheo", keep)
    world.node("n-x1", x1)
    world.node("n-y1", y1)
    world.transitions(
        "n-x1", [(Q3_START - DAY, True), (Q3_START + 5 * DAY, False), (Q3_START + 20 * DAY, True)]
    )  # down 15 days, before merge
    world.transitions("n-y1", [(Q3_START - DAY, True)])
    world.move_village(x1, keep, merge_at)
    world.retire_commune(old, keep, merge_at)
    world.rename("commune", keep, "Xã Văn Lang", merge_at)
    world.daily_airings(Q3_START, Q3_END, ["n-x1", "n-y1"], record=True)
    with db.session() as s:
        e = evaluate(s, parse_period("2026-Q3", now_ms=AFTER_Q3), now=AFTER_Q3)
    doc = evaluation_as_dict(e)
    assert [c["name"] for c in doc["communes"]] == ["Xã Văn Lang"]
    c = doc["communes"][0]
    assert c["predecessors"] == [
        {"id": old, "code": "OLD", "name": "Xã Bắc La", "merged_on": "01/08/2026"}
    ]
    villages = {v["name"]: v for v in c["villages"]}
    assert set(villages) == {"Pò Cại", "Còn Pheo"}
    assert villages["Pò Cại"]["aimed"] == 184  # its bulletins under both communes
    assert villages["Pò Cại"]["availability"] == pytest.approx(1 - 15 / 92)
    assert c["verdict"] == "fail"
    assert doc["summary"]["text"] == "0/1 xã đạt chỉ tiêu truyền thanh cơ sở"
