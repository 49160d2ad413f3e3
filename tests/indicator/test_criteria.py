"""Criteria sets with effective dates (issue 16): 2021-2025 ("8.3") until 14/02/2026, the
2026-2030 set of Quyết định 51/2025/QĐ-TTg from 15/02/2026 with the code, wording and
thresholds the province enters; a period spanning the change is split and says so."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from dashboard.models import AuditLog
from indicator.criteria import get_set, update_set
from indicator.errors import InvalidInputError, NotFoundError
from indicator.evaluate import evaluate, evaluation_as_dict
from indicator.periods import parse_period
from indicator.reports import build_report, render
from tests.indicator.test_api import api, seeded  # noqa: F401 (fixtures)
from tests.indicator.world import DAY, ict

Q1_START, Q1_END = ict(2026, 1, 1), ict(2026, 4, 1)
SWITCH = ict(2026, 2, 15)
AFTER_Q1 = ict(2026, 4, 5)


def _station(world, down_from: int, down_ms: int) -> None:
    cid = world.commune("S", "Xã Tân Thành")
    vid = world.village("S-1", "Bản Pẻn", cid)
    world.node("n-s", vid)
    world.transitions(
        "n-s", [(Q1_START - DAY, True), (down_from, False), (down_from + down_ms, True)]
    )
    world.daily_airings(Q1_START, Q1_END, ["n-s"])


def test_quarter_spanning_15_02_2026_is_split_and_each_part_names_its_set(world, db):
    # Down 6% of the second part: passes 90% (today's rule), fails the 95% the province
    # entered for 2026-2030 under its own code.
    part2 = Q1_END - SWITCH
    _station(world, ict(2026, 3, 10), part2 * 6 // 100)
    with db.session() as s:
        update_set(
            s,
            "2026-2030",
            {
                "indicator_code": "6.2",
                "availability_threshold": 0.95,
                "indicator_text": "Xã có hệ thống thông tin cơ sở hoạt động đến các thôn",
            },
            by="tinh",
        )
        e = evaluate(s, parse_period("2026-Q1", now_ms=AFTER_Q1), now=AFTER_Q1)
    first, second = e.parts
    assert (first.start_ms, first.end_ms, second.start_ms, second.end_ms) == (
        Q1_START,
        SWITCH,
        SWITCH,
        Q1_END,
    )
    assert first.criteria.key == "2021-2025" and second.criteria.key == "2026-2030"
    assert first.summary.text == "1/1 xã đạt chỉ tiêu 8.3"
    assert first.thresholds.availability == 0.9
    assert second.summary.text == "0/1 xã đạt chỉ tiêu 6.2"
    assert second.communes[0].reasons[0].text == "Thôn Bản Pẻn: khả dụng 94% < 95%"
    doc = evaluation_as_dict(e)
    assert doc["period"]["from"] == "01/01/2026" and doc["period"]["to"] == "31/03/2026"
    assert doc["criteria"]["code"] == "6.2"
    assert doc["criteria"]["legal_basis"] == "Quyết định số 51/2025/QĐ-TTg của Thủ tướng Chính phủ"
    assert doc["criteria"]["valid_from"] == "15/02/2026"
    assert doc["split"]["text"].startswith(
        "Kỳ báo cáo được chia làm 2 phần theo bộ tiêu chí có hiệu lực: từ 01/01/2026 đến "
        "14/02/2026 theo Bộ tiêu chí quốc gia về xã nông thôn mới giai đoạn 2021-2025"
    )
    assert [p["criteria"]["key"] for p in doc["split"]["parts"]] == ["2021-2025", "2026-2030"]
    with db.session() as s:
        report = build_report(s, parse_period("2026-Q1", now_ms=AFTER_Q1), now=AFTER_Q1)
    html = render(report, "html").decode()
    assert "Kết quả thực hiện chỉ tiêu 6.2 quý 1 năm 2026" in html
    assert "Kỳ báo cáo được chia làm 2 phần" in html
    assert report.filename("pdf") == "bao-cao-chi-tieu-6.2-2026-Q1.pdf"


def test_period_inside_one_set_is_not_split(world, db):
    _station(world, ict(2026, 1, 10), DAY)
    with db.session() as s:
        e = evaluate(s, parse_period("01/01/2026-14/02/2026", now_ms=AFTER_Q1), now=AFTER_Q1)
    assert e.parts == [] and e.criteria.key == "2021-2025"
    assert evaluation_as_dict(e)["split"] is None


def test_criteria_input_is_checked_and_nothing_half_written(db):
    with db.session() as s:
        for changes, message in (
            ({"indicator_code": 62}, "phải là chuỗi"),
            ({"availability_threshold": 1.5}, "không quá 1"),
            ({"indicator_text": "  "}, "không được để trống"),
            ({"valid_from": "01/01/2026"}, "Trường không được hỗ trợ: valid_from"),
            ({"indicator_code": "6.2", "broadcasts_per_week_min": -1}, "0-100"),
        ):
            with pytest.raises(InvalidInputError, match=message):
                update_set(s, "2026-2030", changes)
        assert get_set(s, "2026-2030").indicator_code == ""
        with pytest.raises(NotFoundError, match="Không có bộ tiêu chí '2031'"):
            get_set(s, "2031")


def test_criteria_over_the_api_named_in_every_answer_and_audited(api):  # noqa: F811
    tinh, xa = api.tokens["tinh"], api.tokens["xa"]
    r = api.get("/api/v1/indicators/criteria", headers=xa)
    assert [c["key"] for c in r.json()["items"]] == ["2021-2025", "2026-2030"]
    r = api.put("/api/v1/indicators/criteria/2026-2030", headers=xa, json={"indicator_code": "6.2"})
    assert r.status_code == 403
    r = api.put(
        "/api/v1/indicators/criteria/2026-2030",
        headers=tinh,
        json={"availability_threshold": "chín mươi"},
    )
    assert r.status_code == 422 and "Ngưỡng khả dụng" in r.json()["detail"]
    r = api.put(
        "/api/v1/indicators/criteria/2026-2030", headers=tinh, json={"indicator_code": "6.2"}
    )
    assert r.status_code == 200 and r.json()["label"] == "chỉ tiêu 6.2"
    for path in ("/api/v1/indicators/radio", "/api/v1/indicators/8.3"):
        doc = api.get(path, headers=tinh).json()
        assert doc["criteria"]["code"] == "6.2"
        assert doc["criteria"]["name"].endswith("giai đoạn 2026-2030")
        assert doc["summary"]["text"].endswith("xã đạt chỉ tiêu 6.2")
        assert all({"coverage", "verdict", "passed"} <= set(c) for c in doc["communes"])
    with api.db.session() as s:
        row = s.scalars(
            select(AuditLog).where(AuditLog.action == "indicator.criteria.update")
        ).one()
    assert row.target == "2026-2030"


def test_evidence_of_a_split_period_has_a_folder_per_part_and_verifies(world, db, tmp_path):
    from indicator.evidence import verify_evidence, write_evidence

    _station(world, ict(2026, 3, 10), (Q1_END - SWITCH) * 6 // 100)
    with db.session() as s:
        update_set(s, "2026-2030", {"availability_threshold": 0.95})
        e = evaluate(s, parse_period("2026-Q1", now_ms=AFTER_Q1), now=AFTER_Q1)
        write_evidence(s, e, tmp_path / "ev")
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == [
        "MANIFEST.sha256",
        "part-1",
        "part-2",
    ]
    result = verify_evidence(tmp_path / "ev")
    assert result.ok and result.communes == 2, result.text()
    criteria = (tmp_path / "ev" / "part-2" / "criteria.csv").read_text()
    assert "Quyết định số 51/2025/QĐ-TTg" in criteria and "0.95" in criteria
