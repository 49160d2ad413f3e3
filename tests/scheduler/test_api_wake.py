"""The API in its own process, as docker-compose runs it (`loa serve --no-controller`),
schedules an emergency and then cancels it: the leading controller acts on each at once,
because the API wakes its scheduler (controller.schedule_wake), not on its next housekeeping
pass. Housekeeping is set to 120 s here, so only the wake can explain a start or a stop
within seconds. Before the wake, an alert received by the API in production waited up to
`LOA_HOUSEKEEPING_S` (5 s) before any loudspeaker was told."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from dashboard.security import ensure_demo_accounts
from firmware_sim.fleet import Fleet
from loa.broker import free_port
from loa.timeutil import now_ms
from scheduler.models import Airing, AiringTarget
from tests.cluster_support import demo_login, start_api, start_controller, stop_all
from tests.factories import make_registry
from tests.scheduler.conftest import wait_for
from tests.scheduler.test_cluster_takeover import leader
from tests.scheduler.test_kill9 import up

NODES = ["wk-01", "wk-02"]


async def test_an_emergency_scheduled_by_the_api_process_airs_and_stops_at_once(
    tmp_path, mosquitto_broker, db
):
    ids = make_registry(db, communes={"Xã Tân Thành": {"Thôn Khuổi Phầy": NODES}}, heartbeat_s=10)
    ensure_demo_accounts(db)
    http_port = free_port()
    shared = tmp_path / "shared"
    common = {
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{http_port}",
        "ICECAST_BINARY": "/nonexistent/icecast2",
        "HOUSEKEEPING_S": "120",
        "ACK_MARGIN_S": "3",
    }
    api = start_api(db.url, mosquitto_broker.port, http_port, shared, **common)
    ctl = start_controller(
        "ctl-w", db.url, mosquitto_broker.port, tmp_path, data_dir=shared, **common
    )
    fleet = Fleet(mosquitto_broker.host, mosquitto_broker.port, heartbeat_s=10, seed=3)
    try:
        await up(http_port)
        # Leading means its scheduler ran its start-up pass: what comes after is the wake's.
        await wait_for(lambda: (row := leader(db)) and row.holder == "ctl-w", 30, "ctl-w to lead")
        await fleet.start(NODES)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=60) as c:
            auth = await demo_login(c, "province")
            r = await c.post(
                "/api/v1/broadcasts",
                headers=auth,
                json={
                    "title": "Khẩn cấp: lũ quét",
                    "tts_text": "Lũ quét đang về, bà con thôn Khuổi Phầy lên chỗ cao ngay.",
                    "priority": "emergency",
                    "confirm": True,
                    "repeat": 8,  # about 40 s on air: a stop within seconds is the cancel's
                    "targets": {"communes": [ids["Xã Tân Thành"]]},
                },
            )
            assert r.status_code == 201, r.text
            bid, created = r.json()["id"], now_ms()

            def targets() -> dict[str, AiringTarget]:
                with db.session() as s:
                    airing = s.scalar(select(Airing).where(Airing.broadcast_id == bid))
                    if airing is None:
                        return {}
                    return {
                        t.node_id: t
                        for t in s.scalars(
                            select(AiringTarget).where(AiringTarget.airing_id == airing.id)
                        )
                    }

            def started() -> bool:
                got = targets()
                return sorted(got) == NODES and all(t.started_at_ms for t in got.values())

            await wait_for(started, 30, "the emergency to start on every node")
            assert max(t.started_at_ms for t in targets().values()) - created < 20_000

            r = await c.post(f"/api/v1/broadcasts/{bid}/cancel", headers=auth)
            assert r.status_code == 200, r.text
            cancelled = now_ms()

            def stopped() -> bool:
                return all(fleet.node(n).player.playing_id is None for n in NODES)

            await wait_for(stopped, 15, "the cancelled emergency to stop on every node")
            assert now_ms() - cancelled < 15_000
    finally:
        await fleet.stop()
        stop_all([api, ctl])
