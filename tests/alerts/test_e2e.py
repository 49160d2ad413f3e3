"""End to end on loopback: Debian mosquitto, the controller, the dispatcher and scheduler, the
dashboard under uvicorn, real offline TTS, and simulated clusters. A provincial system POSTs
a CAP alert for two communes: every online cluster of those communes starts playing it, none
elsewhere does; the alert's page proves it; a Cancel stops it on the air and an all-clear
follows. Bad documents get a 4xx with the reason and air nothing."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from alerts.config import AlertSettings
from alerts.workflow import AlertService
from dashboard.security import create_user, issue_token
from firmware_sim.fleet import Fleet
from loa.broker import free_port
from scheduler.config import SchedulerSettings
from scheduler.content import ContentGateway
from scheduler.models import AiringTarget
from tests.alerts import capdocs as d
from tests.alerts.conftest import COMMUNES, COORDS, TRUSTED, place_clusters
from tests.conftest import settings_for
from tests.factories import make_registry
from tests.scheduler.conftest import FAST, Network, wait_for

ONLINE_IN_AREA = ["hvt-01", "hvt-02", "mp-01", "mp-02"]  # hvt-03 stays off the air
ELSEWHERE = ["dd-01", "dd-02"]


def _token(db, username: str, role: str, communes: list[int]) -> str:
    with db.session() as s:
        user = create_user(s, username, "mat-khau-dai-du", role, communes)
        raw, _ = issue_token(s, user, "api")
    return raw


@pytest.fixture
async def stack(tmp_path, mosquitto_broker, settings, db):
    from broadcasts.store import ContentStore
    from dashboard.app import create_app
    from dashboard.security import alerts_audit
    from system.root import api_context

    http_port = free_port()
    base_url = f"http://127.0.0.1:{http_port}"
    cfg = settings_for(
        settings, mosquitto_broker, http_port=http_port, public_base_url=base_url, heartbeat_s=10
    )
    ids = make_registry(db, communes=COMMUNES, heartbeat_s=10)
    place_clusters(db, COORDS)
    store = ContentStore(cfg, db)
    net = Network(
        settings=cfg,
        db=db,
        ids=ids,
        broker=mosquitto_broker,
        base_url=base_url,
        store=store,
        content=ContentGateway(store),
        sched=SchedulerSettings(**FAST),
        fleet=Fleet(
            mosquitto_broker.host, mosquitto_broker.port, heartbeat_s=10, connect_rate=500, seed=11
        ),
    )
    await net.start_controller()
    net.ctx = api_context(
        cfg, db, content=store, controller=net.controller, scheduling=net.scheduling
    )
    net.ctx.alerts = AlertService(
        db,
        net.scheduling.broadcasts,
        # Warning tones made by the nodes (tone_mode "node"): the start is proof at once.
        AlertSettings(auto_senders=[TRUSTED], tone_pattern="2x0.5/0.3"),
        content=net.content,
        audit=alerts_audit,
    )
    app = create_app(net.ctx)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=http_port, log_level="warning", lifespan="on")
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started or serving.done(), 15, "the dashboard to serve")
    tokens = {
        "province": _token(db, "he-thong-tinh", "province", []),
        "officer": _token(db, "canbo-hvt", "commune", [ids["Hoàng Văn Thụ"]]),
    }
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            yield net, client, tokens
    finally:
        await net.fleet.stop()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 10)
        await net.scheduling.stop()
        await net.controller.stop()


def _post(client, token: str, body: bytes, ctype: str = "application/xml"):
    return client.post(
        "/api/v1/alerts/cap",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": ctype},
    )


async def test_cap_alert_for_two_communes_plays_on_their_online_clusters_only(stack):
    net, client, tokens = stack
    await net.fleet.start(ONLINE_IN_AREA + ELSEWHERE)
    await net.online(ONLINE_IN_AREA + ELSEWHERE)

    # The province gives flash floods their own warning tone (issue 19, item 4).
    r = await client.put(
        "/api/v1/alerts/templates",
        json={"event": "Lũ quét", "template": "{tieu_de}.", "tone_pattern": "1x0.6/0"},
        headers={"Authorization": f"Bearer {tokens['province']}"},
    )
    assert r.status_code == 200, r.text
    doc = d.flood("KTTV-E2E-1", communes=["c0", "c1"])
    resp = await _post(client, tokens["province"], doc)
    assert resp.status_code == 202, resp.text
    alert = resp.json()
    assert alert["state"] == "airing" and alert["clusters"] == 5
    bid = alert["broadcast_ids"][0]
    prefix = f"b{bid}-"

    def playing_in_area():
        return all(
            (net.fleet.node(n).player.playing_id or "").startswith(prefix) for n in ONLINE_IN_AREA
        )

    await wait_for(playing_in_area, 40, "the alert to play on every online cluster in the area")
    for n in ELSEWHERE:
        assert net.fleet.node(n).player.playing_id is None
    # Each node's ``play`` carried the flood's own tone, not the default 2x0.5/0.3.
    plays = [net.fleet.node(n).player.current.cmd for n in ONLINE_IN_AREA]
    assert {(c.tone.count, c.tone.on_ms, c.tone.off_ms) for c in plays} == {(1, 600, 0)}
    assert all(
        net.fleet.node(n).effective_volume == net.sched.emergency_volume for n in ONLINE_IN_AREA
    )

    # The same document again (a feed re-delivering it) is a duplicate: nothing new airs.
    again = await _post(client, tokens["province"], doc)
    assert again.status_code == 200 and again.json()["result"] == "duplicate"

    # Proof on the alert's page, from the nodes' own playback reports.
    async def proof():
        r = await client.get(
            f"/api/v1/alerts/{alert['id']}",
            headers={"Authorization": f"Bearer {tokens['province']}"},
        )
        p = r.json()["proof"]
        return p if p and p["started"] == 4 else None

    p = await wait_for(proof, 20, "the started reports to be recorded")
    assert p["targeted"] == 5 and p["first_started_s"] is not None
    assert p["p50_s"] is not None and p["p50_s"] >= p["first_started_s"]
    assert p["p99_s"] is None  # 4 of 5: the fifth never came on line
    [missing] = p["not_started"]
    assert missing["node_id"] == "hvt-03" and missing["commune"] == "Hoàng Văn Thụ"
    # The same proof as a download from the alert's page (alerts.proof).
    r = await client.get(
        f"/api/v1/alerts/{alert['id']}/proof.csv",
        headers={"Authorization": f"Bearer {tokens['province']}"},
    )
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    lines = r.content.decode("utf-8").lstrip("\ufeff").splitlines()
    assert lines[0].startswith("section,at,at_ms,action")
    assert [ln for ln in lines if ",not_started," in ln and ",hvt-03," in ln]
    r = await client.get(
        f"/api/v1/alerts/{alert['id']}/proof.xlsx",
        headers={"Authorization": f"Bearer {tokens['province']}"},
    )
    assert r.status_code == 422
    with net.db.session() as s:
        aimed = set(s.scalars(select(AiringTarget.node_id)))
        starts = [
            r
            for t in s.scalars(select(AiringTarget))
            for r in t.events or []
            if r.get("phase") == "started"
        ]
    assert aimed == set(ONLINE_IN_AREA) | {"hvt-03"}
    # Each node sounded the tone it made itself: a plausible start before any download.
    assert len(starts) == 4
    assert all(r["extra"].get("tone") is True and "implausible" not in r for r in starts)

    # Cancel: stopped on the air, all-clear scheduled on the same clusters.
    resp = await _post(client, tokens["province"], d.cancel("KTTV-E2E-2", references=d.ref_of(doc)))
    assert resp.status_code == 202 and "Đã hủy 1" in resp.json()["state_reason"]
    await wait_for(
        lambda: all(
            not (net.fleet.node(n).player.playing_id or "").startswith(prefix)
            for n in ONLINE_IN_AREA
        ),
        15,
        "the alert to stop on every cluster",
    )
    r = await client.get(
        f"/api/v1/alerts/{alert['id']}", headers={"Authorization": f"Bearer {tokens['province']}"}
    )
    body = r.json()
    assert body["state"] == "cancelled" and body["all_clear_broadcast_id"]
    assert body["tone"]["pattern"] == "1x0.6/0"
    # The all-clear never sounds the alarm: its ``play`` on every node carries no tone.
    clear = f"b{body['all_clear_broadcast_id']}-"

    def clear_jobs():
        jobs = [net.fleet.node(n).player.current for n in ONLINE_IN_AREA]
        ok = all(j is not None and j.broadcast_id.startswith(clear) for j in jobs)
        return jobs if ok else None

    jobs = await wait_for(clear_jobs, 30, "the all-clear to play on every cluster")
    assert all(j.cmd.tone is None for j in jobs)
    assert [st["action"] for st in body["steps"]][:3] == ["received", "area_matched", "aired"]
    assert "cancelled" in [st["action"] for st in body["steps"]]
    # Every step is in the shared audit log too.
    from dashboard.models import AuditLog

    with net.db.session() as s:
        actions = set(s.scalars(select(AuditLog.action)))
    assert {
        "alert.received",
        "alert.area_matched",
        "alert.aired",
        "alert.duplicate",
        "alert.cancelled",
        "alert.all_clear",
    } <= actions


async def test_bad_documents_are_refused_over_http_and_nothing_airs(stack):
    net, client, tokens = stack
    auth = {"Authorization": f"Bearer {tokens['province']}"}
    cases = [
        (d.flood(communes=["c0"])[:-20], "application/xml", 422, "malformed"),
        (
            b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&x;</alert>',
            "application/xml",
            422,
            "doctype",
        ),
        (d.flood(communes=["c0"]).replace(b"cap:1.2", b"cap:1.1"), "text/xml", 422, "cap_version"),
        (
            b"<alert>" + b"<note>x</note>" * 60_000 + b"</alert>",
            "application/xml",
            413,
            "too_large",
        ),
    ]
    for body, ctype, status, code in cases:
        r = await _post(client, tokens["province"], body, ctype)
        assert r.status_code == status, (code, r.text)
        assert r.json()["code"] == code and r.json()["detail"] and r.json()["detail_en"]
    r = await _post(client, tokens["province"], d.flood(communes=["c0"]), "application/json")
    assert r.status_code == 415
    r = await _post(client, tokens["officer"], d.flood(communes=["c0"]))
    assert r.status_code == 403
    r = await client.post(
        "/api/v1/alerts/cap",
        content=d.flood(communes=["c0"]),
        headers={"Content-Type": "application/xml"},
    )
    assert r.status_code == 401
    # Every refused document is kept, byte for byte, with its reason.
    msgs = (await client.get("/api/v1/alerts/messages", headers=auth)).json()
    assert [m["reason_code"] for m in msgs][:4] == [
        "too_large",
        "cap_version",
        "doctype",
        "malformed",
    ]
    raw = await client.get(f"/api/v1/alerts/messages/{msgs[2]['id']}/raw", headers=auth)
    assert raw.content.startswith(b'<?xml version="1.0"?><!DOCTYPE')
    assert (await client.get("/api/v1/alerts", headers=auth)).json()["total"] == 0
    from dashboard.models import AuditLog

    with net.db.session() as s:
        refused = s.scalars(select(AuditLog).where(AuditLog.action == "alert.refused")).all()
    assert len(refused) == 4 and {r.username for r in refused} == {"he-thong-tinh"}
    assert net.scheduling.broadcasts.list(net.province)["total"] == 0
