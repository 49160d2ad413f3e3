"""Three `loa controller` processes share a fleet; the one that runs the scheduler is killed
with SIGKILL before the dispatch, and the next one after it: a standby takes over each time
within the lease time, and the bulletin plays exactly once on every node, with proof of play.

The API runs in its own process (`loa serve --no-controller`), as behind a load balancer: it
writes the broadcast, the leading controller's housekeeping picks it up, and nodes fetch the
audio from the API's /media route (all processes share the data directory and secret key).
"""

from __future__ import annotations

import signal
import subprocess
from datetime import datetime

import httpx
from sqlalchemy import select

from controller.lease import Lease
from controller.models import ControllerLease
from dashboard.security import ensure_demo_accounts
from firmware_sim.fleet import Fleet
from loa.broker import free_port
from loa.timeutil import ICT, now_ms
from scheduler.models import Airing, AiringTarget
from scheduler.outcomes import PHASE_RANK
from tests.cluster_support import demo_login, start_api, start_controller, stop_all
from tests.factories import make_registry
from tests.scheduler.conftest import wait_for
from tests.scheduler.test_kill9 import up

NODES = ["ct-01", "ct-02", "ct-03", "ct-04"]
LEASE_S, RENEW_S = 4, 1


def leader(db) -> ControllerLease | None:
    with db.session() as s:
        row = s.get(ControllerLease, "leader")
        return row if row is not None and row.expires_ms > now_ms() else None


async def test_scheduler_moves_to_a_standby_and_plays_exactly_once(tmp_path, mosquitto_broker, db):
    make_registry(db, communes={"Xã Tân Thành": {"Thôn Khuổi Phầy": NODES}}, heartbeat_s=10)
    ensure_demo_accounts(db)
    http_port = free_port()
    shared = tmp_path / "shared"
    common = {
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{http_port}",
        "DISPATCH_LEAD_S": "8",
        "ICECAST_BINARY": "/nonexistent/icecast2",
        "HOUSEKEEPING_S": "0.5",
        "ACK_MARGIN_S": "3",
        "ACK_RETRY_S": "2",
    }
    api = start_api(db.url, mosquitto_broker.port, http_port, shared, **common)

    def controller(name: str) -> subprocess.Popen:
        return start_controller(
            name,
            db.url,
            mosquitto_broker.port,
            tmp_path,
            lease_s=LEASE_S,
            data_dir=shared,
            **common,
        )

    procs = {"ctl-1": controller("ctl-1")}
    fleet = Fleet(mosquitto_broker.host, mosquitto_broker.port, heartbeat_s=10, seed=7)
    try:
        await up(http_port)
        await wait_for(
            lambda: (row := leader(db)) and row.holder == "ctl-1", 30, "ctl-1 to lead", interval=0.2
        )
        procs["ctl-2"] = controller("ctl-2")
        procs["ctl-3"] = controller("ctl-3")
        await fleet.start(NODES)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=60) as c:
            auth = await demo_login(c, "commune")
            start = datetime.fromtimestamp((now_ms() + 30_000) / 1000, tz=ICT).isoformat()
            r = await c.post(
                "/api/v1/broadcasts",
                headers=auth,
                json={
                    "title": "Tiêm phòng gia súc",
                    "tts_text": "Thôn tiêm phòng gia súc lúc 8h sáng mai.",
                    "targets": {"nodes": NODES},
                    "start_at": start,
                },
            )
            assert r.status_code == 201, r.text
            bid = r.json()["id"]

        # 1. The leader dies before the slot is dispatched.
        first = Lease(db, "leader", "ctl-1", 0).read()
        procs["ctl-1"].send_signal(signal.SIGKILL)
        procs["ctl-1"].wait(10)
        second = await wait_for(
            lambda: (row := leader(db)) and row.holder != "ctl-1" and row,
            30,
            "a standby to take the scheduler",
            interval=0.2,
        )
        # Taken at the first try after the dead leader's lease ran out.
        assert second.term == first.term + 1
        assert second.acquired_ms - first.expires_ms <= (RENEW_S + 2) * 1000

        def airing_targets():
            with db.session() as s:
                airings = s.scalars(select(Airing).where(Airing.broadcast_id == bid)).all()
                if not airings:
                    return None
                assert len(airings) == 1
                return airings[0], {
                    t.node_id: t
                    for t in s.scalars(
                        select(AiringTarget).where(AiringTarget.airing_id == airings[0].id)
                    )
                }

        # 2. The new leader dispatches; it dies as soon as every node has acknowledged,
        # before the slot starts.
        await wait_for(
            lambda: (
                (at := airing_targets())
                and all(PHASE_RANK[t.phase] >= PHASE_RANK["acked"] for t in at[1].values())
            ),
            40,
            "the new leader's dispatch",
        )
        assert now_ms() < airing_targets()[0].start_at_ms, "too slow: the slot has begun"
        procs[second.holder].send_signal(signal.SIGKILL)
        procs[second.holder].wait(10)
        last = next(n for n in procs if procs[n].poll() is None)
        await wait_for(
            lambda: (row := leader(db)) and row.holder == last,
            30,
            "the last controller to take the scheduler",
            interval=0.2,
        )

        def final():
            at = airing_targets()
            return at if at and at[0].status in ("aired", "partly_aired", "missed") else None

        airing, targets = await wait_for(final, 90, "the airing to end")
        assert airing.status == "aired", {n: (t.phase, t.error) for n, t in targets.items()}
        for node_id in NODES:
            t = targets[node_id]
            assert t.phase == "finished", (node_id, t.phase, t.error)
            starts = [e for e in t.events or [] if e.get("phase") == "started"]
            assert len(starts) == 1, t.events
            assert fleet.node(node_id).stats.commands >= 1
    finally:
        await fleet.stop()
        stop_all([api, *procs.values()])
