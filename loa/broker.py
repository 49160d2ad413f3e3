"""The embedded MQTT broker: Debian's mosquitto when installed, else amqtt (pure Python).

Either way it is real MQTT on a TCP port, loopback only, run as a child process so the
broker never competes with the controller for the GIL. Message size: the protocol allows
64 KiB payloads; the broker caps whole packets at 64 KiB plus 1 KiB for topic and headers,
so a payload a little over 64 KiB still reaches the controller, which counts it as
``oversized`` instead of letting it vanish unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from loa.protocol import MAX_PAYLOAD_BYTES

MAX_PACKET_BYTES = MAX_PAYLOAD_BYTES + 1024


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mosquitto_binary() -> str | None:
    for candidate in ("mosquitto", "/usr/sbin/mosquitto"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def mosquitto_config(
    port: int,
    host: str,
    data_dir: Path,
    *,
    password_file: Path | None = None,
    acl_file: Path | None = None,
    extra: str = "",
) -> str:
    lines = [
        f"listener {port} {host}",
        f"max_packet_size {MAX_PACKET_BYTES}",
        # Persistence keeps queued QoS 1 commands for absent nodes across a broker restart.
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 10",
        "max_queued_messages 10000",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    if password_file:
        lines += ["allow_anonymous false", f"password_file {password_file}"]
    else:
        lines.append("allow_anonymous true")
    if acl_file:
        lines.append(f"acl_file {acl_file}")
    return "\n".join(lines) + "\n" + extra


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname or "0.0.0.0"/"" reaches beyond loopback


def _mosquitto_user(data_dir: Path) -> str | None:
    """Started as root, mosquitto drops to the ``mosquitto`` user, and then silently fails to
    save its persistence file (queued QoS 1 commands) where that user cannot write. Give it
    the data directory; when a parent directory is closed to it (pytest's 0700 temp dirs),
    keep running as root instead. Returns the ``user`` config value, or None for the default.
    """
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        pw = pwd.getpwnam("mosquitto")
    except KeyError:
        return None
    os.chown(data_dir, pw.pw_uid, pw.pw_gid)
    for parent in data_dir.resolve().parents:
        if not parent.stat().st_mode & 0o001:
            return "root"
    return None


def wait_for_port(
    host: str, port: int, proc: subprocess.Popen[bytes], timeout_s: float, log_path: Path
) -> None:
    """Until ``port`` accepts TCP; a broker that exits first fails with its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise BrokerError(f"Broker thoát ngay khi khởi động (mã {proc.returncode}): {err}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        time.sleep(0.05)
    raise BrokerError(f"Broker không mở cổng {host}:{port} sau {timeout_s:.0f} giây")


@dataclass
class EmbeddedBroker:
    """A broker child process. ``kind`` is "auto" (mosquitto if installed), "mosquitto" or
    "amqtt". Loopback only: listening beyond loopback needs credentials (see docs)."""

    port: int = 0
    host: str = "127.0.0.1"
    kind: str = "auto"
    data_dir: Path | None = None
    password_file: Path | None = None
    acl_file: Path | None = None
    extra_config: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    log_path: Path | None = field(default=None, init=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.kind == "auto":
            self.kind = "mosquitto" if mosquitto_binary() else "amqtt"
        if self.kind not in ("mosquitto", "amqtt"):
            raise BrokerError(f"Loại broker không hỗ trợ: {self.kind}")
        if not self.port:
            self.port = free_port()
        if not is_loopback(self.host) and (
            self.kind != "mosquitto" or not (self.password_file and self.acl_file)
        ):
            # Beyond loopback anyone on the network could publish as any node or send
            # commands: only with per-node passwords and the ACL (`loa nodes provision`).
            raise BrokerError(
                f"Broker nhúng chỉ nghe trên {self.host} khi có mật khẩu và ACL "
                "(mosquitto với password_file và acl_file, tạo bằng 'loa nodes provision'); "
                "nếu không, chỉ nghe trên 127.0.0.1."
            )

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        if self.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="loa-broker-")
            self.data_dir = Path(self._tmp.name)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.kind == "mosquitto":
            binary = mosquitto_binary()
            if not binary:
                raise BrokerError("Chưa cài mosquitto (apt-get install mosquitto)")
            user = _mosquitto_user(self.data_dir)
            conf = self.data_dir / "mosquitto.conf"
            conf.write_text(
                mosquitto_config(
                    self.port,
                    self.host,
                    self.data_dir,
                    password_file=self.password_file,
                    acl_file=self.acl_file,
                    extra=self.extra_config + (f"user {user}\n" if user else ""),
                )
            )
            cmd = [binary, "-c", str(conf)]
        else:
            cmd = [
                sys.executable,
                "-m",
                "loa.broker",
                "--host",
                self.host,
                "--port",
                str(self.port),
            ]
        # Own session: a Ctrl-C in the terminal reaches Loa, which stops the broker last.
        # The log goes to a file: an undrained pipe would block the broker once full.
        self.log_path = self.data_dir / "broker.log"
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=log_file, start_new_session=True
            )
        wait_for_port(self.host, self.port, self.proc, timeout_s, self.log_path)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


async def run_amqtt(host: str, port: int) -> None:
    """Serve MQTT with amqtt until cancelled (used when mosquitto is not installed)."""
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }
    broker = Broker(config)
    await broker.start()
    try:
        await asyncio.Event().wait()
    finally:
        await broker.shutdown()


def _main() -> None:
    import argparse
    import logging

    parser = argparse.ArgumentParser(description="amqtt broker child process for Loa")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_amqtt(args.host, args.port))


if __name__ == "__main__":
    _main()
