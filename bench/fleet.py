"""Fleet benchmark (issue #7): 5,000 real connections, 100,000 virtual nodes, 1-3 controllers.

Full runs (minutes each; run them on a quiet machine):

    .venv/bin/python bench/fleet.py --real 5000
    .venv/bin/python bench/fleet.py --virtual 100000 --duration 300 --controllers 1 2 3
    # the same on PostgreSQL (a throwaway database: every Loa table in it is dropped):
    .venv/bin/python bench/fleet.py --virtual 100000 --duration 300 --controllers 1 2 3 \
        --database-url postgresql+psycopg://USER:PASS@127.0.0.1/loa_bench --reset-database

Short validation runs (what the figures in the report come from until the full runs):

    .venv/bin/python bench/fleet.py --real 1000 --hold-s 30
    .venv/bin/python bench/fleet.py --virtual 20000 --duration 40 --baseline-s 20

Every part prints its figures and writes them into ``bench/results/fleet.json`` (parts run
separately keep each other's latest figures there). Processes: Debian mosquitto child
(``EmbeddedBroker``), ``python -m system controller`` processes, ``python -m system sim`` processes;
CPU % (100 = one core) and RSS are sampled with psutil every second, mean and peak.

Part a, ``--real N``: N simulated nodes, each its own MQTT connection with its own Last Will
(``loa sim --nodes N --shard K/P``, P processes), connecting at ``--connect-rate`` per second
in total, against one controller process. Measured: seconds until the controller sees all N
online (its stats file, ``LOA_CONTROLLER_STATS_FILE``), until the broker counts all N
connected ($SYS), CPU/RSS of controller, broker and simulators during the start-up and
during a steady hold, and heartbeats accepted in the hold against those due.
Baseline, same run, same broker config, same P processes and connect rate: N bare aiomqtt
clients that do only what MQTT needs (connect with a will, subscribe to their cmd topic,
publish one retained status) and nothing of Loa, with no controller. Its time to connect
everything is the floor set by the connect pacing, Python's MQTT client and mosquitto; its
broker CPU/RSS is what N idle connections cost. The difference is what Loa adds (node
behaviour, heartbeats, the controller's ingest).

Part b, ``--virtual N --duration S``: ``loa sim --virtual N`` (multiplexed mode: few
connections, heartbeats every 30 s spread evenly, ``ts`` stamped at publish) against the
controllers. After all N are online (plus ``--settle-s``), a hold window of S seconds:
controller ingest lag (processed time - heartbeat ``ts``) p50/p99 from the controllers' merged
lag histograms (bucket upper bounds), and exactly, per heartbeat, from ``node_live``
(``last_heartbeat_ms - heartbeat.ts`` of rows written in the window, sampled every
heartbeat_s/3: a node's row cannot be overwritten before it is read); heartbeats processed
(sum of the controllers' ``accepted.heartbeat``, each heartbeat processed once) against
heartbeats published (the simulators' own count), for the window and for the whole run after
a clean stop; CPU/RSS of controllers, broker and simulator. Baseline, same run: the same
multiplexed load with a bare aiomqtt subscriber instead of the controllers, its lag computed
the same way: the floor set by the broker and the publisher on this machine.

Part c, ``--controllers 1 2 3``: part b once per controller count (fresh broker and
database each time), controllers sharing the ingest through ``$share/loa/`` subscriptions
(``LOA_SHARED_SUBSCRIPTION_GROUP=loa``, ``LOA_CONTROLLER_CLIENT_ID=ctl-<i>``), on one SQLite
file (or ``--database-url``), and a comparison table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ProcessSampler, bulk_register, machine, write_result  # noqa: E402
from controller.stats import quantile_ms  # noqa: E402
from firmware_sim.fleet import generate_node_ids  # noqa: E402
from loa.broker import EmbeddedBroker  # noqa: E402
from loa.db import Base, Database  # noqa: E402
from loa.protocol import Topics  # noqa: E402
from loa.timeutil import now_ms  # noqa: E402
from system.schema import create_schema  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOPICS = Topics()
# $SYS once a second (connected clients); no connection cap; a controller that falls behind
# keeps its backlog instead of mosquitto dropping it at the default 10,000.
BROKER_CONFIG = "sys_interval 1\nmax_connections -1\nmax_queued_messages 1000000\n"
ONLINE_STATES = ("online", "degraded")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# =========================================================================== processes


def raise_fd_limit() -> int:
    """Children (mosquitto, simulators) inherit it: one socket per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def loa_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def spawn(cmd: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )


def stop_all(procs: list[subprocess.Popen], timeout_s: float = 60.0) -> None:
    """SIGTERM (each stops cleanly), then SIGKILL what is still there after ``timeout_s``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def tail(path: Path, n: int = 2000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def wait_until(
    pred: Callable[[], bool],
    timeout_s: float,
    what: str,
    procs: list[tuple[subprocess.Popen, Path]] = (),
    every_s: float = 0.25,
) -> float:
    """Seconds until ``pred()``; fails with the log of a child that died meanwhile."""
    t0 = time.monotonic()
    while not pred():
        for p, log_path in procs:
            if p.poll() is not None:
                raise RuntimeError(
                    f"{what}: a child process exited ({p.returncode}):\n{tail(log_path)}"
                )
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(every_s)
    return time.monotonic() - t0


class BrokerWatch:
    """``$SYS/broker/clients/connected`` of mosquitto, in a paho thread."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.connected = -1
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sys")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("$SYS/broker/clients/connected")
        self.client.loop_start()

    def _on_message(self, _c, _u, msg) -> None:
        with contextlib.suppress(ValueError):
            self.connected = int(msg.payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_broker(data_dir: Path) -> EmbeddedBroker:
    return EmbeddedBroker(kind="mosquitto", data_dir=data_dir, extra_config=BROKER_CONFIG).start()


# =========================================================================== database


def prepare_database(url: str | None, run_dir: Path, ids: list[str], reset: bool) -> str:
    """A fresh SQLite file in ``run_dir``, or the given database emptied (``reset``)."""
    if url is None:
        url = f"sqlite:///{run_dir / 'fleet.db'}"
    db = Database(url)
    try:
        if not url.startswith("sqlite"):
            from sqlalchemy import inspect

            if inspect(db.engine).get_table_names() and not reset:
                raise SystemExit(
                    f"{url} is not empty: the bench needs a throwaway database "
                    "(add --reset-database to drop every Loa table in it)"
                )
            Base.metadata.drop_all(db.engine)
        create_schema(db)
        t0 = time.monotonic()
        counts = bulk_register(db, ids)
        log(
            f"registry: {counts['nodes']:,} nodes, {counts['villages']:,} villages, "
            f"{counts['communes']:,} communes in {time.monotonic() - t0:.1f} s"
        )
    finally:
        db.dispose()
    return url


# =========================================================================== controllers


@dataclass
class Controller:
    client_id: str
    proc: subprocess.Popen
    stats_path: Path
    log_path: Path


def start_controllers(count: int, db_url: str, port: int, run_dir: Path) -> list[Controller]:
    ctls = []
    for i in range(1, count + 1):
        cid = f"ctl-{i}"
        stats_path = run_dir / f"{cid}.json"
        env = loa_env(
            LOA_CONTROLLER_CLIENT_ID=cid,
            LOA_CONTROLLER_STATS_FILE=str(stats_path),
            LOA_CONTROLLER_STATS_INTERVAL_S="1",
            LOA_LOG_LEVEL="INFO",
            LOA_DATA_DIR=str(run_dir / cid),
        )
        if count > 1:
            env["LOA_SHARED_SUBSCRIPTION_GROUP"] = "loa"
        log_path = run_dir / f"{cid}.log"
        proc = spawn(
            [
                sys.executable,
                "-m",
                "system",
                "controller",
                "--database-url",
                db_url,
                "--mqtt-host",
                "127.0.0.1",
                "--mqtt-port",
                str(port),
                "--data-dir",
                str(run_dir / cid),
            ],
            log_path,
            env,
        )
        ctls.append(Controller(cid, proc, stats_path, log_path))
    return ctls


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class ControllerView:
    """What the controllers report: their stats files, or, for a controller that writes
    none, the database (``node_live``) for the online count."""

    def __init__(self, ctls: list[Controller], db_url: str) -> None:
        self.ctls = ctls
        self.db = Database(db_url)

    def stats(self) -> list[dict] | None:
        snaps = [read_json(c.stats_path) for c in self.ctls]
        return snaps if all(s is not None for s in snaps) else None  # type: ignore[misc]

    def ready(self) -> bool:
        snaps = self.stats()
        if snaps is not None:
            return all(s.get("connected", True) for s in snaps)
        return all("Đã kết nối broker" in tail(c.log_path, 100_000) for c in self.ctls)

    def online(self) -> tuple[int, str]:
        snaps = self.stats()
        if snaps is not None:
            return sum(s["online_nodes"] for s in snaps), "stats_file"
        from sqlalchemy import func, select

        from controller.models import NodeLive

        with self.db.session() as s:
            n = s.scalar(
                select(func.count()).select_from(NodeLive).where(NodeLive.state.in_(ONLINE_STATES))
            )
        return int(n or 0), "database"

    def close(self) -> None:
        self.db.dispose()


def summed(snaps: list[dict], key: str, sub: str | None = None) -> int:
    return sum(int((s.get(key) or {}).get(sub, 0) if sub else s.get(key) or 0) for s in snaps)


def merged_counts(snaps: list[dict], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in snaps:
        for reason, count in (s.get(key) or {}).items():
            out[reason] = out.get(reason, 0) + count
    return out


def merged_lag(before: list[dict] | None, after: list[dict]) -> dict[str, list[int]] | None:
    """Sum of every controller's lag histogram, minus the same at the window start."""
    hists = [s.get("heartbeat_lag_ms") for s in after]
    if not hists or any(h is None for h in hists):
        return None
    bounds = hists[0]["bounds"]
    counts = [0] * len(hists[0]["counts"])
    for h in hists:
        if h["bounds"] != bounds:
            raise RuntimeError("controllers report lag histograms with different bounds")
        counts = [a + b for a, b in zip(counts, h["counts"], strict=True)]
    for s in before or []:
        counts = [a - b for a, b in zip(counts, s["heartbeat_lag_ms"]["counts"], strict=True)]
    return {"bounds": bounds, "counts": counts}


def lag_summary(hist: dict[str, list[int]] | None) -> dict[str, Any] | None:
    """p50/p99 = upper bound of the bucket holding them; max = upper bound of the highest
    non-empty bucket (-1: above the last bound)."""
    if hist is None:
        return None
    nonempty = [i for i, c in enumerate(hist["counts"]) if c]
    top = (hist["bounds"] + [-1])[nonempty[-1]] if nonempty else None
    return {
        "count": sum(hist["counts"]),
        "p50_ms_le": quantile_ms(hist, 0.5),
        "p99_ms_le": quantile_ms(hist, 0.99),
        "max_ms_le": top,
    }


class DbLagSampler:
    """Exact ingest lag of each heartbeat written to ``node_live`` in a window.

    Every ``step_s`` it reads the rows whose ``last_heartbeat_ms`` (controller clock when
    processed) fell in (previous cut, now - delay]; ``delay`` lets the 1 s batched flush land.
    A node's next heartbeat comes heartbeat_s later, after the read (step + delay <
    heartbeat_s), so no heartbeat is overwritten unread and none is read twice.
    """

    def __init__(self, db: Database, heartbeat_s: float) -> None:
        self.db = db
        self.step_s = min(10.0, heartbeat_s / 3)
        self.delay_ms = int(min(5.0, heartbeat_s / 3) * 1000)
        self.lags = array("q")
        self.cut = 0
        self.end = 0
        self._next = 0.0

    def begin(self, at_ms: int) -> None:
        self.cut, self.end, self._next = at_ms, 0, time.monotonic() + self.step_s

    def finish(self, at_ms: int) -> None:
        self.end = at_ms

    def poll(self, force: bool = False) -> None:
        if not force and time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.step_s
        upto = now_ms() - self.delay_ms
        if self.end:
            upto = min(upto, self.end)
        if upto <= self.cut:
            return
        from sqlalchemy import BigInteger, cast, select

        from controller.models import NodeLive

        # Epoch milliseconds: beyond a 32-bit INTEGER, which as_integer() casts to on PostgreSQL.
        lag = NodeLive.last_heartbeat_ms - cast(NodeLive.heartbeat["ts"].as_string(), BigInteger)
        with self.db.session() as s:
            self.lags.extend(
                int(v)
                for v in s.scalars(
                    select(lag).where(
                        NodeLive.last_heartbeat_ms > self.cut, NodeLive.last_heartbeat_ms <= upto
                    )
                )
                if v is not None
            )
        self.cut = upto

    def summary(self) -> dict[str, Any]:
        return exact_summary(self.lags)


def exact_summary(values: array | list[int]) -> dict[str, Any]:
    v = sorted(values)
    if not v:
        return {"count": 0}
    return {
        "count": len(v),
        "p50_ms": v[len(v) // 2],
        "p99_ms": v[min(len(v) - 1, int(0.99 * len(v)))],
        "max_ms": v[-1],
    }


# =========================================================================== simulators


def sim_cmd(port: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "system",
        "sim",
        "--mqtt-host",
        "127.0.0.1",
        "--mqtt-port",
        str(port),
        *args,
    ]


def start_real_sims(
    n: int, procs: int, rate: float, port: int, run_dir: Path, heartbeat_s: int
) -> list[tuple[subprocess.Popen, Path]]:
    out = []
    for k in range(procs):
        log_path = run_dir / f"sim-{k}.log"
        out.append(
            (
                spawn(
                    sim_cmd(
                        port,
                        "--nodes",
                        str(n),
                        "--prefix",
                        "sim",
                        "--shard",
                        f"{k}/{procs}",
                        "--heartbeat-s",
                        str(heartbeat_s),
                        "--connect-rate",
                        f"{rate / procs:g}",
                    ),
                    log_path,
                    loa_env(LOA_DATA_DIR=str(run_dir / "sim")),
                ),
                log_path,
            )
        )
    return out


def sim_heartbeats(log_path: Path) -> int:
    """Heartbeats a ``loa sim --nodes`` process sent, from its closing summary line
    ("... đã gửi 12.345 nhịp tim ...", Vietnamese thousands separator)."""
    import re

    found = re.findall(r"đã gửi ([\d.]+) nhịp tim", tail(log_path, 10_000))
    return int(found[-1].replace(".", "")) if found else 0


def start_virtual_sims(
    n: int, procs: int, connections: int, rate: float, port: int, run_dir: Path, heartbeat_s: int
) -> list[tuple[subprocess.Popen, Path, Path]]:
    out = []
    for k in range(procs):
        log_path, stats = run_dir / f"mux-{k}.log", run_dir / f"mux-{k}.json"
        out.append(
            (
                spawn(
                    sim_cmd(
                        port,
                        "--virtual",
                        str(n),
                        "--prefix",
                        "v",
                        "--shard",
                        f"{k}/{procs}",
                        "--connections",
                        str(max(1, connections // procs)),
                        "--heartbeat-s",
                        str(heartbeat_s),
                        "--connect-rate",
                        f"{rate / procs:g}",
                        "--stats-file",
                        str(stats),
                    ),
                    log_path,
                    loa_env(LOA_DATA_DIR=str(run_dir / "sim")),
                ),
                log_path,
                stats,
            )
        )
    return out


def mux_stats(sims: list[tuple[subprocess.Popen, Path, Path]]) -> list[dict] | None:
    snaps = [read_json(stats) for _, _, stats in sims]
    return snaps if all(s is not None for s in snaps) else None  # type: ignore[misc]


def mux_summary(snaps: list[dict]) -> dict[str, Any]:
    return {
        "processes": len(snaps),
        "connections": sum(s["connections"] for s in snaps),
        "announced": sum(s["announced"] for s in snaps),
        "announce_s_max": max(s["announce_s"] for s in snaps),
        "heartbeats": sum(s["heartbeats"] for s in snaps),
        "skipped": sum(s["skipped"] for s in snaps),
        "shutdowns": sum(s["shutdowns"] for s in snaps),
        "disconnects": sum(s["disconnects"] for s in snaps),
        "rate_per_s": round(sum(s["rate_per_s"] for s in snaps), 1),
        "expected_per_s": round(sum(s["expected_per_s"] for s in snaps), 1),
        "schedule_late_ms_p99_worst": max((s["late_ms_p99"] or 0) for s in snaps),
        "schedule_late_ms_max": max((s["late_ms_max"] or 0) for s in snaps),
    }


# =========================================================================== part a


def run_real(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n, procs, rate = args.real, args.sim_processes or 2, args.connect_rate
    ids = generate_node_ids(n, "sim")
    log(f"part a: {n:,} real nodes, {procs} simulator processes, {rate:g} connects/s")
    result: dict[str, Any] = {
        "nodes": n,
        "sim_processes": procs,
        "connect_rate": rate,
        "hold_s": args.hold_s,
        "floor_s": round(n / rate, 1),
        "machine_at_start": machine(),
    }
    result["baseline_bare_mqtt"] = real_baseline(n, procs, rate, args.hold_s, tmp / "a-base")
    run_dir = tmp / "a-loa"
    run_dir.mkdir()
    db_url = prepare_database(args.database_url, run_dir, ids, args.reset_database)
    broker = start_broker(run_dir / "broker")
    sampler = ProcessSampler().start()
    watch = BrokerWatch(broker.port)
    ctls: list[Controller] = []
    sims: list[tuple[subprocess.Popen, Path]] = []
    view: ControllerView | None = None
    try:
        ctls = start_controllers(1, db_url, broker.port, run_dir)
        view = ControllerView(ctls, db_url)
        ctl_logs = [(c.proc, c.log_path) for c in ctls]
        wait_until(view.ready, 60, "controller connected", ctl_logs)
        wait_until(lambda: watch.connected >= 0, 15, "$SYS from the broker")
        others = watch.connected  # the watcher itself and the controller
        sampler.watch("controller", [c.proc.pid for c in ctls])
        sampler.watch("broker", [broker.proc.pid])
        sampler.phase = "ramp"
        t0 = time.monotonic()
        sims = start_real_sims(n, procs, rate, broker.port, run_dir, args.heartbeat_s)
        sampler.watch("simulators", [p.pid for p, _ in sims])
        marks: dict[str, float] = {}
        broker_all: list[float] = []
        source = ""

        def all_online() -> bool:
            nonlocal source
            online, source = view.online()
            for frac in (0.5, 0.9):
                if online >= frac * n and f"{frac:.0%}" not in marks:
                    marks[f"{frac:.0%}"] = round(time.monotonic() - t0, 2)
            if not broker_all and watch.connected - others >= n:
                broker_all.append(round(time.monotonic() - t0, 2))
            return online >= n

        ramp_s = wait_until(
            all_online, args.timeout_s, f"all {n:,} nodes online", [*sims, *ctl_logs]
        )
        log(f"all {n:,} online at the controller after {ramp_s:.1f} s ({source})")
        if not broker_all:
            wait_until(lambda: watch.connected - others >= n, 15, "broker sees all")
            broker_all.append(round(time.monotonic() - t0, 2))
        sampler.phase = "hold"
        s0 = view.stats()
        min_online = n
        t_hold = time.monotonic()
        while time.monotonic() - t_hold < args.hold_s:
            time.sleep(1)
            min_online = min(min_online, view.online()[0])
        s1 = view.stats()
        hold = time.monotonic() - t_hold
        sampler.phase = "stop"
        t_stop = time.monotonic()
        stop_all([p for p, _ in sims], 120)
        stop_s = time.monotonic() - t_stop
        offline_s = wait_until(lambda: view.online()[0] == 0, 60, "all offline after stop")
        usage = {phase: sampler.summary(phase) for phase in ("ramp", "hold")}
        accepted = (
            summed(s1, "accepted", "heartbeat") - summed(s0, "accepted", "heartbeat")
            if s0 and s1
            else None
        )
        published = sum(sim_heartbeats(log_path) for _, log_path in sims)
        with contextlib.suppress(TimeoutError):
            wait_until(
                lambda: summed(view.stats() or [], "accepted", "heartbeat") >= published,
                30,
                "controller processed every heartbeat",
            )
        s2 = view.stats()
        result["loa"] = {
            "online_source": source,
            "all_online_s": round(ramp_s, 2),
            "online_marks_s": marks,
            "broker_all_connected_s": broker_all[0],
            "target_all_online_s": 60,
            "target_met": ramp_s <= 60,
            "min_online_during_hold": min_online,
            "hold_heartbeats_accepted": accepted,
            "hold_s_measured": round(hold, 1),
            "total": {
                "published": published,
                "processed": summed(s2, "accepted", "heartbeat") if s2 else None,
            },
            "sims_stop_s": round(stop_s, 1),
            "offline_after_sims_exit_s": round(offline_s, 1),
            "rejected": (s1[0].get("rejected") if s1 else None),
            "usage": usage,
        }
    finally:
        sampler.stop()
        watch.close()
        stop_all([p for p, _ in sims], 30)
        stop_all([c.proc for c in ctls], 30)
        if view is not None:
            view.close()
        broker.cleanup()
    result["machine_at_end"] = machine()
    print_real(result)
    return result


def real_baseline(n: int, procs: int, rate: float, hold_s: float, run_dir: Path) -> dict:
    """N bare aiomqtt clients in ``procs`` processes at the same pace; no Loa, no controller."""
    run_dir.mkdir()
    broker = start_broker(run_dir / "broker")
    sampler = ProcessSampler().start()
    watch = BrokerWatch(broker.port)
    children: list[tuple[subprocess.Popen, Path]] = []
    try:
        wait_until(lambda: watch.connected >= 0, 15, "$SYS from the broker")
        others = watch.connected
        sampler.watch("broker", [broker.proc.pid])
        sampler.phase = "ramp"
        t0 = time.monotonic()
        for k in range(procs):
            log_path = run_dir / f"bare-{k}.log"
            children.append(
                (
                    spawn(
                        [
                            sys.executable,
                            str(Path(__file__).resolve()),
                            "--child",
                            "bare-connect",
                            "--port",
                            str(broker.port),
                            "--count",
                            str(n),
                            "--shard",
                            f"{k}/{procs}",
                            "--rate",
                            f"{rate / procs:g}",
                        ],
                        log_path,
                        loa_env(),
                    ),
                    log_path,
                )
            )
        sampler.watch("clients", [p.pid for p, _ in children])
        seen: dict[str, float] = {}

        def all_connected() -> bool:
            now = round(time.monotonic() - t0, 2)
            if "broker" not in seen and watch.connected - others >= n:
                seen["broker"] = now
            if "clients" not in seen and all("connected" in tail(lp) for _, lp in children):
                seen["clients"] = now
            return len(seen) == 2

        wait_until(all_connected, 60 + 3 * n / rate, "bare clients connected", children)
        child_s, broker_s = seen["clients"], seen["broker"]
        sampler.phase = "hold"
        time.sleep(hold_s)
        usage = {phase: sampler.summary(phase) for phase in ("ramp", "hold")}
    finally:
        sampler.stop()
        watch.close()
        stop_all([p for p, _ in children], 30)
        broker.cleanup()
    log(
        f"baseline: {n:,} bare clients connected after {child_s:.1f} s "
        f"(broker count: {broker_s:.1f} s)"
    )
    return {
        "all_connected_s": round(child_s, 2),
        "broker_all_connected_s": round(broker_s, 2),
        "usage": usage,
    }


def print_real(r: dict[str, Any]) -> None:
    base, loa = r["baseline_bare_mqtt"], r["loa"]

    def use(u: dict, phase: str, group: str) -> str:
        g = u[phase].get(group)
        return (
            f"CPU {g['cpu_mean']:5.1f}% mean {g['cpu_peak']:5.1f}% peak, "
            f"RSS {g['rss_peak_mb']:6.1f} MB peak"
            if g
            else "-"
        )

    print(
        f"\n== part a: {r['nodes']:,} real connections ({r['sim_processes']} simulator "
        f"processes, {r['connect_rate']:g} connects/s: floor {r['floor_s']} s) =="
    )
    print(
        f"all online at the controller : {loa['all_online_s']:6.1f} s  (target <= 60 s: "
        f"{'met' if loa['target_met'] else 'NOT met'}; 50%/90% at "
        f"{loa['online_marks_s'].get('50%')}/{loa['online_marks_s'].get('90%')} s)"
    )
    print(
        f"all connected at the broker  : {loa['broker_all_connected_s']:6.1f} s  "
        f"(baseline bare MQTT: {base['broker_all_connected_s']:.1f} s)"
    )
    for phase in ("ramp", "hold"):
        print(f"[{phase}] controller : {use(loa['usage'], phase, 'controller')}")
        print(
            f"[{phase}] broker     : {use(loa['usage'], phase, 'broker')}   "
            f"baseline: {use(base['usage'], phase, 'broker')}"
        )
        print(
            f"[{phase}] simulators : {use(loa['usage'], phase, 'simulators')}   "
            f"bare clients: {use(base['usage'], phase, 'clients')}"
        )
    print(
        f"hold: {loa['hold_heartbeats_accepted']} heartbeats accepted in "
        f"{loa['hold_s_measured']} s; min online {loa['min_online_during_hold']:,}; whole run:"
        f" {loa['total']['processed']} processed of {loa['total']['published']} published"
    )
    print(
        f"stop: simulators stopped cleanly in {loa['sims_stop_s']} s; all offline at the "
        f"controller {loa['offline_after_sims_exit_s']} s after they exited"
    )


# =========================================================================== part b / c


def run_virtual(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n, procs = args.virtual, args.sim_processes or 1
    ids = generate_node_ids(n, "v")
    log(
        f"part b/c: {n:,} virtual nodes, {args.connections} connections, {procs} simulator "
        f"process(es), heartbeat {args.heartbeat_s} s, hold {args.duration:g} s, "
        f"controllers {args.controllers}"
    )
    result: dict[str, Any] = {
        "nodes": n,
        "heartbeat_s": args.heartbeat_s,
        "connections": args.connections,
        "sim_processes": procs,
        "duration_s": args.duration,
        "settle_s": args.settle_s,
        "machine_at_start": machine(),
    }
    if args.baseline_s > 0:
        result["baseline_bare_subscriber"] = virtual_baseline(args, n, procs, tmp / "b-base")
    runs = []
    for count in args.controllers:
        runs.append(virtual_run(args, ids, procs, count, tmp / f"b-ctl{count}"))
        print_virtual_run(runs[-1])
    result["runs"] = runs
    result["machine_at_end"] = machine()
    print_comparison(result)
    return result


def virtual_baseline(args: argparse.Namespace, n: int, procs: int, run_dir: Path) -> dict:
    run_dir.mkdir()
    broker = start_broker(run_dir / "broker")
    sampler = ProcessSampler().start()
    sims: list = []
    sub = None
    out = run_dir / "bare-sub.json"
    try:
        sub_log = run_dir / "bare-sub.log"
        sub = spawn(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                "bare-subscribe",
                "--port",
                str(broker.port),
                "--out",
                str(out),
            ],
            sub_log,
            loa_env(),
        )
        wait_until(lambda: "subscribed" in tail(sub_log), 30, "bare subscriber", [(sub, sub_log)])
        sims = start_virtual_sims(
            n, procs, args.connections, args.announce_rate, broker.port, run_dir, args.heartbeat_s
        )
        sampler.watch("broker", [broker.proc.pid])
        sampler.watch("subscriber", [sub.pid])
        sampler.watch("simulators", [p.pid for p, _, _ in sims])
        wait_until(
            lambda: (m := mux_stats(sims)) is not None and all(s["phase"] == "beating" for s in m),
            args.timeout_s,
            "simulators beating",
            [(p, lp) for p, lp, _ in sims],
        )
        time.sleep(args.settle_s)
        sampler.phase = "hold"
        sub.send_signal(signal.SIGUSR1)  # start of the window
        m0 = mux_stats(sims)
        time.sleep(args.baseline_s)
        m1 = mux_stats(sims)
        sub.send_signal(signal.SIGTERM)
        sub.wait(30)
        usage = sampler.summary("hold")
    finally:
        sampler.stop()
        stop_all([p for p, _, _ in sims], 120)
        if sub is not None:
            stop_all([sub], 10)
        broker.cleanup()
    got = read_json(out) or {}
    published = summed(m1, "heartbeats") - summed(m0, "heartbeats") if m0 and m1 else None
    log(
        f"baseline: bare subscriber lag p50 {got.get('p50_ms')} ms, p99 {got.get('p99_ms')} ms, "
        f"max {got.get('max_ms')} ms over {got.get('count')} heartbeats"
    )
    return {
        "hold_s": args.baseline_s,
        "lag_ms": got,
        "published_in_window": published,
        "usage": usage,
    }


def virtual_run(
    args: argparse.Namespace, ids: list[str], procs: int, count: int, run_dir: Path
) -> dict[str, Any]:
    n = len(ids)
    run_dir.mkdir()
    db_url = prepare_database(args.database_url, run_dir, ids, args.reset_database)
    broker = start_broker(run_dir / "broker")
    sampler = ProcessSampler().start()
    ctls: list[Controller] = []
    sims: list = []
    view: ControllerView | None = None
    try:
        ctls = start_controllers(count, db_url, broker.port, run_dir)
        view = ControllerView(ctls, db_url)
        ctl_logs = [(c.proc, c.log_path) for c in ctls]
        wait_until(view.ready, 90, f"{count} controller(s) connected", ctl_logs)
        sampler.watch("controllers", [c.proc.pid for c in ctls])
        sampler.watch("broker", [broker.proc.pid])
        sampler.phase = "ramp"
        sims = start_virtual_sims(
            n, procs, args.connections, args.announce_rate, broker.port, run_dir, args.heartbeat_s
        )
        sampler.watch("simulators", [p.pid for p, _, _ in sims])
        every = [*ctl_logs, *[(p, lp) for p, lp, _ in sims]]
        ramp_s = wait_until(
            lambda: view.online()[0] >= n,
            args.timeout_s,
            f"all {n:,} virtual nodes online",
            every,
            every_s=1.0,
        )
        source = view.online()[1]
        log(f"{count} controller(s): all {n:,} online after {ramp_s:.1f} s ({source})")
        wait_until(
            lambda: (m := mux_stats(sims)) is not None and all(s["phase"] == "beating" for s in m),
            60,
            "simulators beating",
            every,
        )
        time.sleep(args.settle_s)

        sampler.phase = "hold"
        db_lag = DbLagSampler(view.db, args.heartbeat_s)
        s0, m0 = view.stats(), mux_stats(sims)
        db_lag.begin(now_ms())
        t_hold = time.monotonic()
        min_online = n
        next_online = 0.0
        while time.monotonic() - t_hold < args.duration:
            time.sleep(0.5)
            db_lag.poll()
            if time.monotonic() >= next_online:
                next_online = time.monotonic() + 5
                min_online = min(min_online, view.online()[0])
            for p, lp in every:
                if p.poll() is not None:
                    raise RuntimeError(f"a child process exited during the hold:\n{tail(lp)}")
        s1, m1 = view.stats(), mux_stats(sims)
        db_lag.finish(now_ms())
        hold = time.monotonic() - t_hold
        time.sleep(db_lag.delay_ms / 1000 + 1)
        db_lag.poll(force=True)
        usage = {phase: sampler.summary(phase) for phase in ("ramp", "hold")}

        sampler.phase = "stop"
        t_stop = time.monotonic()
        stop_all([p for p, _, _ in sims], 180)
        sims_stop_s = time.monotonic() - t_stop
        final_mux = mux_stats(sims) or []
        published = summed(final_mux, "heartbeats")

        def settled() -> bool:
            snaps = view.stats()
            return snaps is not None and summed(snaps, "accepted", "heartbeat") >= published

        with contextlib.suppress(TimeoutError):
            wait_until(settled, 60, "controllers processed every heartbeat", every_s=1.0)
        time.sleep(2)  # a heartbeat processed twice would show up now
        s2 = view.stats()
        offline_s = None
        with contextlib.suppress(TimeoutError):
            offline_s = round(
                wait_until(
                    lambda: view.online()[0] == 0, 60, "all offline after stop", every_s=1.0
                ),
                1,
            )
    finally:
        sampler.stop()
        stop_all([p for p, _, _ in sims], 60)
        stop_all([c.proc for c in ctls], 60)
        if view is not None:
            view.close()
        broker.cleanup()

    processed = summed(s2, "accepted", "heartbeat") if s2 else None
    window_lag = lag_summary(merged_lag(s0, s1)) if s0 and s1 else None
    return {
        "controllers": count,
        "online_source": source,
        "all_online_s": round(ramp_s, 1),
        "hold_s": round(hold, 1),
        "min_online_during_hold": min_online,
        "lag_ms": window_lag,
        "lag_ms_exact_from_db": db_lag.summary(),
        "target_lag_p99_ms": 2000,
        "target_met": bool(
            window_lag
            and window_lag["p99_ms_le"] not in (None, -1)
            and window_lag["p99_ms_le"] <= 2000
        ),
        "window": {
            "published": summed(m1, "heartbeats") - summed(m0, "heartbeats") if m0 and m1 else None,
            "processed": summed(s1, "accepted", "heartbeat") - summed(s0, "accepted", "heartbeat")
            if s0 and s1
            else None,
            "due": round(n / args.heartbeat_s * hold),
        },
        "total": {
            "published": published,
            "processed": processed,
            "each_processed_once": processed == published,
        },
        "received": summed(s2, "received") if s2 else None,
        "forwarded": summed(s2, "forwarded") if s2 else None,
        "rejected": merged_counts(s2 or [], "rejected"),
        "flush_errors": summed(s2, "flush_errors") if s2 else None,
        "leaders": [s["client_id"] for s in (s2 or []) if s.get("leader")],
        "simulator": mux_summary(final_mux) if final_mux else None,
        "sims_stop_s": round(sims_stop_s, 1),
        "offline_after_sims_exit_s": offline_s,
        "usage": usage,
    }


def print_virtual_run(r: dict[str, Any]) -> None:
    lag, exact, win, tot = r["lag_ms"] or {}, r["lag_ms_exact_from_db"], r["window"], r["total"]
    print(f"\n== part b: {r['controllers']} controller(s) ==")
    print(
        f"all online after {r['all_online_s']} s; hold {r['hold_s']} s, min online "
        f"{r['min_online_during_hold']:,}"
    )
    print(
        f"ingest lag (histograms): p50 <= {lag.get('p50_ms_le')} ms, p99 <= "
        f"{lag.get('p99_ms_le')} ms, max <= {lag.get('max_ms_le')} ms over {lag.get('count')}"
        f" heartbeats (target p99 < 2000 ms: {'met' if r['target_met'] else 'NOT met'})"
    )
    print(
        f"ingest lag (node_live, exact): p50 {exact.get('p50_ms')} ms, p99 "
        f"{exact.get('p99_ms')} ms, max {exact.get('max_ms')} ms over {exact.get('count')}"
    )
    print(
        f"window: published {win['published']}, processed {win['processed']}, due "
        f"{win['due']}; whole run: published {tot['published']}, processed "
        f"{tot['processed']} ({'each once' if tot['each_processed_once'] else 'MISMATCH'})"
    )
    for group in ("controllers", "broker", "simulators"):
        g = r["usage"]["hold"].get(group)
        if g:
            print(
                f"[hold] {group:11}: CPU {g['cpu_mean']:5.1f}% mean {g['cpu_peak']:5.1f}% "
                f"peak, RSS {g['rss_peak_mb']:7.1f} MB peak"
            )


def print_comparison(result: dict[str, Any]) -> None:
    base = result.get("baseline_bare_subscriber")
    print(
        f"\n== {result['nodes']:,} virtual nodes, heartbeat {result['heartbeat_s']} s, hold "
        f"{result['duration_s']:g} s =="
    )
    if base:
        lag = base["lag_ms"]
        print(
            f"baseline (bare aiomqtt subscriber, no controller): lag p50 {lag.get('p50_ms')}"
            f" ms, p99 {lag.get('p99_ms')} ms, max {lag.get('max_ms')} ms"
        )
    head = (
        f"{'ctl':>3} | {'online s':>8} | {'lag p50/p99/max ms (exact)':>27} | "
        f"{'p99 hist':>8} | {'processed/published':>21} | {'ctl CPU mean/peak':>17} | "
        f"{'ctl RSS MB':>10} | {'broker CPU':>10} | {'broker MB':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in result["runs"]:
        ex, lag, tot = r["lag_ms_exact_from_db"], r["lag_ms"] or {}, r["total"]
        c = r["usage"]["hold"].get("controllers", {})
        b = r["usage"]["hold"].get("broker", {})
        print(
            f"{r['controllers']:>3} | {r['all_online_s']:>8} | "
            f"{ex.get('p50_ms')!s:>7}/{ex.get('p99_ms')!s:>8}/{ex.get('max_ms')!s:>9} | "
            f"{lag.get('p99_ms_le')!s:>8} | {tot['processed']!s:>10}/{tot['published']!s:>10} | "
            f"{c.get('cpu_mean', 0):>7.1f}/{c.get('cpu_peak', 0):>8.1f} | "
            f"{c.get('rss_peak_mb', 0):>10.1f} | {b.get('cpu_mean', 0):>10.1f} | "
            f"{b.get('rss_peak_mb', 0):>9.1f}"
        )


# =========================================================================== child modes


async def bare_connect(port: int, count: int, shard: tuple[int, int], rate: float) -> None:
    """What MQTT alone needs of N devices: connect with a retained will, subscribe to the
    cmd topic, publish a retained status. Then idle until SIGTERM."""
    import aiomqtt

    from firmware_sim.fleet import raise_fd_limit
    from loa.protocol import Status, encode, lost_will

    ids = generate_node_ids(count, "sim")[shard[0] :: shard[1]]
    raise_fd_limit(len(ids) + 256)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    clients: list[aiomqtt.Client] = []

    async def one(node_id: str) -> None:
        c = aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier=node_id,
            clean_session=False,
            keepalive=60,
            will=aiomqtt.Will(TOPICS.status(node_id), lost_will(), qos=1, retain=True),
        )
        await c.__aenter__()
        clients.append(c)
        await c.subscribe(TOPICS.cmd(node_id), qos=1)
        await c.publish(
            TOPICS.status(node_id), encode(Status(online=True, ts=now_ms())), qos=1, retain=True
        )

    t0 = time.monotonic()
    tasks = []
    for i, node_id in enumerate(ids):
        tasks.append(asyncio.create_task(one(node_id)))
        await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
    await asyncio.gather(*tasks)
    print(f"connected {len(clients)} in {time.monotonic() - t0:.2f} s", flush=True)
    await stop.wait()
    os._exit(0)  # the broker goes next; 2,500 goodbyes would only slow the bench


async def bare_subscribe(port: int, out: Path) -> None:
    """Receive every heartbeat with a plain aiomqtt loop; record ``arrival - ts`` between
    SIGUSR1 and SIGTERM."""
    import aiomqtt

    loop = asyncio.get_running_loop()
    recording = threading.Event()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, recording.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    lags = array("q")

    async def receive(client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            if recording.is_set():
                lags.append(now_ms() - json.loads(msg.payload)["ts"])

    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="bench-bare-sub", max_queued_incoming_messages=0
    ) as client:
        await client.subscribe(f"{TOPICS.root}/nodes/+/heartbeat", qos=0)
        print("subscribed", flush=True)
        reader = asyncio.create_task(receive(client))
        await stop.wait()
        reader.cancel()
    out.write_text(json.dumps(exact_summary(lags)))


# =========================================================================== main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--real", type=int, metavar="N", help="part a: N real-connection nodes")
    p.add_argument("--virtual", type=int, metavar="N", help="part b/c: N virtual nodes")
    p.add_argument(
        "--duration",
        type=float,
        default=300,
        metavar="S",
        help="part b: hold window, seconds (default 300)",
    )
    p.add_argument(
        "--controllers",
        type=int,
        nargs="+",
        default=[1],
        metavar="K",
        help="part b/c: controller process counts to compare (default 1)",
    )
    p.add_argument("--heartbeat-s", type=int, default=30)
    p.add_argument(
        "--connections",
        type=int,
        default=40,
        help="part b: MQTT connections carrying the virtual nodes (default 40)",
    )
    p.add_argument(
        "--sim-processes",
        type=int,
        help="simulator processes (default: 2 for --real, 1 for --virtual)",
    )
    p.add_argument(
        "--connect-rate",
        type=float,
        default=250.0,
        help="part a: connects per second, all simulator processes (default 250)",
    )
    p.add_argument(
        "--announce-rate",
        type=float,
        default=5000.0,
        help="part b: virtual nodes announced online per second (default 5000)",
    )
    p.add_argument(
        "--hold-s",
        type=float,
        default=60.0,
        help="part a: steady window after all are online (default 60)",
    )
    p.add_argument(
        "--settle-s",
        type=float,
        default=10.0,
        help="part b: wait after all are online before the window (default 10)",
    )
    p.add_argument(
        "--baseline-s",
        type=float,
        default=60.0,
        help="part b: bare-subscriber baseline window, 0 = skip (default 60)",
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        default=300.0,
        help="give up waiting for a fleet to come online after this (default 300)",
    )
    p.add_argument("--database-url", help="default: a fresh SQLite file per run")
    p.add_argument(
        "--reset-database",
        action="store_true",
        help="allow dropping every Loa table in --database-url",
    )
    p.add_argument("--child", choices=["bare-connect", "bare-subscribe"], help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--shard", help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.child and not (args.real or args.virtual):
        p.error("choose --real N and/or --virtual N (see the commands at the top of --help)")
    return args


def main() -> None:
    args = parse_args()
    if args.child == "bare-connect":
        k, n = (int(x) for x in args.shard.split("/"))
        asyncio.run(bare_connect(args.port, args.count, (k, n), args.rate))
        return
    if args.child == "bare-subscribe":
        asyncio.run(bare_subscribe(args.port, Path(args.out)))
        return
    raise_fd_limit()
    command = " ".join(["bench/fleet.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory(prefix="loa-fleet-") as tmp:
        parts: dict[str, Any] = {}
        if args.real:
            parts["real"] = {"command": command, **run_real(args, Path(tmp))}
        if args.virtual:
            # One key per database backend, so a PostgreSQL run sits beside the SQLite one.
            backend = (args.database_url or "sqlite").split(":", 1)[0].split("+", 1)[0]
            key = "virtual" if backend == "sqlite" else f"virtual_{backend}"
            parts[key] = {"command": command, **run_virtual(args, Path(tmp))}
    path = write_result("fleet", {"benchmark": "fleet", **parts}, merge=True)
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
