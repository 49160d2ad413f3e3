"""A controller that takes over the scheduler completes proof of play from the events the
ingest stored while nobody led (several controllers), and applying them twice changes
nothing."""

from __future__ import annotations

from sqlalchemy import select

from controller.command_publisher import CommandPublisher
from controller.models import NodeEventLog
from loa.protocol import Topics
from scheduler.config import SchedulerSettings
from scheduler.dispatch import Dispatcher, wire_broadcast_id
from scheduler.models import Airing, AiringTarget, Broadcast
from tests.factories import make_registry

T0 = 1_790_000_000_000


def seed(db) -> tuple[int, str]:
    make_registry(db, communes={"Xã Bình Gia": {"Thôn Nà Mò": ["rp-1", "rp-2"]}})
    with db.session() as s:
        b = Broadcast(
            title="Lịch tiêm phòng",
            targets={"nodes": ["rp-1", "rp-2"]},
            status="scheduled",
            stream_url="http://127.0.0.1:1/live",
            duration_ms=60_000,
        )
        s.add(b)
        s.flush()
        a = Airing(
            broadcast_id=b.id,
            slot_ms=T0,
            duration_ms=60_000,
            language="vi",
            priority="normal",
            status="dispatched",
            dispatched_ms=T0 - 5_000,
            start_at_ms=T0,
            ends_ms=T0 + 60_000,
        )
        s.add(a)
        s.flush()
        for n in ("rp-1", "rp-2"):
            s.add(
                AiringTarget(
                    airing_id=a.id,
                    node_id=n,
                    cmd_id=f"cmd-{n}",
                    phase="sent",
                    events=[],
                    updated_ms=T0 - 5_000,
                )
            )
        wire = wire_broadcast_id(b.id, a.id)
        # What the nodes said, stored by a controller that was not leading at the time.
        for n in ("rp-1", "rp-2"):
            s.add(
                NodeEventLog(
                    node_id=n,
                    at_ms=T0 - 4_000,
                    type="cmd_ack",
                    payload={
                        "type": "cmd_ack",
                        "cmd_id": f"cmd-{n}",
                        "ts": T0 - 4_100,
                        "ok": True,
                        "error": None,
                    },
                )
            )
            s.add(
                NodeEventLog(
                    node_id=n,
                    at_ms=T0 + 50,
                    type="playback",
                    payload={
                        "type": "playback",
                        "ts": T0 + 45,
                        "broadcast_id": wire,
                        "phase": "started",
                        "at": T0 + 40,
                        "error": None,
                    },
                )
            )
        s.add(
            NodeEventLog(
                node_id="rp-1",
                at_ms=T0 + 60_100,
                type="playback",
                payload={
                    "type": "playback",
                    "ts": T0 + 60_045,
                    "broadcast_id": wire,
                    "phase": "finished",
                    "at": T0 + 60_040,
                    "error": None,
                },
            )
        )
        # Before the dispatch: not about this airing.
        s.add(
            NodeEventLog(
                node_id="rp-2",
                at_ms=T0 - 9_000,
                type="playback",
                payload={
                    "type": "playback",
                    "ts": T0 - 9_000,
                    "broadcast_id": wire,
                    "phase": "failed",
                    "at": T0 - 9_000,
                    "error": "download",
                },
            )
        )
        return a.id, wire


async def test_new_leader_completes_proof_of_play_from_stored_events(db, settings):
    airing_id, _ = seed(db)
    sched = SchedulerSettings()

    async def take_over() -> dict[str, AiringTarget]:
        dispatcher = Dispatcher(
            settings, db, CommandPublisher(Topics()), sched=sched, clock=lambda: T0 + 61_000
        )
        await dispatcher.recover()
        await dispatcher.flush()
        with db.session() as s:
            return {
                t.node_id: t
                for t in s.scalars(select(AiringTarget).where(AiringTarget.airing_id == airing_id))
            }

    first = await take_over()
    assert first["rp-1"].phase == "finished" and first["rp-1"].started_at_ms == T0 + 40
    assert first["rp-2"].phase == "started" and first["rp-2"].error is None
    assert [e["type"] for e in first["rp-1"].events] == ["cmd_ack", "playback", "playback"]
    second = await take_over()  # a second takeover replays the same rows: no change
    assert {n: (t.phase, t.events) for n, t in second.items()} == {
        n: (t.phase, t.events) for n, t in first.items()
    }
