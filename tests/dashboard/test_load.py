"""Issue 17, finding 2: two hundred concurrent requests against a real ``loa serve`` (API and
controller in one process, as in a one-machine install) while the controller ingests
heartbeats and events from a real mosquitto.

Before the fix, sixty such requests froze the process: every AnyIO worker thread waited for a
pool connection held by a request that waited for a thread, until the pool's 30 s timeout
turned them into 500s, and the ingest's writes failed with the same error (flush_errors).
Here every request must get its answer (no 5xx; with the default per-client limits, not even
a 429), and every heartbeat and event must be in the database with no flush error. Speed is
measured in ``bench/api.py`` (the ``concurrency`` scenario), not asserted here."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter

import aiomqtt
import httpx
from sqlalchemy import func, select

from controller.models import HeartbeatSample, NodeEventLog
from dashboard.security import ensure_demo_accounts
from loa.broker import free_port
from loa.timeutil import now_ms
from system.root import api_context
from tests.factories import make_registry

NODES = [f"ld-{i:02d}" for i in range(12)]
ROUNDS = 8
CONCURRENT = 200


def serve(db_url: str, data_dir, mqtt_port: int, http_port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "LOA_DATABASE_URL": db_url,
        "LOA_DATA_DIR": str(data_dir),
        "LOA_MQTT_PORT": str(mqtt_port),
        "LOA_HTTP_PORT": str(http_port),
        "LOA_PUBLIC_BASE_URL": f"http://127.0.0.1:{http_port}",
        "LOA_SECRET_KEY": "load-test-secret",
        "LOA_LOG_LEVEL": "WARNING",
        # Every heartbeat becomes a stored sample, so "nothing lost" can be counted.
        "LOA_HISTORY_SAMPLE_S": "0",
        "LOA_FLUSH_INTERVAL_S": "0.2",
        "LOA_ICECAST_BINARY": "/nonexistent/icecast2",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "system", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def heartbeat(seq: int) -> str:
    return json.dumps(
        {
            "seq": seq,
            "ts": now_ms(),
            "uptime_s": seq,
            "volume": 60,
            "amp": "ok",
            "speakers_ok": 2,
            "speakers_total": 2,
            "power": "mains",
            "net": "4g",
            "rssi_dbm": -85,
            "playing": None,
        }
    )


def fault(seq: int) -> str:
    return json.dumps(
        {"type": "fault", "ts": now_ms(), "code": "amp_fault", "detail": f"load {seq}"}
    )


async def wait_up(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=5) as c:
        for _ in range(600):
            try:
                if (await c.get("/api/v1/health/live")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("loa serve did not come up")


async def publish(port: int) -> int:
    """ROUNDS heartbeats and fault events per node, QoS 1, spread over the request burst."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="load-publisher") as c:
        for seq in range(ROUNDS):
            for node in NODES:
                await c.publish(f"loa/v1/nodes/{node}/heartbeat", heartbeat(seq), qos=1)
                await c.publish(f"loa/v1/nodes/{node}/events", fault(seq), qos=1)
            await asyncio.sleep(0.25)
    return ROUNDS * len(NODES)


async def burst(base: str, tokens: dict[str, str]) -> Counter:
    """CONCURRENT requests at once: anonymous (health summary, login page), and logged in as
    a commune officer and the province (node lists, health), over separate connections."""
    plan: list[tuple[str, str | None]] = []
    for i in range(CONCURRENT):
        kind = i % 5
        plan.append(
            {
                0: ("/api/v1/health/summary", None),
                1: ("/login", None),
                2: ("/api/v1/nodes", "commune"),
                3: ("/api/v1/nodes", "province"),
                4: ("/api/v1/health/summary", "commune"),
            }[kind]
        )
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as c:

        async def one(path: str, who: str | None) -> tuple[str, int]:
            headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
            try:
                r = await c.get(path, headers=headers)
            except httpx.TimeoutException:  # what the frozen server of the issue gave
                return f"{who or 'anonymous'} {path}", 0
            if r.status_code == 200 and path == "/api/v1/nodes":
                assert r.json(), "a logged-in officer sees the nodes of their commune"
            return f"{who or 'anonymous'} {path}", r.status_code

        results = await asyncio.gather(*(one(p, w) for p, w in plan))
    return Counter(f"{what} -> {code}" for what, code in results)


async def test_two_hundred_concurrent_requests_get_answers_and_no_write_is_lost(
    tmp_path, mosquitto_broker, db
):
    make_registry(
        db,
        communes={
            "Đội Cấn": {"Thôn Nà Pàn": NODES[:6]},
            "Hoàng Văn Thụ": {"Thôn Pác Mòng": NODES[6:]},
        },
    )
    ensure_demo_accounts(db)
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    proc = serve(db.url, tmp_path / "data", mosquitto_broker.port, http_port)
    try:
        await wait_up(base)
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            tokens = {}
            for who in ("commune", "province"):
                r = await c.post("/api/v1/auth/token", data={"username": who, "password": "demo"})
                assert r.status_code == 200, r.text
                tokens[who] = r.json()["access_token"]
                # One accepted request: the token now has its logged-in budget.
                assert (
                    await c.get(
                        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens[who]}"}
                    )
                ).status_code == 200
            # The controller is subscribed before anything is published.
            for _ in range(100):
                summary = (await c.get("/api/v1/health/summary")).json()
                if summary["controller"] and summary["controller"]["connected"]:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the controller did not connect to the broker")

        publisher = asyncio.create_task(publish(mosquitto_broker.port))
        first = await burst(base, tokens)
        second = await burst(base, tokens)
        sent = await publisher

        for outcome in (first, second):
            assert sum(outcome.values()) == CONCURRENT
            assert all(key.endswith("-> 200") for key in outcome), outcome

        def stored() -> tuple[int, int]:
            with db.session() as s:
                samples = s.scalar(
                    select(func.count())
                    .select_from(HeartbeatSample)
                    .where(HeartbeatSample.node_id.in_(NODES))
                )
                events = s.scalar(
                    select(func.count())
                    .select_from(NodeEventLog)
                    .where(NodeEventLog.node_id.in_(NODES), NodeEventLog.type == "fault")
                )
            return samples, events

        for _ in range(150):
            if stored() == (sent, sent):
                break
            await asyncio.sleep(0.2)
        assert stored() == (sent, sent), "every heartbeat and event is in the database"
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            controller = (await c.get("/api/v1/health/summary")).json()["controller"]
        assert controller["flush_errors"] == 0, controller
        assert controller["accepted_messages"]["heartbeat"] >= sent
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert b"QueuePool limit" not in err, err.decode(errors="replace")[-2000:]


async def test_a_pool_of_two_connections_serves_a_burst_without_deadlock(tmp_path, db):
    """The invariant behind the fix, at its tightest: two pooled connections, 40 worker
    threads, 120 concurrent requests, some of which open a second session of their own (the
    broadcast list goes through the scheduling service). The API takes one database slot
    (half the pool), so a request holding a connection always finds a thread and a thread
    always finds a connection; before, this froze until the pool's 30 s timeout and 500s."""
    import threading

    import uvicorn

    from dashboard.app import create_app
    from loa.db import Database
    from loa.settings import Settings

    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": NODES[:6]}})
    ensure_demo_accounts(db)
    tight = Database(db.url, pool_size=2, max_overflow=0)
    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db.url,
        http_port=port,
        secret_key="tight-pool-secret",
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(api_context(settings, tight)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            **settings.proxy_options(),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_up(base)
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            r = await c.post("/api/v1/auth/token", data={"username": "commune", "password": "demo"})
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            assert (await c.get("/api/v1/auth/me", headers=auth)).status_code == 200
        limits = httpx.Limits(max_connections=120, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as c:
            paths = ["/api/v1/nodes", "/api/v1/broadcasts", "/api/v1/health/summary"]

            async def one(i: int) -> int:
                try:
                    return (await c.get(paths[i % 3], headers=auth)).status_code
                except httpx.TimeoutException:
                    return 0

            codes = Counter(await asyncio.gather(*(one(i) for i in range(120))))
        assert codes == {200: 120}, codes
    finally:
        server.should_exit = True
        thread.join(15)
        tight.dispose()
