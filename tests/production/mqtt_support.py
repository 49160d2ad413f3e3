"""A secured Debian mosquitto for tests: files from ``loa nodes provision`` and small paho
clients that record what the broker really delivers.

Mosquitto started as root drops to the ``mosquitto`` user before it reads the password and
ACL files, exactly as the eclipse-mosquitto image runs as uid 1883; so the files are given
to that user in a directory it can enter, as ``loa nodes provision --chown`` does in
production.
"""

from __future__ import annotations

import os
import pwd
import queue
import shutil
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from controller.provision import ProvisionResult, chown_broker_files


def broker_user() -> tuple[int, int] | None:
    """uid/gid mosquitto runs as when started by root; None when not root."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam("mosquitto")
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


@contextmanager
def broker_dir() -> Iterator[Path]:
    """A directory the broker's user can enter (tmp_path's parents are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="loa-mqtt-"))
    root.chmod(0o711)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def hand_to_broker(config_dir: Path, data_dir: Path, *extra: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    config_dir.chmod(0o711)
    owner = broker_user()
    if owner is None:
        return
    chown_broker_files(config_dir, f"{owner[0]}:{owner[1]}")
    for path in (data_dir, *extra):
        os.chown(path, *owner)


def logins(result: ProvisionResult) -> dict[str, str]:
    return {result.controller_user: result.controller_password} | {
        n.node_id: n.password for n in result.nodes
    }


@dataclass
class Connack:
    ok: bool
    reason: str


class Mqtt:
    """One paho client: ``connect`` returns the broker's CONNACK verdict; every message
    the broker delivers lands in ``inbox`` (a queue of ``(topic, payload)``)."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        *,
        client_id: str | None = None,
        clean_session: bool = True,
        tls_ca: Path | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or username or "",
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca), cert_reqs=ssl.CERT_REQUIRED)
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._connack = threading.Event()
        self._result: Connack | None = None
        self._subacks: dict[int, threading.Event] = {}
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, m: self.inbox.put((m.topic, m.payload))

    def _on_connect(self, _c, _u, _flags, reason, _props) -> None:
        self._result = Connack(not reason.is_failure, str(reason))
        self._connack.set()

    def _on_subscribe(self, _c, _u, mid, _reasons, _props) -> None:
        self._subacks.setdefault(mid, threading.Event()).set()

    def connect(self, timeout: float = 5.0) -> Connack:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            return Connack(False, f"{type(exc).__name__}: {exc}")
        self.client.loop_start()
        if not self._connack.wait(timeout):
            self.close()
            return Connack(False, "no CONNACK")
        assert self._result is not None
        if not self._result.ok:
            self.close()
        return self._result

    def subscribe(self, topic: str, timeout: float = 5.0) -> None:
        _, mid = self.client.subscribe(topic, qos=1)
        event = self._subacks.setdefault(mid, threading.Event())
        assert event.wait(timeout), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes, timeout: float = 5.0) -> None:
        """QoS 1: returns once the broker acknowledged (it has applied its ACL by then)."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"no PUBACK for {topic}"

    def next(self, timeout: float = 5.0) -> tuple[str, bytes]:
        return self.inbox.get(timeout=timeout)

    def drain(self) -> list[tuple[str, bytes]]:
        out = []
        while True:
            try:
                out.append(self.inbox.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
