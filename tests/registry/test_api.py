"""Registry and communes API with FastAPI's TestClient over a real database (SQLite, or
PostgreSQL in that pass), real accounts and bearer tokens (``dashboard.security``)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from controller.models import NodeLive
from dashboard.app import create_app
from dashboard.security import create_user
from loa.db import Database
from loa.settings import Settings
from registry.demo import demo_yaml, load_demo_province
from registry.models import Commune, Node, PendingNode, Province, Village
from system.root import api_context

PASSWORD = "mat-khau-thu-nghiem"


@contextmanager
def _client(db: Database, settings: Settings):
    """The demo province, three accounts with bearer tokens, some live states."""
    load_demo_province(db)
    with db.session() as s:
        doican = s.scalar(select(Commune).where(Commune.code == "ls-doican"))
        create_user(s, "tinh", PASSWORD, "province")
        create_user(s, "kythuat", PASSWORD, "technician")
        create_user(s, "xa", PASSWORD, "commune", [doican.id])
        for node_id, state in (
            ("ls-doican-t01-a", "online"),
            ("ls-doican-t01-b", "degraded"),
            ("ls-doican-t02-a", "offline"),
            ("ls-hoalac-t01-a", "online"),
        ):
            s.add(
                NodeLive(
                    node_id=node_id,
                    state=state,
                    available=state != "offline",
                    since_ms=1_751_302_800_000,
                )
            )
    app = create_app(api_context(settings, db))
    # raise_server_exceptions=False: dashboard.security's AuditMiddleware fails *after* the
    # answer was sent when a POST is refused (the rolled-back session expired the user it
    # reads; reported to the lead). The client still gets the real status, and any failure of
    # ours would show up as a 500 that the assertions catch.
    with TestClient(app, raise_server_exceptions=False) as client:
        tokens = {}
        for user in ("tinh", "kythuat", "xa"):
            r = client.post("/api/v1/auth/token", data={"username": user, "password": PASSWORD})
            assert r.status_code == 200, r.text
            tokens[user] = {"Authorization": f"Bearer {r.json()['access_token']}"}
        client.tokens = tokens
        client.db = db
        yield client


@pytest.fixture(scope="module")
def reader(tmp_path_factory, databases):
    """One app for the tests that only read (argon2 logins are slow on purpose)."""
    path = tmp_path_factory.mktemp("registry-api")
    db = databases.create(path / "loa.db")
    settings = Settings(data_dir=path / "data", database_url=db.url, secret_key="test-secret")
    with _client(db, settings) as client:
        yield client
    databases.drop(db)


@pytest.fixture
def api(db, settings):
    """A fresh app and database for tests that write."""
    with _client(db, settings) as client:
        yield client


def _id(db, code: str) -> int:
    with db.session() as s:
        return s.scalar(select(Commune.id).where(Commune.code == code))


def test_communes_need_a_login(reader):
    r = reader.get("/api/v1/communes")
    assert r.status_code == 401 and r.json()["detail"] == "Chưa đăng nhập"


def test_communes_paging_covers_every_commune_once(reader):
    auth = reader.tokens["tinh"]
    pages = [
        reader.get("/api/v1/communes", params={"limit": 5, "offset": o}, headers=auth).json()
        for o in (0, 5, 10)
    ]
    assert [p["total"] for p in pages] == [13, 13, 13]
    assert [len(p["items"]) for p in pages] == [5, 5, 3]
    names = [item["name"] for p in pages for item in p["items"]]
    assert len(set(names)) == 13 and "Đội Cấn" in names
    assert names[:3] == ["Cao Lâu", "Đội Cấn", "Hòa Cư"]  # sorted ignoring diacritics
    beyond = reader.get("/api/v1/communes", params={"offset": 100}, headers=auth).json()
    assert beyond == {"items": [], "total": 13, "limit": 50, "offset": 100}


def test_communes_filter_and_node_counts_by_state(reader):
    auth = reader.tokens["tinh"]
    r = reader.get("/api/v1/communes", params={"q": "DOI CAN"}, headers=auth)
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 1
    item = body["items"][0]
    with reader.db.session() as s:
        total = s.scalar(
            select(func.count(Node.id))
            .join(Village, Node.village_id == Village.id)
            .where(Village.commune_id == item["id"])
        )
    assert (item["code"], item["name"], item["station_kind"], item["villages"]) == (
        "ls-doican",
        "Đội Cấn",
        "ip",
        5,
    )
    assert item["district"]["name"] == "Tràng Định"
    assert item["nodes"] == {
        "total": total,
        "online": 1,
        "degraded": 1,
        "offline": 1,
        "unknown": total - 3,
    }

    by_district = reader.get(
        "/api/v1/communes", params={"district": "ls-caoloc"}, headers=auth
    ).json()
    assert {i["name"] for i in by_district["items"]} == {"Cao Lâu", "Tân Liên", "Hòa Cư"}
    fm = reader.get("/api/v1/communes", params={"q": "vu le"}, headers=auth).json()["items"][0]
    assert fm["station_kind"] == "fm" and fm["nodes"]["total"] == 0 and fm["villages"] == 4

    r = reader.get("/api/v1/communes", params={"district": "khong-co"}, headers=auth)
    assert r.status_code == 422 and r.json()["detail"] == "Không có huyện 'khong-co'."
    r = reader.get("/api/v1/communes", params={"limit": 0}, headers=auth)
    assert r.status_code == 422 and r.json()["detail"] == "limit phải từ 1 đến 500."


def test_commune_detail_and_404(reader):
    auth = reader.tokens["tinh"]
    doican = _id(reader.db, "ls-doican")
    r = reader.get(f"/api/v1/communes/{doican}", headers=auth)
    assert r.status_code == 200
    detail = r.json()
    assert detail["name"] == "Đội Cấn" and len(detail["villages"]) == 5
    napan = next(v for v in detail["villages"] if v["code"] == "ls-doican-t01")
    states = {n["id"]: n["state"] for n in napan["nodes"]}
    assert states == {
        "ls-doican-t01-a": "online",
        "ls-doican-t01-b": "degraded",
        "ls-doican-t01-c": "unknown",
    }
    uncommissioned = next(n for n in napan["nodes"] if n["id"] == "ls-doican-t01-c")
    assert uncommissioned["simulated"] is False
    assert detail["names"][0]["valid_from"] == "01/07/2025"

    r = reader.get("/api/v1/communes/999999", headers=auth)
    assert r.status_code == 404
    assert r.json()["detail"] == "Không tìm thấy xã có mã số 999999."


def test_ids_beyond_64_bits_are_refused_not_a_server_error(reader):
    """SQLite raises OverflowError for such a number and PostgreSQL "bigint out of range":
    on both the caller hears it is too large (422), never a 500."""
    auth = reader.tokens["tinh"]
    r = reader.get(f"/api/v1/communes/{2**63}", headers=auth)
    assert (r.status_code, r.json()["detail"]) == (422, "Giá trị số quá lớn (vượt quá 64 bit)")
    r = reader.post(
        "/api/v1/pending-nodes/vendor-x-0001/approve", headers=auth, json={"village_id": 2**63}
    )
    assert (r.status_code, r.json()["detail"]) == (422, "Giá trị số quá lớn (vượt quá 64 bit)")


def test_a_nul_character_in_text_is_never_a_server_error(reader):
    """PostgreSQL cannot store or even compare text holding NUL (SQLite can): there the
    caller is told so (422) instead of getting a 500."""
    r = reader.get("/api/v1/search", params={"q": "Đội\x00"}, headers=reader.tokens["tinh"])
    if reader.db.engine.dialect.name == "postgresql":
        assert (r.status_code, r.json()["detail"]) == (
            422,
            "Văn bản không được chứa ký tự NUL (0x00)",
        )
    else:
        assert r.status_code == 200


def test_commune_officer_sees_only_their_commune(reader):
    auth = reader.tokens["xa"]
    body = reader.get("/api/v1/communes", headers=auth).json()
    assert [i["name"] for i in body["items"]] == ["Đội Cấn"] and body["total"] == 1
    r = reader.get(f"/api/v1/communes/{_id(reader.db, 'ls-hoalac')}", headers=auth)
    assert r.status_code == 403 and r.json()["detail"] == "Không có quyền"
    hits = reader.get("/api/v1/search", params={"q": "hoa lac"}, headers=auth).json()
    assert hits["communes"] == []


def test_search_endpoint(reader):
    r = reader.get("/api/v1/search", params={"q": "Kien Moc"}, headers=reader.tokens["kythuat"])
    assert r.status_code == 200
    body = r.json()
    assert [h["name"] for h in body["communes"]] == ["Kiên Mộc"]
    assert body["q"] == "Kien Moc"


def test_pending_nodes_and_approval(api, db):
    with db.session() as s:
        s.add(
            PendingNode(
                id="vendor-x-0042",
                first_seen_ms=1_751_302_800_000,
                last_seen_ms=1_751_306_400_000,
                messages=12,
                last_channel="heartbeat",
            )
        )
        village_id = s.scalar(select(Village.id).where(Village.code == "ls-caolau-t02"))
    assert api.get("/api/v1/pending-nodes", headers=api.tokens["xa"]).status_code == 403
    r = api.get("/api/v1/pending-nodes", headers=api.tokens["kythuat"])
    assert r.status_code == 200
    assert [(p["id"], p["first_seen"], p["messages"]) for p in r.json()] == [
        ("vendor-x-0042", "01/07/2025 00:00:00", 12)
    ]

    url = "/api/v1/pending-nodes/vendor-x-0042/approve"
    r = api.post(url, json={"village_id": 999999}, headers=api.tokens["kythuat"])
    assert r.status_code == 404 and r.json()["detail"] == "Không tìm thấy thôn '999999'."
    r = api.post(url, json={"village_id": village_id, "speakers": 9}, headers=api.tokens["kythuat"])
    assert r.status_code == 422 and "số loa '9'" in r.json()["detail"]
    r = api.post(
        url, json={"village_id": village_id, "label": "Cụm loa chợ"}, headers=api.tokens["kythuat"]
    )
    assert r.status_code == 200, r.text
    assert r.json()["village"] == "Thôn Bản Mới" and r.json()["simulated"] is False
    with db.session() as s:
        assert s.get(PendingNode, "vendor-x-0042") is None
        assert s.get(Node, "vendor-x-0042").village_id == village_id
    r = api.post(url, json={"village_id": village_id}, headers=api.tokens["kythuat"])
    assert r.status_code == 404


BAD_UPLOAD = (
    "province,district,commune_code,commune,village_code,village,node_id,label,"
    "speakers,simulated,lat,lon,station_kind\n"
    "Lạng Sơn,,ls-moi,Xã Mới,ls-moi-t01,Thôn Một,ls-moi-t01-a,,2,true,,,ip\n"
    "Lạng Sơn,,ls-moi,Xã Mới,ls-moi-t01,Thôn Một,ab,,2,true,,,ip\n"
    "Lạng Sơn,,ls-moi,Xã Mới,ls-moi-t02,Thôn Hai,ls-moi-t02-a,,2,true,91,,ip\n"
)


def test_import_upload_reports_lines_and_writes_nothing(api, db):
    url = "/api/v1/registry/import"
    files = {"file": ("so.csv", BAD_UPLOAD.encode("utf-8"), "text/csv")}
    assert api.post(url, files=files, headers=api.tokens["kythuat"]).status_code == 403
    r = api.post(url, files=files, headers=api.tokens["tinh"])
    assert r.status_code == 422
    body = r.json()
    assert body["detail"] == "Tệp nhập có 2 lỗi; chưa ghi gì vào sổ đăng ký."
    assert body["errors"] == [
        {
            "line": 3,
            "field": "node_id",
            "message": "Dòng 3: mã cụm 'ab' không hợp lệ (3-64 ký tự A-Z a-z 0-9 _ -)",
        },
        {"line": 4, "field": "lat", "message": "Dòng 4: vĩ độ 91 nằm ngoài khoảng -90..90"},
    ]
    with db.session() as s:
        assert s.scalar(select(Commune).where(Commune.code == "ls-moi")) is None

    r = api.post(
        url,
        files={"file": ("so.xlsx", b"x", "application/octet-stream")},
        headers=api.tokens["tinh"],
    )
    assert r.status_code == 422 and ".yaml, .yml hoặc .csv" in r.json()["detail"]

    good = demo_yaml().replace("name: Cao Lâu\n", "name: Cao Lâu Mới\n")
    r = api.post(
        url,
        files={"file": ("tinh.yaml", good.encode("utf-8"), "application/yaml")},
        headers=api.tokens["tinh"],
    )
    assert r.status_code == 200, r.text
    assert r.json()["renamed"] == 1 and r.json()["created"]["node"] == 0


def test_export_yaml_and_csv(reader):
    auth = reader.tokens["tinh"]
    r = reader.get("/api/v1/registry/export", params={"format": "yaml"}, headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/yaml")
    assert 'filename="loa-so-dang-ky-' in r.headers["content-disposition"]
    assert "name: Đội Cấn" in r.text
    r = reader.get("/api/v1/registry/export", params={"format": "csv"}, headers=auth)
    assert r.status_code == 200 and r.content.startswith(b"\xef\xbb\xbf")
    rows = r.content.decode("utf-8-sig").splitlines()
    with reader.db.session() as s:
        assert len(rows) == 1 + s.scalar(select(func.count(Node.id))) + 7  # + empty villages
        assert s.scalar(select(func.count(Province.id))) == 1
    r = reader.get("/api/v1/registry/export", params={"format": "xls"}, headers=auth)
    assert r.status_code == 422 and r.json()["detail"] == (
        "Định dạng 'xls' không hỗ trợ: dùng yaml hoặc csv."
    )
    assert reader.get("/api/v1/registry/export", headers=reader.tokens["xa"]).status_code == 403
