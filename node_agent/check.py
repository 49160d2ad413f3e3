"""``loa node check``: each thing a cluster needs, tested for real, said in Vietnamese.

Exit 0 only when all pass; the technician reads one line per check and knows what to fix."""

from __future__ import annotations

import asyncio
import time

import aiomqtt

from node_agent import audio
from node_agent.cache import ContentCache
from node_agent.clock import read_clock
from node_agent.config import NodeConfig

OK, BAD = "[ĐẠT]", "[LỖI]"


async def _broker(cfg: NodeConfig) -> tuple[bool, str]:
    scheme, host, port = cfg.broker_parts
    tls = aiomqtt.TLSParameters(ca_certs=cfg.ca_file or None) if scheme == "mqtts" else None
    # A different client id: checking must not take over the running agent's session.
    client = aiomqtt.Client(
        host,
        port,
        identifier=f"{cfg.id}-check",
        username=cfg.mqtt_username,
        password=cfg.password or None,
        tls_params=tls,
        timeout=10,
    )
    try:
        async with client:
            return (
                True,
                f"Kết nối broker {host}:{port} được, tài khoản {cfg.mqtt_username} được chấp nhận",
            )
    except aiomqtt.MqttCodeError as exc:
        rc = getattr(exc, "rc", None)
        text = str(exc).lower()
        if rc in (4, 5, 134, 135) or "not authorised" in text or "bad user" in text:
            return False, (
                f"Broker {host}:{port} từ chối tài khoản {cfg.mqtt_username}: sai "
                "mật khẩu hoặc chưa được cấp (chạy lại loa nodes provision, dán đúng "
                "dòng credentials.csv)"
            )
        return False, f"Broker {host}:{port} từ chối kết nối: {exc}"
    except aiomqtt.MqttError as exc:
        return False, (
            f"Không tới được broker {host}:{port}: {exc} (kiểm tra mạng, địa chỉ, cổng, tường lửa)"
        )


def _audio(cfg: NodeConfig, sound: bool) -> tuple[bool, str]:
    sink = audio.make_sink(cfg.output, cfg.output_latency_ms, time.time())
    pcm = audio.tone(1000.0, 0.5, 0.3) if sound else bytes(audio.RATE // 10 * audio.FRAME)
    outcome: list[str] = []
    playout = audio.Playout(
        sink,
        pcm,
        time.time() + 0.1,
        cfg.output_latency_ms / 1000,
        lambda: cfg.default_volume,
        lambda _at: None,
        outcome.append,
    )
    playout.start()
    playout.thread.join(10)
    if not outcome:
        playout.cut()
        return False, f"Đầu ra âm thanh {cfg.output} không phản hồi"
    if outcome[0].startswith("error:"):
        return False, f"Không mở được đầu ra âm thanh {cfg.output}: {outcome[0][6:]}"
    said = "đã phát âm thử 1 kHz" if sound else "đã mở"
    return True, f"Đầu ra âm thanh {cfg.output}: {said}"


async def run_checks(cfg: NodeConfig, *, sound: bool = True) -> int:
    results: list[tuple[bool, str]] = []
    results.append(await _broker(cfg))
    results.append(await asyncio.to_thread(_audio, cfg, sound))
    clock = await asyncio.to_thread(read_clock, cfg.clock_source)
    fault = clock.fault(cfg.clock_max_offset_ms)
    results.append(
        (
            fault is None,
            fault
            or (
                f"Đồng hồ đã đồng bộ ({clock.source}"
                + (f", lệch {clock.offset_ms} ms" if clock.offset_ms is not None else "")
                + ")"
            ),
        )
    )
    try:
        cache = ContentCache(cfg.cache_dir, cfg.cache_max_mb * 1_048_576)
        problem = cache.writable()
    except OSError as exc:
        problem = f"{cfg.cache_dir}: {exc.strerror}"
    results.append(
        (
            problem is None,
            f"Không ghi được bộ nhớ đệm: {problem}"
            if problem
            else f"Bộ nhớ đệm {cfg.cache_dir} ghi được, còn {cache.free_mb():.0f} MB",
        )
    )
    for ok, line in results:
        print(f"{OK if ok else BAD} {line}")
    failed = sum(1 for ok, _ in results if not ok)
    print(
        "Tất cả đều đạt." if not failed else f"{failed} mục lỗi: sửa rồi chạy lại 'loa node check'."
    )
    return 0 if not failed else 1
