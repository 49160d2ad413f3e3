"""Proof of play must be plausible (issue 17, finding 7), sent as raw ``mosquitto_pub``
messages through Debian mosquitto to a running controller and dispatcher.

Before: a lone ``finished`` with no ``fetched``/``started``, 116 s before ``start_at``, for
media never downloaded, was recorded as played. Now such events are kept on the target as
evidence, flagged with the reason, and the target is not counted as played."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time

from sqlalchemy import select

from controller.process import ControllerService
from loa.timeutil import now_ms
from scheduler.config import SchedulerSettings
from scheduler.dispatch import Dispatcher, wire_broadcast_id
from scheduler.models import Airing, AiringTarget, Broadcast
from scheduler.outcomes import AIRED_PHASES
from tests.conftest import settings_for
from tests.factories import make_registry

LIAR, HONEST, CACHED = "pp-liar", "pp-honest", "pp-cached"
# Its "fetched" went to a controller that died (a takeover): the start repeats the fetch time.
TAKEN_OVER = "pp-taken-over"
NODES = [LIAR, HONEST, CACHED, TAKEN_OVER]


def seed(db, start_ms: int) -> tuple[int, str]:
    make_registry(db, communes={"Xã Bình Gia": {"Thôn Nà Mò": NODES}})
    with db.session() as s:
        b = Broadcast(
            title="Lịch tiêm phòng",
            targets={"nodes": NODES},
            status="scheduled",
            content_id="ct-not-needed-here",
            duration_ms=60_000,
        )
        s.add(b)
        s.flush()
        a = Airing(
            broadcast_id=b.id,
            slot_ms=start_ms,
            duration_ms=60_000,
            language="vi",
            priority="normal",
            status="dispatched",
            dispatched_ms=start_ms - 120_000,
            start_at_ms=start_ms,
            ends_ms=start_ms + 60_000,
        )
        s.add(a)
        s.flush()
        for n in NODES:
            s.add(
                AiringTarget(
                    airing_id=a.id,
                    node_id=n,
                    cmd_id=f"cmd-{n}",
                    phase="acked",
                    events=[],
                    updated_ms=start_ms - 120_000,
                )
            )
        return a.id, wire_broadcast_id(b.id, a.id)


def pub(port: int, node: str, event: dict) -> None:
    """What anyone with a node's login can send: a raw message on its events topic."""
    subprocess.run(
        [
            shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-i",
            node,
            "-q",
            "1",
            "-t",
            f"loa/v1/nodes/{node}/events",
            "-m",
            json.dumps(event),
        ],
        check=True,
        timeout=10,
    )


async def test_implausible_proof_of_play_is_flagged_and_not_counted(mosquitto_broker, settings, db):
    start = now_ms() - 1_000  # the slot has just begun
    airing_id, wire = seed(db, start)
    svc = ControllerService(settings_for(settings, mosquitto_broker), db, client_id="ctl-pp")
    await svc.start()
    await svc.wait_connected()
    dispatcher = Dispatcher(svc.settings, db, svc.commands, sched=SchedulerSettings())
    dispatcher.observe(svc.ingest)
    await dispatcher.recover()
    port = mosquitto_broker.port

    def playback(phase: str, at: int, **extra) -> dict:
        return {
            "type": "playback",
            "ts": now_ms(),
            "broadcast_id": wire,
            "phase": phase,
            "at": at,
            **extra,
        }

    try:
        # The attack: a lone "finished" 116 s before start_at, then a "started" with no fetch.
        await asyncio.to_thread(pub, port, LIAR, playback("finished", start - 116_000))
        await asyncio.to_thread(pub, port, LIAR, playback("started", start - 116_000))
        # A node that fetched and started on time, and one that played a copy it had cached.
        for node, events in (
            (
                HONEST,
                [
                    playback("fetched", start - 90_000),
                    playback("started", start + 150),
                    playback("finished", start + 60_100),
                ],
            ),
            (
                CACHED,
                [
                    playback("started", start + 200, cached=True),
                    playback("finished", start + 60_200),
                ],
            ),
            (
                TAKEN_OVER,
                [
                    playback("started", start + 250, fetched_at=start - 80_000),
                    playback("finished", start + 60_250),
                ],
            ),
        ):
            for event in events:
                await asyncio.to_thread(pub, port, node, event)
        deadline = time.monotonic() + 20
        while svc.ingest.accepted["events"] < 9 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert svc.ingest.accepted["events"] == 9, svc.ingest.rejected
        await dispatcher.flush()
        with db.session() as s:
            targets = {
                t.node_id: t
                for t in s.scalars(select(AiringTarget).where(AiringTarget.airing_id == airing_id))
            }
    finally:
        await dispatcher.stop()
        await svc.stop()

    liar = targets[LIAR]
    assert liar.phase == "acked" and liar.phase not in AIRED_PHASES
    assert liar.started_at_ms is None and liar.finished_at_ms is None
    # Kept as evidence, each with why it was not believed.
    assert [(e["phase"], e["implausible"]) for e in liar.events] == [
        ("finished", "not_started"),
        ("started", "no_fetch"),
    ]
    assert dispatcher.stats["implausible_events"] == 2
    for node in (HONEST, CACHED, TAKEN_OVER):
        t = targets[node]
        assert t.phase == "finished" and not any("implausible" in e for e in t.events), node
    assert targets[HONEST].started_at_ms == start + 150


async def test_a_started_far_from_start_at_is_not_proof(mosquitto_broker, settings, db):
    start = now_ms() - 1_000
    airing_id, wire = seed(db, start)
    svc = ControllerService(settings_for(settings, mosquitto_broker), db, client_id="ctl-pp2")
    await svc.start()
    await svc.wait_connected()
    dispatcher = Dispatcher(svc.settings, db, svc.commands, sched=SchedulerSettings())
    dispatcher.observe(svc.ingest)
    await dispatcher.recover()
    try:
        for event in (
            {"phase": "fetched", "at": start - 200_000},
            {"phase": "started", "at": start - 116_000},
            {"phase": "finished", "at": start - 56_000},
        ):
            await asyncio.to_thread(
                pub,
                mosquitto_broker.port,
                LIAR,
                {"type": "playback", "ts": now_ms(), "broadcast_id": wire, **event},
            )
        deadline = time.monotonic() + 20
        while svc.ingest.accepted["events"] < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await dispatcher.flush()
        with db.session() as s:
            liar = s.scalar(
                select(AiringTarget).where(
                    AiringTarget.airing_id == airing_id, AiringTarget.node_id == LIAR
                )
            )
    finally:
        await dispatcher.stop()
        await svc.stop()
    assert liar.phase == "fetched" and liar.phase not in AIRED_PHASES
    assert [e.get("implausible") for e in liar.events] == [None, "off_schedule", "not_started"]
