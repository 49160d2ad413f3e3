"""Huge request bodies against a real `loa serve` process: refused while streaming, before
authentication and parsing, without the server's memory or /tmp growing (issue 17, finding 4).

The bodies are sent chunked (no Content-Length) over a raw socket, so only the streaming count
can stop them; the sender stops as soon as the server answers. Before the fix the server read
every byte (a 300 MB JSON body to /api/v1/broadcasts took RSS from 123 MB to 721 MB; an
anonymous multipart to /api/v1/registry/import spooled 1 GB to /tmp)."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from dashboard.security import ensure_demo_accounts
from loa.broker import free_port
from tests.factories import make_registry

MB = 1024 * 1024
CONTENT_LIMIT = 4 * MB  # the province's upload limit for this server (LOA_CONTENT_...)
GIVE_UP = 300 * MB  # what the attacker would send at most: far beyond every limit
CHUNK = b"0" * (256 * 1024)


class Server:
    def __init__(self, tmp_path: Path, db_url: str) -> None:
        self.port = free_port()
        self.tmp = tmp_path / "server-tmp"
        self.tmp.mkdir()
        env = {
            **os.environ,
            "LOA_DATABASE_URL": db_url,
            "LOA_DATA_DIR": str(tmp_path / "data"),
            "LOA_HTTP_PORT": str(self.port),
            "LOA_MQTT_PORT": str(free_port()),
            "LOA_SECRET_KEY": "body-limit-test",
            "LOA_LOG_LEVEL": "WARNING",
            "LOA_CONTENT_MAX_UPLOAD_BYTES": str(CONTENT_LIMIT),
            "LOA_ICECAST_BINARY": "/nonexistent/icecast2",
            "TMPDIR": str(self.tmp),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "system", "serve", "--no-controller"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(300):
            try:
                if httpx.get(f"{self.base}/api/v1/health/live").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            self.stop()
            raise AssertionError("loa serve did not come up")
        self.ps = psutil.Process(self.proc.pid)

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def largest_tmp_file(self) -> int:
        sizes = [p.stat().st_size for p in self.tmp.rglob("*") if p.is_file()]
        return max(sizes, default=0)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("body-limit")
    from loa.db import Database

    db = Database(f"sqlite:///{tmp / 'loa.db'}")
    db.create_all()
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["dc-001"]}})
    ensure_demo_accounts(db)
    db.dispose()
    s = Server(tmp, db.url)
    yield s
    s.stop()


def flood(
    server: Server,
    path: str,
    headers: dict[str, str],
    head: bytes = b"",
) -> tuple[int, dict, int, int]:
    """POST a chunked body of up to GIVE_UP bytes; stop when the server answers.

    Returns (status, JSON answer, bytes sent, peak server RSS growth while sending)."""
    base_rss = server.rss()
    peak = [base_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], server.rss())
            if server.largest_tmp_file() > 50 * MB:
                peak[0] = max(peak[0], 1 << 40)  # spooling to disk counts as a failure too
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(30)
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        "Transfer-Encoding: chunked",
        *[f"{k}: {v}" for k, v in headers.items()],
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    sent = 0
    answer = b""
    try:
        if head:
            sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
            sent += len(head)
        frame = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
        while sent < GIVE_UP:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(CHUNK)
        sock.settimeout(30)
        while b"\r\n\r\n" not in answer or len(answer) < _expected(answer):
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    finally:
        sock.close()
        done.set()
        sampler.join(5)
    status = int(answer.split(b" ", 2)[1])
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1] or b"{}")
    return status, body, sent, peak[0] - base_rss


def _expected(answer: bytes) -> int:
    head, _, _ = answer.partition(b"\r\n\r\n")
    m = re.search(rb"content-length: *(\d+)", head, re.I)
    return len(head) + 4 + int(m.group(1)) if m else 0


def _multipart_head(boundary: str, fields: dict[str, str], filename: str) -> bytes:
    out = b""
    for name, value in fields.items():
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    out += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    return out


def test_anonymous_huge_json_body_is_refused_while_streaming(server):
    status, body, sent, growth = flood(
        server, "/api/v1/broadcasts", {"Content-Type": "application/json"}, b'{"title": "'
    )
    # No credential at all: refused before the body is read.
    assert status == 401 and body["detail"] == "Chưa đăng nhập", body
    assert sent < 64 * MB, f"{sent / MB:.0f} MB were taken before the answer"
    assert growth < 64 * MB, f"server RSS grew {growth / MB:.0f} MB"
    # A forged bearer token gets the body counted, and refused at the JSON limit (1 MiB).
    status, body, sent, growth = flood(
        server,
        "/api/v1/broadcasts",
        {"Content-Type": "application/json", "Authorization": "Bearer forged"},
        b'{"title": "',
    )
    assert status == 413, body
    assert body["code"] == "too_large" and "quá lớn" in body["detail"]
    assert sent < 64 * MB and growth < 64 * MB
    # The service goes on: a small, well-formed request is still answered.
    assert httpx.get(f"{server.base}/api/v1/health/live").status_code == 200


def test_anonymous_registry_import_is_refused_before_its_body_is_read(server):
    boundary = "loa-flood"
    status, body, sent, growth = flood(
        server,
        "/api/v1/registry/import",
        {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        _multipart_head(boundary, {}, "tinh.csv"),
    )
    assert status == 401 and body["detail"] == "Chưa đăng nhập"
    assert sent < 64 * MB and growth < 64 * MB
    assert server.largest_tmp_file() < MB  # nothing spooled to /tmp


def test_logged_in_cookie_upload_stops_at_the_content_limit(server):
    """A browser session (cookie + form CSRF field, the case that made the CSRF check parse
    the whole form) is stopped at the province's upload limit, not after the whole body."""
    with httpx.Client(base_url=server.base) as c:
        page = c.get("/login")
        form_csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = c.post(
            "/login",
            data={"username": "commune", "password": "demo", "csrf_token": form_csrf, "next": "/"},
        )
        assert r.status_code == 303, r.text
        csrf = c.get("/api/v1/auth/me").json()["csrf_token"]
        cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
    boundary = "loa-flood"
    status, body, sent, growth = flood(
        server,
        "/api/v1/content",
        {"Content-Type": f"multipart/form-data; boundary={boundary}", "Cookie": cookie},
        _multipart_head(boundary, {"csrf_token": csrf, "title": "Lũ"}, "lu.mp3"),
    )
    assert status == 413 and body["code"] == "too_large", body
    assert sent < CONTENT_LIMIT + 32 * MB
    assert growth < 64 * MB and server.largest_tmp_file() <= CONTENT_LIMIT + MB


def test_declared_length_over_the_limit_is_refused_before_reading(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(10)
        sock.sendall(
            b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: "
            b"application/x-www-form-urlencoded\r\nContent-Length: 1000000000\r\n\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < _expected(answer):
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert "quá lớn".encode() in answer
