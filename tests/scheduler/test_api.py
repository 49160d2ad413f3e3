"""The broadcasts API over real HTTP (uvicorn) with real bearer tokens: what an officer's phone
and the province dashboard send, the errors they get back, proof of play, node commands."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import httpx
import pytest

from dashboard.security import create_user, issue_token
from loa.timeutil import ICT
from tests.scheduler.conftest import wait_for


def _token(db, username: str, role: str, communes: list[int]) -> str:
    with db.session() as s:
        user = create_user(s, username, "mat-khau-dai-du", role, communes)
        raw, _ = issue_token(s, user, "api")
    return raw


@pytest.fixture
async def api(network):
    net = network
    tokens = {
        "province": _token(net.db, "so-vhtt", "province", []),
        "officer": _token(net.db, "canbo-doican", "commune", [net.ids["Đội Cấn"]]),
        "technician": _token(net.db, "kythuat", "technician", []),
    }
    async with httpx.AsyncClient(base_url=net.base_url, timeout=30) as client:

        def as_(who: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {tokens[who]}"}

        yield net, client, as_


def at(seconds: float) -> str:
    return (datetime.now(ICT) + timedelta(seconds=seconds)).isoformat(timespec="seconds")


async def test_bad_requests_get_clear_vietnamese_refusals(api):
    net, client, as_ = api
    commune = net.ids["Đội Cấn"]
    good = {
        "title": "Thông báo",
        "tts_text": "Xin chào bà con.",
        "targets": {"communes": [commune]},
        "start_at": at(3600),
    }
    cases = [
        ("officer", {**good, "start_at": at(-3600)}, 422, "đã qua"),
        ("officer", {**good, "targets": {}}, 422, "Chưa chọn nơi phát"),
        (
            "officer",
            {**good, "targets": {"communes": [net.ids["Tân Trào"]]}},
            403,
            "không thuộc phạm vi",
        ),
        # Another commune's cluster answers as one that does not exist (ids not enumerable).
        ("officer", {**good, "targets": {"nodes": ["tt-01"]}}, 422, "Không tìm thấy cụm loa"),
        ("officer", {**good, "targets": {"nodes": ["khong-co"]}}, 422, "Không tìm thấy cụm loa"),
        (
            "officer",
            {
                **{k: v for k, v in good.items() if k != "tts_text"},
                "content_id": "c_000000000000000000000000",
            },
            422,
            "Không tìm thấy nội dung",
        ),
        ("province", {**good, "priority": "emergency", "start_at": None}, 422, "xác nhận"),
        (
            "officer",
            {**good, "priority": "emergency", "start_at": None, "confirm": True},
            403,
            "cấp tỉnh",
        ),
        ("technician", good, 403, "tạo bản tin"),
        ("officer", {**good, "tts_text": "   "}, 422, "trống"),
        ("officer", ["không", "phải", "đối tượng"], 422, "đối tượng JSON"),
    ]
    for who, body, status, words in cases:
        resp = await client.post("/api/v1/broadcasts", json=body, headers=as_(who))
        assert resp.status_code == status, (body, resp.status_code, resp.text)
        assert words in resp.json()["detail"], (body, resp.json())
    assert (await client.post("/api/v1/broadcasts", json=good)).status_code == 401
    listing = await client.get("/api/v1/broadcasts", headers=as_("province"))
    assert listing.json()["total"] == 0  # nothing half-written

    # A conflict comes back as 409 with what it clashes with.
    first = await client.post("/api/v1/broadcasts", json=good, headers=as_("officer"))
    assert first.status_code == 201, first.text
    clash = await client.post(
        "/api/v1/broadcasts", json={**good, "title": "Khác"}, headers=as_("officer")
    )
    assert clash.status_code == 409
    assert "Trùng lịch" in clash.json()["detail"]
    assert clash.json()["conflicts"][0]["broadcast_id"] == first.json()["id"]


async def test_schedule_play_and_read_proof_of_play_over_http(api):
    net, client, as_ = api
    nodes = ["dc-01", "dc-02", "dc-03", "dc-04"]
    await net.fleet.start(nodes)
    await net.online(nodes)
    resp = await client.post(
        "/api/v1/broadcasts",
        headers=as_("officer"),
        json={
            "title": "Họp dân",
            "tts_text": "Mời bà con dự họp lúc bảy giờ tối nay.",
            "targets": {"villages": [net.ids["Thôn Đồng Tâm"]], "nodes": ["dc-03"]},
            "start_at": at(6),
            "volume": 65,
            "repeat": 1,
        },
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["status"] == "scheduled" and created["id"]
    bid = created["id"]

    cal = await client.get(
        "/api/v1/schedule",
        headers=as_("officer"),
        params={"from": datetime.now(ICT).date().isoformat()},
    )
    assert any(item["broadcast_id"] == bid for item in cal.json()["items"])

    async def judged():
        r = await client.get(f"/api/v1/broadcasts/{bid}", headers=as_("officer"))
        body = r.json()
        return body if body["status"] in ("aired", "partly_aired", "missed") else None

    body = await wait_for(judged, 40, "the broadcast to be judged", interval=0.5)
    assert body["status"] == "aired" and body["aired_ratio"] == 1.0
    outcomes = {o["node_id"]: o for o in body["outcomes"]}
    assert sorted(outcomes) == ["dc-01", "dc-02", "dc-03"]
    for o in outcomes.values():
        assert o["phase"] == "finished" and o["started_at"] and o["error"] is None
        assert abs(o["lateness_ms"]) <= 200

    # Node commands: the technician sets a volume and runs a self-test; the node answers.
    vol = await client.post(
        "/api/v1/nodes/dc-01/volume", json={"level": 35}, headers=as_("technician")
    )
    assert vol.status_code == 200 and vol.json()["acked"] is True
    await wait_for(lambda: net.fleet.node("dc-01").volume == 35, 5, "the volume to change")
    st = await client.post("/api/v1/nodes/dc-02/selftest", headers=as_("technician"))
    assert st.status_code == 200 and st.json()["selftest"]["speakers_total"] >= 1
    stop = await client.post("/api/v1/nodes/dc-02/stop", headers=as_("officer"))
    assert stop.status_code == 200 and stop.json()["acked"] is True
    bad = await client.post(
        "/api/v1/nodes/dc-01/volume", json={"level": 300}, headers=as_("technician")
    )
    assert bad.status_code == 422 and "0 đến 100" in bad.json()["detail"]
    outside = await client.post(
        "/api/v1/nodes/tt-01/volume", json={"level": 10}, headers=as_("officer")
    )
    missing = await client.post(
        "/api/v1/nodes/khong-co/volume", json={"level": 10}, headers=as_("officer")
    )
    # Outside the officer's scope answers exactly as a node that does not exist.
    assert outside.status_code == missing.status_code == 404
    assert outside.json()["detail"].replace("tt-01", "X") == missing.json()["detail"].replace(
        "khong-co", "X"
    )
    missing = await client.post("/api/v1/nodes/khong-co/selftest", headers=as_("technician"))
    assert missing.status_code == 404


async def test_province_bulletin_inbox_and_cancel_over_http(api):
    net, client, as_ = api
    resp = await client.post(
        "/api/v1/broadcasts",
        headers=as_("province"),
        json={
            "title": "Tuyên truyền bầu cử",
            "tts_text": "Ngày bầu cử là ngày hội của toàn dân.",
            "targets": {"communes": [net.ids["Đội Cấn"], net.ids["Tân Trào"]]},
            "start_at": at(7200),
        },
    )
    assert resp.status_code == 201 and resp.json()["status"] == "approved"
    inbox = (await client.get("/api/v1/inbox", headers=as_("officer"))).json()
    assert inbox["total"] == 1 and inbox["items"][0]["title"] == "Tuyên truyền bầu cử"
    taken = await client.post(
        f"/api/v1/inbox/{inbox['items'][0]['id']}/schedule",
        headers=as_("officer"),
        json={"start_at": at(3 * 3600)},
    )
    assert taken.status_code == 201, taken.text
    assert taken.json()["status"] == "scheduled"
    copy_id = taken.json()["id"]
    cancel = await client.post(f"/api/v1/broadcasts/{copy_id}/cancel", headers=as_("officer"))
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    again = await client.post(f"/api/v1/broadcasts/{copy_id}/cancel", headers=as_("officer"))
    assert again.status_code == 409
    await asyncio.sleep(net.sched.housekeeping_s * 2)
    assert copy_id not in net.scheduling.runtime.job_ids()
