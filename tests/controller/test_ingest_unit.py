"""Ingest rules on a real SQLite database, messages fed directly (no broker)."""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import select

from controller.ingest import Ingest
from controller.models import HeartbeatSample, NodeLive, NodeTransition, RejectedCount
from registry.models import PendingNode
from tests.factories import make_registry

T0 = 1_790_000_000_000


def hb(seq=0, ts=T0, **over) -> bytes:
    body = {
        "seq": seq,
        "ts": ts,
        "uptime_s": 10,
        "volume": 70,
        "amp": "ok",
        "speakers_ok": 2,
        "speakers_total": 2,
        "power": "mains",
        "net": "4g",
        "rssi_dbm": -80,
        "playing": None,
    }
    body.update(over)
    return json.dumps(body).encode()


def make(settings, db, nodes=("node-a", "node-b")):
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Cáy": list(nodes)}})
    ingest = Ingest(settings, db)
    ingest.load_registry()
    return ingest


def topic(node, ch):
    return f"loa/v1/nodes/{node}/{ch}"


def test_status_then_heartbeat_is_online_and_amp_fault_is_degraded(settings, db):
    ing = make(settings, db)
    assert ing.fleet.nodes["node-a"].state == "unknown"
    assert ing.handle(topic("node-a", "status"), b'{"online": true, "fw": "2.1.0"}', T0)
    assert ing.handle(topic("node-a", "heartbeat"), hb(), T0 + 10)
    rt = ing.fleet.nodes["node-a"]
    assert (rt.state, rt.available) == ("online", True)
    ing.handle(topic("node-a", "heartbeat"), hb(1, amp="fault"), T0 + 30_000)
    assert (rt.state, rt.available, rt.reasons) == ("degraded", False, ("amp_fault",))
    # Weak signal degrades but the loudspeakers still reach the village (8.3 available).
    ing.handle(topic("node-a", "heartbeat"), hb(2, rssi_dbm=-110), T0 + 60_000)
    assert (rt.state, rt.available, rt.reasons) == ("degraded", True, ("weak_signal",))


def test_each_bad_payload_is_counted_by_reason_and_good_ones_around_apply(settings, db):
    ing = make(settings, db)
    bad = [
        (topic("node-a", "heartbeat"), b"{not json", "not_json"),
        (topic("node-a", "heartbeat"), b"[1, 2]", "not_object"),
        (topic("node-a", "heartbeat"), b'{"seq": 1}', "missing_field"),
        (topic("node-a", "heartbeat"), hb(volume="loud"), "invalid_field"),
        (topic("node-a", "heartbeat"), b'{"a": "' + b"x" * 70_000 + b'"}', "oversized"),
        (topic("ghost-1", "heartbeat"), hb(), "unknown_node"),
        (topic("node-a", "heartbeat"), hb(ts=T0 + 3_600_000), "future_timestamp"),
        (topic("node-a", "events"), b'{"type": "nope", "ts": 1}', "invalid_field"),
        ("loa/v1/other/x", b"{}", "bad_topic"),
    ]
    seq = 0
    for t, payload, _ in bad:
        assert ing.handle(topic("node-b", "heartbeat"), hb(seq), T0 + seq)
        assert not ing.handle(t, payload, T0 + seq)
        seq += 1
    assert ing.handle(topic("node-b", "heartbeat"), hb(seq), T0 + seq)
    assert ing.fleet.nodes["node-b"].heartbeat.seq == seq
    assert ing.fleet.nodes["node-b"].state == "online"
    expected = {}
    for _, _, reason in bad:
        expected[reason] = expected.get(reason, 0) + 1
    assert dict(ing.rejected) == expected
    asyncio.run(ing.flush())
    with db.session() as s:
        stored = {r.reason: r.count for r in s.scalars(select(RejectedCount))}
        pending = s.get(PendingNode, "ghost-1")
    assert stored == expected
    assert pending is not None and pending.messages == 1


def test_silent_node_goes_offline_after_three_heartbeats_and_transitions_are_stored(settings, db):
    ing = make(settings, db)
    ing.handle(topic("node-a", "status"), b'{"online": true}', T0)
    ing.handle(topic("node-a", "heartbeat"), hb(), T0)
    assert ing.sweep(T0 + 89_999) == 0
    assert ing.sweep(T0 + 90_001) == 1
    assert ing.fleet.nodes["node-a"].state == "offline"
    ing.handle(topic("node-a", "status"), b'{"online": false, "reason": "lost"}', T0 + 95_000)
    asyncio.run(ing.flush())
    with db.session() as s:
        rows = s.scalars(select(NodeTransition).order_by(NodeTransition.id)).all()
        live = s.get(NodeLive, "node-a")
        samples = s.scalars(select(HeartbeatSample)).all()
    assert [(r.from_state, r.to_state, r.cause) for r in rows] == [
        ("unknown", "online", "status_online"),  # online on status, awaiting heartbeat
        ("online", "online", "heartbeat"),  # first heartbeat: now audible
        ("online", "offline", "heartbeat_timeout"),
    ]
    assert [r.available for r in rows] == [False, True, False]
    assert live.state == "offline" and live.heartbeat["seq"] == 0
    assert len(samples) == 1


def test_restart_restores_state_without_inventing_transitions(settings, db):
    ing = make(settings, db)
    ing.handle(topic("node-a", "status"), b'{"online": true}', T0)
    ing.handle(topic("node-a", "heartbeat"), hb(), T0)
    asyncio.run(ing.flush())
    again = Ingest(settings, db)
    again.load_registry()
    rt = again.fleet.nodes["node-a"]
    assert (rt.state, rt.available) == ("online", True)
    again.handle(topic("node-a", "status"), b'{"online": true}')
    again.handle(topic("node-a", "heartbeat"), hb(5, ts=T0 + 1000))
    assert again.take_batch().transitions == []


def test_failed_flush_keeps_the_batch_for_the_next_one(settings, db):
    ing = make(settings, db)
    ing.handle(topic("node-a", "status"), b'{"online": true}', T0)
    ing.handle(topic("node-a", "heartbeat"), hb(), T0)
    real_write = ing.writer.write

    def refuse(batch):
        raise OSError("disk full")

    ing.writer.write = refuse
    assert asyncio.run(ing.flush()) is False
    assert ing.writer.flush_errors == 1
    ing.writer.write = real_write
    assert asyncio.run(ing.flush()) is True
    with db.session() as s:
        assert len(s.scalars(select(NodeTransition)).all()) == 2


def test_odd_text_from_a_node_is_stored_without_failing_the_flush(settings, db):
    """A firmware string longer than its column, a NUL in a status field or in an unknown
    client's payload: SQLite keeps them all, PostgreSQL refuses each, and one refused value
    would fail the whole batch and every retry of it. The flush stores them cut and cleaned."""
    ing = make(settings, db)
    long_fw, long_boot = "2.1.0-" + "x" * 60, "b" * 100
    assert ing.handle(
        topic("node-a", "status"),
        json.dumps({"online": True, "fw": long_fw, "boot_id": long_boot}).encode(),
        T0,
    )
    assert ing.handle(
        topic("node-b", "status"), json.dumps({"online": True, "fw": "2.1\u00000"}).encode(), T0
    )
    assert not ing.handle(topic("ghost-9", "heartbeat"), "\x00\x01 firmware lạ".encode(), T0 + 1)
    assert not ing.handle(topic("node-a", "heartbeat"), b'{"seq": "\x00"}', T0 + 2)
    assert asyncio.run(ing.flush()) is True
    assert ing.writer.flush_errors == 0
    with db.session() as s:
        a, b = s.get(NodeLive, "node-a"), s.get(NodeLive, "node-b")
        pending = s.get(PendingNode, "ghost-9")
        rejected = {r.reason: r.count for r in s.scalars(select(RejectedCount))}
    assert (a.fw, a.boot_id) == (long_fw[:32], long_boot[:64])
    assert b.fw == "2.1\ufffd0"
    assert pending.last_payload == "\ufffd\x01 firmware lạ"
    assert rejected == {"unknown_node": 1, "not_json": 1}
