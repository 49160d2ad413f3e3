"""A real `loa serve` process killed with SIGKILL between scheduling and the slot, then
started again: the bulletin plays exactly once on every node."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import datetime

import httpx
from sqlalchemy import select

from dashboard.security import ensure_demo_accounts
from firmware_sim.fleet import Fleet
from loa.broker import free_port
from loa.timeutil import ICT, now_ms
from scheduler.models import Airing, AiringTarget
from tests.factories import make_registry
from tests.scheduler.conftest import wait_for

NODES = ["k9-01", "k9-02"]


def serve(db_url: str, data_dir, mqtt_port: int, http_port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "LOA_DATABASE_URL": db_url,
        "LOA_DATA_DIR": str(data_dir),
        "LOA_MQTT_PORT": str(mqtt_port),
        "LOA_HTTP_PORT": str(http_port),
        "LOA_PUBLIC_BASE_URL": f"http://127.0.0.1:{http_port}",
        "LOA_SECRET_KEY": "k9",
        "LOA_DISPATCH_LEAD_S": "4",
        "LOA_LOG_LEVEL": "WARNING",
        # A SIGKILLed process cannot stop its Icecast child: leave live streaming out.
        "LOA_ICECAST_BINARY": "/nonexistent/icecast2",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "system", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def up(http_port: int) -> None:
    async def ok() -> bool:
        try:
            async with httpx.AsyncClient() as c:
                r = await c.get(f"http://127.0.0.1:{http_port}/api/v1/health/live")
                return r.status_code == 200
        except httpx.HTTPError:
            return False

    for _ in range(300):
        if await ok():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("loa serve did not come up")


async def test_kill_9_between_scheduling_and_slot_plays_exactly_once(
    tmp_path, mosquitto_broker, db
):
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": NODES}}, heartbeat_s=10)
    ensure_demo_accounts(db)
    http_port = free_port()
    args = (db.url, tmp_path / "data", mosquitto_broker.port, http_port)
    proc = serve(*args)
    fleet = Fleet(mosquitto_broker.host, mosquitto_broker.port, heartbeat_s=10, seed=9)
    try:
        await up(http_port)
        await fleet.start(NODES)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=60) as c:
            token = (
                await c.post("/api/v1/auth/token", data={"username": "commune", "password": "demo"})
            ).json()["access_token"]
            start = datetime.fromtimestamp((now_ms() + 20_000) / 1000, tz=ICT).isoformat()
            r = await c.post(
                "/api/v1/broadcasts",
                headers={"Authorization": f"Bearer {token}"},
                json={
                    "title": "Họp thôn",
                    "tts_text": "Thôn họp lúc 19h30.",
                    "targets": {"nodes": NODES},
                    "start_at": start,
                },
            )
            assert r.status_code == 201, r.text
            bid = r.json()["id"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await asyncio.sleep(2)
        proc = serve(*args)
        await up(http_port)

        def final():
            with db.session() as s:
                airings = s.scalars(select(Airing).where(Airing.broadcast_id == bid)).all()
                if len(airings) != 1 or airings[0].status not in (
                    "aired",
                    "partly_aired",
                    "missed",
                ):
                    return None
                return airings[0], {
                    t.node_id: t
                    for t in s.scalars(
                        select(AiringTarget).where(AiringTarget.airing_id == airings[0].id)
                    )
                }

        airing, targets = await wait_for(final, 90, "the airing to end")
        assert airing.status == "aired"
        for node_id in NODES:
            t = targets[node_id]
            assert t.phase == "finished", (node_id, t.phase, t.error)
            starts = [e for e in t.events or [] if e.get("phase") == "started"]
            assert len(starts) == 1, t.events
        assert sum(fleet.node(n).stats.commands for n in NODES) >= 2
    finally:
        await fleet.stop()
        proc.terminate()
        proc.wait(15)
