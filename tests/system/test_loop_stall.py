"""The ingest loop is never blocked (docs/architecture.md): the whole in-process system of
``loa serve`` (controller with ingest on a real broker, the API on the same loop, the
scheduler with recurring broadcasts, alarms, the indicator) runs while a simulated fleet of
300 clusters beating every second loads the ingest and four clients hit the API for 10 s,
and the loop-stall monitor (``loa/loopwatch.py``) watches the loop.

Meanwhile another connection holds the database's write lock for 0.4 s every 1.5 s (as a
long import or a slow disk would), so a database write made on the loop waits there, up to
the 30 s busy timeout, exactly as in production.

A stall over 100 ms fails the test when
- the loop thread was caught in a blocking call (a database driver, the job store, a
  subprocess, a file), as Home Assistant's detector would report; or
- the process itself used more than 100 ms of CPU during it (its own Python on the loop,
  worker threads holding the GIL, a collection); or
- it passed 1 s, whatever the cause; or
- ``LOA_STRICT_LOOP_STALL=1`` (a machine of its own): any stall over 100 ms at all.
On the 2-core machine shared with other test runs, the stalls over 100 ms that remain are
ones during which the process got 5-36 ms of CPU: the OS ran other processes on both
cores (figures in docs/architecture.md). ``LOA_LOOP_STALL_REPORT=path`` writes the
monitor's report (percentiles, every stall with its stack, CPU and collector time)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from dashboard.security import create_user, issue_token
from loa.loopwatch import LoopWatch, settle_for_latency
from loa.timeutil import ICT
from scheduler.config import SchedulerSettings
from scheduler.models import Broadcast
from scheduler.runtime import JOBS_TABLE
from system.root import System
from tests.conftest import settings_for
from tests.factories import make_registry

# Runs in the SQLite pass only: the subject is the event loop's latency, not the database.
pytestmark = pytest.mark.sqlite_pass_only

REPO = Path(__file__).resolve().parents[2]
NODES = 300
STALL_MS = 100.0
ANY_STALL_MS = 1000.0
STRICT = os.environ.get("LOA_STRICT_LOOP_STALL") == "1"
LOAD_S = 10.0
# Housekeeping every 0.5 s (not 5 s): the scheduler's periodic work runs 40 times under load.
SCHED = SchedulerSettings(housekeeping_s=0.5)


def _registry(db) -> dict:
    """300 registered clusters (the simulator's ids sim-0001…) in 3 communes of 5 villages."""
    ids = [f"sim-{i:04d}" for i in range(1, NODES + 1)]
    communes: dict[str, dict[str, list[str]]] = {}
    for c, name in enumerate(("Đội Cấn", "Tân Trào", "Minh Thanh")):
        communes[name] = {
            f"Thôn {c}-{v}": ids[(c * 5 + v) * 20 : (c * 5 + v + 1) * 20] for v in range(5)
        }
    return make_registry(db, communes=communes, heartbeat_s=1)


def _token(db, username: str, role: str, communes: list[int]) -> str:
    with db.session() as s:
        user = create_user(s, username, "mat-khau-dai-du", role, communes)
        raw, _ = issue_token(s, user, "api")
    return raw


def _fleet(broker, data_dir: Path) -> subprocess.Popen:
    """``loa sim`` in a process of its own: its CPU is not the loop under test."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "LOA_DATA_DIR": str(data_dir)}
    entry = "import sys; from system.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            entry,
            "sim",
            "--nodes",
            str(NODES),
            "--heartbeat-s",
            "1",
            "--mqtt-host",
            broker.host,
            "--mqtt-port",
            str(broker.port),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _hold_write_lock(db, stop: threading.Event, errors: list[BaseException]) -> None:
    """Hold the database's write lock 0.4 s of every 1.5 s until ``stop``."""
    try:
        _hold(db, stop)
    except BaseException as exc:  # the test fails on it: a lock never held proves nothing
        errors.append(exc)


def _hold(db, stop: threading.Event) -> None:
    while not stop.wait(1.1):
        with db.engine.connect() as conn:
            if db.engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")
                conn.exec_driver_sql(
                    f"LOCK TABLE {JOBS_TABLE}, {Broadcast.__tablename__} IN EXCLUSIVE MODE"
                )
            time.sleep(0.4)
            conn.exec_driver_sql("ROLLBACK")


def _at(seconds: float) -> str:
    return (datetime.now(ICT) + timedelta(seconds=seconds)).isoformat(timespec="seconds")


async def test_the_loop_is_never_held_over_100_ms(tmp_path, settings, db, mosquitto_broker):
    ids = _registry(db)
    communes = [ids[n] for n in ("Đội Cấn", "Tân Trào", "Minh Thanh")]
    cfg = settings_for(
        settings,
        mosquitto_broker,
        heartbeat_s=1,
        flush_interval_s=0.2,
        alarm_interval_s=0.5,
        indicator_answer_ttl_s=0,
    )
    tokens = {
        "province": _token(db, "so-vhtt", "province", []),
        "officer": _token(db, "canbo", "commune", [communes[0]]),
        "technician": _token(db, "kythuat", "technician", []),
    }
    system = System(cfg, db=db, api_db=db, live=False, sched=SCHED)
    fleet = _fleet(mosquitto_broker, tmp_path / "sim")
    await system.start()
    switch_interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    settle_for_latency()  # as ``loa serve`` does once started
    watch = LoopWatch(threshold_ms=STALL_MS)
    try:
        assert system.controller is not None and system.scheduling is not None
        deadline = time.monotonic() + 30
        while not system.scheduling.started and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert system.scheduling.started
        transport = httpx.ASGITransport(app=system.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://loa", timeout=60
        ) as client:

            def as_(who: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {tokens[who]}"}

            # The audio, synthesised once: TTS and loudness normalisation run in ffmpeg
            # and espeak subprocesses, which only compete for the CPUs (a broadcast with
            # ``tts_text`` costs ~3 s of them on this machine).
            r = await client.post(
                "/api/v1/content/tts",
                headers=as_("province"),
                json={"text": "Xin chào bà con.", "title": "Lời chào"},
            )
            assert r.status_code == 201, r.text
            content_id = r.json()["id"]
            # Recurring broadcasts (daily and weekly), so the
            # scheduler's housekeeping expands rules and queries each one.
            for i in range(6):
                r = await client.post(
                    "/api/v1/broadcasts",
                    headers=as_("province"),
                    json={
                        "title": f"Bản tin định kỳ {i}",
                        "content_id": content_id,
                        "targets": {"communes": [communes[i % 3]]},
                        "start_at": _at(3600 + i * 600),
                        "recurrence": {"rrule": "FREQ=DAILY" if i % 2 else "FREQ=WEEKLY"},
                    },
                )
                assert r.status_code == 201, r.text
            online = system.controller.ingest.fleet.nodes
            deadline = time.monotonic() + 30
            while (
                time.monotonic() < deadline
                and sum(1 for rt in online.values() if rt.state.value == "online") < NODES * 0.9
            ):
                await asyncio.sleep(0.2)
            assert sum(1 for rt in online.values() if rt.state.value == "online") >= NODES * 0.9

            counts: dict[str, int] = {}
            failures: list[str] = []

            async def hit(method: str, path: str, who: str, **kw) -> None:
                r = await client.request(method, path, headers=as_(who), **kw)
                counts[path.split("?")[0]] = counts.get(path.split("?")[0], 0) + 1
                if r.status_code >= 500:
                    failures.append(f"{method} {path}: {r.status_code} {r.text[:200]}")

            async def client_loop(k: int) -> None:
                n = 0
                end = time.monotonic() + LOAD_S
                while time.monotonic() < end:
                    n += 1
                    await asyncio.gather(
                        hit("GET", "/api/v1/broadcasts?limit=50", "province"),
                        hit("GET", "/api/v1/broadcasts", "officer"),
                        hit("GET", "/api/v1/nodes?limit=200", "technician"),
                        hit("GET", "/api/v1/alarms", "technician"),
                        hit("GET", "/api/v1/indicators/8.3?period=2026-Q4", "province"),
                        hit("GET", "/api/v1/indicators/8.3?scope=commune:c0", "officer"),
                        hit("GET", "/api/v1/schedule", "officer"),
                    )
                    if n % 3 == 0:  # an audit-producing write that schedules a job
                        await hit(
                            "POST",
                            "/api/v1/broadcasts",
                            "province",
                            json={
                                "title": f"Thông báo {k}-{n}",
                                "content_id": content_id,
                                "targets": {"communes": [communes[k % 3]]},
                                "start_at": _at(7 * 86400 + (k * 1000 + n) * 300),
                            },
                        )

            stop_lock = threading.Event()
            lock_errors: list[BaseException] = []
            locker = threading.Thread(target=_hold_write_lock, args=(db, stop_lock, lock_errors))
            await watch.start()
            locker.start()
            try:
                await asyncio.gather(*(client_loop(k) for k in range(4)))
            finally:
                stop_lock.set()
                await asyncio.to_thread(locker.join)
                await watch.stop()
        heard = sum(1 for rt in online.values() if rt.state.value == "online")
    finally:
        await watch.stop()
        fleet.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(fleet.wait, 20)
        except subprocess.TimeoutExpired:
            fleet.kill()
        await system.stop()
        sys.setswitchinterval(switch_interval)
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    print(f"\nloop watch: {watch.summary()}; requests {counts}; {heard} clusters online")
    if os.environ.get("LOA_LOOP_STALL_REPORT"):  # the figures in docs/architecture.md
        Path(os.environ["LOA_LOOP_STALL_REPORT"]).write_text(watch.report())
    assert not failures, failures
    assert not lock_errors, lock_errors
    assert counts["/api/v1/indicators/8.3"] >= 10 and counts["/api/v1/broadcasts"] >= 10
    assert heard >= NODES * 0.9  # the ingest kept up all along
    assert watch.ticks > LOAD_S * 1000 / watch.interval_ms / 4  # the watch itself ran
    blocked = [st for st in watch.stalls if st.blocking_call]
    assert not blocked, watch.report()
    # Held by the process itself: it used more than 100 ms of CPU while the loop waited
    # (its own Python work, the GIL, a collection), not the OS running something else.
    held = [st for st in watch.stalls if st.own_ms > STALL_MS]
    assert not held, watch.report()
    assert watch.max_lateness_ms <= ANY_STALL_MS, watch.report()
    if STRICT:
        assert not watch.stalls, watch.report()
