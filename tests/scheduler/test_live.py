"""Live broadcasts: the officer's audio goes through a real Icecast 2 server (Debian's
icecast2, configured and started by Loa) to simulated nodes that received ``stream``."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes  # noqa: F401 - as in `loa serve`, see test_icecast_outlives_the_thread…
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from scheduler.errors import Unavailable
from scheduler.live import MSG_MISSING, IcecastServer


async def test_live_stream_from_a_source_client_reaches_the_nodes(network, tmp_path):
    net = network
    server = IcecastServer(tmp_path / "live")
    await asyncio.to_thread(server.start)
    source = None
    try:
        net.scheduling.broadcasts.live = server
        net.scheduling.dispatcher.live = server
        nodes = ["dc-01", "dc-02"]
        await net.fleet.start(nodes)
        await net.online(nodes)
        out = await asyncio.to_thread(
            net.service.create,
            net.officer(),
            {
                "title": "Trực tiếp: họp khẩn thôn",
                "stream": True,
                "duration_s": 20,
                "targets": {"villages": [net.ids["Thôn Đồng Tâm"]]},
            },
        )
        assert out["status"] == "scheduled"
        assert out["source_url"].startswith("icecast://source:")
        assert out["stream_url"].startswith(server.base_url)
        # The officer goes on air with any Icecast source client; here ffmpeg, 9 s of tone.
        source = await asyncio.create_subprocess_exec(
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=9",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "64k",
            "-content_type",
            "audio/mpeg",
            "-f",
            "mp3",
            out["source_url"],
        )
        airing = await net.wait_final(out["id"], timeout=45)
        targets = net.targets(airing.id)
        assert sorted(targets) == nodes
        for t in targets.values():
            assert t.started_at_ms is not None, (t.node_id, t.phase, t.error)
            assert t.phase == "finished"  # the stream ended when the officer went off air
            assert abs(t.lateness_ms) <= 1_000
        for n in nodes:  # real MP3 bytes went through Icecast to every node
            assert net.fleet.node(n).player.stream_bytes_total > 16_000
        assert airing.status == "aired"
        assert await source.wait() == 0
        # The broadcast is over: its mount's password is withdrawn, the owner cannot go on
        # air there again (nobody listens any more).
        mount = out["stream_url"].removeprefix(server.base_url)
        for _ in range(50):
            if mount not in await asyncio.to_thread(server.configured_mounts):
                break
            await asyncio.sleep(0.1)
        assert mount not in await asyncio.to_thread(server.configured_mounts)
        late = await asyncio.create_subprocess_exec(
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=2",
            "-c:a",
            "libmp3lame",
            "-f",
            "mp3",
            out["source_url"],
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await late.communicate()
        assert late.returncode != 0 and b"401" in err, err
    finally:
        if source is not None and source.returncode is None:
            source.kill()
            with contextlib.suppress(Exception):
                await source.wait()
        await asyncio.to_thread(server.stop)


def test_missing_icecast_is_a_clear_vietnamese_error(tmp_path, db):
    from scheduler.config import SchedulerSettings
    from scheduler.targets import Actor
    from scheduler.workflow import BroadcastService
    from tests.factories import make_registry

    server = IcecastServer(tmp_path, binary="icecast2-khong-co")
    with pytest.raises(Unavailable) as err:
        server.start()
    assert err.value.message == MSG_MISSING and "icecast2" in MSG_MISSING
    ids = make_registry(db, communes={"Đội Cấn": {"Thôn 1": ["dc-1"]}})
    svc = BroadcastService(db, SchedulerSettings(), live=server)
    with pytest.raises(Unavailable) as err:
        svc.create(
            Actor("province", None, "so"),
            {"title": "Trực tiếp", "stream": True, "targets": {"communes": [ids["Đội Cấn"]]}},
        )
    assert "icecast2" in err.value.message


async def test_live_broadcast_whose_stream_fails_is_closed_and_frees_its_slot(network, tmp_path):
    """Issue 18: Icecast down (here: stopped after the broadcast was made), the clusters
    that are up report ``stream`` and one is off line (it would never answer): the broadcast
    ends as not aired at once, not after its 30 minutes, and the same clusters can take
    another live broadcast."""
    from scheduler.dispatch import MSG_LIVE_DOWN
    from scheduler.models import Broadcast

    net = network
    server = IcecastServer(tmp_path / "live")
    await asyncio.to_thread(server.start)
    try:
        net.scheduling.broadcasts.live = server
        net.scheduling.dispatcher.live = server
        up = ["dc-01", "dc-02", "dc-03"]  # dc-04 never comes up
        await net.fleet.start(up)
        await net.online(up)
        spec = {
            "title": "Trực tiếp",
            "stream": True,
            "duration_s": 1800,
            "targets": {"villages": [net.ids["Thôn Đồng Tâm"], net.ids["Thôn Tân Lập"]]},
        }
        out = await asyncio.to_thread(net.service.create, net.officer(), spec)
        assert out["status"] == "scheduled"
        await asyncio.to_thread(server.stop)  # the server dies before anyone goes on air
        airing = await net.wait_final(out["id"], timeout=30)
        assert airing.status == "missed"
        targets = net.targets(airing.id)
        assert sorted(targets) == ["dc-01", "dc-02", "dc-03", "dc-04"]
        assert {t.phase for t in targets.values()} == {"failed"}, targets
        assert targets["dc-04"].error == MSG_LIVE_DOWN
        with net.db.session() as s:
            assert s.get(Broadcast, out["id"]).status == "missed"
        # The slot is free: a new live broadcast to the same clusters is accepted.
        await asyncio.to_thread(server.start)
        again = await asyncio.to_thread(net.service.create, net.officer(), spec)
        assert again["status"] == "scheduled"
    finally:
        await asyncio.to_thread(server.stop)


def test_icecast_outlives_the_thread_that_started_it(tmp_path):
    """Issue 18: the parent-death signal fires when the *thread* that forked the child exits
    (prctl(2)); Loa starts Icecast from worker threads (``asyncio.to_thread``), and the
    server died with them. Started from a thread that then ends, it keeps serving.
    ``ctypes`` is imported at the top as it is in ``loa serve`` (its libraries import it):
    the old child set-up imported it after fork, which armed the signal only then."""
    server = IcecastServer(tmp_path / "live")
    errors: list[BaseException] = []

    def start() -> None:
        try:
            server.start()
        except BaseException as exc:
            errors.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    starter.join()
    try:
        assert not errors and server.running
        time.sleep(2.5)  # Icecast takes a moment to shut down on SIGTERM
        assert server.running
        # Still serving, and its statistics only for the admin login Loa keeps to itself.
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/admin/stats")  # noqa: S310
        assert denied.value.code == 401
        assert server.live_mounts() == set()
    finally:
        server.stop()


def test_a_restarted_server_keeps_the_owners_source_address(tmp_path):
    """Loa restarted while a live broadcast is open: the mount is restored from the
    database (``open_live_mounts``) and its password is the same (HMAC under the key kept in
    the data directory), so the owner's address still works, and only there."""
    first = IcecastServer(tmp_path / "live")
    first.start()
    try:
        mount = first.new_mount()
        address = first.source_url(mount)
    finally:
        first.stop()
    again = IcecastServer(tmp_path / "live")
    again.restore_mounts([mount])
    again.start()
    try:
        url = address.replace(f":{first.port}/", f":{again.port}/")
        assert url == again.source_url(mount)
        ok = subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "sine=duration=1",
                "-c:a",
                "libmp3lame",
                "-f",
                "mp3",
                url,
            ],
            capture_output=True,
            timeout=30,
        )
        assert ok.returncode == 0, ok.stderr
        wrong = url.replace(again.mount_password(mount), again.source_password)
        refused = subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "sine=duration=1",
                "-c:a",
                "libmp3lame",
                "-f",
                "mp3",
                wrong,
            ],
            capture_output=True,
            timeout=30,
        )
        assert refused.returncode != 0 and b"401" in refused.stderr
    finally:
        again.stop()
