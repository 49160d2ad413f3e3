"""Content belongs to a commune, or to the province and is shared down (issue 17, finding 6).

Before: an officer of commune 2 listed, downloaded and broadcast commune 1's uploads, and saw
their creators' user names and the text of their TTS bulletins."""

from __future__ import annotations

from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from broadcasts.store import ContentStore
from dashboard.app import create_app
from dashboard.security import create_user, issue_token
from loa.timeutil import ICT, now_ms
from system.root import api_context
from tests.factories import make_registry

from .conftest import make_tone

SECRET_TEXT = "Họp chi bộ thôn Nà Pàn lúc 19 giờ, nội dung mật."


@pytest.fixture
def clients(settings, db, content_settings):
    ids = make_registry(
        db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["dc-001"]}, "Tân Trào": {"Thôn Mới": ["tt-001"]}}
    )
    tokens = {}
    with db.session() as s:
        for name, role, communes in (
            ("canbo.doican", "commune", [ids["Đội Cấn"]]),
            ("canbo.tantrao", "commune", [ids["Tân Trào"]]),
            ("so.vhtt", "province", []),
        ):
            user = create_user(s, name, "mat-khau-dai-123", role, communes)
            tokens[name], _ = issue_token(s, user, "api")
    ctx = api_context(settings, db, content=ContentStore(settings, db, content_settings))
    with TestClient(create_app(ctx)) as client:
        yield (
            {name: {"Authorization": f"Bearer {raw}"} for name, raw in tokens.items()},
            client,
            ids,
        )


def _upload(client, headers, path, title):
    with path.open("rb") as fh:
        r = client.post(
            "/api/v1/content",
            headers=headers,
            data={"title": title},
            files={"file": (path.name, fh, "audio/mpeg")},
        )
    assert r.status_code == 201, r.text
    return r.json()


def test_an_officer_sees_only_their_communes_content_and_the_provinces(clients, tmp_path):
    auth, api, ids = clients
    tone = make_tone(tmp_path / "tone.mp3", 1.5)
    mine = _upload(api, auth["canbo.doican"], tone, "Lịch tiêm phòng Đội Cấn")
    r = api.post(
        "/api/v1/content/tts",
        headers=auth["canbo.doican"],
        json={"text": SECRET_TEXT, "title": "Họp chi bộ", "language": "vi"},
    )
    assert r.status_code == 201, r.text
    spoken = r.json()
    province = _upload(api, auth["so.vhtt"], tone, "Thông báo của tỉnh")

    other = auth["canbo.tantrao"]
    listed = api.get("/api/v1/content", headers=other).json()
    assert [i["id"] for i in listed["items"]] == [province["id"]] and listed["total"] == 1
    # Shared down, but who made it (a login name) is not shown outside the province.
    assert listed["items"][0]["creator"] == ""
    assert "canbo.doican" not in str(listed) and SECRET_TEXT not in str(listed)
    for item in (mine, spoken):
        for path in (f"/api/v1/content/{item['id']}", f"/api/v1/content/{item['id']}/audio"):
            r = api.get(path, headers=other)
            assert r.status_code == 404 and "canbo.doican" not in r.text, (path, r.text)
            assert SECRET_TEXT not in r.text
    # ... exactly as for an id that does not exist: nothing tells them it is there.
    assert api.get("/api/v1/content/" + "a" * len(mine["id"]), headers=other).status_code == 404
    # Nor can it be broadcast on their loudspeakers.
    start = datetime.fromtimestamp((now_ms() + 3_600_000) / 1000, tz=ICT).isoformat()
    body = {
        "title": "Phát lại",
        "targets": {"communes": [ids["Tân Trào"]]},
        "start_at": start,
        "draft": True,
    }
    r = api.post("/api/v1/broadcasts", headers=other, json={**body, "content_id": mine["id"]})
    assert r.status_code == 422 and "Không tìm thấy nội dung" in r.json()["detail"], r.text
    r = api.post("/api/v1/broadcasts", headers=other, json={**body, "content_id": province["id"]})
    assert r.status_code == 201, r.text

    # The owner sees their own items in full; the province sees everything.
    own = api.get("/api/v1/content", headers=auth["canbo.doican"]).json()
    assert {i["id"] for i in own["items"]} == {mine["id"], spoken["id"], province["id"]}
    assert api.get(f"/api/v1/content/{spoken['id']}", headers=auth["canbo.doican"]).json()[
        "spoken_text"
    ]
    assert api.get("/api/v1/content", headers=auth["so.vhtt"]).json()["total"] == 3
    assert (
        api.get(f"/api/v1/content/{mine['id']}/audio", headers=auth["so.vhtt"]).status_code == 200
    )
    assert mine["owner_commune_id"] == ids["Đội Cấn"] and province["owner_commune_id"] is None


def test_an_officer_cannot_file_content_under_another_commune(clients, tmp_path):
    auth, api, ids = clients
    tone = make_tone(tmp_path / "tone.mp3", 1.0)
    with tone.open("rb") as fh:
        r = api.post(
            "/api/v1/content",
            headers=auth["canbo.tantrao"],
            data={"title": "Giả mạo", "commune_id": str(ids["Đội Cấn"])},
            files={"file": (tone.name, fh, "audio/mpeg")},
        )
    assert r.status_code == 403 and r.json()["detail"] == "Không có quyền"
    assert api.get("/api/v1/content", headers=auth["so.vhtt"]).json()["total"] == 0
