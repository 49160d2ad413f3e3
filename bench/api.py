"""API latency with a province-sized fleet: p50/p95 of the main endpoints while 3,000 nodes
are registered and heartbeating.

The database (SQLite, as in the embedded default) holds 3,000 nodes in 30 communes x 10
villages, with their live state, six hours of downsampled heartbeats and state transitions.
While requests run, a writer thread does what the ingest does for 3,000 nodes at a 30 s
heartbeat: about 100 live-state upserts a second, a few state changes, and new heartbeat
samples. The API runs under uvicorn on a loopback port; requests are sequential over one
keep-alive connection with a bearer token, as a technician's browser would send them.

Baseline in the same run: ``/api/v1/health/live`` (no authentication, no database), and
``/api/v1/auth/me`` (token check only), so each figure can be read as "x times a request
that does nothing". Also timed: one alarm-engine pass and one live-fleet poll over all
3,000 nodes, and the time to the first event of the live fleet stream.

    .venv/bin/python bench/api.py [--nodes 3000] [--requests 200]
    .venv/bin/python bench/api.py --scenario concurrency [--concurrency 200] [--rounds 5]
    .venv/bin/python bench/api.py --nodes 300 --requests 20 --concurrency 60 --rounds 2  # smoke

Scenario ``concurrency`` (issue 17): bursts of ``--concurrency`` requests sent at once, half
anonymous (health summary, login page, from 50 loopback addresses as 50 browsers would be)
and half logged in (node list and health summary as a technician and a commune officer), each
timed from its send to its answer by a client in another process; baseline in the same run:
the same burst on ``/api/v1/health/live``. The API runs on its own engine sized as
``loa serve`` sizes it.

Prints the figures and writes ``bench/results/api.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from sqlalchemy import insert, update  # noqa: E402

from bench._common import RESULTS  # noqa: E402
from controller.alarms import AlarmEngine  # noqa: E402
from controller.models import HeartbeatSample, NodeLive, NodeTransition  # noqa: E402
from dashboard.app import create_app  # noqa: E402
from dashboard.routes.live import FleetWatcher  # noqa: E402
from dashboard.security import ensure_demo_accounts  # noqa: E402
from loa.broker import free_port  # noqa: E402
from loa.db import Database  # noqa: E402
from loa.settings import Settings  # noqa: E402
from loa.text import fold  # noqa: E402
from loa.timeutil import now_ms  # noqa: E402
from registry.models import (  # noqa: E402
    Commune,
    Node,
    NodePlacement,
    Province,
    Village,
    VillageMembership,
)
from system.root import api_context, api_database  # noqa: E402
from system.schema import create_schema  # noqa: E402

COMMUNE_NAMES = [
    "Đội Cấn",
    "Hoàng Văn Thụ",
    "Tân Thanh",
    "Hữu Lũng",
    "Chi Lăng",
    "Bắc Sơn",
    "Bình Gia",
    "Văn Quan",
    "Tràng Định",
    "Cao Lộc",
    "Lộc Bình",
    "Đình Lập",
    "Văn Lãng",
    "Na Sầm",
    "Đồng Đăng",
    "Thất Khê",
    "Mẫu Sơn",
    "Quảng Lạc",
    "Hợp Thành",
    "Tân Lang",
    "Nhất Hòa",
    "Hòa Bình",
    "Yên Trạch",
    "Vân Mộng",
    "Khánh Khê",
    "Hồng Phong",
    "Minh Khai",
    "Tú Đoạn",
    "Bằng Mạc",
    "Xuân Long",
]
SAMPLE_EVERY_MS = 300_000
BASELINE = "baseline: GET /api/v1/health/live (no auth, no DB)"
HISTORY_MS = 6 * 3600_000
LOAD_1M: dict[str, float] = {}  # label -> 1-minute load average when it began (shared machine)


def heartbeat(rng: random.Random, state: str) -> dict:
    return {
        "seq": rng.randrange(10_000),
        "volume": 70,
        "amp": "fault" if state == "degraded" and rng.random() < 0.3 else "ok",
        "speakers_ok": 2,
        "speakers_total": 2,
        "power": "battery" if rng.random() < 0.05 else "mains",
        "net": "4g",
        "rssi_dbm": rng.randrange(-112, -60),
        "temp_c": round(rng.uniform(25, 45), 1),
        "battery_v": round(rng.uniform(11.2, 13.4), 2),
        "playing": None,
    }


def build_database(db: Database, nodes: int, rng: random.Random) -> list[str]:
    """Registry, live state, history: bulk inserts (the ORM per row would take minutes)."""
    now = now_ms()
    per_village = 10
    villages_per_commune = 10
    communes = max(1, nodes // (per_village * villages_per_commune))
    node_ids: list[str] = []
    with db.session() as s:
        s.execute(insert(Province), [{"id": 1, "code": "ls", "name": "Lạng Sơn"}])
        commune_rows, village_rows, members, node_rows, placements = [], [], [], [], []
        vid = 0
        for ci in range(communes):
            name = COMMUNE_NAMES[ci % len(COMMUNE_NAMES)] + (
                "" if ci < len(COMMUNE_NAMES) else f" {ci}"
            )
            commune_rows.append(
                {
                    "id": ci + 1,
                    "code": f"x{ci:03d}",
                    "province_id": 1,
                    "name": name,
                    "name_folded": fold(name),
                    "station_kind": "ip",
                    "lat": 21.5 + rng.uniform(0, 1),
                    "lon": 106.2 + rng.uniform(0, 1),
                    "created_ms": 0,
                }
            )
            for vi in range(villages_per_commune):
                vid += 1
                vname = f"Thôn {vi + 1}"
                village_rows.append(
                    {
                        "id": vid,
                        "code": f"x{ci:03d}v{vi}",
                        "name": vname,
                        "name_folded": fold(vname),
                        "commune_id": ci + 1,
                        "created_ms": 0,
                    }
                )
                members.append({"village_id": vid, "commune_id": ci + 1, "valid_from_ms": 0})
                for ni in range(per_village):
                    node_id = f"x{ci:03d}-{vi}-{ni}"
                    node_ids.append(node_id)
                    node_rows.append(
                        {
                            "id": node_id,
                            "village_id": vid,
                            "label": "",
                            "vendor": "",
                            "speakers": 2,
                            "heartbeat_s": 30,
                            "simulated": True,
                            "registered_ms": 0,
                        }
                    )
                    placements.append({"node_id": node_id, "village_id": vid, "valid_from_ms": 0})
        s.execute(insert(Commune), commune_rows)
        s.execute(insert(Village), village_rows)
        s.execute(insert(VillageMembership), members)
        s.execute(insert(Node), node_rows)
        s.execute(insert(NodePlacement), placements)

        live, samples, transitions = [], [], []
        for node_id in node_ids:
            state = rng.choices(["online", "degraded", "offline"], [0.9, 0.07, 0.03])[0]
            hb = heartbeat(rng, state)
            live.append(
                {
                    "node_id": node_id,
                    "state": state,
                    "available": state != "offline",
                    "since_ms": now - rng.randrange(HISTORY_MS),
                    "reasons": "weak_signal" if state == "degraded" else "",
                    "status_online": state != "offline",
                    "last_heartbeat_ms": now - rng.randrange(30_000),
                    "heartbeat": hb,
                }
            )
            transitions.append(
                {
                    "node_id": node_id,
                    "at_ms": now - HISTORY_MS,
                    "from_state": "unknown",
                    "to_state": "online",
                    "available": True,
                    "cause": "status_online",
                }
            )
            for t in range(now - HISTORY_MS, now, SAMPLE_EVERY_MS):
                samples.append(
                    {
                        "node_id": node_id,
                        "at_ms": t,
                        "rssi_dbm": hb["rssi_dbm"],
                        "temp_c": hb["temp_c"],
                        "battery_v": hb["battery_v"],
                        "volume": 70,
                        "amp": "ok",
                        "speakers_ok": 2,
                        "speakers_total": 2,
                        "power": "mains",
                    }
                )
        s.execute(insert(NodeLive), live)
        s.execute(insert(NodeTransition), transitions)
        for i in range(0, len(samples), 20_000):
            s.execute(insert(HeartbeatSample), samples[i : i + 20_000])
    return node_ids


class HeartbeatWriter(threading.Thread):
    """Writes what the ingest writes for a 3,000-node fleet at a 30 s heartbeat."""

    def __init__(self, db: Database, node_ids: list[str], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.db, self.node_ids, self.rng = db, node_ids, rng
        self.stop_flag = threading.Event()
        self.flushes = 0
        self.rows = 0

    def run(self) -> None:
        per_flush = max(1, len(self.node_ids) // 30)
        samples_per_flush = max(1, len(self.node_ids) * 1000 // SAMPLE_EVERY_MS)
        i = 0
        while not self.stop_flag.wait(1.0):
            now = now_ms()
            batch = [self.node_ids[(i + k) % len(self.node_ids)] for k in range(per_flush)]
            i += per_flush
            with self.db.session() as s:
                for node_id in batch:
                    s.execute(
                        update(NodeLive)
                        .where(NodeLive.node_id == node_id)
                        .values(last_heartbeat_ms=now, heartbeat=heartbeat(self.rng, "online"))
                    )
                flip = self.rng.choice(self.node_ids)
                new_state = self.rng.choice(["online", "offline", "degraded"])
                s.execute(
                    update(NodeLive)
                    .where(NodeLive.node_id == flip)
                    .values(state=new_state, since_ms=now, available=new_state != "offline")
                )
                s.add(
                    NodeTransition(
                        node_id=flip,
                        at_ms=now,
                        from_state="online",
                        to_state=new_state,
                        available=new_state != "offline",
                        cause="bench",
                    )
                )
                s.execute(
                    insert(HeartbeatSample),
                    [
                        {
                            "node_id": self.rng.choice(self.node_ids),
                            "at_ms": now,
                            "rssi_dbm": -80,
                            "temp_c": 30.0,
                            "battery_v": 12.8,
                            "volume": 70,
                            "amp": "ok",
                            "speakers_ok": 2,
                            "speakers_total": 2,
                            "power": "mains",
                        }
                        for _ in range(samples_per_flush)
                    ],
                )
            self.flushes += 1
            self.rows += len(batch) + 2 + samples_per_flush


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def measure(client: httpx.Client, path: str, n: int, headers: dict) -> dict:
    client.get(path, headers=headers)  # warm-up: first-use imports and caches
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(path, headers=headers)
        times.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"{path}: HTTP {r.status_code} {r.text[:200]}")
    return {
        "n": n,
        "p50_ms": round(percentile(times, 0.5), 2),
        "p95_ms": round(percentile(times, 0.95), 2),
        "mean_ms": round(statistics.mean(times), 2),
        "bytes": len(r.content),
    }


def time_to_first_event(base: str, headers: dict, n: int) -> dict:
    times = []
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            with c.stream("GET", "/api/v1/live/fleet", headers=headers) as r:
                for line in r.iter_lines():
                    if line.startswith("event: hello"):
                        break
            times.append((time.perf_counter() - t0) * 1000)
    return {
        "n": n,
        "p50_ms": round(percentile(times, 0.5), 2),
        "p95_ms": round(percentile(times, 0.95), 2),
    }


async def _burst(
    base: str, plan: list[tuple[str, str, dict]], clients: dict[str, httpx.AsyncClient]
) -> list[tuple[float, int]]:
    async def one(address: str, path: str, headers: dict) -> tuple[float, int]:
        t0 = time.perf_counter()
        try:
            r = await clients[address].get(path, headers=headers)
            code = r.status_code
        except httpx.TimeoutException:
            code = 0
        return (time.perf_counter() - t0) * 1000, code

    return await asyncio.gather(*(one(*p) for p in plan))


def concurrency(base: str, tokens: dict[str, str], size: int, rounds: int) -> dict:
    """p50/p95/max of ``size`` simultaneous requests, ``rounds`` times, and their statuses."""
    addresses = [f"127.0.0.{10 + i}" for i in range(50)]
    auth = {who: {"Authorization": f"Bearer {tok}"} for who, tok in tokens.items()}
    mixed = []
    for i in range(size):
        kind = i % 4
        mixed.append(
            {
                0: (addresses[i % 50], "/api/v1/health/summary", {}),
                1: (addresses[i % 50], "/login", {}),
                2: ("127.0.0.1", "/api/v1/nodes?limit=50", auth["technician"]),
                3: ("127.0.0.1", "/api/v1/health/summary", auth["commune"]),
            }[kind]
        )
    baseline = [(addresses[i % 50], "/api/v1/health/live", {}) for i in range(size)]

    async def run(plan: list[tuple[str, str, dict]]) -> dict:
        # A new connection per request, as from that many browsers (and no keep-alive race
        # with uvicorn's 5 s idle timeout between bursts).
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=0)
        clients = {
            a: httpx.AsyncClient(
                base_url=base,
                timeout=120,
                limits=limits,
                transport=httpx.AsyncHTTPTransport(local_address=a, limits=limits),
            )
            for a in {p[0] for p in plan}
        }
        times: list[float] = []
        codes: dict[str, int] = {}
        try:
            for _ in range(rounds):
                for ms, code in await _burst(base, plan, clients):
                    times.append(ms)
                    codes[str(code)] = codes.get(str(code), 0) + 1
                await asyncio.sleep(1.0)  # between bursts, as between page loads
        finally:
            for c in clients.values():
                await c.aclose()
        return {
            "requests": len(times),
            "p50_ms": round(percentile(times, 0.5), 1),
            "p95_ms": round(percentile(times, 0.95), 1),
            "max_ms": round(max(times), 1),
            "statuses": codes,
        }

    base_run = asyncio.run(run(baseline))
    mixed_run = asyncio.run(run(mixed))
    mixed_run["x_baseline_p95"] = (
        round(mixed_run["p95_ms"] / base_run["p95_ms"], 1) if base_run["p95_ms"] else None
    )
    return {
        "size": size,
        "rounds": rounds,
        "baseline: burst of GET /api/v1/health/live": base_run,
        "mixed burst (half anonymous, half logged in)": mixed_run,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=3000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--scenario", choices=["all", "sequential", "concurrency"], default="all")
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(42)
    tmp = Path(tempfile.mkdtemp(prefix="loa-bench-api-"))
    db = Database(f"sqlite:///{tmp / 'loa.db'}")
    create_schema(db)
    t0 = time.perf_counter()
    node_ids = build_database(db, args.nodes, rng)
    ensure_demo_accounts(db)
    print(
        f"Cơ sở dữ liệu: {len(node_ids)} cụm loa, "
        f"{len(node_ids) * HISTORY_MS // SAMPLE_EVERY_MS} mẫu nhịp tim "
        f"({time.perf_counter() - t0:.1f} s)"
    )

    # Engine passes over the whole fleet, timed on their own.
    engine = AlarmEngine(db, raise_after_ms=30_000, clear_after_ms=120_000)
    t = time.perf_counter()
    engine.evaluate()
    alarm_first_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    engine.evaluate(now_ms() + 60_000)  # raises the offline/degraded alarms
    alarm_raise_ms = (time.perf_counter() - t) * 1000
    watcher = FleetWatcher(db)
    poll_times = []
    for _ in range(10):
        t = time.perf_counter()
        watcher._poll()
        poll_times.append((time.perf_counter() - t) * 1000)

    port = free_port()
    settings = Settings(
        data_dir=tmp / "data",
        database_url=db.url,
        secret_key="bench",
        http_port=port,
        # One technician sends 200 requests per endpoint back to back: the per-user bucket
        # (600, 60/s) would answer 429 once routes are fast. The figures are the routes';
        # the limiter has its own tests.
        rate_user_burst=1_000_000,
        rate_user_per_s=100_000.0,
    )
    # The API's own engine, as `loa serve` makes it; the writer thread keeps `db`.
    app = create_app(api_context(settings, api_database(settings), services_db=db))
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
        )
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    writer = HeartbeatWriter(db, node_ids, rng)
    writer.start()
    n = args.requests
    results: dict[str, dict] = {}
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            token = c.post(
                "/api/v1/auth/token", data={"username": "technician", "password": "demo"}
            ).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            sample_node = node_ids[len(node_ids) // 2]
            endpoints = [
                (BASELINE, "/api/v1/health/live", {}, n),
                ("baseline: GET /api/v1/auth/me (token check)", "/api/v1/auth/me", auth, n),
                ("GET /api/v1/health/summary", "/api/v1/health/summary", auth, n),
                ("GET /api/v1/nodes (page of 50)", "/api/v1/nodes?limit=50", auth, n),
                ("GET /api/v1/nodes?q=doi can", "/api/v1/nodes?q=doi%20can&limit=50", auth, n),
                (
                    "GET /api/v1/nodes?state=offline",
                    "/api/v1/nodes?state=offline&limit=50",
                    auth,
                    n,
                ),
                ("GET /api/v1/nodes/{id}", f"/api/v1/nodes/{sample_node}", auth, n),
                ("GET /api/v1/alarms (open)", "/api/v1/alarms?state=open&limit=50", auth, n),
                ("GET /api/v1/communes", "/api/v1/communes?limit=50", auth, n),
                # As many requests as the others: answers are reused now (indicator.answers),
                # the figure judged afresh every time is measured below.
                ("GET /api/v1/indicators/8.3 (30 communes)", "/api/v1/indicators/8.3", auth, n),
                ("GET /tech (page)", "/tech", auth, n),
                ("GET /tech/nodes/{id} (page, 24 h charts)", f"/tech/nodes/{sample_node}", auth, n),
            ]
            if args.scenario == "concurrency":
                endpoints = [e for e in endpoints if e[0] == BASELINE]
            for label, path, headers, count in endpoints:
                LOAD_1M[label] = round(os.getloadavg()[0], 2)
                try:
                    results[label] = measure(c, path, count, headers)
                except SystemExit as exc:
                    results[label] = {"error": str(exc)}
                r = results[label]
                print(
                    f"  {label:<52} "
                    + (
                        f"p50 {r['p50_ms']:8.2f} ms  p95 {r['p95_ms']:8.2f} ms"
                        if "p50_ms" in r
                        else r["error"]
                    )
                )
            # Issue 16: the same question judged afresh every time (answers not reused), so the
            # figure above, mostly reused answers, is not the only one reported.
            answers = getattr(app.state, "indicator_answers", None)
            if answers is not None and args.scenario != "concurrency":
                ttl, answers.ttl_ms = answers.ttl_ms, 0
                label = "GET /api/v1/indicators/8.3 (30 communes, judged afresh)"
                LOAD_1M[label] = round(os.getloadavg()[0], 2)
                results[label] = measure(c, "/api/v1/indicators/8.3", max(5, n // 20), auth)
                answers.ttl_ms = ttl
                print(
                    f"  {label:<52} p50 {results[label]['p50_ms']:8.2f} ms  "
                    f"p95 {results[label]['p95_ms']:8.2f} ms"
                )
            tokens = {
                "technician": token,
                "commune": c.post(
                    "/api/v1/auth/token", data={"username": "commune", "password": "demo"}
                ).json()["access_token"],
            }
            for tok in tokens.values():  # one accepted request: the logged-in budget
                c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tok}"})
        results["SSE /api/v1/live/fleet: time to first event"] = time_to_first_event(base, auth, 10)
        burst_results = None
        if args.scenario in ("all", "concurrency"):
            # The bursts come from another process: a client sharing the server's interpreter
            # (and its GIL) would measure itself.
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                burst_results = pool.submit(
                    concurrency, base, tokens, args.concurrency, args.rounds
                ).result()
            for label, r in burst_results.items():
                if isinstance(r, dict):
                    print(
                        f"  {label:<52} p50 {r['p50_ms']:8.1f} ms  p95 {r['p95_ms']:8.1f} ms"
                        f"  max {r['max_ms']:8.1f} ms  {r['statuses']}"
                    )
    finally:
        writer.stop_flag.set()
        writer.join(5)
        server.should_exit = True
        thread.join(10)
    base_p50 = results[BASELINE]["p50_ms"]
    for r in results.values():
        if "p50_ms" in r:
            r["x_baseline_p50"] = round(r["p50_ms"] / base_p50, 1) if base_p50 else None
    out = {
        "bench": "api",
        "nodes": len(node_ids),
        "requests_per_endpoint": n,
        "heartbeat_samples": len(node_ids) * HISTORY_MS // SAMPLE_EVERY_MS,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "background_writes": {"flushes": writer.flushes, "rows": writer.rows},
        "load_1m_before": LOAD_1M,
        "endpoints": results,
        "alarm_engine_pass_ms": {
            "first": round(alarm_first_ms, 1),
            "raising": round(alarm_raise_ms, 1),
        },
        "live_fleet_poll_ms": {
            "p50": round(percentile(poll_times, 0.5), 1),
            "max": round(max(poll_times), 1),
        },
        "measured_at_ms": now_ms(),
    }
    dest = RESULTS / "api.json"
    if burst_results is not None:
        out["concurrency"] = {
            "nodes": len(node_ids),
            **burst_results,
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
    if args.scenario == "concurrency" and dest.exists():
        # Only the burst figures are new: keep the sequential ones of the last full run.
        out = {**json.loads(dest.read_text()), "concurrency": out["concurrency"]}
    sse = results["SSE /api/v1/live/fleet: time to first event"]
    print(
        f"  {'SSE /api/v1/live/fleet: time to first event':<52} p50 {sse['p50_ms']:8.2f} ms  "
        f"p95 {sse['p95_ms']:8.2f} ms"
    )
    print(
        f"Một lượt tính cảnh báo ({len(node_ids)} cụm): {alarm_first_ms:.0f} ms; "
        f"một lượt đọc trạng thái trực tiếp: {out['live_fleet_poll_ms']['p50']} ms"
    )
    print(f"Ghi nền trong lúc đo: {writer.flushes} lần, {writer.rows} dòng")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, ensure_ascii=False, indent=2) + "\n")
    print(f"Đã ghi {dest}")


if __name__ == "__main__":
    main()
