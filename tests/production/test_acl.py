"""Secured MQTT, proved on Debian's mosquitto started with the files ``loa nodes provision``
writes: no login without the right password, a node confined to its own topics, commands
only from the controller, and the real controller ingesting with its own credentials.

Every "never receives" assertion is followed by a message the same client *is* allowed to
get, published after the forbidden ones, so a delivery that should not happen would have
arrived before it (the broker keeps order per publisher and per subscriber queue)."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import update

from controller.command_publisher import new_cmd_id
from controller.models import NodeLive
from controller.process import ControllerService
from controller.provision import (
    ProvisionResult,
    TlsOptions,
    load_node_passwords,
    provision,
    read_controller_env,
)
from loa.broker import EmbeddedBroker, free_port, wait_for_port
from loa.credentials import CredentialsFileError
from loa.protocol import SelftestCmd, decode_command
from loa.timeutil import now_ms
from registry.models import Node
from system.cli import main as loa_main
from tests.conftest import settings_for
from tests.factories import make_registry
from tests.production.mqtt_support import (
    Mqtt,
    broker_dir,
    hand_to_broker,
    logins,
)

ROOT = "loa/v1/nodes"


def heartbeat(seq: int = 0) -> bytes:
    return json.dumps(
        {
            "seq": seq,
            "ts": now_ms(),
            "uptime_s": 5,
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


@dataclass
class Secured:
    broker: EmbeddedBroker
    result: ProvisionResult
    config_dir: Path
    data_dir: Path

    @property
    def logins(self) -> dict[str, str]:
        return logins(self.result)

    @property
    def controller(self) -> str:
        return self.result.controller_user

    def client(self, username: str | None, password: str | None = None, **kw) -> Mqtt:
        if password is None and username is not None:
            password = self.logins[username]
        return Mqtt(self.broker.host, self.broker.port, username, password, **kw)

    def connected(self, username: str, **kw) -> Mqtt:
        c = self.client(username, **kw)
        verdict = c.connect()
        assert verdict.ok, verdict.reason
        return c


@pytest.fixture
def secured(db):
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["node-a", "node-b"]}})
    with broker_dir() as root:
        config_dir, data_dir = root / "mqtt", root / "data"
        result = provision(db, config_dir)
        hand_to_broker(config_dir, data_dir)
        broker = EmbeddedBroker(
            kind="mosquitto",
            data_dir=data_dir,
            password_file=config_dir / "passwd",
            acl_file=config_dir / "acl",
        )
        broker.start()
        clients: list[Mqtt] = []
        sec = Secured(broker, result, config_dir, data_dir)
        original = sec.client

        def tracked(*a, **kw) -> Mqtt:
            c = original(*a, **kw)
            clients.append(c)
            return c

        sec.client = tracked  # type: ignore[method-assign]
        try:
            yield sec
        finally:
            for c in clients:
                c.close()
            broker.cleanup()


# --------------------------------------------------------------------------- files


def test_provision_writes_private_credentials_and_hashed_password_file(secured, db):
    out = secured.config_dir
    for name in ("credentials.csv", "controller.env", "emqx/users.csv"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    with (out / "credentials.csv").open(encoding="utf-8") as fh:
        rows = {r["node_id"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"node-a", "node-b"}
    assert rows["node-a"]["commune"] == "Đội Cấn" and rows["node-a"]["village"] == "Thôn Nà Pàn"
    passwords = [r["mqtt_password"] for r in rows.values()]
    assert len(set(passwords)) == 2 and all(len(p) >= 20 for p in passwords)
    passwd = (out / "passwd").read_text()
    for user in ("node-a", "node-b", "loa-controller"):
        assert f"\n{user}:$7$" in f"\n{passwd}"
    assert not any(p in passwd for p in passwords)  # hashes only
    assert read_controller_env(out)["LOA_MQTT_USERNAME"] == "loa-controller"
    assert load_node_passwords(out / "credentials.csv") == {
        n: r["mqtt_password"] for n, r in rows.items()
    }
    (out / "other.csv").write_text("ma,mat_khau\nnode-a,x\n", encoding="utf-8")
    with pytest.raises(CredentialsFileError, match="không phải tệp mật khẩu"):
        load_node_passwords(out / "other.csv")
    with pytest.raises(CredentialsFileError, match="Không đọc được"):
        load_node_passwords(out / "missing.csv")


# --------------------------------------------------------------------------- logins


def test_no_connection_without_the_right_password(secured):
    a_password = secured.logins["node-a"]
    refused = {
        "anonymous": secured.client(None),
        "wrong password": secured.client("node-a", "not-the-password"),
        "another node's password": secured.client("node-a", secured.logins["node-b"]),
        "unknown user": secured.client("node-z", a_password),
        "empty password": secured.client("node-a", ""),
    }
    for what, c in refused.items():
        verdict = c.connect()
        assert not verdict.ok, f"{what} was accepted"
        assert verdict.reason in ("Not authorized", "Bad user name or password"), verdict
    assert secured.client("node-a").connect().ok
    assert secured.client(secured.controller).connect().ok


def test_reprovisioning_keeps_passwords_revokes_retired_and_adds_new_nodes(secured, db):
    before = secured.logins
    with db.session() as s:
        s.execute(update(Node).where(Node.id == "node-b").values(retired_ms=now_ms()))
        village_id = s.get(Node, "node-a").village_id
        s.add(Node(id="node-c", village_id=village_id, registered_ms=now_ms()))
    again = provision(db, secured.config_dir)
    assert (again.new_nodes, again.revoked) == (["node-c"], ["node-b"])
    after = logins(again)
    assert after["node-a"] == before["node-a"]
    assert after[secured.controller] == before[secured.controller]
    hand_to_broker(secured.config_dir, secured.data_dir)
    secured.broker.proc.send_signal(signal.SIGHUP)  # what the docs tell operators to do
    time.sleep(0.5)
    secured.result = again
    assert not secured.client("node-b", before["node-b"]).connect().ok
    assert secured.client("node-c").connect().ok
    assert secured.client("node-a").connect().ok


# --------------------------------------------------------------------------- topics


def test_a_node_cannot_publish_under_another_nodes_topics(secured):
    controller = secured.connected(secured.controller)
    controller.subscribe(f"{ROOT}/+/+")
    node_a = secured.connected("node-a")
    for channel in ("status", "heartbeat", "events"):
        node_a.publish(f"{ROOT}/node-b/{channel}", b'{"forged": true}')
    node_a.publish("loa/v1/elsewhere", b"{}")
    node_a.publish(f"{ROOT}/node-a/heartbeat", heartbeat())  # its own: allowed
    topic, payload = controller.next()
    assert topic == f"{ROOT}/node-a/heartbeat", (topic, payload)
    assert controller.drain() == []


def test_a_node_cannot_subscribe_to_another_nodes_commands(secured):
    spy = secured.connected("node-a")
    for stolen in (f"{ROOT}/node-b/cmd", f"{ROOT}/+/cmd", "loa/v1/#", "#"):
        spy.subscribe(stolen)
    spy.subscribe(f"{ROOT}/node-a/cmd")
    node_b = secured.connected("node-b")
    node_b.subscribe(f"{ROOT}/node-b/cmd")
    controller = secured.connected(secured.controller)
    controller.publish(f"{ROOT}/node-b/cmd", b'{"for": "node-b"}')
    controller.publish(f"{ROOT}/node-a/cmd", b'{"for": "node-a"}')
    assert node_b.next() == (f"{ROOT}/node-b/cmd", b'{"for": "node-b"}')
    # node-a subscribed four ways to node-b's commands and gets only its own, once.
    assert spy.next() == (f"{ROOT}/node-a/cmd", b'{"for": "node-a"}')
    time.sleep(0.2)
    assert spy.drain() == []


def test_a_node_cannot_take_over_another_nodes_session_to_read_its_commands(secured):
    """Client ids are not tied to usernames in mosquitto's password file; the ACL is
    checked on delivery against the *username*, so borrowing node-b's persistent session
    still yields none of node-b's queued or new commands."""
    node_b = secured.connected("node-b", clean_session=False)
    node_b.subscribe(f"{ROOT}/node-b/cmd")
    node_b.close()
    controller = secured.connected(secured.controller)
    controller.publish(f"{ROOT}/node-b/cmd", b'{"queued": "for node-b"}')
    thief = secured.connected("node-a", client_id="node-b", clean_session=False)
    thief.subscribe(f"{ROOT}/node-a/cmd")
    controller.publish(f"{ROOT}/node-b/cmd", b'{"new": "for node-b"}')
    controller.publish(f"{ROOT}/node-a/cmd", b'{"for": "node-a"}')
    assert thief.next() == (f"{ROOT}/node-a/cmd", b'{"for": "node-a"}')
    assert thief.drain() == []


def test_only_the_controller_publishes_commands(secured):
    node_b = secured.connected("node-b")
    node_b.subscribe(f"{ROOT}/node-b/cmd")
    node_a = secured.connected("node-a")
    node_a.subscribe(f"{ROOT}/node-a/cmd")
    node_a.publish(f"{ROOT}/node-b/cmd", b'{"type": "stop", "forged": true}')
    node_a.publish(f"{ROOT}/node-a/cmd", b'{"type": "stop", "self": true}')
    secured.connected(secured.controller).publish(f"{ROOT}/node-b/cmd", b'{"real": true}')
    assert node_b.next() == (f"{ROOT}/node-b/cmd", b'{"real": true}')
    assert node_b.drain() == []
    assert node_a.drain() == []


# --------------------------------------------------------------------------- controller


async def test_controller_with_its_credentials_ingests_and_commands(secured, settings, db):
    env = read_controller_env(secured.config_dir)
    cfg = settings_for(
        settings,
        secured.broker,
        mqtt_username=env["LOA_MQTT_USERNAME"],
        mqtt_password=env["LOA_MQTT_PASSWORD"],
        shared_subscription_group="loa",
        controller_client_id="loa-ctl-1",
    )
    service = ControllerService(cfg, db)
    await service.start()
    try:
        await service.wait_connected()
        node = secured.connected("node-a")
        await asyncio.to_thread(node.subscribe, f"{ROOT}/node-a/cmd")
        await asyncio.to_thread(
            node.publish, f"{ROOT}/node-a/status", b'{"online": true, "fw": "2.1.0"}'
        )
        await asyncio.to_thread(node.publish, f"{ROOT}/node-a/heartbeat", heartbeat())
        rt = service.ingest.fleet.nodes["node-a"]
        for _ in range(200):
            if rt.state == "online" and rt.heartbeat is not None:
                break
            await asyncio.sleep(0.05)
        assert (rt.state, rt.available, rt.fw) == ("online", True, "2.1.0")

        cmd = SelftestCmd(cmd_id=new_cmd_id(), issued_at=now_ms())
        await service.commands.send("node-a", cmd)
        topic, payload = await asyncio.to_thread(node.next)
        assert topic == f"{ROOT}/node-a/cmd" and decode_command(payload).cmd_id == cmd.cmd_id
        assert service.ingest.rejected == {}
    finally:
        await service.stop()
    with db.session() as s:
        assert s.get(NodeLive, "node-a").state == "online"


async def test_controller_with_a_wrong_password_is_refused_and_ingests_nothing(
    secured, settings, db
):
    cfg = settings_for(
        settings, secured.broker, mqtt_username=secured.controller, mqtt_password="wrong"
    )
    service = ControllerService(cfg, db)
    await service.start()
    try:
        with pytest.raises(TimeoutError):
            await service.wait_connected(timeout_s=1.5)
        assert service.reconnects >= 1
    finally:
        await service.stop()


# --------------------------------------------------------------------------- TLS + config


def _self_signed(dir_: Path) -> tuple[Path, Path]:
    cert, key = dir_ / "server.crt", dir_ / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_generated_mosquitto_conf_with_tls_listener_and_python_hashes(db):
    """The generated mosquitto.conf as a whole (both listeners, persistence, ACL), with the
    password file hashed by the Python fallback, on the real broker."""
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["node-a"]}})
    with broker_dir() as root:
        certs = root / "certs"
        certs.mkdir()
        cert, key = _self_signed(certs)
        plain_port, tls_port = free_port(), free_port()
        config_dir, data_dir = root / "mqtt", root / "data"
        result = provision(
            db,
            config_dir,
            broker_data_dir=str(data_dir),
            port=plain_port,
            bind="127.0.0.1",
            tls=TlsOptions(cert, key, port=tls_port),
            use_tool=False,
        )
        assert result.hasher.startswith("Python")
        certs.chmod(0o711)
        hand_to_broker(config_dir, data_dir, cert, key)
        log_path = data_dir / "mosquitto.log"
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                ["mosquitto", "-c", str(config_dir / "mosquitto.conf")],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        clients: list[Mqtt] = []
        try:
            wait_for_port("127.0.0.1", tls_port, proc, 15, log_path)
            wait_for_port("127.0.0.1", plain_port, proc, 15, log_path)
            pw = logins(result)

            def client(user, port, **kw) -> Mqtt:
                c = Mqtt("127.0.0.1", port, user, pw[user], **kw)
                clients.append(c)
                return c

            controller = client(result.controller_user, plain_port)
            assert controller.connect().ok
            controller.subscribe(f"{ROOT}/+/heartbeat")
            over_tls = client("node-a", tls_port, tls_ca=cert)
            assert over_tls.connect().ok
            over_tls.publish(f"{ROOT}/node-a/heartbeat", heartbeat(7))
            topic, payload = controller.next()
            assert topic == f"{ROOT}/node-a/heartbeat" and json.loads(payload)["seq"] == 7
            # Plain MQTT spoken to the TLS port gets no session.
            assert not client("node-a", tls_port).connect(timeout=2).ok
        finally:
            for c in clients:
                c.close()
            proc.terminate()
            proc.wait(10)


# --------------------------------------------------------------------------- CLI


def test_cli_provisions_from_the_database_and_explains_bad_arguments(db, tmp_path, capsys):
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["node-a", "node-b"]}})
    out = tmp_path / "mqtt"
    assert loa_main(["nodes", "provision", "--out", str(out), "--db", db.url]) == 0
    printed = capsys.readouterr().out
    assert "2 cụm loa" in printed and "credentials.csv" in printed
    assert (out / "passwd").exists() and (out / "acl").read_text().count("pattern") == 4

    assert (
        loa_main(["nodes", "provision", "--out", str(out), "--db", db.url, "--tls-cert", "x.pem"])
        == 1
    )
    assert "--tls-key" in capsys.readouterr().err
    assert (
        loa_main(
            ["nodes", "provision", "--out", str(out), "--db", db.url, "--controller-user", "node-a"]
        )
        == 1
    )
    assert "trùng mã một cụm" in capsys.readouterr().err
    empty = tmp_path / "empty.db"
    assert (
        loa_main(["nodes", "provision", "--out", str(tmp_path / "x"), "--db", f"sqlite:///{empty}"])
        == 1
    )
    assert "sổ đăng ký" in capsys.readouterr().err
    # A failed run leaves the earlier files untouched.
    assert (out / "passwd").exists() and os.listdir(out)


async def test_simulated_fleet_logs_in_with_the_provisioned_passwords(secured, settings, db):
    """The simulator (what `docker compose --profile sim` runs) on the secured broker,
    each node with its own password from credentials.csv; a node with a wrong password
    stays out and the controller never hears of it."""
    from controller.provision import load_node_passwords
    from firmware_sim.fleet import Fleet

    passwords = load_node_passwords(secured.config_dir / "credentials.csv")
    env = read_controller_env(secured.config_dir)
    cfg = settings_for(
        settings,
        secured.broker,
        mqtt_username=env["LOA_MQTT_USERNAME"],
        mqtt_password=env["LOA_MQTT_PASSWORD"],
    )
    service = ControllerService(cfg, db)
    await service.start()
    fleet = Fleet(
        secured.broker.host,
        secured.broker.port,
        heartbeat_s=1,
        passwords=passwords | {"node-b": "wrong"},
    )
    try:
        await service.wait_connected()
        connected = await fleet.start(["node-a", "node-b"], timeout=3)
        assert connected == 1
        nodes = service.ingest.fleet.nodes
        for _ in range(100):
            if nodes["node-a"].state == "online":
                break
            await asyncio.sleep(0.05)
        assert nodes["node-a"].state == "online" and nodes["node-b"].state == "unknown"
    finally:
        await fleet.stop()
        await service.stop()
