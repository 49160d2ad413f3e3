"""Alarm engine: conditions, debounce, flapping, clearing, acknowledgement and scope."""

from __future__ import annotations

from sqlalchemy import select

from controller.alarms import Alarm, AlarmEngine, conditions
from controller.models import NodeLive, NodeTransition
from tests.factories import make_registry

T0 = 1_750_000_000_000


def set_live(
    db, node_id: str, state: str, at_ms: int, reasons: str = "", heartbeat: dict | None = None
) -> None:
    with db.session() as s:
        row = s.get(NodeLive, node_id)
        if row is None:
            row = NodeLive(node_id=node_id, state=state, since_ms=at_ms)
            s.add(row)
        if row.state != state:
            s.add(
                NodeTransition(
                    node_id=node_id,
                    at_ms=at_ms,
                    from_state=row.state,
                    to_state=state,
                    available=state != "offline",
                    cause="test",
                )
            )
            row.since_ms = at_ms
        row.state, row.reasons, row.heartbeat = state, reasons, heartbeat
        row.available = state != "offline"


def alarms(db) -> list[Alarm]:
    with db.session() as s:
        return list(s.scalars(select(Alarm).order_by(Alarm.id)))


def test_conditions_from_live_record():
    assert conditions("offline", "amp_fault", None) == {"offline"}
    assert conditions("degraded", "amp_fault,speaker_line", "mains") == {
        "amp_fault",
        "speaker_line",
    }
    assert conditions("degraded", "battery_low,weak_signal", None) == {"on_battery", "weak_signal"}
    assert conditions("online", "", "battery") == {"on_battery"}
    assert conditions("unknown", "", None) == set()


def test_debounce_raise_clear_and_flapping(db):
    make_registry(db, communes={"Đội Cấn": {"Thôn A": ["n1", "n2"]}})
    engine = AlarmEngine(db, raise_after_ms=30_000, clear_after_ms=60_000)
    set_live(db, "n1", "online", T0)
    set_live(db, "n2", "online", T0)
    engine.evaluate(T0)
    # n1 drops; a short blip (10 s) does not raise anything.
    set_live(db, "n1", "offline", T0 + 1_000)
    engine.evaluate(T0 + 1_000)
    set_live(db, "n1", "online", T0 + 11_000)
    engine.evaluate(T0 + 11_000)
    assert alarms(db) == []
    # Then it flaps every 10 s for 3 minutes: one alarm, not a storm.
    t = T0 + 21_000
    state = "offline"
    while t < T0 + 190_000:
        set_live(db, "n1", state, t)
        engine.evaluate(t)
        state = "online" if state == "offline" else "offline"
        t += 10_000
    rows = alarms(db)
    assert len(rows) == 1
    alarm = rows[0]
    assert alarm.kind == "offline" and alarm.node_id == "n1" and alarm.cleared_ms is None
    assert alarm.flaps >= 5
    assert alarm.first_seen_ms == T0 + 1_000  # counted from the first drop, within the window
    assert alarm.commune_id is not None
    assert "lần mất kết nối" in alarm.detail
    # Stable again: cleared only after clear_after (60 s).
    set_live(db, "n1", "online", t)
    engine.evaluate(t)
    engine.evaluate(t + 59_000)
    assert alarms(db)[0].cleared_ms is None
    engine.evaluate(t + 61_000)
    assert alarms(db)[0].cleared_ms == t + 61_000
    # A new outage later is a new alarm.
    set_live(db, "n1", "offline", t + 200_000)
    engine.evaluate(t + 200_000)
    engine.evaluate(t + 231_000)
    assert len(alarms(db)) == 2


def test_faults_are_not_cleared_by_going_offline(db):
    make_registry(db, communes={"Đội Cấn": {"Thôn A": ["n1"]}})
    engine = AlarmEngine(db, raise_after_ms=5_000, clear_after_ms=5_000)
    hb = {
        "amp": "fault",
        "speakers_ok": 1,
        "speakers_total": 2,
        "power": "battery",
        "battery_v": 11.1,
        "rssi_dbm": -110,
    }
    set_live(db, "n1", "degraded", T0, "amp_fault,speaker_line,battery_low,weak_signal", hb)
    engine.evaluate(T0)
    engine.evaluate(T0 + 6_000)
    kinds = {a.kind: a for a in alarms(db)}
    assert set(kinds) == {"amp_fault", "speaker_line", "on_battery", "weak_signal"}
    assert kinds["weak_signal"].detail == "RSSI -110 dBm"
    assert kinds["on_battery"].detail == "Pin 11.1 V"
    assert kinds["speaker_line"].detail == "1/2 loa hoạt động"
    # Offline: the heartbeat is stale, so the fault alarms stay open.
    set_live(db, "n1", "offline", T0 + 7_000, "", hb)
    for dt in (7_000, 20_000, 40_000):
        engine.evaluate(T0 + dt)
    open_kinds = {a.kind for a in alarms(db) if a.cleared_ms is None}
    assert open_kinds == {"amp_fault", "speaker_line", "on_battery", "weak_signal", "offline"}
    # Back online and healthy: everything clears after the clear delay.
    set_live(db, "n1", "online", T0 + 50_000, "", {"amp": "ok", "power": "mains"})
    engine.evaluate(T0 + 50_000)
    engine.evaluate(T0 + 56_000)
    assert all(a.cleared_ms is not None for a in alarms(db))


def test_restart_does_not_delay_a_long_outage(db):
    make_registry(db, communes={"Đội Cấn": {"Thôn A": ["n1"]}})
    set_live(db, "n1", "offline", T0)
    fresh = AlarmEngine(db, raise_after_ms=30_000, clear_after_ms=60_000)
    fresh.evaluate(T0 + 120_000)  # first pass of a just-started engine
    assert [a.kind for a in alarms(db)] == ["offline"]


def test_alarm_api_scope_and_ack(stack):
    tech = stack.token("technician")
    officer = stack.token("commune")
    engine = AlarmEngine(stack.db, raise_after_ms=0, clear_after_ms=10_000)
    set_live(stack.db, "dc-001", "offline", T0)
    set_live(stack.db, "hvt-001", "offline", T0)
    engine.evaluate(T0 + 1)
    with stack.client() as c:
        page = c.get("/api/v1/alarms", headers={"Authorization": f"Bearer {tech}"}).json()
        assert page["open"] == 2 and page["open_unacked"] == 2
        assert {a["node_id"] for a in page["items"]} == {"dc-001", "hvt-001"}
        item = next(a for a in page["items"] if a["node_id"] == "dc-001")
        assert item["label"] == "Mất kết nối" and item["commune"] == "Đội Cấn"
        # The commune officer sees only their commune's alarm, and cannot acknowledge.
        mine = c.get("/api/v1/alarms", headers={"Authorization": f"Bearer {officer}"}).json()
        assert [a["node_id"] for a in mine["items"]] == ["dc-001"]
        other = next(a for a in page["items"] if a["node_id"] == "hvt-001")
        r = c.post(
            f"/api/v1/alarms/{other['id']}/ack", headers={"Authorization": f"Bearer {officer}"}
        )
        assert r.status_code == 403
        auth = {"Authorization": f"Bearer {tech}"}
        r = c.post(f"/api/v1/alarms/{item['id']}/ack", headers=auth, json={"note": "x" * 501})
        assert r.status_code == 422 and "500" in r.json()["detail"]  # refused, not cut
        r = c.post(
            f"/api/v1/alarms/{item['id']}/ack", headers=auth, json={"note": " Đã báo điện lực "}
        )
        assert r.status_code == 200 and r.json()["acked_by"] == "technician"
        assert r.json()["ack_note"] == "Đã báo điện lực" and r.json()["severity"] == 3
        page = c.get("/api/v1/alarms", headers={"Authorization": f"Bearer {tech}"}).json()
        assert page["open"] == 2 and page["open_unacked"] == 1
        # The page's form (it once answered HTTP 500) acknowledges with a note too.
        web, csrf = stack.login_client("technician")
        try:
            r = web.post(
                f"/tech/alarms/{other['id']}/ack",
                data={"csrf_token": csrf, "note": "Thay cầu chì", "next": "/tech/alarms"},
            )
            assert r.status_code == 303 and r.headers["location"] == "/tech/alarms?ok=acked"
            assert "Thay cầu chì" in web.get("/tech/alarms?state=all").text
        finally:
            web.close()


async def test_the_root_runs_the_engine_while_the_controller_leads(db, settings):
    import asyncio

    from controller.alarms import AlarmService
    from system.root import System

    make_registry(db, communes={"Đội Cấn": {"Thôn A": ["n1"]}})
    system = System(settings, db=db, http=False)
    controller = system.controller
    assert controller is not None and isinstance(system.alarms, AlarmService)
    names = [r.name for r in controller.leader_roles]
    assert names.count("cảnh báo") == 1  # one engine per fleet, on the leader
    system.alarms.engine.raise_after_ms = 0
    system.alarms.interval_s = 0.05
    set_live(db, "n1", "offline", T0)
    role = controller.leader_roles[names.index("cảnh báo")]
    await role.start()
    try:
        for _ in range(100):
            if alarms(db):
                break
            await asyncio.sleep(0.05)
    finally:
        await role.stop()
    assert [a.kind for a in alarms(db)] == ["offline"]
