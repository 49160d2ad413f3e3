"""Live broadcasts through a real streaming server: Debian's Icecast 2.

The officer's audio comes from any Icecast source client (a phone app, BUTT, ffmpeg:
``ffmpeg -re -i mic.wav -f mp3 icecast://source:PASS@HOST:PORT/MOUNT``); nodes get a
``stream`` command with the listen URL and play what the server relays. In the embedded
default Loa writes ``icecast.xml`` into its data directory (loopback, random passwords, logs
in the data directory) and runs ``icecast2`` as a child process. Icecast refuses to run as
root, so when Loa is root the server runs as Debian's ``icecast2`` user; that user must
reach its config and logs, which a private data directory (or pytest's) does not allow, so in
that case they go to a fresh ``/tmp/loa-icecast-*`` directory owned by it. The server is
stopped with Loa (and, where the kernel delivers a parent-death signal, even when Loa is
killed).
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from xml.sax.saxutils import escape

from scheduler.errors import Unavailable

log = logging.getLogger("loa.live")

MSG_MISSING = ("Chưa cài máy chủ phát trực tiếp Icecast trên máy này. "
               "Hãy cài gói Debian «icecast2» (apt-get install -y icecast2) rồi khởi động lại Loa.")
MSG_NOT_RUNNING = "Máy chủ phát trực tiếp (Icecast) chưa chạy."
MSG_FAILED = "Không khởi động được máy chủ phát trực tiếp Icecast: {detail}"


def _child_setup(owner: tuple[str, str] | None):
    """In the child before exec: become the unprivileged user ourselves (rather than
    Icecast's ``changeowner``) and *then* ask the kernel to end the server when Loa dies, even
    by SIGKILL; a credential change would clear that request, so the order matters. The
    parent-death signal is best effort: some kernels (this project's CI VM among them) do not
    deliver it, and a clean stop always terminates the server."""
    uid = gid = None
    if owner is not None:
        pw = pwd.getpwnam(owner[0])
        uid, gid = pw.pw_uid, pw.pw_gid

    def setup() -> None:
        if uid is not None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        with contextlib.suppress(Exception):
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)

    return setup


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class IcecastServer:
    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int = 0,
                 binary: str = "icecast2", public_url: str = "") -> None:
        self.dir = Path(data_dir) / "icecast"
        self.host = host
        self.port = port
        self.binary = binary
        self.public_url = public_url.rstrip("/")
        self.source_password = secrets.token_urlsafe(12)
        self.admin_password = secrets.token_urlsafe(12)
        self._proc: subprocess.Popen | None = None
        self._owned_tmp = False

    # ------------------------------------------------------------------ discovery

    def executable(self) -> str | None:
        found = shutil.which(self.binary)
        if found:
            return found
        for candidate in (f"/usr/bin/{self.binary}", f"/usr/sbin/{self.binary}"):
            if os.access(candidate, os.X_OK):
                return candidate
        return None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def require_running(self) -> None:
        if self.executable() is None:
            raise Unavailable(MSG_MISSING)
        if not self.running:
            raise Unavailable(MSG_NOT_RUNNING)

    # ------------------------------------------------------------------ URLs

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    def listen_url(self, mount: str) -> str:
        return f"{self.base_url}{mount}"

    def source_url(self, mount: str) -> str:
        return f"icecast://source:{self.source_password}@{self.host}:{self.port}{mount}"

    # ------------------------------------------------------------------ config

    def _owner(self) -> tuple[str, str] | None:
        """Icecast drops root privileges to this user and group (Debian's package makes them)."""
        if os.geteuid() != 0:
            return None
        for user in ("icecast2", "icecast", "nobody"):
            try:
                pw = pwd.getpwnam(user)
            except KeyError:
                continue
            try:
                group = grp.getgrgid(pw.pw_gid).gr_name
            except KeyError:
                group = "nogroup"
            return user, group
        return None

    def config_xml(self) -> str:
        e = escape
        share = Path("/usr/share/icecast2")
        security = "<chroot>0</chroot>"
        return f"""<icecast>
  <location>Loa</location>
  <admin>loa@localhost</admin>
  <limits>
    <clients>2000</clients>
    <sources>16</sources>
    <queue-size>524288</queue-size>
    <client-timeout>30</client-timeout>
    <header-timeout>15</header-timeout>
    <source-timeout>10</source-timeout>
    <burst-on-connect>1</burst-on-connect>
    <burst-size>65535</burst-size>
  </limits>
  <authentication>
    <source-password>{e(self.source_password)}</source-password>
    <relay-password>{e(secrets.token_urlsafe(12))}</relay-password>
    <admin-user>admin</admin-user>
    <admin-password>{e(self.admin_password)}</admin-password>
  </authentication>
  <hostname>{e(self.host)}</hostname>
  <listen-socket>
    <port>{self.port}</port>
    <bind-address>{e(self.host)}</bind-address>
  </listen-socket>
  <fileserve>1</fileserve>
  <paths>
    <basedir>{e(str(share))}</basedir>
    <logdir>{e(str(self.dir / "log"))}</logdir>
    <webroot>{e(str(share / "web"))}</webroot>
    <adminroot>{e(str(share / "admin"))}</adminroot>
  </paths>
  <logging>
    <accesslog>access.log</accesslog>
    <errorlog>error.log</errorlog>
    <loglevel>2</loglevel>
    <logsize>10000</logsize>
  </logging>
  <security>{security}</security>
</icecast>
"""

    # ------------------------------------------------------------------ process

    def start(self, timeout_s: float = 10.0) -> None:
        exe = self.executable()
        if exe is None:
            raise Unavailable(MSG_MISSING)
        if self.running:
            return
        if not self.port:
            self.port = free_port(self.host)
        owner = self._owner()
        if owner is not None:
            import tempfile

            self.dir = Path(tempfile.mkdtemp(prefix="loa-icecast-"))
            self._owned_tmp = True
        log_dir = self.dir / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "icecast.xml"
        conf.write_text(self.config_xml(), encoding="utf-8")
        conf.chmod(0o600)  # passwords: readable by the server's own user only
        if owner is not None:
            pw = pwd.getpwnam(owner[0])
            for p in (self.dir, log_dir, conf):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self._proc = subprocess.Popen([exe, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      start_new_session=True,
                                      preexec_fn=_child_setup(owner))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                out = (self._proc.stdout.read() if self._proc.stdout else b"").decode(
                    "utf-8", "replace").strip()
                self._proc = None
                if self._owned_tmp:
                    shutil.rmtree(self.dir, ignore_errors=True)
                raise Unavailable(MSG_FAILED.format(detail=out[-300:] or "thoát ngay"))
            if self._status() is not None:
                log.info("Icecast đang chạy tại %s", self.base_url)
                return
            time.sleep(0.1)
        self.stop()
        raise Unavailable(MSG_FAILED.format(detail="không trả lời sau khi khởi động"))

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
        if self._owned_tmp:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> IcecastServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ status

    def _status(self) -> dict | None:
        url = f"http://{self.host}:{self.port}/status-json.xsl"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - loopback
                return json.loads(resp.read().decode("utf-8", "replace"))
        except (OSError, ValueError):
            return None

    def live_mounts(self) -> set[str]:
        """Mounts with a source connected right now (the officer is on air)."""
        data = self._status() or {}
        sources = (data.get("icestats") or {}).get("source") or []
        if isinstance(sources, dict):
            sources = [sources]
        out = set()
        for src in sources:
            url = src.get("listenurl") or ""
            with contextlib.suppress(ValueError):
                out.add("/" + url.split("/", 3)[3])
        return out
