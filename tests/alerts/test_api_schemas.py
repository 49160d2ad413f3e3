"""The alerts API answers exactly the shapes its pydantic models document (issue 15: typed
edges), and its request bodies are refused in Vietnamese naming the field.

Real answers over HTTP (the real service on a real database, SQLite or PostgreSQL in that
pass): every field a model names is in the answer and the answer has no field the model does
not name, so ``/openapi.json`` cannot drift from what the dashboard and clients read."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from alerts.schemas import (
    MSG_TEMPLATE,
    AiringProofOut,
    AlertDuplicate,
    AlertOut,
    AlertReceived,
    AlertReport,
    ClusterOut,
    MessageOut,
    PreviewOut,
    StepOut,
    TemplateOut,
    TemplateSaved,
)
from dashboard.app import create_app
from dashboard.security import create_user, issue_token
from system.root import api_context
from tests.alerts import capdocs as d
from tests.alerts.conftest import make_env

XML = {"Content-Type": "application/xml"}


def fields(model: type[BaseModel], *leave_out: str) -> set[str]:
    return set(model.model_fields) - set(leave_out)


@pytest.fixture
def api(db, settings):
    env = make_env(db, settings)
    with db.session() as s:
        token, _ = issue_token(s, create_user(s, "so-vhtt", "mat-khau-dai-123", "province"), "api")
    ctx = api_context(settings, db)
    ctx.alerts, ctx.broadcasts = env.alerts, env.broadcasts
    with TestClient(create_app(ctx)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def test_alert_answers_have_exactly_their_documented_fields(api):
    r = api.put("/api/v1/alerts/templates", json={"event": "Lũ quét", "template": "{su_kien}."})
    assert r.status_code == 200 and set(r.json()) == fields(TemplateSaved)
    templates = api.get("/api/v1/alerts/templates").json()
    assert {t["event_key"] for t in templates} >= {"*"}
    for t in templates:  # the default ("*") has no recordings, as it never had
        assert set(t) == fields(TemplateOut, *(() if "recordings" in t else ("recordings",)))

    doc = d.flood(communes=["c0", "c1"], sender="canhbao@tinh.gov.vn")
    preview = api.post("/api/v1/alerts/preview", content=doc, headers=XML).json()
    assert set(preview) == fields(PreviewOut) and preview["clusters"] == 5
    assert set(preview["by_village"][0]["clusters"][0]) == fields(ClusterOut)

    r = api.post("/api/v1/alerts/cap", content=doc, headers=XML)
    assert r.status_code == 202 and set(r.json()) == fields(AlertReceived, "replayed")
    alert = r.json()
    assert alert["state"] == "pending_approval", alert["state_reason"]
    r = api.post("/api/v1/alerts/cap", content=doc, headers=XML)
    assert r.status_code == 200 and set(r.json()) == fields(AlertDuplicate)

    page = api.get("/api/v1/alerts").json()
    assert page["total"] == 1 and set(page["items"][0]) == fields(AlertOut)
    messages = api.get("/api/v1/alerts/messages").json()
    assert [m["outcome"] for m in messages] == ["duplicate", "accepted"]
    assert all(set(m) == fields(MessageOut) for m in messages)

    approved = api.post(f"/api/v1/alerts/{alert['id']}/approve")
    assert approved.status_code == 200 and set(approved.json()) == fields(AlertOut)
    report = api.get(f"/api/v1/alerts/{alert['id']}").json()
    assert set(report) == fields(AlertReport)
    assert report["steps"] and all(set(st) == fields(StepOut) for st in report["steps"])
    assert all(set(c) == fields(ClusterOut) for c in report["clusters_detail"])
    assert report["airings"] and report["proof"] == report["airings"][0]
    assert set(report["proof"]) == fields(AiringProofOut)
    stopped = api.post(f"/api/v1/alerts/{alert['id']}/stop")
    assert stopped.status_code == 200 and set(stopped.json()) == fields(AlertOut)

    other = d.flood("KTTV-LS-2026-009", communes=["c2"], sender="canhbao@tinh.gov.vn")
    second = api.post("/api/v1/alerts/cap", content=other, headers=XML).json()
    r = api.post(f"/api/v1/alerts/{second['id']}/reject", json={"reason": 5})
    assert r.status_code == 422 and r.json() == {"detail": "Lý do («reason») phải là chuỗi."}
    r = api.post(f"/api/v1/alerts/{second['id']}/reject", json={"reason": "Tin thử"})
    assert r.status_code == 200 and set(r.json()) == fields(AlertOut)
    assert r.json()["state"] == "rejected" and r.json()["state_reason"] == "Tin thử"


def test_a_template_body_is_refused_in_vietnamese_and_nothing_saved(api):
    for body in ({"event": 5, "template": "x"}, {"template": "{su_kien}."}):
        r = api.put("/api/v1/alerts/templates", json=body)
        assert r.status_code == 422 and r.json() == {"detail": MSG_TEMPLATE}
    r = api.put("/api/v1/alerts/templates", json=["Lũ quét"])
    assert r.json() == {"detail": "Yêu cầu phải là một đối tượng JSON."}
    r = api.put("/api/v1/alerts/templates", json={"event": "Lũ", "template": "x", "recordings": 1})
    assert r.json() == {"detail": "«recordings» là danh sách tối đa 5 mã nội dung."}
    assert [t["event_key"] for t in api.get("/api/v1/alerts/templates").json()] == ["*"]
