"""A fleet from the registry or generated ids, and ``loa sim`` as a user runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_sim.cli import take_shard
from firmware_sim.fleet import Fleet, NodeSpec, generate_node_ids
from loa.broker import free_port
from registry.models import Node
from system.cli import main as cli_main
from system.simulation import simulated_nodes as specs_from_registry
from tests.firmware_sim.conftest import RawController

REPO = Path(__file__).resolve().parents[2]


def add_nodes(db, rows: list[dict]) -> None:
    with db.session() as s:
        for row in rows:
            s.add(Node(registered_ms=0, **row))


def test_generated_ids_follow_the_protocol_pattern():
    ids = generate_node_ids(12_000)
    assert ids[0] == "sim-00001" and ids[-1] == "sim-12000" and len(set(ids)) == 12_000


def test_registry_gives_simulated_live_nodes_with_their_heartbeat(db):
    add_nodes(
        db,
        [
            {"id": "reg-a", "heartbeat_s": 10, "speakers": 4},
            {"id": "reg-b", "heartbeat_s": 30},
            {"id": "reg-real", "simulated": False},
            {"id": "reg-gone", "retired_ms": 5},
        ],
    )
    assert specs_from_registry(db) == [
        NodeSpec("reg-a", heartbeat_s=10, speakers=4),
        NodeSpec("reg-b", heartbeat_s=30, speakers=2),
    ]


async def test_a_hundred_nodes_all_report(mosquitto_broker, db):
    add_nodes(
        db, [{"id": f"reg-{i:03d}", "heartbeat_s": 1, "speakers": 1 + i % 4} for i in range(100)]
    )
    async with RawController(mosquitto_broker.host, mosquitto_broker.port) as ctl:
        async with Fleet(
            mosquitto_broker.host, mosquitto_broker.port, keepalive_s=5, connect_rate=400
        ) as fleet:
            assert await fleet.start(specs_from_registry(db)) == 100
            beating: set[str] = set()

            def everyone_beats(r) -> bool:
                if r.channel == "heartbeat":
                    beating.add(r.node_id)
                return len(beating) == 100

            await ctl.wait_for(everyone_beats, timeout=30)
            assert {ctl.heartbeats(f"reg-{i:03d}")[0].speakers_total for i in range(100)} == {
                1,
                2,
                3,
                4,
            }
            assert fleet.summary().connected == 100
        await ctl.wait_for(
            lambda r: (
                sum(1 for x in ctl.received if x.channel == "status" and b"shutdown" in x.payload)
                == 100
            ),
            timeout=30,
        )


def run_cli(args: list[str], env_extra: dict | None = None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    # Like the ``loa`` console script (``python -m system.cli`` would import system.cli twice).
    entry = "import sys; from system.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", entry, "sim", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


async def test_cli_runs_kills_on_schedule_and_stops_cleanly(mosquitto_broker, tmp_path):
    async with RawController(mosquitto_broker.host, mosquitto_broker.port) as ctl:
        proc = run_cli(
            [
                "--nodes",
                "3",
                "--mqtt-host",
                mosquitto_broker.host,
                "--mqtt-port",
                str(mosquitto_broker.port),
                "--heartbeat-s",
                "1",
                "--keepalive-s",
                "3",
                "--kill-after",
                "sim-0002:1.5",
                "--clock-offset-ms",
                "2000",
                "--fault",
                "sim-0003:speaker_line=1",
            ],
            env_extra={"LOA_DATA_DIR": str(tmp_path)},
        )
        try:
            await ctl.wait_status("sim-0002", online=False, timeout=15)
            await ctl.wait_for(lambda r: len(ctl.heartbeats("sim-0003")) >= 2, timeout=5)
            await ctl.wait_event("sim-0003", type="fault", code="speaker_line")
            await ctl.wait_heartbeat("sim-0003", pred=lambda hb: hb.speakers_ok == 1)
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.to_thread(proc.communicate, timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        assert "Đã dừng mô phỏng 3 cụm loa" in out and "1 bị ngắt đột ngột" in out
        assert len(out.strip().splitlines()) == 1
        for node_id, reason in (
            ("sim-0001", "shutdown"),
            ("sim-0002", "lost"),
            ("sim-0003", "shutdown"),
        ):
            status, _ = await ctl.wait_status(node_id, online=False)
            assert status.reason == reason
        hb = ctl.heartbeats("sim-0001")[-1]
        rec = [r for r in ctl.received if r.node_id == "sim-0001" and r.channel == "heartbeat"]
        assert 1500 < hb.ts - rec[-1].wall_ms <= 2000  # --clock-offset-ms reached the nodes


def test_cli_rejects_bad_input_in_vietnamese(mosquitto_broker, db, capsys):
    base = ["--mqtt-port", str(mosquitto_broker.port)]
    cases = [
        (["--nodes", "2", "--kill-after", "sim-0009:5", *base], "không có cụm loa 'sim-0009'"),
        (["--nodes", "2", "--kill-after", "sim-0001", *base], "MÃ_CỤM:GIÂY"),
        (["--nodes", "2", "--fault", "sim-0001:fire", *base], "Lỗi mô phỏng không rõ 'fire'"),
        (["--nodes", "2", "--fault", "amp_fault", *base], "MÃ_CỤM:LỖI"),
        (["--from-registry", "--db", db.url, *base], "không có cụm loa mô phỏng nào"),
        (["--nodes", "2", "--mqtt-port", str(free_port())], "Không kết nối được broker"),
    ]
    for args, message in cases:
        assert cli_main(["sim", *args]) == 1, args
        err = capsys.readouterr().err
        assert err.startswith("Lỗi: ") and message in err, (args, err)
    for bad, message in ((["--nodes", "0"], "số nguyên dương"), (["--shard", "2/2"], "0 <= K < N")):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["sim", *bad])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_shards_split_a_fleet_without_overlap():
    specs = [NodeSpec(i) for i in generate_node_ids(10)]
    parts = [take_shard(specs, (k, 3)) for k in range(3)]
    assert sorted(s.node_id for p in parts for s in p) == [s.node_id for s in specs]
    assert [len(p) for p in parts] == [4, 3, 3]
