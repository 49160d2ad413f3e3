"""A small Range-capable HTTP file server with an optional rate limit (a 4G link in a
test), logging each request's Range header, for the node agent's download tests and
bench/node.py."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from loa.broker import free_port


class MediaServer:
    def __init__(self, root: Path, *, rate_bps: float | None = None) -> None:
        self.root = Path(root)
        self.rate_bps = rate_bps
        self.requests: list[tuple[str, str | None]] = []
        self.broken = False  # True: connections are cut and new ones refused (a lost link)
        self.port = free_port()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_a) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if server.broken:
                    self.send_error(503)
                    return
                path = server.root / self.path.split("?")[0].lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0] or 0)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                step = 8192
                t0 = time.monotonic()
                sent = 0
                try:
                    for i in range(0, len(body), step):
                        if server.broken:
                            self.close_connection = True
                            return
                        self.wfile.write(body[i : i + step])
                        sent += len(body[i : i + step])
                        if server.rate_bps:
                            ahead = sent * 8 / server.rate_bps - (time.monotonic() - t0)
                            if ahead > 0:
                                time.sleep(ahead)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> MediaServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
