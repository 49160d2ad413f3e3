"""Live broadcasts through a real streaming server: Debian's Icecast 2.

The officer's audio comes from any Icecast source client (a phone app, BUTT, ffmpeg:
``ffmpeg -re -i mic.wav -f mp3 icecast://source:PASS@HOST:PORT/MOUNT``); nodes get a
``stream`` command with the listen URL and play what the server relays. In the embedded
default Loa writes ``icecast.xml`` into its data directory (loopback, random passwords, logs
in the data directory) and runs ``icecast2`` as a child process. Icecast refuses to run as
root, so when Loa is root the server runs as Debian's ``icecast2`` user; that user must
reach its config and logs, which a private data directory (or pytest's) does not allow, so in
that case they go to a fresh ``/tmp/loa-icecast-*`` directory owned by it. The server is
stopped with Loa, and dies with it when Loa is killed (see "Lifetime" below).

Who may send to a mount (docs/reliability.md, "Live broadcasts"): each live broadcast gets
its own mount and its own source password (an HMAC of the mount under a key kept in the data
directory, so it survives a restart without being stored anywhere), written into a ``<mount>``
block of ``icecast.xml``; Icecast then refuses the global source password on that mount and
accepts the per-mount one only there, including for the mount's admin functions
(``killsource``). The global source and admin passwords are random and never leave this
process. The status pages (``status-json.xsl``, ``status.xsl``) are not served: the web root
is an empty directory; Loa reads what it needs from ``/admin/listmounts`` with the admin login.
A new mount is added by rewriting the config and sending SIGHUP; Loa waits until Icecast has
read it (a generation number in ``<location>``, visible in ``/admin/stats``) before it hands
out the source address, so the first connection already meets the per-mount password.

Lifetime: the server is forked by one process-lifetime thread (``_spawner``). The
parent-death signal (``PR_SET_PDEATHSIG``) fires when the *thread* that forked the child
exits, not the process (prctl(2)); forked from a worker thread, Icecast died whenever that
thread ended. From the spawner it dies only with the process, SIGKILL included.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import grp
import hashlib
import hmac
import logging
import os
import pwd
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar
from xml.sax.saxutils import escape

from scheduler.errors import Unavailable

log = logging.getLogger("loa.live")

MSG_MISSING = (
    "Chưa cài máy chủ phát trực tiếp Icecast trên máy này. "
    "Hãy cài gói Debian «icecast2» (apt-get install -y icecast2) rồi khởi động lại Loa."
)
MSG_NOT_RUNNING = "Máy chủ phát trực tiếp (Icecast) chưa chạy."
MSG_FAILED = "Không khởi động được máy chủ phát trực tiếp Icecast: {detail}"
MSG_RELOAD = (
    "Máy chủ phát trực tiếp (Icecast) không nhận cấu hình điểm phát mới; hãy thử lại sau ít phút."
)
SOURCE_USER = "source"
ADMIN_USER = "admin"
RELOAD_TIMEOUT_S = 5.0

T = TypeVar("T")


class _Spawner:
    """One daemon thread that lives as long as the process and forks every server child.

    Why: Linux sends the parent-death signal when the *thread* that forked the child exits
    (prctl(2)). A child forked from ``asyncio.to_thread`` or a short-lived thread was killed
    as soon as that thread ended (issue 18: Icecast "died right after starting" in demo
    runs as root). This thread never ends before the process does, so the signal fires
    exactly when Loa dies, SIGKILL included."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _run(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the caller
                fut.set_exception(exc)

    def call(self, fn: Callable[[], T]) -> T:
        if threading.current_thread() is self._thread:
            return fn()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="loa-child-spawner", daemon=True
                )
                self._thread.start()
        fut: Future[T] = Future()
        self._jobs.put((fn, fut))
        return fut.result()


_spawner = _Spawner()


def spawn(args: list[str], **popen_kw: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` from the process-lifetime spawner thread (see ``_Spawner``)."""
    return _spawner.call(lambda: subprocess.Popen(args, **popen_kw))


def _child_setup(owner: tuple[str, str] | None) -> Callable[[], None]:
    """In the child before exec: become the unprivileged user ourselves (rather than
    Icecast's ``changeowner``) and *then* ask the kernel to end the server when its parent
    thread (the process-lifetime spawner) dies, even by SIGKILL; a credential change would
    clear that request, so the order matters."""
    uid: int | None = None
    gid = 0
    if owner is not None:
        pw = pwd.getpwnam(owner[0])
        uid, gid = pw.pw_uid, pw.pw_gid
    parent = os.getpid()
    # Looked up here, in the parent: an ``import ctypes`` in the forked child failed silently
    # (imports after fork are unsafe), and the server then outlived a killed Loa.
    prctl = None
    with contextlib.suppress(OSError, AttributeError):
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    pr_set_pdeathsig = 1

    def setup() -> None:
        if uid is not None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        if prctl is not None:
            prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request was made
            os._exit(1)

    return setup


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _mount_key(path: Path) -> bytes:
    """The key that turns a mount name into its source password: random, made once, kept
    in the data directory (0600) so passwords survive a restart of Loa."""
    with contextlib.suppress(FileNotFoundError):
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd, tmp = tempfile.mkstemp(prefix=".mount-key.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return key


class IcecastServer:
    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        binary: str = "icecast2",
        public_url: str = "",
    ) -> None:
        self.dir = Path(data_dir) / "icecast"
        self._key_path = Path(data_dir) / "icecast-mount.key"
        self._key: bytes | None = None
        self.host = host
        self.port = port
        self.binary = binary
        self.public_url = public_url.rstrip("/")
        # Neither ever leaves this process: no URL, API answer or log line carries them.
        self.source_password = secrets.token_urlsafe(18)
        self.admin_password = secrets.token_urlsafe(18)
        self._relay_password = secrets.token_urlsafe(18)
        self.mounts: set[str] = set()
        self._generation = 0
        self._config_lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owned_tmp = False
        self._owner_ids: tuple[int, int] | None = None

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

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def require_running(self) -> None:
        if self.executable() is None:
            raise Unavailable(MSG_MISSING)
        if not self.running:
            raise Unavailable(MSG_NOT_RUNNING)

    # ------------------------------------------------------------------ URLs, credentials

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    def listen_url(self, mount: str) -> str:
        return f"{self.base_url}{mount}"

    def mount_password(self, mount: str) -> str:
        """The source password of one mount, and of that mount only."""
        if self._key is None:
            self._key = _mount_key(self._key_path)
        digest = hmac.new(self._key, b"icecast-source\0" + mount.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()[:18]).decode()

    def source_url(self, mount: str) -> str:
        """Where the broadcast's owner sends audio (``ffmpeg ... -f mp3 URL``). For the
        owner only: it carries the mount's password."""
        return (
            f"icecast://{SOURCE_USER}:{self.mount_password(mount)}@{self.host}:{self.port}{mount}"
        )

    def new_mount(self) -> str:
        """A fresh mount with its own source password, in force on the running server
        before this returns (raises ``Unavailable`` otherwise, and forgets the mount)."""
        self.require_running()
        mount = f"/loa-{secrets.token_hex(6)}"
        with self._config_lock:
            self.mounts.add(mount)
            try:
                self.reload()
            except Unavailable:
                self.mounts.discard(mount)
                raise
        return mount

    def restore_mounts(self, mounts: Iterable[str]) -> None:
        """Mounts of live broadcasts still open (after a restart): their owners' source
        addresses keep working. Takes effect at start, or at once on a running server."""
        with self._config_lock:
            fresh = {m for m in mounts if m and m not in self.mounts}
            if not fresh:
                return
            self.mounts |= fresh
            if self.running:
                self.reload()

    def configured_mounts(self) -> set[str]:
        """Mounts with a password of their own, as the running server has them (waits for a
        change under way to reach the server)."""
        with self._config_lock:
            return set(self.mounts)

    def retire_mount(self, mount: str) -> None:
        """The broadcast is over: its source is cut and its password withdrawn (the mount
        falls back to the global source password, which nobody outside Loa knows)."""
        with self._config_lock:
            if mount not in self.mounts:
                return
            self.mounts.discard(mount)
            if not self.running:
                return
            self.reload()
            self._admin_get(f"/admin/killsource?mount={urllib.parse.quote(mount)}")

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

    def _mount_blocks(self) -> str:
        e = escape
        out = []
        for mount in sorted(self.mounts):
            out.append(f"""  <mount type="normal">
    <mount-name>{e(mount)}</mount-name>
    <username>{SOURCE_USER}</username>
    <password>{e(self.mount_password(mount))}</password>
    <hidden>1</hidden>
    <public>0</public>
  </mount>
""")
        return "".join(out)

    def config_xml(self) -> str:
        e = escape
        share = Path("/usr/share/icecast2")
        security = "<chroot>0</chroot>"
        return f"""<icecast>
  <location>Loa {self._generation}</location>
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
    <relay-password>{e(self._relay_password)}</relay-password>
    <admin-user>{ADMIN_USER}</admin-user>
    <admin-password>{e(self.admin_password)}</admin-password>
  </authentication>
  <hostname>{e(self.host)}</hostname>
  <listen-socket>
    <port>{self.port}</port>
    <bind-address>{e(self.host)}</bind-address>
  </listen-socket>
{self._mount_blocks()}  <fileserve>0</fileserve>
  <paths>
    <basedir>{e(str(share))}</basedir>
    <logdir>{e(str(self.dir / "log"))}</logdir>
    <webroot>{e(str(self.dir / "web"))}</webroot>
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

    def _write_config(self) -> Path:
        """``icecast.xml`` replaced in one rename (Icecast never reads half a file), 0600:
        the passwords are for the server's own user only."""
        conf = self.dir / "icecast.xml"
        fd, tmp = tempfile.mkstemp(prefix=".icecast.", dir=self.dir)
        try:
            os.fchmod(fd, 0o600)
            if self._owner_ids is not None:
                os.fchown(fd, *self._owner_ids)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.config_xml())
            os.replace(tmp, conf)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return conf

    def reload(self, timeout_s: float = RELOAD_TIMEOUT_S) -> None:
        """Rewrite the config and have the running server read it (SIGHUP); return once
        it has (its ``/admin/stats`` shows the new generation)."""
        with self._config_lock:
            if not self.running:
                return
            self._generation += 1
            want = f"Loa {self._generation}"
            self._write_config()
            proc = self._proc
            assert proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGHUP)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self._location() == want:
                    return
                time.sleep(0.05)
            raise Unavailable(MSG_RELOAD)

    # ------------------------------------------------------------------ process

    def start(self, timeout_s: float = 10.0) -> None:
        exe = self.executable()
        if exe is None:
            raise Unavailable(MSG_MISSING)
        with self._config_lock:
            if self.running:
                return
            self._start(exe, timeout_s)

    def _start(self, exe: str, timeout_s: float) -> None:
        if not self.port:
            self.port = free_port(self.host)
        owner = self._owner()
        if owner is not None:
            self.dir = Path(tempfile.mkdtemp(prefix="loa-icecast-"))
            self._owned_tmp = True
            pw = pwd.getpwnam(owner[0])
            self._owner_ids = (pw.pw_uid, pw.pw_gid)
        log_dir = self.dir / "log"
        web_dir = self.dir / "web"  # empty: no status page is served
        for d in (self.dir, log_dir, web_dir):
            d.mkdir(parents=True, exist_ok=True)
            if self._owner_ids is not None:
                os.chown(d, *self._owner_ids)
        self._generation += 1
        want = f"Loa {self._generation}"
        conf = self._write_config()
        self._proc = spawn(
            [exe, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup(owner),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                out = (
                    (self._proc.stdout.read() if self._proc.stdout else b"")
                    .decode("utf-8", "replace")
                    .strip()
                )
                self._proc = None
                if self._owned_tmp:
                    shutil.rmtree(self.dir, ignore_errors=True)
                raise Unavailable(MSG_FAILED.format(detail=out[-300:] or "thoát ngay"))
            if self._location() == want:
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

    # ------------------------------------------------------------------ status (admin only)

    def _admin_get(self, path: str) -> ET.Element | None:
        url = f"http://{self.host}:{self.port}{path}"
        req = urllib.request.Request(url)  # noqa: S310 - our own server, loopback/config
        token = base64.b64encode(f"{ADMIN_USER}:{self.admin_password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=1.0) as resp:  # noqa: S310
                return ET.fromstring(resp.read())  # noqa: S314 - our own server's answer
        except (OSError, ET.ParseError, urllib.error.HTTPError):
            return None

    def _location(self) -> str | None:
        root = self._admin_get("/admin/stats")
        if root is None:
            return None
        return root.findtext("location")

    def listeners(self) -> dict[str, int]:
        """Mounts with a source connected right now (the officer is on air), each with its
        number of listeners (the clusters hearing it)."""
        root = self._admin_get("/admin/listmounts")
        out: dict[str, int] = {}
        if root is None:
            return out
        for src in root.findall("source"):
            mount = src.get("mount")
            if mount:
                try:
                    out[mount] = int(src.findtext("listeners") or 0)
                except ValueError:
                    out[mount] = 0
        return out

    def live_mounts(self) -> set[str]:
        """Mounts with a source connected right now."""
        return set(self.listeners())
