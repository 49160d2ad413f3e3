"""One node floods the controller with playback events (issue 17, finding 5).

Before: 20,000 distinct ``playback`` events (differing only in ``at``) on the node's own topic,
for a broadcast it was sent, grew ``airing_target.events`` to 8 MB, rewritten at each flush,
with a quadratic ``record in list`` check: ``/api/v1/health/summary`` took 38 s. Now the
node's events are rate-limited and de-duplicated by key in ingest, and each target keeps one
record per kind of event; what is dropped is counted and shown in the health summary. The
test asserts sizes and counters, not timings."""

from __future__ import annotations

import asyncio
import json
import time

import aiomqtt
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from controller.models import NodeEventLog
from controller.process import ControllerService
from dashboard.app import create_app
from dashboard.security import create_user, issue_token
from loa.timeutil import now_ms
from scheduler.config import SchedulerSettings
from scheduler.dispatch import Dispatcher, wire_broadcast_id
from scheduler.models import Airing, AiringTarget, Broadcast
from system.root import api_context
from tests.conftest import settings_for
from tests.factories import make_registry

NODE = "flood-01"
EVENTS = 20_000


def seed(db, start_ms: int) -> tuple[int, str]:
    make_registry(db, communes={"Xã Bình Gia": {"Thôn Nà Mò": [NODE]}})
    with db.session() as s:
        b = Broadcast(
            title="Lịch tiêm phòng",
            targets={"nodes": [NODE]},
            status="scheduled",
            stream_url="http://127.0.0.1:1/live",
            duration_ms=600_000,
        )
        s.add(b)
        s.flush()
        a = Airing(
            broadcast_id=b.id,
            slot_ms=start_ms,
            duration_ms=600_000,
            language="vi",
            priority="normal",
            status="dispatched",
            dispatched_ms=start_ms - 5_000,
            start_at_ms=start_ms,
            ends_ms=start_ms + 600_000,
        )
        s.add(a)
        s.flush()
        s.add(
            AiringTarget(
                airing_id=a.id,
                node_id=NODE,
                cmd_id="cmd-flood",
                phase="sent",
                events=[],
                updated_ms=start_ms - 5_000,
            )
        )
        return a.id, wire_broadcast_id(b.id, a.id)


async def wait_for(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout_s} s")


async def test_twenty_thousand_playback_events_from_one_node_are_bounded_and_counted(
    mosquitto_broker, settings, db
):
    start = now_ms()
    airing_id, wire = seed(db, start)
    svc = ControllerService(settings_for(settings, mosquitto_broker), db, client_id="ctl-flood")
    await svc.start()
    await svc.wait_connected()
    dispatcher = Dispatcher(svc.settings, db, svc.commands, sched=SchedulerSettings())
    dispatcher.observe(svc.ingest)
    await dispatcher.recover()
    ingest = svc.ingest

    def counted() -> int:
        return (
            ingest.accepted["events"]
            + ingest.rejected["rate_limited"]
            + ingest.rejected["duplicate_event"]
        )

    try:
        async with aiomqtt.Client(
            "127.0.0.1", mosquitto_broker.port, identifier=NODE, max_inflight_messages=200
        ) as node:
            topic = f"loa/v1/nodes/{NODE}/events"
            phases = ("fetched", "started", "finished")
            for first in range(0, EVENTS, 100):
                await asyncio.gather(
                    *(
                        node.publish(
                            topic,
                            json.dumps(
                                {
                                    "type": "playback",
                                    "ts": start + i,
                                    "broadcast_id": wire,
                                    "phase": phases[i % 3],
                                    "at": start + i,
                                }
                            ).encode(),
                            qos=1,
                        )
                        for i in range(first, first + 100)
                    )
                )
        await wait_for(lambda: counted() >= EVENTS, 120)
        assert counted() == EVENTS  # every event applied or counted, none lost silently
        dropped = ingest.rejected["rate_limited"] + ingest.rejected["duplicate_event"]
        assert dropped >= EVENTS - 100, ingest.rejected
        await dispatcher.flush()
        await ingest.flush()
        with db.session() as s:
            target = s.scalar(select(AiringTarget).where(AiringTarget.airing_id == airing_id))
            logged = s.scalar(
                select(func.count()).select_from(NodeEventLog).where(NodeEventLog.node_id == NODE)
            )
            user = create_user(s, "kythuat", "mat-khau-dai-123", "technician")
            token, _ = issue_token(s, user, "api")
        # One record per kind of event on the target (the first of each), not 20,000.
        assert [e["phase"] for e in target.events] == ["fetched", "started", "finished"]
        assert target.events[1]["at"] == start + 1 and target.phase == "finished"
        assert len(json.dumps(target.events)) < 2_000
        assert logged <= 3  # the event log keeps what is new, not the flood
        with TestClient(create_app(api_context(svc.settings, db, controller=svc))) as api:
            summary = api.get(
                "/api/v1/health/summary", headers={"Authorization": f"Bearer {token}"}
            ).json()
        shown = summary["rejected_messages"]
        assert shown.get("rate_limited", 0) + shown.get("duplicate_event", 0) == dropped
    finally:
        await dispatcher.stop()
        await svc.stop()
