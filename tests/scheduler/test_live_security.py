"""Issue 17 finding 1 and issue 18 item 4, attacked as a tester would: a real ``loa serve``
process with its own Icecast (Debian's icecast2, started by Loa), commune officers logged in
over HTTP, and ffmpeg as the source client of both the owner and the attacker.

Before the fix every live draft handed out ``icecast://source:<one password>@…``; with it
officer B went on air on the province's mount, ``admin/killsource`` with it kicked the
legitimate source off, ``/api/v1/live/server`` listed every mount and ``/status-json.xsl``
was public. An Icecast forked from a worker thread died with that thread, and one forked
from ``loa serve`` outlived a SIGKILL only if the kernel's parent-death signal came."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from dashboard.security import create_user, ensure_demo_accounts
from loa.broker import free_port
from tests.factories import make_registry

# Runs in the SQLite pass only: the subject is Icecast and process lifetime, not the database.
pytestmark = pytest.mark.sqlite_pass_only

PASSWORD = "mat-khau-du-dai-2026"


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for whoever adopted it to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_status(url: str, user: str | None = None, password: str | None = None) -> int:
    req = urllib.request.Request(url)  # noqa: S310 - loopback test server
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def ffmpeg_source(url: str, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "32k",
            "-content_type",
            "audio/mpeg",
            "-f",
            "mp3",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def split_source(url: str) -> tuple[str, str, str, int, str]:
    m = re.fullmatch(r"icecast://([^:]+):([^@]+)@([^:]+):(\d+)(/.+)", url)
    assert m, url
    return m[1], m[2], m[3], int(m[4]), m[5]


@dataclass
class Serve:
    proc: subprocess.Popen
    base: str
    icecast_port: int
    ids: dict

    def icecast_pid(self) -> int:
        def find():
            for pid in children(self.proc.pid):
                with contextlib.suppress(OSError):
                    if b"icecast" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return pid
            return None

        return wait_until(find, 20, "loa serve to start its Icecast")

    def icecast_config(self) -> str:
        """What only the server's own user may read (the test runs as that user or root)."""
        args = Path(f"/proc/{self.icecast_pid()}/cmdline").read_bytes().split(b"\0")
        return Path(args[args.index(b"-c") + 1].decode()).read_text()

    def token(self, username: str, password: str) -> str:
        r = httpx.post(
            f"{self.base}/api/v1/auth/token",
            data={"username": username, "password": password},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return r.json()["access_token"]


@pytest.fixture
def serve(tmp_path, db, mosquitto_broker):
    ids = make_registry(
        db,
        communes={"Đội Cấn": {"Thôn Nà Pàn": ["ls-a-01"]}, "Tân Trào": {"Thôn Mới": ["ls-b-01"]}},
    )
    ensure_demo_accounts(db)
    with db.session() as s:
        create_user(s, "canbo-a", PASSWORD, "commune", [ids["Đội Cấn"]], "Cán bộ A")
        create_user(s, "canbo-b", PASSWORD, "commune", [ids["Tân Trào"]], "Cán bộ B")
    http_port, icecast_port = free_port(), free_port()
    env = {
        **os.environ,
        "LOA_DATABASE_URL": db.url,
        "LOA_DATA_DIR": str(tmp_path / "data"),
        "LOA_MQTT_PORT": str(mosquitto_broker.port),
        "LOA_HTTP_PORT": str(http_port),
        "LOA_PUBLIC_BASE_URL": f"http://127.0.0.1:{http_port}",
        "LOA_SECRET_KEY": "live-security-test-key",
        "LOA_LOG_LEVEL": "WARNING",
        "LOA_ICECAST_PORT": str(icecast_port),
    }
    env.pop("LOA_ICECAST_BINARY", None)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "system", "serve"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = Serve(proc, f"http://127.0.0.1:{http_port}", icecast_port, ids)
    try:

        def ready():
            assert proc.poll() is None, log_path.read_text(errors="replace")[-2000:]
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{server.base}/api/v1/health/live", timeout=2).status_code == 200
            return False

        # Generous: a busy 2-core CI machine with PostgreSQL starts it in 5-30 s.
        wait_until(ready, 120, "loa serve to answer")
        tok = server.token("province", "demo")
        wait_until(
            lambda: (
                httpx.get(
                    f"{server.base}/api/v1/live/server",
                    timeout=10,
                    headers={"Authorization": f"Bearer {tok}"},
                )
                .json()
                .get("available")
            ),
            60,
            "Icecast up",
        )
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_an_officer_cannot_hijack_or_kill_another_live_broadcast(serve):
    auth = {
        u: {"Authorization": f"Bearer {serve.token(u, p)}"}
        for u, p in (("province", "demo"), ("canbo-a", PASSWORD), ("canbo-b", PASSWORD))
    }
    c = httpx.Client(base_url=serve.base, timeout=30)
    # The province goes live to every commune; officers A and B each make their own draft.
    prov = c.post(
        "/api/v1/broadcasts",
        headers=auth["province"],
        json={
            "title": "Trực tiếp: chỉ đạo phòng chống bão",
            "stream": True,
            "priority": "priority",
            "duration_s": 600,
            "targets": {"province": True},
        },
    )
    assert prov.status_code == 201, prov.text
    prov = prov.json()
    a = c.post(
        "/api/v1/broadcasts",
        headers=auth["canbo-a"],
        json={
            "title": "Trực tiếp xã Đội Cấn",
            "stream": True,
            "draft": True,
            "targets": {"communes": [serve.ids["Đội Cấn"]]},
        },
    ).json()
    b = c.post(
        "/api/v1/broadcasts",
        headers=auth["canbo-b"],
        json={
            "title": "Trực tiếp xã Tân Trào",
            "stream": True,
            "draft": True,
            "targets": {"communes": [serve.ids["Tân Trào"]]},
        },
    ).json()
    p_user, p_pass, host, port, p_mount = split_source(prov["source_url"])
    b_user, b_pass, _, _, b_mount = split_source(b["source_url"])
    _, a_pass, _, _, a_mount = split_source(a["source_url"])
    assert port == serve.icecast_port and len({p_pass, a_pass, b_pass}) == 3
    icecast = f"http://{host}:{port}"

    # The source address (it carries the password) goes to the owner only.
    seen_by_b = c.get(f"/api/v1/broadcasts/{prov['id']}", headers=auth["canbo-b"]).json()
    assert p_mount in seen_by_b["stream_url"] and "source_url" not in seen_by_b
    again = c.get(f"/api/v1/broadcasts/{prov['id']}", headers=auth["province"]).json()
    assert again["source_url"] == prov["source_url"]
    listing = c.get("/api/v1/broadcasts", headers=auth["canbo-b"]).text
    assert p_pass not in listing and "icecast://" not in listing

    # B's own password, and the server-wide source password (known to Loa only), are
    # refused on the province's mount; nothing goes on air there.
    global_pass = re.search(r"<source-password>([^<]+)</source-password>", serve.icecast_config())[
        1
    ]
    for password in (b_pass, global_pass):
        attacker = ffmpeg_source(f"icecast://{b_user}:{password}@{host}:{port}{p_mount}", 3)
        _, err = attacker.communicate(timeout=30)
        assert attacker.returncode != 0 and b"401" in err, err
    # The owner's own address works.
    owner = ffmpeg_source(prov["source_url"], 12)
    b_source = ffmpeg_source(b["source_url"], 12)
    a_source = ffmpeg_source(a["source_url"], 12)
    try:

        def on_air(user):
            return c.get("/api/v1/live/server", headers=auth[user]).json()

        wait_until(
            lambda: {p_mount, a_mount, b_mount} <= set(on_air("province")["on_air"]),
            15,
            "three live sources on air",
        )
        # B sees the province's broadcast (it targets B's commune) and B's own, not A's.
        assert set(on_air("canbo-b")["on_air"]) == {p_mount, b_mount}
        mine = {x["mount"]: x["mine"] for x in on_air("canbo-b")["broadcasts"]}
        assert mine == {p_mount: False, b_mount: True}

        # killsource on the province's mount with every credential an officer can see,
        # or the global source password: refused; the owner stays on air.
        for user, password in (
            (b_user, b_pass),
            ("source", global_pass),
            ("admin", b_pass),
            ("admin", global_pass),
        ):
            status = http_status(f"{icecast}/admin/killsource?mount={p_mount}", user, password)
            assert status == 401, (user, status)
        # B may stop B's own source.
        assert http_status(f"{icecast}/admin/killsource?mount={b_mount}", b_user, b_pass) == 200
        time.sleep(1.0)
        assert owner.poll() is None
        assert set(on_air("province")["on_air"]) == {p_mount, a_mount}

        # No status page or general admin function answers without the admin password.
        for path in ("/status-json.xsl", "/status.xsl", "/", "/server_version.xsl"):
            assert http_status(f"{icecast}{path}") == 404, path
        for path in ("/admin/stats", "/admin/listmounts", "/admin/stats.xsl"):
            assert http_status(f"{icecast}{path}") == 401, path
            assert http_status(f"{icecast}{path}", b_user, b_pass) == 401, path
            assert http_status(f"{icecast}{path}", "source", global_pass) == 401, path

        # The province cancels its broadcast: its source is cut and its password withdrawn.
        r = c.post(f"/api/v1/broadcasts/{prov['id']}/cancel", headers=auth["province"])
        assert r.status_code == 200, r.text
        assert owner.wait(10) != 0
        assert set(on_air("province")["on_air"]) == {a_mount}
        late = ffmpeg_source(prov["source_url"], 2)
        _, err = late.communicate(timeout=30)
        assert late.returncode != 0 and b"401" in err, err
    finally:
        for p in (owner, b_source, a_source):
            if p.poll() is None:
                p.kill()
            p.wait(10)
            if p.stderr is not None:
                p.stderr.close()


def test_icecast_of_a_sigkilled_loa_serve_does_not_outlive_it(serve):
    pid = serve.icecast_pid()
    assert alive(pid)
    time.sleep(2.0)  # the threads that started things have come and gone: still up
    assert alive(pid)
    serve.proc.send_signal(signal.SIGKILL)
    serve.proc.wait(10)
    wait_until(lambda: not alive(pid), 10, "Icecast to end with its killed parent")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{serve.icecast_port}/", timeout=2)  # noqa: S310
