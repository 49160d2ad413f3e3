"""Indicator 8.3 over HTTP: FastAPI's TestClient on a real database (SQLite, or PostgreSQL in
that pass) holding the demo province and its seeded history, real accounts and bearer tokens."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy import select

from dashboard.app import create_app
from dashboard.models import AuditLog
from dashboard.security import create_user, issue_token
from indicator.demo_history import seed_history
from loa.settings import Settings
from loa.timeutil import now_ms
from registry.demo import load_demo_province
from registry.models import Commune
from system.root import api_context

PASSWORD = "mat-khau-thu-nghiem"
# Only the routers this feature needs; other areas are tested by their own suites.


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, databases):
    """The demo province with 35 days of history, built once and copied for each test."""
    db = databases.create(tmp_path_factory.mktemp("seeded") / "loa.db")
    load_demo_province(db)
    seed_history(db, days=35, now_ms=now_ms(), cover_previous_quarter=False)
    tokens = {}
    with db.session() as s:
        doican = s.scalar(select(Commune.id).where(Commune.code == "ls-doican"))
        for name, role, communes in (("tinh", "province", []), ("xa", "commune", [doican])):
            user = create_user(s, name, PASSWORD, role, communes)
            secret, _row = issue_token(s, user, "api")  # copied with the data to every test
            tokens[name] = {"Authorization": f"Bearer {secret}"}
    yield db, tokens
    databases.drop(db)


@pytest.fixture
def api(seeded, databases, tmp_path, monkeypatch):
    source, tokens = seeded
    db = databases.clone(source, tmp_path / "loa.db")
    settings = Settings(data_dir=tmp_path / "data", database_url=db.url, secret_key="test-secret")
    with TestClient(create_app(api_context(settings, db))) as client:
        client.tokens = tokens
        client.db = db
        yield client
    databases.drop(db)


def test_verdicts_need_a_login(api):
    r = api.get("/api/v1/indicators/8.3")
    assert r.status_code == 401 and r.json()["detail"] == "Chưa đăng nhập"


def test_province_sees_every_commune_with_reasons(api):
    r = api.get("/api/v1/indicators/8.3", headers=api.tokens["tinh"])
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["period"]["key"] == "last30"
    assert doc["summary"]["text"] == "10/13 xã đạt chỉ tiêu truyền thanh cơ sở"
    assert doc["summary"]["manual"] == 1
    communes = {c["id"]: c for c in doc["communes"]}
    by_code = {c["code"]: c for c in doc["communes"]}
    assert len(communes) == 13
    doican = by_code["ls-doican"]
    assert doican["passed"] is False and doican["manual"] is False
    napan = next(v for v in doican["villages"] if v["name"] == "Thôn Nà Pàn")
    assert napan["passed"] is False and napan["availability"] < 0.9
    assert napan["reasons"][0]["code"] == "availability_low"
    assert napan["reasons"][0]["text"].startswith("Thôn Nà Pàn: khả dụng ")
    assert set(napan) >= {"id", "name", "passed", "availability", "aired_ratio", "reasons"}
    assert by_code["ls-hoacu"]["reasons"][0]["code"] == "aired_low"
    assert by_code["ls-tumich"]["manual"] is True and by_code["ls-tumich"]["passed"] is True
    assert by_code["ls-vule"]["passed"] is False
    assert {f["code"] for f in doc["summary"]["failing"]} == {"ls-doican", "ls-hoacu", "ls-vule"}


def test_commune_officer_is_counted_over_their_commune_only(api):
    r = api.get("/api/v1/indicators/8.3", headers=api.tokens["xa"])
    assert r.status_code == 200
    assert [c["code"] for c in r.json()["communes"]] == ["ls-doican"]
    assert r.json()["summary"]["text"] == "0/1 xã đạt chỉ tiêu truyền thanh cơ sở"
    r = api.get("/api/v1/indicators/8.3/report?format=csv", headers=api.tokens["xa"])
    assert r.status_code == 200 and r.text.count("\n") == 2  # header + Đội Cấn
    r = api.get("/api/v1/indicators/8.3?scope=commune:ls-hoacu", headers=api.tokens["xa"])
    assert r.status_code == 403 and r.json()["detail"] == "Không có quyền"
    r = api.get("/api/v1/communes/ls-hoacu/attestations", headers=api.tokens["xa"])
    assert r.status_code == 403


@pytest.mark.parametrize(
    "query, status, detail",
    [
        ("period=2026-Q9", 422, "Không hiểu kỳ báo cáo '2026-Q9'"),
        ("period=2099", 422, "chưa bắt đầu"),
        ("scope=district:khong-co", 404, "Không tìm thấy huyện 'khong-co'"),
        ("scope=planet:earth", 404, "Phạm vi 'planet:earth' không hợp lệ"),
    ],
)
def test_bad_queries_get_vietnamese_4xx(api, query, status, detail):
    r = api.get(f"/api/v1/indicators/8.3?{query}", headers=api.tokens["tinh"])
    assert r.status_code == status and detail in r.json()["detail"]


def test_report_downloads(api):
    auth = api.tokens["tinh"]
    r = api.get("/api/v1/indicators/8.3/report?period=last30&format=xlsx", headers=auth)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert 'filename="bao-cao-truyen-thanh-co-so-last30.xlsx"' in r.headers["content-disposition"]
    ws = load_workbook(io.BytesIO(r.content))["Theo xã"]
    codes = [row[1] for row in ws.iter_rows(values_only=True) if row and isinstance(row[0], int)]
    assert len(codes) == 13
    r = api.get("/api/v1/indicators/8.3/report?format=pdf&scope=commune:ls-hoacu", headers=auth)
    assert r.status_code == 200 and r.content.startswith(b"%PDF-")
    r = api.get("/api/v1/indicators/8.3/report?format=html", headers=auth)
    assert r.status_code == 200 and "UBND TỈNH LẠNG SƠN" in r.text
    r = api.get("/api/v1/indicators/8.3/report?format=odt", headers=auth)
    assert r.status_code == 422 and "không hỗ trợ" in r.json()["detail"]


def test_settings_change_reevaluates_and_is_audited(api):
    auth = api.tokens["tinh"]
    assert (
        api.get("/api/v1/indicators/settings", headers=auth).json()["availability_threshold"] == 0.9
    )
    r = api.put(
        "/api/v1/indicators/settings",
        headers=api.tokens["xa"],
        json={"availability_threshold": 0.5},
    )
    assert r.status_code == 403
    r = api.put(
        "/api/v1/indicators/settings",
        headers=auth,
        json={"availability_threshold": 0.5, "aired_threshold": 0.5},
    )
    assert r.status_code == 200, r.text
    assert r.json()["availability_threshold"] == 0.5 and r.json()["changed_by"] == "tinh"
    doc = api.get("/api/v1/indicators/8.3", headers=auth).json()
    assert doc["summary"]["text"] == "12/13 xã đạt chỉ tiêu truyền thanh cơ sở"
    assert doc["thresholds"]["availability"] == 0.5
    with api.db.session() as s:
        actions = s.scalars(select(AuditLog.action)).all()
    assert "indicator.settings.update" in actions


@pytest.mark.parametrize(
    "body, detail",
    [
        ({"availability_threshold": 2}, "không quá 1"),
        ({"availability_threshold": "cao"}, "phải là một số"),
        ({"broadcasts_per_week_min": 1.5}, "số nguyên"),
        ({"default_period": "hôm qua"}, "Kỳ mặc định: Không hiểu kỳ báo cáo"),
        ({"ngưỡng": 1}, "Trường không được hỗ trợ: ngưỡng"),
        ({}, "Không có thay đổi nào"),
        ([], "phải là một đối tượng JSON"),
    ],
)
def test_bad_settings_are_refused_and_nothing_changes(api, body, detail):
    auth = api.tokens["tinh"]
    r = api.put("/api/v1/indicators/settings", headers=auth, json=body)
    assert r.status_code == 422 and detail in r.json()["detail"], r.text
    assert api.get("/api/v1/indicators/settings", headers=auth).json()["changed_by"] is None


def test_non_json_settings_body(api):
    r = api.put(
        "/api/v1/indicators/settings",
        headers={**api.tokens["tinh"], "content-type": "application/json"},
        content=b"{availability",
    )
    assert r.status_code == 422 and "không phải JSON" in r.json()["detail"]


def test_attestation_passes_an_fm_commune(api):
    auth = api.tokens["tinh"]
    r = api.post(
        "/api/v1/communes/ls-vule/attestations",
        headers=auth,
        json={
            "inspector": "Lương Thị Hoa",
            "valid_until": "31/12/2027",
            "note": "Đài FM hoạt động, loa đến 3/3 thôn",
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["station_kind"] == "fm" and r.json()["valid_until"] == "31/12/2027"
    doc = api.get("/api/v1/indicators/8.3", headers=auth).json()
    vule = next(c for c in doc["communes"] if c["code"] == "ls-vule")
    assert vule["passed"] and vule["manual"]
    assert "Lương Thị Hoa" in vule["reasons"][0]["text"]
    assert doc["summary"]["text"] == "11/13 xã đạt chỉ tiêu truyền thanh cơ sở"
    listed = api.get("/api/v1/communes/ls-vule/attestations", headers=auth).json()
    assert [a["inspector"] for a in listed["items"]] == ["Lương Thị Hoa"]


@pytest.mark.parametrize(
    "ref, body, status, detail",
    [
        ("ls-doican", {"inspector": "A", "valid_until": "31/12/2027"}, 422, "dùng đài IP"),
        ("ls-vule", {"valid_until": "31/12/2027"}, 422, "Thiếu tên người kiểm tra"),
        ("ls-vule", {"inspector": "A"}, 422, "Thiếu Ngày hết hiệu lực"),
        ("ls-vule", {"inspector": "A", "valid_until": "31/13/2027"}, 422, "không tồn tại"),
        ("ls-vule", {"inspector": "A", "valid_until": "mai"}, 422, "dd/mm/yyyy"),
        ("khong-co", {"inspector": "A", "valid_until": "31/12/2027"}, 404, "Không tìm thấy xã"),
    ],
)
def test_bad_attestations_are_refused(api, ref, body, status, detail):
    r = api.post(f"/api/v1/communes/{ref}/attestations", headers=api.tokens["tinh"], json=body)
    assert r.status_code == status and detail in r.json()["detail"], r.text


def test_only_the_province_attests(api):
    r = api.post(
        "/api/v1/communes/ls-vule/attestations",
        headers=api.tokens["xa"],
        json={"inspector": "A", "valid_until": "31/12/2027"},
    )
    assert r.status_code == 403
