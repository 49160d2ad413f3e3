"""The multiplexed ingest-load mode (``loa sim --virtual``) against a real mosquitto: many
virtual nodes on a few connections, protocol-valid and evenly spread heartbeats, retained
online/shutdown statuses, and a real controller that accepts every one of them."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter

import psutil
import pytest

from controller.process import ControllerService
from firmware_sim.fleet import generate_node_ids
from firmware_sim.multiplex import LatenessHistogram, VirtualFleet, _remaining_length
from loa.protocol import Channel, NodeState, decode_heartbeat, decode_status
from system.cli import main as cli_main
from tests.conftest import settings_for
from tests.factories import make_registry
from tests.firmware_sim.conftest import RawController
from tests.firmware_sim.test_fleet_cli import run_cli


async def retained_statuses(broker, count: int) -> dict[str, object]:
    """What a controller connecting now would be told: the retained status of each node."""
    async with RawController(broker.host, broker.port, client_id="late-joiner") as late:
        await late.wait_for(
            lambda _r: sum(r.channel == Channel.STATUS for r in late.received) >= count, timeout=10
        )
        assert all(r.retain for r in late.received if r.channel == Channel.STATUS)
        return {
            r.node_id: decode_status(r.payload)
            for r in late.received
            if r.channel == Channel.STATUS
        }


def broker_connections(port: int) -> int:
    """Established TCP connections from this process to the broker (the real sockets)."""
    return sum(
        1
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


async def test_three_connections_carry_300_nodes_with_even_valid_heartbeats(mosquitto_broker):
    ids = generate_node_ids(300, "v")
    async with RawController(mosquitto_broker.host, mosquitto_broker.port) as ctl:
        fleet = VirtualFleet(
            mosquitto_broker.host,
            mosquitto_broker.port,
            ids,
            connections=3,
            heartbeat_s=2,
            announce_rate=1000,
            seed=3,
        )
        await fleet.start()
        try:
            assert broker_connections(mosquitto_broker.port) == 3 + 1  # + the controller
            assert fleet.stats().announced == 300
            online = await retained_statuses(mosquitto_broker, 300)
            assert set(online) == set(ids) and all(s.online and s.boot_id for s in online.values())
            await asyncio.sleep(6.2)
        finally:
            await fleet.stop()
        stats = fleet.stats()
        await ctl.wait_for(
            lambda _r: (
                sum(r.channel == Channel.HEARTBEAT for r in ctl.received) >= stats.heartbeats
            ),
            timeout=5,
        )

    beats = [r for r in ctl.received if r.channel == Channel.HEARTBEAT]
    assert len(beats) == stats.heartbeats and stats.skipped == 0  # nothing lost on the way
    decoded = [(r, decode_heartbeat(r.payload)) for r in beats]
    assert {r.node_id for r, _ in decoded} == set(ids)
    # ts = wall clock when published (the subscriber shares this busy event loop: allow it
    # some delay, but a ts stamped at start or on schedule would drift by seconds)
    lags = sorted(r.wall_ms - hb.ts for r, hb in decoded)
    assert lags[0] >= 0 and lags[len(lags) // 2] < 200 and lags[-1] < 3000
    assert all(hb.speakers_ok <= hb.speakers_total and hb.fw.endswith("+mux") for _, hb in decoded)
    seqs: dict[str, list[int]] = {}
    for r, hb in decoded:
        seqs.setdefault(r.node_id, []).append(hb.seq)
    assert all(s == list(range(len(s))) for s in seqs.values())  # +1 per beat, from 0

    # Every node once per 2 s period, spread evenly by publish time: 150/s, 75 per 0.5 s
    # (a burst per period would put 300 in one bin; the bounds allow a busy machine's stalls).
    t0 = min(hb.ts for _, hb in decoded) + 2000
    window = [hb.ts for _, hb in decoded if t0 <= hb.ts < t0 + 4000]
    assert 580 <= len(window) <= 620
    bins = Counter((ts - t0) // 500 for ts in window)
    assert max(bins.values()) <= 120 and min(bins[i] for i in range(8)) >= 30, bins
    assert 140 <= stats.rate_per_s <= 160 and stats.late_ms_p99 is not None

    shut = await retained_statuses(mosquitto_broker, 300)
    assert stats.shutdowns == 300
    assert all(not s.online and s.reason == "shutdown" for s in shut.values())


async def test_the_controller_accepts_every_virtual_node(mosquitto_broker, settings, db):
    ids = generate_node_ids(200, "v")
    make_registry(db, communes={"Xã Ảo": {"Thôn Một": ids[:100], "Thôn Hai": ids[100:]}})
    svc = ControllerService(settings_for(settings, mosquitto_broker), db, client_id="ctl-mux")
    await svc.start()
    await svc.wait_connected()
    nodes = svc.ingest.fleet.nodes
    try:
        fleet = VirtualFleet(
            mosquitto_broker.host,
            mosquitto_broker.port,
            ids,
            connections=4,
            heartbeat_s=1,
            announce_rate=2000,
        )
        await fleet.start()
        for _ in range(100):
            if all(nodes[i].heartbeat is not None for i in ids):
                break
            await asyncio.sleep(0.1)
        assert {nodes[i].state for i in ids} <= {NodeState.ONLINE, NodeState.DEGRADED}
        assert all(nodes[i].available for i in ids)
        for _ in range(100):  # at least a second round for every node
            if fleet.stats().heartbeats > 200:
                break
            await asyncio.sleep(0.1)
        await fleet.stop()
        for _ in range(100):
            if (
                svc.ingest.accepted["heartbeat"] == fleet.stats().heartbeats
                and svc.ingest.accepted["status"] == 400
            ):
                break
            await asyncio.sleep(0.1)
        # each heartbeat processed exactly once, nothing rejected
        assert svc.ingest.accepted["heartbeat"] == fleet.stats().heartbeats > 200
        assert svc.ingest.accepted["status"] == 400 and not svc.ingest.rejected
        assert {nodes[i].state for i in ids} == {NodeState.OFFLINE}
        assert {nodes[i].offline_cause for i in ids} == {"status_shutdown"}
    finally:
        await svc.stop()


async def test_cli_reports_its_rate_and_lateness_and_stops_cleanly(mosquitto_broker, tmp_path):
    stats_path = tmp_path / "mux.json"
    async with RawController(mosquitto_broker.host, mosquitto_broker.port) as ctl:
        proc = run_cli(
            [
                "--virtual",
                "120",
                "--connections",
                "3",
                "--heartbeat-s",
                "1",
                "--prefix",
                "cli",
                "--mqtt-host",
                mosquitto_broker.host,
                "--mqtt-port",
                str(mosquitto_broker.port),
                "--stats-file",
                str(stats_path),
                "--shard",
                "0/2",
            ],
            env_extra={"LOA_DATA_DIR": str(tmp_path)},
        )
        try:
            for _ in range(100):
                if stats_path.exists() and json.loads(stats_path.read_text())["heartbeats"]:
                    break
                await asyncio.sleep(0.1)
            running = json.loads(stats_path.read_text())
            assert running["phase"] == "beating" and running["nodes"] == 60
            await asyncio.sleep(3)
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.to_thread(proc.communicate, timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        final = json.loads(stats_path.read_text())
        await ctl.wait_for(
            lambda _r: (
                sum(r.channel == Channel.HEARTBEAT for r in ctl.received) >= final["heartbeats"]
            )
        )
    assert "60 cụm trên 3 kết nối" in out and "60 đã báo tắt" in out
    assert final["phase"] == "stopped" and final["shutdowns"] == 60
    assert 55 <= final["rate_per_s"] <= 65 and final["late_ms_max"] is not None
    beats = [r for r in ctl.received if r.channel == Channel.HEARTBEAT]
    assert len(beats) == final["heartbeats"]
    # --shard 0/2 of 120 generated ids: every other one, starting with the first
    assert {r.node_id for r in beats} == set(generate_node_ids(120, "cli")[0::2])


def test_cli_refuses_what_virtual_nodes_cannot_do(mosquitto_broker, capsys):
    port = ["--mqtt-port", str(mosquitto_broker.port)]
    cases = [
        (["--virtual", "10", "--fault", "sim-0001:amp_fault", *port], "--fault không dùng được"),
        (["--virtual", "10", "--kill-after", "sim-0001:5", *port], "không có di chúc"),
        (["--nodes", "10", "--connections", "5", *port], "chỉ dùng với --virtual"),
        (["--virtual", "10", "--prefix", "x y", *port], "--prefix 'x y'"),
    ]
    for args, message in cases:
        assert cli_main(["sim", *args]) == 1, args
        err = capsys.readouterr().err
        assert err.startswith("Lỗi: ") and message in err, (args, err)
    with pytest.raises(SystemExit):
        cli_main(["sim", "--virtual", "0"])
    assert "số nguyên dương" in capsys.readouterr().err


async def test_a_broker_that_never_answers_is_a_clear_error():
    server = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)  # TCP, not MQTT
    port = server.sockets[0].getsockname()[1]
    fleet = VirtualFleet("127.0.0.1", port, generate_node_ids(10, "v"), connections=2)
    try:
        with pytest.raises(ConnectionError, match="chỉ 0/2 kết nối MQTT"):
            await fleet.start(connect_timeout=1)
    finally:
        await fleet.stop()
        server.close()
    assert fleet.stats().phase == "stopped" and fleet.stats().announced == 0


def test_remaining_length_matches_the_mqtt_spec_examples():
    # MQTT 3.1.1 table 2.4: the boundaries of 1-, 2-, 3- and 4-byte lengths.
    assert _remaining_length(0) == b"\x00"
    assert _remaining_length(127) == b"\x7f"
    assert _remaining_length(128) == b"\x80\x01"
    assert _remaining_length(16_383) == b"\xff\x7f"
    assert _remaining_length(16_384) == b"\x80\x80\x01"
    assert _remaining_length(2_097_151) == b"\xff\xff\x7f"
    assert _remaining_length(2_097_152) == b"\x80\x80\x80\x01"


def test_lateness_quantiles_are_bucket_upper_edges():
    h = LatenessHistogram()
    assert h.quantile(0.99) is None
    for ms in [0.2] * 98 + [7.5, 12_345]:
        h.add(ms / 1000)
    assert h.quantile(0.5) == 1.0 and h.quantile(0.99) == 8.0
    assert h.quantile(1.0) == 12_345.0 and h.max_ms == pytest.approx(12_345)
