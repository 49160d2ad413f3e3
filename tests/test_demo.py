"""The README's demo command, run as a user runs it: every simulated node online within
60 s, the summary served over HTTP, and a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

from loa.broker import free_port


def test_demo_brings_every_simulated_node_online_and_stops_cleanly(tmp_path):
    http_port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "system",
            "demo",
            "--data-dir",
            str(tmp_path / "demo"),
            "--http-port",
            str(http_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    summary = None
    try:
        started = time.monotonic()
        while time.monotonic() - started < 90:  # set-up (seeding) + the 60 s of the issue
            assert proc.poll() is None, proc.stdout.read()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{http_port}/api/v1/health/summary", timeout=2
                ) as r:
                    summary = json.load(r)
            except OSError:
                summary = None
            if (
                summary
                and summary["nodes"]["online"] + summary["nodes"]["degraded"]
                >= (summary["nodes"]["total"] - summary["nodes"]["unknown"])
                and summary["nodes"]["online"] > 0
                and summary["nodes"]["offline"] == 0
            ):
                break
            time.sleep(1)
        assert summary is not None, "the dashboard never answered"
        nodes = summary["nodes"]
        # The demo province registers three clusters "installed but not commissioned".
        assert nodes["unknown"] >= 3
        assert nodes["offline"] == 0
        assert nodes["online"] + nodes["degraded"] == nodes["total"] - nodes["unknown"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "http://127.0.0.1:" in out and "province" in out and "demo" in out
    # What was seeded reads as a sentence, not a Python object's repr.
    assert "Tỉnh mẫu: " in out and " xã, " in out
    assert "Lịch sử mẫu " in out and "chuyển trạng thái" in out
    assert "Summary(" not in out, out
    assert "Đã dừng." in out
    assert "Traceback" not in out, out
