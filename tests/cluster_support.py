"""Real `loa controller` processes in cluster mode, for the several-controllers tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx


def start_controller(
    name: str,
    db_url: str,
    port: int,
    tmp: Path,
    *,
    lease_s: float = 4,
    data_dir: Path | None = None,
    **env: str,
) -> subprocess.Popen:
    """``loa controller`` as ``name``, with small figures so that a test runs in seconds:
    presence every 1 s, a ``lease_s`` leader lease tried every 1 s, stats every 0.3 s in
    ``tmp/<name>.json``. ``env`` adds LOA_ settings (upper-case names without the prefix)."""
    full = {
        **os.environ,
        "LOA_DATABASE_URL": db_url,
        "LOA_DATA_DIR": str(data_dir or tmp / name),
        "LOA_MQTT_PORT": str(port),
        "LOA_SHARED_SUBSCRIPTION_GROUP": "loa",
        "LOA_CONTROLLER_CLIENT_ID": name,
        "LOA_CONTROLLER_STATS_FILE": str(tmp / f"{name}.json"),
        "LOA_CONTROLLER_STATS_INTERVAL_S": "0.3",
        "LOA_CONTROLLER_PRESENCE_S": "1",
        "LOA_LEADER_LEASE_S": str(lease_s),
        "LOA_LEADER_RENEW_S": "1",
        "LOA_FLUSH_INTERVAL_S": "0.3",
        "LOA_LOG_LEVEL": "WARNING",
        "LOA_SECRET_KEY": "cluster-test",
        **{f"LOA_{k}": v for k, v in env.items()},
    }
    return subprocess.Popen(
        [sys.executable, "-m", "system", "controller"],
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def start_api(
    db_url: str, port: int, http_port: int, data_dir: Path, **env: str
) -> subprocess.Popen:
    """``loa serve --no-controller`` (the compose file's dashboard) on ``http_port``, with
    the controllers' secret key; ``env`` adds LOA_ settings as for ``start_controller``."""
    full = {
        **os.environ,
        "LOA_DATABASE_URL": db_url,
        "LOA_DATA_DIR": str(data_dir),
        "LOA_MQTT_PORT": str(port),
        "LOA_HTTP_PORT": str(http_port),
        "LOA_SECRET_KEY": "cluster-test",
        "LOA_LOG_LEVEL": "WARNING",
        **{f"LOA_{k}": v for k, v in env.items()},
    }
    return subprocess.Popen(
        [sys.executable, "-m", "system", "serve", "--no-controller"],
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def demo_login(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    """The ``Authorization`` header of a demo account (password "demo") on a served API."""
    r = await client.post("/api/v1/auth/token", data={"username": username, "password": "demo"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def read_stats(tmp: Path, name: str) -> dict:
    """The controller's last stats file ({} until it wrote one)."""
    try:
        return json.loads((tmp / f"{name}.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def stop_all(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
