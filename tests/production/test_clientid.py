"""Issue 17 finding 3 on Debian's mosquitto started with the ``mosquitto.conf`` that
``loa nodes provision`` writes: a node logged in with its *own* password but the client id
of the controller, of the API process or of another node cannot knock them off the broker
nor wipe their sessions, because the broker replaces every client id by the user name
(``use_username_as_clientid``). Without that line, node A in a loop cut the controller's
heartbeat intake from 20/20 to 1/20 and its clean session destroyed the commands queued for
node B."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading

from controller.command_publisher import new_cmd_id
from controller.node_commands import CommandLink
from controller.process import ControllerService
from controller.provision import provision
from loa.broker import free_port, wait_for_port
from loa.protocol import Channel, SelftestCmd, decode_command
from loa.timeutil import now_ms
from tests.conftest import settings_for
from tests.factories import make_registry
from tests.production.mqtt_support import Mqtt, broker_dir, hand_to_broker, logins

ROOT = "loa/v1/nodes"
ROUNDS = 20


def heartbeat(seq: int) -> bytes:
    return json.dumps(
        {
            "seq": seq,
            "ts": now_ms(),
            "uptime_s": 5 + seq,
            "volume": 70,
            "amp": "ok",
            "speakers_ok": 2,
            "speakers_total": 2,
            "power": "mains",
            "net": "4g",
            "rssi_dbm": -75,
            "playing": None,
        }
    ).encode()


def fault(i: int) -> bytes:
    return json.dumps(
        {"type": "fault", "ts": now_ms(), "code": "tamper", "detail": f"lần {i}"}
    ).encode()


async def test_a_node_cannot_take_the_client_id_of_the_controller_or_another_node(db, settings):
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["node-a", "node-b", "node-c"]}})
    with broker_dir() as root:
        port = free_port()
        config_dir, data_dir = root / "mqtt", root / "data"
        result = provision(
            db, config_dir, broker_data_dir=str(data_dir), port=port, bind="127.0.0.1"
        )
        hand_to_broker(config_dir, data_dir)
        log_path = data_dir / "mosquitto.log"
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                ["mosquitto", "-c", str(config_dir / "mosquitto.conf")],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        clients: list[Mqtt] = []
        service = link = None
        try:
            wait_for_port("127.0.0.1", port, proc, 15, log_path)
            pw = logins(result)

            def client(user: str, **kw) -> Mqtt:
                c = Mqtt("127.0.0.1", port, user, pw[user], **kw)
                clients.append(c)
                return c

            broker = type("Address", (), {"host": "127.0.0.1", "port": port})()
            ctl_user = result.controller_user
            cfg = settings_for(
                settings, broker, mqtt_username=ctl_user, mqtt_password=pw[ctl_user], heartbeat_s=30
            )
            service = ControllerService(cfg, db)
            assert service.client_id == ctl_user  # the id the broker gives it anyway
            await service.start()
            await service.wait_connected()
            api_user = result.api_user
            api_cfg = settings_for(
                settings,
                broker,
                mqtt_username=api_user,
                mqtt_password=result.process_logins[api_user][1],
            )
            link = CommandLink(api_cfg, db)
            link.start()
            for _ in range(100):
                if link.commands.connected:
                    break
                await asyncio.sleep(0.05)
            assert link.commands.connected

            # node-b is away; a command waits for it in its persistent session.
            node_b = client("node-b", clean_session=False)
            assert node_b.connect().ok
            node_b.subscribe(f"{ROOT}/node-b/cmd")
            node_b.close()
            queued = SelftestCmd(cmd_id=new_cmd_id(), issued_at=now_ms())
            await service.commands.send("node-b", queued)

            # node-a, with its own password, connects again and again as the controller,
            # the API process and node-b, each time with a clean session, while node-c
            # sends heartbeats and QoS 1 events.
            stop = threading.Event()
            verdicts: list[bool] = []

            def attack() -> None:
                while not stop.is_set():
                    for stolen in (ctl_user, api_user, "node-b"):
                        thief = Mqtt(
                            "127.0.0.1",
                            port,
                            "node-a",
                            pw["node-a"],
                            client_id=stolen,
                            clean_session=True,
                        )
                        verdicts.append(thief.connect().ok)
                        thief.close()

            attacker = threading.Thread(target=attack)
            attacker.start()
            try:
                node_c = client("node-c")
                assert node_c.connect().ok
                for i in range(ROUNDS):
                    await asyncio.to_thread(
                        node_c.publish, f"{ROOT}/node-c/heartbeat", heartbeat(i)
                    )
                    await asyncio.to_thread(node_c.publish, f"{ROOT}/node-c/events", fault(i))
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await asyncio.to_thread(attacker.join, 30)
            assert len(verdicts) >= 9 and all(verdicts)  # node-a got in every time

            for _ in range(100):
                if service.ingest.accepted[Channel.EVENTS] >= ROUNDS:
                    break
                await asyncio.sleep(0.05)
            assert service.ingest.accepted[Channel.HEARTBEAT] == ROUNDS
            assert service.ingest.accepted[Channel.EVENTS] == ROUNDS
            assert service.reconnects == 0  # never knocked off
            assert link.commands.connected
            # The API process still sends, and node-b gets the command queued before and
            # a new one.
            fresh = SelftestCmd(cmd_id=new_cmd_id(), issued_at=now_ms())
            await link.commands.send("node-b", fresh)
            back = client("node-b", clean_session=False)
            assert back.connect().ok
            got = [decode_command((await asyncio.to_thread(back.next))[1]).cmd_id for _ in range(2)]
            assert got == [queued.cmd_id, fresh.cmd_id]
        finally:
            for c in clients:
                c.close()
            if link is not None:
                await link.stop()
            if service is not None:
                await service.stop()
            proc.terminate()
            proc.wait(10)


def test_provision_gives_every_process_its_own_login(db, tmp_path):
    """One login per process (the broker ties the client id to it): the controllers, each
    further replica and the API-only process; re-running keeps them; EMQX gets the same."""
    import stat

    import pytest

    from controller.provision import ProvisionError, read_controller_env

    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["node-a"]}})
    out = tmp_path / "mqtt"
    result = provision(db, out, controller_replicas=3)
    envs = {
        name: read_controller_env(out, name)
        for name in ("controller.env", "controller-2.env", "controller-3.env", "api.env")
    }
    users = [e["LOA_MQTT_USERNAME"] for e in envs.values()]
    assert users == ["loa-controller", "loa-controller-2", "loa-controller-3", "loa-api"]
    assert len({e["LOA_MQTT_PASSWORD"] for e in envs.values()}) == 4
    for name in envs:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    acl = (out / "acl").read_text()
    for user in users[:3]:
        assert f"user {user}\ntopic read loa/v1/#\n" in acl
    # Node commands and the scheduler wake, nothing else.
    assert (
        "user loa-api\ntopic write loa/v1/nodes/+/cmd\ntopic write loa/v1/scheduler/wake\n\n" in acl
    )
    conf = (out / "mosquitto.conf").read_text().splitlines()
    assert conf[conf.index("listener 1883") + 1] == "use_username_as_clientid true"
    assert "mqtt.use_username_as_clientid = true" in (out / "emqx/loa.hocon").read_text()
    assert (
        '{allow, {username, "loa-api"}, publish, ["loa/v1/nodes/+/cmd",\n'
        in (out / "emqx/acl.conf").read_text()
    )
    assert "api.env" in result.text()
    again = provision(db, out, controller_replicas=3)
    assert again.process_logins == result.process_logins
    with pytest.raises(ProvisionError, match="trùng tài khoản bộ điều khiển"):
        provision(db, out, api_user="loa-controller-2", controller_replicas=2)
    with pytest.raises(ProvisionError, match="Số bộ điều khiển phải từ 1 đến 32"):
        provision(db, out, controller_replicas=0)
    with pytest.raises(ProvisionError, match="trùng mã một cụm"):
        provision(db, out, api_user="node-a")


async def test_two_controllers_need_two_logins_on_the_provisioned_broker(db, settings):
    """Several controllers (shared subscription) under ``use_username_as_clientid``: with a
    login each (``--controller-replicas``) they stay connected side by side and split the
    fleet; a second process under the *same* login knocks the first off, which is why
    every process gets its own."""
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["node-c"]}})
    with broker_dir() as root:
        port = free_port()
        config_dir, data_dir = root / "mqtt", root / "data"
        result = provision(
            db,
            config_dir,
            broker_data_dir=str(data_dir),
            port=port,
            bind="127.0.0.1",
            controller_replicas=2,
        )
        hand_to_broker(config_dir, data_dir)
        log_path = data_dir / "mosquitto.log"
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                ["mosquitto", "-c", str(config_dir / "mosquitto.conf")],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        broker = type("Address", (), {"host": "127.0.0.1", "port": port})()
        services: list[ControllerService] = []
        node = None
        try:
            wait_for_port("127.0.0.1", port, proc, 15, log_path)

            def controller(user: str, cluster_id: str) -> ControllerService:
                cfg = settings_for(
                    settings,
                    broker,
                    mqtt_username=user,
                    mqtt_password=result.process_logins[user][1],
                    shared_subscription_group="loa",
                    controller_client_id=cluster_id,
                    heartbeat_s=30,
                )
                services.append(ControllerService(cfg, db))
                return services[-1]

            one = controller("loa-controller", "loa-ctl-1")
            two = controller("loa-controller-2", "loa-ctl-2")
            for svc in (one, two):
                await svc.start()
                await svc.wait_connected()
            node = Mqtt("127.0.0.1", port, "node-c", logins(result)["node-c"])
            assert node.connect().ok
            for i in range(10):
                await asyncio.to_thread(node.publish, f"{ROOT}/node-c/heartbeat", heartbeat(i))
            for _ in range(100):
                if sum(s.ingest.accepted[Channel.HEARTBEAT] for s in (one, two)) >= 10:
                    break
                await asyncio.sleep(0.05)
            assert sum(s.ingest.accepted[Channel.HEARTBEAT] for s in (one, two)) == 10
            assert (one.reconnects, two.reconnects) == (0, 0)

            # Another process reusing the first one's login (whatever client id it asks
            # for): the broker gives it the same id, and the first is knocked off.
            clash = Mqtt(
                "127.0.0.1",
                port,
                "loa-controller",
                result.controller_password,
                client_id="loa-controller-somewhere-else",
            )
            assert clash.connect().ok
            for _ in range(100):
                if one.reconnects:
                    break
                await asyncio.sleep(0.05)
            clash.close()
            assert one.reconnects >= 1
            assert two.reconnects == 0
        finally:
            if node is not None:
                node.close()
            for svc in reversed(services):
                await svc.stop()
            proc.terminate()
            proc.wait(10)
