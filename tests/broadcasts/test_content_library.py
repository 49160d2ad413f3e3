"""The content library over HTTP (issue 18, item 3): a commune sees its own items and the
province's shared ones; rename and delete follow who owns an item; an item a bulletin still
in play uses is not deleted, and the refusal names that bulletin. Real app, real database
(SQLite, and PostgreSQL in that pass), real audio pipeline."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from broadcasts.store import ContentStore
from dashboard.app import create_app
from dashboard.models import AuditLog
from dashboard.security import create_user, issue_token
from loa.timeutil import ICT
from system.root import api_context
from tests.factories import make_registry

from .conftest import make_tone


@pytest.fixture
def lib(settings, db, content_settings, tmp_path):
    ids = make_registry(
        db,
        communes={
            "Hoàng Đồng": {"Thôn Nà Pàn": ["hd-01"]},
            "Đội Cấn": {"Thôn Đồng Bầu": ["dc-01"]},
        },
    )
    tokens = {}
    with db.session() as s:
        for name, role, communes in (
            ("tinh", "province", []),
            ("xa.hd", "commune", [ids["Hoàng Đồng"]]),
            ("xa.dc", "commune", [ids["Đội Cấn"]]),
            ("kythuat", "technician", []),
        ):
            user = create_user(s, name, "mat-khau-dai-123", role, communes)
            tokens[name], _ = issue_token(s, user, "api")
    ctx = api_context(settings, db, content=ContentStore(settings, db, content_settings))
    tone = make_tone(tmp_path / "tone.mp3", 1.0)
    with TestClient(create_app(ctx)) as client:

        def call(who: str, method: str, url: str, **kw):
            return client.request(
                method, url, headers={"Authorization": f"Bearer {tokens[who]}"}, **kw
            )

        def upload(who: str, title: str) -> dict:
            with tone.open("rb") as fh:
                r = call(
                    who,
                    "POST",
                    "/api/v1/content",
                    files={"file": ("tone.mp3", fh, "audio/mpeg")},
                    data={"title": title},
                )
            assert r.status_code == 201, r.text
            return r.json()

        yield call, upload, ids


def titles(page: dict) -> list[str]:
    return sorted(i["title"] for i in page["items"])


def test_a_commune_sees_its_own_and_the_province_library_and_searches_without_accents(lib):
    call, upload, _ = lib
    upload("tinh", "Hướng dẫn phòng chống bão")
    upload("xa.hd", "Lịch tiêm phòng tháng 12")
    upload("xa.dc", "Họp thôn Đồng Bầu")
    seen = call("xa.hd", "GET", "/api/v1/content").json()
    assert titles(seen) == ["Hướng dẫn phòng chống bão", "Lịch tiêm phòng tháng 12"]
    owners = {i["title"]: (i["owner"], i["can_manage"]) for i in seen["items"]}
    assert owners == {
        "Hướng dẫn phòng chống bão": ("Thư viện của tỉnh", False),
        "Lịch tiêm phòng tháng 12": ("Hoàng Đồng", True),
    }
    # Diacritic-insensitive, either way round.
    assert titles(call("xa.hd", "GET", "/api/v1/content", params={"q": "phong"}).json()) == [
        "Hướng dẫn phòng chống bão",
        "Lịch tiêm phòng tháng 12",
    ]
    assert titles(call("xa.hd", "GET", "/api/v1/content", params={"q": "TIÊM PHONG"}).json()) == [
        "Lịch tiêm phòng tháng 12"
    ]
    assert call("xa.hd", "GET", "/api/v1/content", params={"q": "dong bau"}).json()["total"] == 0
    shared = call("xa.hd", "GET", "/api/v1/content", params={"shared": "true"}).json()
    assert titles(shared) == ["Hướng dẫn phòng chống bão"]
    assert len(call("tinh", "GET", "/api/v1/content").json()["items"]) == 3


def test_rename_follows_ownership(lib, db):
    call, upload, _ = lib
    shared = upload("tinh", "Hướng dẫn phòng chống bão")
    own = upload("xa.hd", "Ban tin sang")
    other = upload("xa.dc", "Họp thôn")

    r = call("xa.hd", "PATCH", f"/api/v1/content/{own['id']}", json={"title": "  Bản tin   sáng "})
    assert r.status_code == 200 and r.json()["title"] == "Bản tin sáng"
    found = call("xa.hd", "GET", "/api/v1/content", params={"q": "ban tin sang"}).json()
    assert found["total"] == 1

    r = call("xa.hd", "PATCH", f"/api/v1/content/{shared['id']}", json={"title": "Khác"})
    assert r.status_code == 403 and "thư viện của tỉnh" in r.json()["detail"]
    assert r.json()["code"] == "province_library"
    # Another commune's item is not theirs to see.
    assert (
        call("xa.hd", "PATCH", f"/api/v1/content/{other['id']}", json={"title": "Khác"}).status_code
        == 404
    )
    assert (
        call("kythuat", "PATCH", f"/api/v1/content/{own['id']}", json={"title": "Khác"}).status_code
        == 403
    )
    # Bad input: a clear refusal, nothing changed.
    r = call("xa.hd", "PATCH", f"/api/v1/content/{own['id']}", json={"title": "   "})
    assert r.status_code in (400, 422) and "Tiêu đề" in str(r.json()["detail"])
    r = call("xa.hd", "PATCH", f"/api/v1/content/{own['id']}", json={"title": "x" * 301})
    assert r.status_code == 422
    assert call("xa.hd", "GET", f"/api/v1/content/{own['id']}").json()["title"] == "Bản tin sáng"

    r = call("tinh", "PATCH", f"/api/v1/content/{shared['id']}", json={"title": "Phòng chống lũ"})
    assert r.status_code == 200 and r.json()["title"] == "Phòng chống lũ"
    with db.session() as s:
        actions = [a.action for a in s.query(AuditLog).order_by(AuditLog.id)]
    assert actions.count("content.rename") == 2


def _later() -> str:
    return (datetime.now(ICT) + timedelta(hours=3)).isoformat(timespec="seconds")


def test_delete_is_refused_while_a_bulletin_uses_it_and_names_that_bulletin(lib, db):
    call, upload, ids = lib
    item = upload("xa.hd", "Lịch tiêm phòng")
    spare = upload("xa.hd", "Bản cũ")
    r = call(
        "xa.hd",
        "POST",
        "/api/v1/broadcasts",
        json={
            "title": "Tiêm phòng tối nay",
            "content_id": item["id"],
            "targets": {"villages": [ids["Thôn Nà Pàn"]]},
            "start_at": _later(),
        },
    )
    assert r.status_code == 201, r.text
    bid = r.json()["id"]
    assert call("xa.hd", "GET", f"/api/v1/content/{item['id']}").json()["in_use"] == 1

    r = call("xa.hd", "DELETE", f"/api/v1/content/{item['id']}")
    assert r.status_code == 409
    body = r.json()
    assert body["code"] == "content_in_use"
    assert "«Tiêm phòng tối nay» (Đã lên lịch)" in body["detail"]
    assert body["detail"].startswith("Không xóa được «Lịch tiêm phòng»")
    assert call("xa.hd", "GET", f"/api/v1/content/{item['id']}").status_code == 200

    # Unused: deleted, gone from the list; the province's cannot be deleted by a commune.
    assert call("xa.hd", "DELETE", f"/api/v1/content/{spare['id']}").json() == {
        "id": spare["id"],
        "title": "Bản cũ",
        "deleted": True,
    }
    assert call("xa.hd", "GET", f"/api/v1/content/{spare['id']}").status_code == 404
    shared = upload("tinh", "Của tỉnh")
    assert call("xa.hd", "DELETE", f"/api/v1/content/{shared['id']}").status_code == 403
    assert call("xa.dc", "DELETE", f"/api/v1/content/{item['id']}").status_code == 404

    # Once the bulletin is cancelled nothing uses the item any more.
    assert call("xa.hd", "POST", f"/api/v1/broadcasts/{bid}/cancel").status_code == 200
    assert call("xa.hd", "DELETE", f"/api/v1/content/{item['id']}").status_code == 200
    assert call("tinh", "DELETE", f"/api/v1/content/{shared['id']}").status_code == 200
    assert call("tinh", "GET", "/api/v1/content").json()["total"] == 0
