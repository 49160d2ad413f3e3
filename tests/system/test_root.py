"""The composition root (``system.root``): one process built, started and stopped by ``System``
against a real broker and database, and the ``loa`` command wired without module-name lookups."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx

from system.root import System
from tests.conftest import settings_for
from tests.factories import make_registry


def _tasks_named(prefix: str) -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(prefix) and not t.done()]


async def test_a_process_starts_in_order_and_stops_in_reverse(settings, db, mosquitto_broker):
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["root-01"]}})
    cfg = settings_for(settings, mosquitto_broker)
    system = System(cfg, db=db, api_db=db, live=False)
    assert system.controller is not None and system.scheduling is not None
    assert system.app is not None and system.command_link is None
    # The API sees the in-process services by name and type, not through a dictionary.
    assert system.api.broadcasts is system.scheduling.broadcasts
    assert system.api.node_commands is system.controller.node_commands
    assert system.alerts.broadcasts is system.scheduling.broadcasts
    # The fleet-wide duties are roles of the leader, in the order they start.
    assert [r.name for r in system.controller.leader_roles] == [
        "bộ lập lịch phát thanh",
        "cảnh báo",
        "thông báo",
        "cảnh báo CAP",
    ]
    # The dispatcher and node command answers observe the ingest.
    observers = system.controller.ingest._observers
    assert system.scheduling.dispatcher in observers
    assert system.controller.node_commands in observers

    await system.start()
    try:
        await system.controller.wait_connected(30)
        for _ in range(100):  # alone, the controller leads at once
            if system.scheduling.started and system.alarms._task is not None:
                break
            await asyncio.sleep(0.05)
        assert system.controller.is_leader and system.scheduling.started
        assert system.alarms._task is not None and not system.alarms._task.done()
        assert system.notifications._task is not None  # alarm e-mails and webhooks
        assert _tasks_named("loa-alerts-tick")
        transport = httpx.ASGITransport(app=system.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://loa") as client:
            r = await client.get("/api/v1/health/live")
            assert r.status_code == 200
    finally:
        await system.stop()
    # Everything it started has stopped: duties, MQTT loops, the alarm engine.
    assert not system.scheduling.started
    assert system.alarms._task is None
    assert system.notifications._task is None
    assert not _tasks_named("loa-")
    assert not system.controller.is_leader


async def test_an_api_only_process_sends_node_commands_through_its_own_link(settings, db):
    system = System(settings, db=db, api_db=db, controller=False)
    assert system.controller is None and system.scheduling is None
    assert system.command_link is not None
    assert system.api.node_commands is system.command_link.node_commands
    # Without a scheduler here, broadcasts are rows for the scheduler's process, which is
    # woken on the same link (controller.schedule_wake).
    assert system.api.broadcasts.runtime is system.command_link.scheduler_wake
    assert system.api.live is None


def test_every_command_is_registered():
    out = subprocess.run(
        [sys.executable, "-m", "system", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    for command in (
        "broker",
        "controller",
        "serve",
        "demo",
        "registry",
        "sim",
        "tts",
        "content",
        "schedule",
        "report",
        "attest",
        "indicator",
        "user",
        "nodes",
        "node",
        "alerts",
    ):
        assert command in out.stdout, f"'loa {command}' is missing from loa --help"


def test_one_shot_commands_act_through_the_root_on_a_fresh_database(tmp_path):
    """``loa schedule`` and ``loa alerts`` build their services with the composition root:
    on a database nobody created yet, every table is made and the lists answer."""
    import os

    env = {
        **os.environ,
        "LOA_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}",
        "LOA_DATA_DIR": str(tmp_path / "data"),
    }
    for args, expected in (
        (["schedule", "list"], "Tổng: 0 bản tin"),
        (["alerts", "list"], "Tổng: 0 cảnh báo"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "system", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        assert expected in out.stdout, out.stdout
