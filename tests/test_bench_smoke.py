"""Every benchmark runs at a seconds-long size in the suite, so no refactor can silently
break one (``bench/dispatch.py`` once died on a removed ``setup`` hook and nobody noticed).

Each run writes its figures to a temporary folder (``LOA_BENCH_RESULTS``), never over the
measured results that the README quotes, and the test reads back the figures the full run
reports: a smoke run that exits 0 without measuring anything fails here. No figure is
compared with a target: speed is the benchmarks' business, not the suite's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _api(d: dict) -> bool:
    burst = d["concurrency"]["mixed burst (half anonymous, half logged in)"]
    return (
        all(_positive(e["p50_ms"]) for e in d["endpoints"].values())
        and burst["statuses"] == {"200": 40}
        and _positive(burst["p95_ms"])
    )


def _content(d: dict) -> bool:
    return (
        _positive(d["speech"]["cold_cache"]["speech_s_per_cpu_s"])
        and _positive(d["speech"]["baseline_bare_espeak"]["speech_s_per_cpu_s"])
        and _positive(d["upload"]["output_duration_s"])
    )


def _dispatch(d: dict) -> bool:
    run = d["runs"][0]
    return run["nodes"] == 20 and _positive(run["ack_99pct_ratio"])


def _fleet_real(d: dict) -> bool:
    real = d["real"]
    return _positive(real["loa"]["all_online_s"]) and _positive(
        real["baseline_bare_mqtt"]["all_connected_s"]
    )


def _fleet_virtual(d: dict) -> bool:
    run = d["virtual"]["runs"][0]
    return (
        run["min_online_during_hold"] == 500
        and run["total"]["each_processed_once"]
        and _positive(run["window"]["processed"])
        and run["flush_errors"] == 0
    )


def _indicator(d: dict) -> bool:
    latest = d["latest"]
    return (
        _positive(latest["evaluate_province_s"])
        and latest["province"]["communes"] == 3
        and _positive(latest["baseline"]["read_both_s"])
        and _positive(latest["baseline_evaluate_raw_rows_s"])
        and latest["verdicts_equal_raw"] is True
        and latest["rollup_months_stored"] >= 1
    )


def _ingest(d: dict) -> bool:
    return (
        _positive(d["bare_aiomqtt_per_s"])
        and _positive(d["controller_per_s"])
        and d["controller"]["flush_errors"] == 0
        and _positive(d["controller_without_rollup_triggers_per_s"])
        and _positive(d["transition_inserts"]["with_triggers_per_cpu_s"])
    )


def _node(d: dict) -> bool:
    acc = d["accuracy"]
    return (
        d["size"] == "smoke"
        and acc["agent_a"]["n"] > 0
        and isinstance(acc["agent_a"]["p99_ms"], int | float)
        and _positive(d["idle"]["agent_a"]["rss_mean_mb"])
        and _positive(d["download"]["play_to_fetched_s"])
    )


def _alert(d: dict) -> bool:
    run = d["runs"][0]
    toned = run["node_tone"]
    return (
        run["nodes"] == 20
        and toned["alert"]["started"] == 20
        and _positive(toned["alert"]["started_99pct_ms"])
        and _positive(toned["baseline_bare_publish"]["started_99pct_ms"])
        and toned["alert"]["speech_ready_by_tone_end"] == 20
    )


def _media(d: dict) -> bool:
    return all(
        _positive(d[size][way]["server_cpu_per_download_ms"]) and d[size][way]["downloads"] == 20
        for size in ("short_3s", "long_30s")
        for way in ("media", "baseline_static")
    )


# (name, arguments, results file, check of its figures)
SMOKE: list[tuple[str, list[str], str, Callable[[dict], bool]]] = [
    (
        "alert",
        ["bench/alert.py", "--nodes", "20", "--tone", "2x1/0.5", "--no-warmup"],
        "alert.json",
        _alert,
    ),
    (
        # As docker-compose runs it: the POST to `loa serve --no-controller`, the scheduler
        # woken over MQTT (controller.schedule_wake).
        "alert-api-process",
        [
            "bench/alert.py",
            "--nodes",
            "20",
            "--tone",
            "2x1/0.5",
            "--no-warmup",
            "--api-process",
            "--name",
            "alert-api",
        ],
        "alert-api.json",
        lambda d: _alert(d) and d["runs"][0]["api"].startswith("loa serve --no-controller"),
    ),
    (
        "api",
        [
            "bench/api.py",
            "--nodes",
            "30",
            "--requests",
            "10",
            "--concurrency",
            "40",
            "--rounds",
            "1",
        ],
        "api.json",
        _api,
    ),
    ("content", ["bench/content.py", "--minutes", "0.2"], "content.json", _content),
    ("media", ["bench/media.py", "--downloads", "20"], "media.json", _media),
    (
        "dispatch",
        ["bench/dispatch.py", "--nodes", "20", "--lead-s", "3"],
        "dispatch.json",
        _dispatch,
    ),
    ("fleet-real", ["bench/fleet.py", "--real", "50", "--hold-s", "3"], "fleet.json", _fleet_real),
    (
        "fleet-virtual",
        [
            "bench/fleet.py",
            "--virtual",
            "500",
            "--duration",
            "5",
            "--baseline-s",
            "3",
            "--settle-s",
            "1",
            "--heartbeat-s",
            "5",
            "--connections",
            "2",
        ],
        "fleet.json",
        _fleet_virtual,
    ),
    (
        "indicator",
        [
            "bench/indicator.py",
            "--communes",
            "3",
            "--villages",
            "2",
            "--nodes",
            "1",
            "--days",
            "60",  # holds October whole: one month rolled up
            "--repeat",
            "1",
        ],
        "indicator.json",
        _indicator,
    ),
    ("node", ["bench/node.py", "--smoke"], "node.json", _node),
    (
        "ingest",
        [
            "bench/ingest.py",
            "--messages",
            "2000",
            "--nodes",
            "100",
            "--timeout-s",
            "120",
            "--rounds",
            "1",
            "--transitions",
            "2000",
        ],
        "ingest.json",
        _ingest,
    ),
]


@pytest.mark.parametrize(
    ("args", "result", "check"), [s[1:] for s in SMOKE], ids=[s[0] for s in SMOKE]
)
def test_benchmark_runs_at_its_smoke_size(tmp_path, args, result, check):
    results = tmp_path / "results"
    quoted = REPO / "bench" / "results" / result
    quoted_before = quoted.stat().st_mtime_ns if quoted.exists() else None
    env = {**os.environ, "LOA_BENCH_RESULTS": str(results)}
    if args[0] == "bench/dispatch.py":  # it takes its output file as an argument
        args = [*args, "--out", str(results / result)]
        results.mkdir()
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    written = results / result
    assert written.exists(), f"{args[0]} wrote no {result}: {proc.stdout[-2000:]}"
    assert check(json.loads(written.read_text())), written.read_text()[:3000]
    # The figures the README quotes were left alone.
    assert (quoted.stat().st_mtime_ns if quoted.exists() else None) == quoted_before
