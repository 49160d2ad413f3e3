"""Emergency alert: from the CAP POST to 99 % of the targeted clusters `started`, against the
bare publish of the same commands, in the same run.

Processes as in bench/dispatch.py (whose workers this reuses): this one (Debian mosquitto as
a child, controller, dispatcher + scheduler, the dashboard app under uvicorn with the alert
route, alert service in automatic mode), a content server (the ``/media`` route) and a fleet
worker (``firmware_sim.Fleet``, one MQTT client per node). Every node is in one of the
alert's communes (geocodes, 250 clusters each).

The alert has warning tones (``--tone``, default 3x20/10) which the nodes make themselves
(``tone_mode`` "node", docs/protocol.md "Node-made warning tone"): a node sounds the tone the
moment the command arrives and fetches the speech meanwhile. With ``--download-first`` the
same is measured a second time the old way (``tone_mode`` "file": tones baked into the
audio, every node downloads before it starts), for comparison.

1. *baseline*: a bare aiomqtt client publishes the `play` commands the alert will need (the
   same text already synthesised, the same ``tone``, emergency priority, ``start_at`` 0,
   per-node URLs) and the clock runs from the first publish to the 99th-percentile
   `started` reported by the nodes; then stops them;
2. *alert*: the clock runs from the moment the HTTP POST of the CAP document is sent; the
   document is parsed and validated, the area matched, the text composed and synthesised
   (offline TTS: that is inside the figure), the emergency broadcast created and dispatched,
   and the nodes start; the figure is the 99th-percentile node-reported start.

    .venv/bin/python bench/alert.py --nodes 200          # smoke, seconds
    .venv/bin/python bench/alert.py --nodes 5000         # the issue's figure
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import math
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, write_result  # noqa: E402
from loa.broker import EmbeddedBroker, free_port  # noqa: E402
from loa.db import Database  # noqa: E402
from loa.protocol import PlayCmd, StopCmd, Tone, Topics, decode_event, encode  # noqa: E402
from loa.settings import Settings  # noqa: E402
from loa.timeutil import now_ms  # noqa: E402
from system.schema import create_schema  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "bench_dispatch", Path(__file__).with_name("dispatch.py")
)
dispatch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dispatch)  # type: ignore[union-attr]

TRUSTED = "canhbao@kttv.gov.vn"
PER_COMMUNE = dispatch.NODES_PER_VILLAGE * dispatch.VILLAGES_PER_COMMUNE
log = dispatch.log


def cap_document(identifier: str, communes: list[str]) -> bytes:
    from datetime import datetime, timedelta

    from loa.timeutil import ICT

    now = datetime.now(tz=ICT).replace(microsecond=0)
    areas = "".join(
        f"<area><areaDesc>{c}</areaDesc><geocode><valueName>MA_XA</valueName>"
        f"<value>{c}</value></geocode></area>"
        for c in communes
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier><sender>{TRUSTED}</sender>
  <sent>{now.isoformat()}</sent><status>Actual</status><msgType>Alert</msgType>
  <scope>Public</scope>
  <info><language>vi-VN</language><category>Met</category><event>Lũ quét</event>
    <urgency>Immediate</urgency><severity>Extreme</severity><certainty>Likely</certainty>
    <expires>{(now + timedelta(hours=2)).isoformat()}</expires>
    <headline>Cảnh báo lũ quét cấp 3</headline>
    <instruction>Bà con di chuyển lên chỗ cao.</instruction>{areas}</info>
</alert>""".encode()


def p99(values: list[int], n: int) -> int | None:
    need = max(1, math.ceil(0.99 * n))
    s = sorted(values)
    return s[need - 1] if len(s) >= need else None


async def baseline(settings: Settings, gateway, meta, ids: list[str], tone: Tone | None) -> dict:
    """Bare aiomqtt: the same emergency play to every node, 99 % `started` timed."""
    topics = Topics(settings.topic_root)
    urls = gateway.node_urls(meta.id, ids, settings.public_base_url)
    issued = now_ms()
    bid = f"bench-alert-baseline-{issued}"
    cmds = {
        n: PlayCmd(
            cmd_id=f"ab-{n}-{issued}",
            issued_at=issued,
            expires_at=issued + 300_000,
            broadcast_id=bid,
            url=urls[n],
            sha256=meta.sha256,
            bytes=meta.bytes,
            duration_ms=meta.duration_ms,
            start_at=0,
            priority="emergency",
            volume=100,
            tone=tone,
        )
        for n in ids
    }
    started: dict[str, int] = {}
    ended: set[str] = set()
    async with aiomqtt.Client(
        settings.mqtt_host,
        settings.mqtt_port,
        identifier="bench-alert-baseline",
        keepalive=600,
        max_queued_incoming_messages=0,
    ) as client:
        await client.subscribe(f"{topics.root}/nodes/+/events", qos=1)

        async def read() -> None:
            async for msg in client.messages:
                parsed = topics.parse(msg.topic.value)
                try:
                    ev = decode_event(bytes(msg.payload))
                except Exception:
                    continue
                if parsed is None or ev.type != "playback" or ev.broadcast_id != bid:
                    continue
                if ev.phase == "started":
                    started.setdefault(parsed[0], ev.at)
                elif ev.phase in ("finished", "failed", "preempted"):
                    ended.add(parsed[0])

        task = asyncio.create_task(read())
        sem = asyncio.Semaphore(256)
        t0 = now_ms()

        async def one(n: str) -> None:
            async with sem:
                await client.publish(topics.cmd(n), encode(cmds[n]), qos=1)

        await asyncio.gather(*(one(n) for n in ids))
        publish_ms = now_ms() - t0
        need = math.ceil(0.99 * len(ids))
        await dispatch.wait_until(
            lambda: len(started) >= need,
            1200,
            "baseline started",
            progress=lambda: f"{len(started)} started",
        )
        figure = p99([v - t0 for v in started.values()], len(ids))

        async def stop_one(n: str) -> None:
            async with sem:
                await client.publish(
                    topics.cmd(n),
                    encode(
                        StopCmd(cmd_id=f"as-{n}-{issued}", issued_at=now_ms(), broadcast_id=bid)
                    ),
                    qos=1,
                )

        await asyncio.gather(*(stop_one(n) for n in ids))
        with contextlib.suppress(RuntimeError):
            await dispatch.wait_until(lambda: len(ended) >= len(ids), 60, "baseline to end")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return {"publish_ms": publish_ms, "started_99pct_ms": figure, "started": len(started)}


async def through_alert(
    settings: Settings,
    db: Database,
    controller,
    gateway,
    ids: list[str],
    communes: list[str],
    run: int,
    tone_pattern: str,
    tone_mode: str,
    tone: Tone | None = None,
    api_process: bool = False,
) -> dict:
    import httpx
    import uvicorn

    from alerts.config import AlertSettings
    from alerts.workflow import AlertService
    from dashboard.app import create_app
    from dashboard.security import create_user, issue_token
    from scheduler.config import SchedulerSettings
    from scheduler.scheduling import start_scheduling
    from system.root import api_context

    sched = SchedulerSettings(
        ack_margin_s=5, housekeeping_s=1, dispatch_flush_s=1.0, slot_grace_s=60
    )
    scheduling = await start_scheduling(
        settings, db, controller, content=gateway, sched=sched, base_url=settings.public_base_url
    )
    alerts = AlertService(
        db,
        scheduling.broadcasts,
        AlertSettings(auto_senders=[TRUSTED], tone_pattern=tone_pattern, tone_mode=tone_mode),
        content=gateway,
    )
    ctx = api_context(
        settings, db, content=gateway.store, controller=controller, scheduling=scheduling
    )
    ctx.alerts = alerts
    app_port = free_port()  # chosen now: other programs on the machine take ports too
    server: uvicorn.Server | None = None
    serving: asyncio.Task | None = None
    api: subprocess.Popen | None = None
    if api_process:
        # As docker-compose runs it: the CAP POST reaches `loa serve --no-controller`, which
        # synthesises, writes the broadcast and wakes this process's scheduler over MQTT.
        api = _api_process(settings, app_port, tone_pattern, tone_mode)
    else:
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(ctx),
                host="127.0.0.1",
                port=app_port,
                log_level="warning",
                lifespan="on",
                access_log=False,
            )
        )
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        serving = asyncio.create_task(server.serve())
    with db.session() as s:
        user = create_user(s, f"tinh-{run}", "mat-khau-dai-du", "province", [])
        token, _ = issue_token(s, user, "api")
    try:
        if server is not None:
            await dispatch.wait_until(lambda: server.started, 20, "the app to serve")
        else:
            await _wait_healthy(app_port, api)
        doc = cap_document(f"BENCH-{run}-{now_ms()}", communes)
        async with httpx.AsyncClient(timeout=120) as client:
            t0 = now_ms()
            resp = await client.post(
                f"http://127.0.0.1:{app_port}/api/v1/alerts/cap",
                content=doc,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/xml"},
            )
            answered_ms = now_ms() - t0
        out = resp.json()
        if resp.status_code != 202 or out.get("state") != "airing":
            raise RuntimeError(f"alert not aired: {resp.status_code} {out}")
        bid = out["broadcast_ids"][0]
        dispatcher = scheduling.dispatcher

        def active():
            return next((a for a in dispatcher.active_airings() if a.broadcast_id == bid), None)

        airing = await dispatch.wait_until(active, 60, "the dispatch")
        need = math.ceil(0.99 * len(ids))

        def starts() -> list[int]:
            return [
                t.started_at_ms - t0 for t in airing.targets.values() if t.started_at_ms is not None
            ]

        def done() -> bool:
            # 99 % started, or the airing is closed (the emergency's window is over: a node
            # that has not started by then never will, see the proof's "not started").
            return len(starts()) >= need or airing.id not in {
                a.id for a in dispatcher.active_airings()
            }

        await dispatch.wait_until(
            done, 1200, "alert started", interval=0.25, progress=lambda: f"{len(starts())} started"
        )
        values = starts()
        phases: dict[str, int] = {}
        for t in airing.targets.values():
            phases[t.phase] = phases.get(t.phase, 0) + 1
        result = {
            "post_answered_ms": answered_ms,
            "clusters": out["clusters"],
            "started_first_ms": min(values),
            "started_50pct_ms": (
                sorted(values)[math.ceil(0.5 * len(ids)) - 1]
                if len(values) >= math.ceil(0.5 * len(ids))
                else None
            ),
            "started_99pct_ms": p99(values, len(ids)),
            "started": len(values),
            "phases": phases,
            "dispatch_prepare_ms": dispatcher.last_dispatch.get("prepare_ms"),
            "dispatch_publish_ms": dispatcher.last_dispatch.get("publish_ms"),
            # Where the figure goes after the POST: the first and last command's PUBACK, and
            # each node's start after its own command went out (the fleet's share).
            **_publish_breakdown(airing.targets.values(), t0),
        }
        if tone is not None:
            # The speech is fetched while the tone sounds: how many nodes had it by the end
            # of their tone (else their speech starts late, after a silence).
            lead = tone.lead_ms
            await asyncio.sleep(max(0, t0 + max(values) + lead + 2000 - now_ms()) / 1000)
            result["speech_ready_by_tone_end"] = sum(
                1
                for t in airing.targets.values()
                if t.started_at_ms is not None
                and any(
                    r.get("phase") == "fetched" and r["at"] <= t.started_at_ms + lead
                    for r in t.events
                )
            )
            result["speech_fetched"] = sum(
                1
                for t in airing.targets.values()
                if any(r.get("phase") == "fetched" for r in t.events)
            )
        # Let it end (stop it) so the next size starts from a quiet fleet.
        await asyncio.to_thread(alerts.stop, alerts._actor("bench"), out["id"])
        return result
    finally:
        if server is not None and serving is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, 10)
        if api is not None:
            api.terminate()
            try:
                api.wait(20)
            except subprocess.TimeoutExpired:
                api.kill()
        await scheduling.stop()


def _api_process(
    settings: Settings, port: int, tone_pattern: str, tone_mode: str
) -> subprocess.Popen:
    import json
    import os

    env = {
        **os.environ,
        "LOA_DATABASE_URL": settings.database_url,
        "LOA_DATA_DIR": str(settings.data_dir),
        "LOA_MQTT_HOST": settings.mqtt_host,
        "LOA_MQTT_PORT": str(settings.mqtt_port),
        "LOA_HTTP_PORT": str(port),
        "LOA_SECRET_KEY": settings.secret_key,
        "LOA_PUBLIC_BASE_URL": settings.public_base_url,
        "LOA_LOG_LEVEL": "WARNING",
        "LOA_ALERT_AUTO_SENDERS": json.dumps([TRUSTED]),
        "LOA_ALERT_TONE_PATTERN": tone_pattern,
        "LOA_ALERT_TONE_MODE": tone_mode,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "system", "serve", "--no-controller"],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _wait_healthy(port: int, proc: subprocess.Popen | None) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(600):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"loa serve --no-controller exited ({proc.returncode})")
            with contextlib.suppress(httpx.HTTPError):
                r = await client.get(f"http://127.0.0.1:{port}/api/v1/health/live")
                if r.status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("loa serve --no-controller did not answer in 60 s")


def _publish_breakdown(targets, t0: int) -> dict:
    sent = sorted(t.last_sent_ms - t0 for t in targets if t.last_sent_ms)
    lags = sorted(
        t.started_at_ms - t.last_sent_ms
        for t in targets
        if t.started_at_ms is not None and t.last_sent_ms
    )
    if not sent or not lags:
        return {}
    return {
        "first_sent_ms": sent[0],
        "last_sent_ms": sent[-1],
        "sent_to_started_p50_ms": lags[len(lags) // 2],
        "sent_to_started_p99_ms": lags[math.ceil(0.99 * len(lags)) - 1],
    }


def _pair(base: dict, alert: dict) -> dict:
    return {
        "baseline_bare_publish": base,
        "alert": alert,
        "ratio_99pct": (
            round(alert["started_99pct_ms"] / max(1, base["started_99pct_ms"]), 2)
            if alert["started_99pct_ms"] and base["started_99pct_ms"]
            else None
        ),
    }


async def run_size(
    count: int, warmup: bool, tone_pattern: str, download_first: bool, api_process: bool = False
) -> dict:
    from broadcasts.bulletins import synthesize_bulletin
    from broadcasts.store import ContentStore
    from controller.process import ControllerService
    from firmware_sim.fleet import generate_node_ids
    from scheduler.content import ContentGateway

    tmp = Path(tempfile.mkdtemp(prefix=f"loa-bench-alert-{count}-"))
    broker = EmbeddedBroker(
        kind="mosquitto", data_dir=tmp / "broker", extra_config="max_queued_messages 100000\n"
    )
    broker.start()
    db = Database(f"sqlite:///{tmp / 'loa.db'}")
    create_schema(db)
    ids = generate_node_ids(count, dispatch.PREFIX)
    dispatch.build_registry(db, ids)
    communes = [f"bc{ci}" for ci in range(0, count, PER_COMMUNE)]
    http_port = free_port()
    settings = Settings(
        data_dir=tmp / "data",
        database_url=db.url,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        http_port=http_port,
        public_base_url=f"http://127.0.0.1:{http_port}",
        heartbeat_s=600,
        flush_interval_s=1.0,
        secret_key="bench-secret",
    )
    store = ContentStore(settings, db)
    gateway = ContentGateway(store)
    content_proc = dispatch.spawn(
        "--content-worker", db.url, str(settings.data_dir), str(http_port), "bench-secret"
    )
    fleet_proc = None
    controller = ControllerService(settings, db)
    try:
        try:
            dispatch.wait_port(http_port)
        except RuntimeError:
            raise RuntimeError("content server: " + "\n".join(content_proc.lines)) from None
        await controller.start()
        await controller.wait_connected()
        fleet_proc = dispatch.spawn("--fleet-worker", broker.host, str(broker.port), str(count))
        nodes = controller.ingest.fleet.nodes
        await dispatch.wait_until(
            lambda: any(x.startswith("connected") for x in fleet_proc.lines),
            count / 100 + 60,
            "the fleet to connect",
        )
        await dispatch.wait_until(
            lambda: sum(nodes[n].state.value in ("online", "degraded") for n in ids) == count,
            count / 100 + 60,
            "every node online",
        )
        await asyncio.sleep(2)
        # The baseline plays the same spoken text the alert will make (synthesised here,
        # outside its clock: the bare publish has no text to speak).
        from alerts import cap, speech

        _, parsed = cap.load(cap_document("X", communes))
        text = speech.compose(parsed, parsed.info_for(), speech.DEFAULT_TEMPLATE, drill=False)
        meta = await asyncio.to_thread(synthesize_bulletin, store, text, title="Đo kiểm")
        log(f"{count} nodes online; content {meta.bytes} bytes, {meta.duration_ms} ms")
        tone = None
        parsed_tone = speech.parse_tone_pattern(tone_pattern)
        if parsed_tone is not None:
            n_blasts, blast_s, gap_s = parsed_tone
            tone = Tone(
                hz=880, on_ms=round(blast_s * 1000), off_ms=round(gap_s * 1000), count=n_blasts
            )
        if warmup:
            await baseline(settings, gateway, meta, ids, tone)  # warm-up: not recorded
        out: dict = {
            "nodes": count,
            "communes": len(communes),
            "content_ms": meta.duration_ms,
            "content_bytes": meta.bytes,
            "tone": tone_pattern,
            "api": "loa serve --no-controller (own process)" if api_process else "in-process",
        }
        base = await baseline(settings, gateway, meta, ids, tone)
        log(f"baseline (node-made tone): 99% started in {base['started_99pct_ms']} ms")
        # The baseline's synthesis filled the TTS sentence cache with the alert's very text: a
        # real alert's text is new, so its synthesis belongs inside the figure.
        await asyncio.to_thread(shutil.rmtree, store.tts.cache_dir, True)
        alert = await through_alert(
            settings,
            db,
            controller,
            gateway,
            ids,
            communes,
            1,
            tone_pattern,
            "node",
            tone,
            api_process=api_process,
        )
        log(
            f"alert (node-made tone): POST answered in {alert['post_answered_ms']} ms, 99% "
            f"started in {alert['started_99pct_ms']} ms ({alert['started']}/{count} started); "
            f"speech ready by the tone's end at {alert.get('speech_ready_by_tone_end')}"
        )
        out["node_tone"] = _pair(base, alert)
        if download_first:
            await asyncio.sleep(5)  # the stops above land before the old way is measured
            base = await baseline(settings, gateway, meta, ids, None)
            log(f"baseline (download first): 99% started in {base['started_99pct_ms']} ms")
            await asyncio.to_thread(shutil.rmtree, store.tts.cache_dir, True)
            alert = await through_alert(
                settings, db, controller, gateway, ids, communes, 2, tone_pattern, "file"
            )
            log(
                f"alert (download first): POST answered in {alert['post_answered_ms']} ms, 99% "
                f"started in {alert['started_99pct_ms']} ms ({alert['started']}/{count} started)"
            )
            out["download_first"] = _pair(base, alert)
        return out
    finally:
        await controller.stop()
        if fleet_proc is not None:
            dispatch.stop_proc(fleet_proc)
        dispatch.stop_proc(content_proc)
        broker.cleanup()
        db.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    import json
    import logging

    logging.getLogger("mqtt").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[200])
    parser.add_argument("--name", default="alert", help="bench/results/NAME.json")
    parser.add_argument(
        "--tone",
        default="3x20/10",
        help="warning tone pattern made by the nodes (alerts.speech.parse_tone_pattern)",
    )
    parser.add_argument(
        "--download-first",
        action="store_true",
        help="also measure the old way: tones baked into the audio, download before start",
    )
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="skip the unrecorded first baseline (long at 5,000 nodes)",
    )
    parser.add_argument(
        "--api-process",
        action="store_true",
        help="POST to `loa serve --no-controller` in its own process, as docker-compose runs "
        "it (the API wakes this process's scheduler over MQTT)",
    )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runs = []
    command = (
        "python bench/alert.py --nodes "
        + " ".join(map(str, args.nodes))
        + (" --no-warmup" if args.no_warmup else "")
        + (f" --tone {args.tone}" if args.tone != "3x20/10" else "")
        + (" --download-first" if args.download_first else "")
        + (" --api-process" if args.api_process else "")
    )
    for n in args.nodes:  # written after each size: a long run interrupted keeps the others
        load_before = Path("/proc/loadavg").read_text().split()[0]
        run = asyncio.run(
            run_size(n, not args.no_warmup, args.tone, args.download_first, args.api_process)
        )
        run["loadavg_1min_before"] = float(load_before)
        run["loadavg_1min_after"] = float(Path("/proc/loadavg").read_text().split()[0])
        runs.append(run)
        result = {"benchmark": "alert", **machine(), "runs": runs, "command": command}
        path = write_result(args.name, result)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
