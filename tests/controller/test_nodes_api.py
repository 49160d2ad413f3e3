"""The fleet API as its users call it: bearer tokens, scope by commune, filters, paging."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from controller.ingest import Ingest
from dashboard.app import create_app
from dashboard.security import ensure_demo_accounts
from loa.timeutil import now_ms
from system.root import api_context
from tests.factories import make_registry


@pytest.fixture
def api(settings, db):
    ids = make_registry(
        db,
        communes={
            "Đội Cấn": {"Thôn Nà Pàn": ["dc-01", "dc-02"]},
            "Hữu Lễ": {"Thôn Pá Lò": ["hl-01"]},
        },
    )
    ensure_demo_accounts(db)
    ing = Ingest(settings, db)
    ing.load_registry()
    t = now_ms()
    hb = {
        "seq": 0,
        "ts": t,
        "uptime_s": 1,
        "volume": 50,
        "amp": "fault",
        "speakers_ok": 1,
        "speakers_total": 2,
        "power": "mains",
        "net": "4g",
        "rssi_dbm": -70,
        "playing": None,
    }
    ing.handle("loa/v1/nodes/dc-01/status", b'{"online": true}', t)
    ing.handle("loa/v1/nodes/dc-01/heartbeat", json.dumps(hb).encode(), t)
    ing.handle("loa/v1/nodes/hl-01/heartbeat", b"garbage", t)
    asyncio.run(ing.flush())
    client = TestClient(create_app(api_context(settings, db)))

    def login(name: str) -> dict[str, str]:
        r = client.post("/api/v1/auth/token", data={"username": name, "password": "demo"})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    return client, login, ids


def test_summary_is_public_and_counts_states_and_rejections(api):
    client, _, _ = api
    body = client.get("/api/v1/health/summary").json()
    assert body["nodes"] == {"total": 3, "online": 0, "degraded": 1, "offline": 0, "unknown": 2}
    assert body["rejected_messages"] == {"not_json": 1}


def test_nodes_need_a_login_and_a_commune_officer_sees_only_their_commune(api):
    client, login, ids = api
    r = client.get("/api/v1/nodes")
    assert r.status_code == 401 and r.json()["detail"] == "Chưa đăng nhập"
    province = client.get("/api/v1/nodes", headers=login("province")).json()
    assert province["total"] == 3
    officer = login("commune")  # scoped to Đội Cấn
    mine = client.get("/api/v1/nodes", headers=officer).json()
    assert sorted(n["id"] for n in mine["items"]) == ["dc-01", "dc-02"]
    # Outside the officer's scope: the answer of a node that does not exist (not enumerable).
    outside = client.get("/api/v1/nodes/hl-01", headers=officer)
    missing = client.get("/api/v1/nodes/hl-99", headers=officer)
    assert outside.status_code == missing.status_code == 404
    assert outside.json()["detail"].replace("hl-01", "X") == missing.json()["detail"].replace(
        "hl-99", "X"
    )
    detail = client.get("/api/v1/nodes/dc-01", headers=officer).json()
    assert detail["state"] == "degraded"
    assert detail["reasons"] == ["amp_fault", "speaker_line"]
    assert detail["heartbeat"]["volume"] == 50
    assert [t["to_state"] for t in detail["transitions"]] == ["degraded", "online"]
    assert detail["transitions"][0]["at"].count("/") == 2  # dd/mm/yyyy


def test_filters_search_without_diacritics_and_paging(api):
    client, login, ids = api
    h = login("technician")
    assert [
        n["id"] for n in client.get("/api/v1/nodes?state=degraded", headers=h).json()["items"]
    ] == ["dc-01"]
    found = client.get("/api/v1/nodes", params={"q": "huu le"}, headers=h).json()
    assert [n["id"] for n in found["items"]] == ["hl-01"]
    page = client.get("/api/v1/nodes?limit=2&offset=2", headers=h).json()
    assert page["total"] == 3 and len(page["items"]) == 1
    by_commune = client.get(f"/api/v1/nodes?commune={ids['Hữu Lễ']}", headers=h).json()
    assert [n["id"] for n in by_commune["items"]] == ["hl-01"]
    missing = client.get("/api/v1/nodes/nope-404", headers=h)
    assert missing.status_code == 404 and "Không tìm thấy" in missing.json()["detail"]
    assert client.get("/api/v1/nodes?state=bogus", headers=h).status_code == 422
