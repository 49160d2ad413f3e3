"""One transaction per use case, its audit row inside it, and idempotency keys (issue 15,
item 6), through the API on a real database (SQLite, or PostgreSQL in that pass).

Before, ``POST /broadcasts`` committed the bulletin and then wrote the audit row in a
session of its own: a failed audit answered 500 for a bulletin already stored, and the
client's retry created a second one. Here the audit writer fails for real (it raises where
the row would be written) and nothing of the use case may remain; the retry creates exactly
one bulletin with exactly one audit row."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import dashboard.routes.broadcasts as broadcast_routes
from dashboard.app import create_app
from dashboard.models import AuditLog
from dashboard.security import create_user, issue_token
from loa.idempotency import IdempotencyKey
from loa.timeutil import ICT
from scheduler.config import SchedulerSettings
from scheduler.models import Broadcast, SavedGroup
from scheduler.workflow import BroadcastService
from system.root import api_context
from tests.factories import make_registry

STREAM = "http://14.160.0.10:8000/live"


@pytest.fixture
def api(settings, db):
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["dc-001"]}})
    with db.session() as s:
        token, _ = issue_token(s, create_user(s, "so.vhtt", "mat-khau-dai-123", "province"), "api")
    ctx = api_context(settings, db)
    ctx.broadcasts = BroadcastService(db, SchedulerSettings(), content=ctx.broadcasts.content)
    with TestClient(create_app(ctx), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def bulletin(title: str = "Họp thôn", **kw) -> dict:
    start = (datetime.now(ICT) + timedelta(hours=1)).isoformat(timespec="seconds")
    return {
        "title": title,
        "stream_url": STREAM,
        "duration_s": 600,
        "draft": True,
        "targets": {"nodes": ["dc-001"]},
        "start_at": start,
        **kw,
    }


def count(db, model, *where) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def failing_audit(*_a, **_k):
    raise RuntimeError("audit log unavailable")


def test_a_failed_audit_stores_nothing_and_the_retry_creates_exactly_one(api, db, monkeypatch):
    key = {"Idempotency-Key": "form-1b7e44c2"}
    body = bulletin()
    with monkeypatch.context() as m:
        m.setattr(broadcast_routes, "audit", failing_audit)
        r = api.post("/api/v1/broadcasts", json=body, headers=key)
    assert r.status_code == 500
    assert count(db, Broadcast) == 0
    assert count(db, IdempotencyKey) == 0  # the key was not spent on a failed attempt
    assert count(db, AuditLog, AuditLog.action == "broadcast.create") == 0

    first = api.post("/api/v1/broadcasts", json=body, headers=key)
    assert first.status_code == 201, first.text
    again = api.post("/api/v1/broadcasts", json=body, headers=key)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.json()["replayed"] is True
    assert count(db, Broadcast) == 1
    with db.session() as s:
        rows = s.scalars(select(AuditLog).where(AuditLog.action == "broadcast.create")).all()
        assert [row.target for row in rows] == [str(first.json()["id"])]
        assert rows[0].path == "/api/v1/broadcasts" and rows[0].status_code == 201


def test_a_failed_audit_leaves_a_transition_and_an_edit_undone(api, db, monkeypatch):
    spoken = {
        **bulletin(),
        "stream_url": None,
        "duration_s": None,
        "tts_text": "Chiều nay họp thôn.",
    }
    created = api.post("/api/v1/broadcasts", json=spoken).json()
    with monkeypatch.context() as m:
        m.setattr(broadcast_routes, "audit", failing_audit)
        assert api.post(f"/api/v1/broadcasts/{created['id']}/cancel").status_code == 500
        edit = api.post(f"/api/v1/broadcasts/{created['id']}/edit", json={"title": "Sửa"})
        assert edit.status_code == 500
    with db.session() as s:
        assert s.get(Broadcast, created["id"]).status == "draft"  # neither cancelled
    assert count(db, Broadcast) == 1  # nor a new version left behind
    key = {"Idempotency-Key": "edit-3e8d51b7"}
    url = f"/api/v1/broadcasts/{created['id']}/edit"
    edit = api.post(url, json={"title": "Sửa"}, headers=key)
    assert edit.status_code == 201, edit.text
    with db.session() as s:
        assert s.get(Broadcast, created["id"]).status == "cancelled"
    assert count(db, AuditLog, AuditLog.action == "broadcast.edit") == 1
    # The retry after a dropped answer gets the new version, not "already cancelled".
    again = api.post(url, json={"title": "Sửa"}, headers=key)
    assert again.status_code == 200 and again.json()["id"] == edit.json()["id"]
    assert again.json()["replayed"] is True
    assert count(db, Broadcast) == 2
    other = api.post(url, json={"title": "Sửa lần nữa"}, headers=key)
    assert other.status_code == 409


def test_a_key_reused_for_another_bulletin_is_refused_in_vietnamese(api, db):
    key = {"Idempotency-Key": "form-9c03aa10"}
    assert api.post("/api/v1/broadcasts", json=bulletin(), headers=key).status_code == 201
    other = api.post("/api/v1/broadcasts", json=bulletin("Lịch tiêm chủng"), headers=key)
    assert other.status_code == 409
    assert "Idempotency-Key" in other.json()["detail"]
    assert "đã dùng cho một yêu cầu khác" in other.json()["detail"]
    assert count(db, Broadcast) == 1
    bad = api.post("/api/v1/broadcasts", json=bulletin(), headers={"Idempotency-Key": "x y"})
    assert bad.status_code == 422 and "8–80 ký tự" in bad.json()["detail"]


def test_a_saved_group_with_the_same_key_is_created_once(api, db, monkeypatch):
    key = {"Idempotency-Key": "group-5d2f8e01"}
    body = {"name": "Loa chợ", "targets": {"nodes": ["dc-001"]}}
    with monkeypatch.context() as m:
        m.setattr(broadcast_routes, "audit", failing_audit)
        assert api.post("/api/v1/groups", json=body, headers=key).status_code == 500
    assert count(db, SavedGroup) == 0
    first = api.post("/api/v1/groups", json=body, headers=key)
    again = api.post("/api/v1/groups", json=body, headers=key)
    assert first.status_code == 201 and again.status_code == 201
    assert again.json() == first.json()
    assert count(db, SavedGroup) == 1
    assert count(db, AuditLog, AuditLog.action == "group.create") == 1
    other = api.post("/api/v1/groups", json={**body, "name": "Loa trường"}, headers=key)
    assert other.status_code == 409 and "yêu cầu khác" in other.json()["detail"]
    assert count(db, SavedGroup) == 1


def test_typed_bodies_are_refused_in_vietnamese_naming_the_field(api, db):
    r = api.post("/api/v1/groups", json=["Loa chợ"])
    assert r.status_code == 422 and r.json() == {"detail": "Yêu cầu phải là một đối tượng JSON."}
    r = api.post("/api/v1/groups", json={"name": 7, "targets": {"nodes": ["dc-001"]}})
    assert r.status_code == 422 and r.json()["detail"] == "Tên nhóm phải có từ 1 đến 200 ký tự."
    r = api.post("/api/v1/groups", json={"name": "Loa chợ", "targets": "dc-001"})
    assert r.status_code == 422 and "«targets»" in r.json()["detail"]
    assert count(db, SavedGroup) == 0
    # The words the API always gave for a volume out of range, word for word.
    for level in (101, -1, True, "50", 40.5):
        r = api.post("/api/v1/nodes/dc-001/volume", json={"level": level})
        assert r.status_code == 422
        assert r.json()["detail"] == "Âm lượng («level») phải là số nguyên từ 0 đến 100."
    r = api.post("/api/v1/nodes/dc-001/stop", json={"broadcast_id": 5})
    assert r.json()["detail"] == "«broadcast_id» phải là chuỗi (mã phát trên cụm loa)."
    r = api.post("/api/v1/broadcasts/1/skip", json={"date": 20261205})
    assert r.json()["detail"] == "Hãy chọn ngày bỏ phát («date», dd/mm/yyyy)."
    r = api.post("/api/v1/broadcasts/1/recurrence", json={"exceptions": "05/12/2026"})
    assert r.json()["detail"] == "«exceptions» phải là danh sách ngày."
    r = api.post("/api/v1/inbox/1/schedule", json={"start_at": 5})
    assert r.status_code == 422 and r.json()["detail"] == "«start_at» phải là chuỗi."
    r = api.post("/api/v1/alarms/1/ack", json={"note": 5})
    assert r.status_code == 422 and r.json()["detail"] == "Ghi chú («note») phải là chuỗi."


def test_the_broadcast_body_model_names_exactly_the_fields_the_parser_reads(api, db):
    from scheduler.request import KNOWN_FIELDS
    from scheduler.schemas import BroadcastIn

    assert set(BroadcastIn.model_fields) == KNOWN_FIELDS
    # A field of the wrong type answers the parser's own sentence; nothing is written.
    cases = [
        ({"title": 5}, "Thiếu tiêu đề bản tin («title»)."),
        ({"volume": "to"}, "Âm lượng («volume») phải là số nguyên từ 0 đến 100."),
        ({"draft": "có"}, "«draft» phải là true hoặc false."),
        ({"mau": 1}, "Trường không rõ: mau."),
    ]
    for change, words in cases:
        r = api.post("/api/v1/broadcasts", json={**bulletin(), **change})
        assert r.status_code == 422 and r.json()["detail"] == words, r.text
    r = api.post("/api/v1/broadcasts", json={**bulletin(), "volume": 80.0})
    assert r.status_code == 201 and r.json()["volume"] == 80
    assert count(db, Broadcast) == 1


def test_the_edit_body_model_names_exactly_the_editable_fields(api, db):
    from scheduler.control import EDITABLE
    from scheduler.schemas import BroadcastEditIn

    assert set(BroadcastEditIn.model_fields) == set(EDITABLE)
    created = api.post("/api/v1/broadcasts", json=bulletin()).json()
    url = f"/api/v1/broadcasts/{created['id']}/edit"
    for change, words in (
        ({"mau": "đỏ"}, "Không sửa được: mau."),
        ({"volume": "to"}, "Âm lượng («volume») phải là số nguyên từ 0 đến 100."),
        ([], "Yêu cầu phải là một đối tượng JSON."),
    ):
        r = api.post(url, json=change)
        assert r.status_code == 422 and r.json() == {"detail": words}, r.text
    assert count(db, Broadcast) == 1
    # A well-typed body reaches the service, which judges it (a live stream is not edited).
    r = api.post(url, json={"title": "Họp thôn (sửa)"})
    assert r.status_code == 422 and "phát trực tiếp" in r.json()["detail"], r.text
