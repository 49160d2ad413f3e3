"""Node agent benchmarks: how precisely a real ``loa node`` starts a bulletin, what it costs
idle, and how long a 5-minute MP3 takes to arrive over a 4G-like link.

    .venv/bin/python bench/node.py --smoke        # seconds: 5 plays, 10 s idle, 20 s MP3
    .venv/bin/python bench/node.py                # 50 plays, 600 s idle, 5-minute MP3

1. Start accuracy, measured from the audio: two ``loa node run`` processes on their own
   PulseAudio null sinks get the same ``play`` with the same ``start_at``; each sink's monitor
   is recorded with ``parec`` and the onset of sound is found in the samples (a sample's
   wall time comes from the sink's playback clock that ``parec -v`` reports, not from when
   the monitor delivered it: see tests/node_agent/pulse.py). Figures: onset
   minus ``start_at`` (p50/p99, and of |error|) per agent, and the spread between the two.
   Baseline in the same run: ``paplay`` of the same WAV, started on a third sink by a script
   that sleeps until the deadline (what a naive player does).
2. Idle: CPU % and RSS of both agents while connected with nothing to play.
3. Download: ``play`` published -> ``fetched`` event, for a 5-minute 64 kbit/s MP3 served
   at 1 Mbit/s. Baseline: a plain HTTP GET of the same file at the same rate.

Writes bench/results/node.json."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import ProcessSampler, machine, write_result  # noqa: E402
from loa.broker import EmbeddedBroker  # noqa: E402
from tests.node_agent.media import MediaServer  # noqa: E402
from tests.node_agent.pulse import PulseServer, Recording  # noqa: E402
from tests.production.mqtt_support import Mqtt  # noqa: E402

SYNCED = "System time     : 0.000100000 seconds fast of NTP time\nLeap status     : Normal\n"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))], 1)


def stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    absv = [abs(v) for v in values]
    return {
        "n": len(values),
        "p50_ms": pct(values, 0.5),
        "p99_ms": pct(values, 0.99),
        "min_ms": round(min(values), 1),
        "max_ms": round(max(values), 1),
        "abs_p50_ms": pct(absv, 0.5),
        "abs_p99_ms": pct(absv, 0.99),
        "stdev_ms": round(statistics.pstdev(values), 1),
    }


def make(path: Path, args: list[str]) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(path)], check=True)
    return path


class Bench:
    def __init__(self, tmp: Path, latency_ms: int = 100, nice: int = 0) -> None:
        self.tmp = tmp
        self.nice = nice
        self.latency_ms = latency_ms
        self.pulse = PulseServer(tmp / "pulse", ["b1", "b2", "b3"])
        self.broker = EmbeddedBroker(kind="mosquitto", data_dir=tmp / "broker")
        self.media = MediaServer(tmp / "media")
        (tmp / "media").mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self.events: list[tuple[float, str, dict]] = []
        self.listener: Mqtt | None = None

    def start(self) -> None:
        self.pulse.start()
        self.broker.start()
        self.media.start()
        self.listener = Mqtt(
            self.broker.host, self.broker.port, None, None, client_id="bench-listener"
        )
        assert self.listener.connect().ok
        self.listener.subscribe("loa/v1/nodes/+/events")
        threading.Thread(target=self._pump, daemon=True).start()
        clock = self.tmp / "clock.txt"
        clock.write_text(SYNCED)
        for node_id, sink in (("bench-a", "b1"), ("bench-b", "b2")):
            d = self.tmp / node_id
            d.mkdir()
            env = {**os.environ, **self.pulse.env}
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "system",
                        "node",
                        "run",
                        "--id",
                        node_id,
                        "--broker",
                        f"mqtt://{self.broker.host}:{self.broker.port}",
                        "--content-base",
                        self.media.base,
                        "--output",
                        f"pulse:{sink}",
                        "--cache-dir",
                        str(d / "c"),
                        "--state-dir",
                        str(d / "s"),
                        "--clock-source",
                        f"file:{clock}",
                        "--heartbeat-s",
                        "30",
                        "--output-latency-ms",
                        str(self.latency_ms),
                        "--log-level",
                        "WARNING",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=(d / "log").open("wb"),
                    stderr=subprocess.STDOUT,
                    preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None,
                )
            )
        self.wait(lambda: len({t for _, t, _ in self.events}) >= 0, 1)
        time.sleep(2.5)  # connected (the first heartbeat is not subscribed to here)

    def _pump(self) -> None:
        assert self.listener is not None
        while True:
            topic, payload = self.listener.inbox.get()
            self.events.append((time.time(), topic.split("/")[3], json.loads(payload)))

    def wait(self, pred, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.05)
        raise SystemExit("timed out")

    def play(self, node_id: str, name: str, start_at_ms: int, bid: str) -> None:
        data = (self.media.root / name).read_bytes()
        cmd = {
            "cmd_id": uuid.uuid4().hex,
            "type": "play",
            "issued_at": int(time.time() * 1000),
            "broadcast_id": bid,
            "url": self.media.base + name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "duration_ms": 300,
            "start_at": start_at_ms,
            "volume": 100,
        }
        assert self.listener is not None
        self.listener.publish(f"loa/v1/nodes/{node_id}/cmd", json.dumps(cmd).encode())

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        # Gaps the agents heard themselves (pacat's "Stream underrun"), from their logs.
        self.underruns = {
            node_id: (self.tmp / node_id / "log").read_text(errors="replace").count("underrun")
            for node_id in ("bench-a", "bench-b")
        }
        if self.listener:
            self.listener.close()
        self.media.stop()
        self.broker.cleanup()
        self.pulse.stop()


def accuracy(b: Bench, plays: int, spacing_s: float) -> dict:
    make(
        b.media.root / "tick.mp3",
        [
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=880:duration=0.3:sample_rate=48000",
            "-af",
            "volume=4",
            "-ac",
            "1",
            "-b:a",
            "96k",
        ],
    )
    wav = make(
        b.tmp / "tick.wav", ["-i", str(b.media.root / "tick.mp3"), "-ac", "1", "-ar", "48000"]
    )
    recs = {s: Recording(b.pulse, s) for s in ("b1", "b2", "b3")}
    for r in recs.values():
        r.wait_ready()
    first = time.time() + 3.0
    starts = [int((first + i * spacing_s) * 1000) for i in range(plays)]
    for i, at in enumerate(starts):
        for node in ("bench-a", "bench-b"):
            b.play(node, "tick.mp3", at, f"acc-{i}")

    def baseline() -> None:
        env = {**os.environ, **b.pulse.env}
        for at in starts:
            left = at / 1000 - time.time()
            if left > 0:
                time.sleep(left)
            subprocess.Popen(["paplay", "--device=b3", str(wav)], env=env).wait()

    t = threading.Thread(target=baseline)
    t.start()
    t.join()
    time.sleep(1.5)
    for r in recs.values():
        r.stop()
    errors: dict[str, list[float]] = {}
    for sink, r in recs.items():
        onsets = r.onsets(threshold=1000, quiet_s=0.3, after=first - 1)
        errs = []
        for at in starts:
            near = [o for o in onsets if abs(o * 1000 - at) < spacing_s * 500]
            if near:
                errs.append(near[0] * 1000 - at)
        errors[sink] = errs
    spread = [abs(x - y) for x, y in zip(errors["b1"], errors["b2"], strict=False)]
    started = [
        e
        for _, _, e in b.events
        if e.get("phase") == "started" and str(e.get("broadcast_id", "")).startswith("acc-")
    ]
    reported = [e["at"] - starts[int(e["broadcast_id"].split("-")[1])] for e in started]
    return {
        "plays": plays,
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        # How far the old recording anchor (chunk arrival) was from the sink's clock
        # (parec -v): what every onset was off by before the measurement was fixed.
        "recording_arrival_anchor_minus_clock_anchor_ms": {
            s: round((r.arrival_anchor - r.clock_anchor) * 1000, 1) for s, r in recs.items()
        },
        "errors_ms": {k: [round(x, 1) for x in v] for k, v in errors.items()},
        "agent_a": stats(errors["b1"]),
        "agent_b": stats(errors["b2"]),
        "spread_between_agents": stats(spread),
        "baseline_paplay_sleep_until": stats(errors["b3"]),
        "started_event_at_minus_start_at": stats(reported),
        "missed": {
            "agent_a": plays - len(errors["b1"]),
            "agent_b": plays - len(errors["b2"]),
            "baseline": plays - len(errors["b3"]),
        },
    }


def idle(b: Bench, seconds: float) -> dict:
    sampler = ProcessSampler(interval_s=1.0)
    sampler.watch("agent_a", [b.procs[0].pid])
    sampler.watch("agent_b", [b.procs[1].pid])
    sampler.phase = "idle"
    sampler.start()
    time.sleep(seconds)
    sampler.stop()
    return {"seconds": seconds, **sampler.summary("idle")}


def download(b: Bench, seconds: int, rate_bps: int) -> dict:
    name = "long.mp3"
    make(
        b.media.root / name,
        [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=330:duration={seconds}:sample_rate=44100",
            "-ac",
            "1",
            "-b:a",
            "64k",
        ],
    )
    size = (b.media.root / name).stat().st_size
    b.media.rate_bps = rate_bps
    # Baseline: one plain GET at the same rate.
    import httpx

    t0 = time.monotonic()
    got = len(httpx.get(b.media.base + name, timeout=600).content)
    baseline_s = time.monotonic() - t0
    assert got == size
    sent = time.time()
    b.play("bench-a", name, int((sent + 3600) * 1000), "dl-1")
    b.wait(
        lambda: any(
            e.get("broadcast_id") == "dl-1" and e.get("phase") in ("fetched", "failed")
            for _, _, e in b.events
        ),
        seconds * 2 + 120,
    )
    ev = next(
        e
        for _, _, e in b.events
        if e.get("broadcast_id") == "dl-1" and e.get("phase") in ("fetched", "failed")
    )
    b.media.rate_bps = None
    return {
        "mp3_seconds": seconds,
        "bytes": size,
        "rate_bps": rate_bps,
        "play_to_fetched_s": round((ev["at"] / 1000) - sent, 2),
        "phase": ev["phase"],
        "baseline_plain_get_s": round(baseline_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="seconds-long run")
    ap.add_argument("--plays", type=int)
    ap.add_argument("--idle-s", type=float)
    ap.add_argument("--mp3-s", type=int)
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the agents at this nice value (the systemd unit uses -10)",
    )
    ap.add_argument(
        "--latency-ms",
        type=int,
        default=100,
        help="the agents' output_latency_ms (sink queue kept ahead)",
    )
    args = ap.parse_args()
    plays = args.plays or (5 if args.smoke else 50)
    idle_s = args.idle_s or (10 if args.smoke else 600)
    mp3_s = args.mp3_s or (20 if args.smoke else 300)
    with tempfile.TemporaryDirectory(prefix="loa-bench-node-") as tmp:
        b = Bench(Path(tmp), args.latency_ms, args.nice)
        b.start()
        try:
            t0 = time.monotonic()
            result = {
                "size": "smoke" if args.smoke else "full",
                "machine": machine(),
                "output_latency_ms": args.latency_ms,
                "agent_nice": args.nice,
                "accuracy": accuracy(b, plays, spacing_s=1.0),
                "idle": idle(b, idle_s),
                "download": download(b, mp3_s, 1_000_000),
            }
            result["wall_s"] = round(time.monotonic() - t0, 1)
        finally:
            b.stop()
        result["agent_underrun_warnings"] = b.underruns
    path = write_result("node", result)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
