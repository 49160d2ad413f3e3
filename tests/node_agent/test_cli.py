"""``loa node`` configuration (TOML < LOA_NODE_* < flags), ``loa node check`` in
Vietnamese with its exit code, the board's telemetry and the light import path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from node_agent import telemetry
from node_agent.clock import parse_chronyc, parse_timedatectl, read_clock
from node_agent.config import ConfigError, load
from tests.node_agent.conftest import REPO

GOOD = {"id": "dc-01", "content_base": "http://dai.local:8080/media/"}


def write(path: Path, **values) -> Path:
    path.write_text(
        "".join(
            f"{k} = {v!r}\n".replace("'", '"') if isinstance(v, str) else f"{k} = {v}\n"
            for k, v in values.items()
        ),
        encoding="utf-8",
    )
    return path


def test_file_then_environment_then_flags(tmp_path):
    cfg_file = write(tmp_path / "n.toml", **GOOD, heartbeat_s=20, output="pulse:a")
    cfg = load(
        cfg_file,
        env={"LOA_NODE_HEARTBEAT_S": "15", "LOA_NODE_OUTPUT": "alsa:hw:0"},
        flags={"output": "file:/tmp/x.wav"},
    ).validate()
    assert (cfg.heartbeat_s, cfg.output) == (15, "file:/tmp/x.wav")


def test_the_credentials_line_enrolls_the_node(tmp_path):
    line = "dc-07,dc-07,Zx8_secret-pw,Xã Đội Cấn,Thôn Nà Pàn,Cụm đầu thôn"
    cfg = load(
        None, env={}, flags={"credentials_line": line, "content_base": GOOD["content_base"]}
    ).validate()
    assert (cfg.id, cfg.mqtt_username, cfg.password) == ("dc-07", "dc-07", "Zx8_secret-pw")


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"id": "x"}, "id:"),
        ({"broker": "http://h:1"}, "broker:"),
        ({"content_base": ""}, "content_base:"),
        ({"output": "speaker"}, "output:"),
        ({"heartbeat_s": 1}, "heartbeat_s:"),
        ({"credentials_line": "node_id,mqtt_username,mqtt_password"}, "credentials_line:"),
    ],
)
def test_bad_configuration_is_named_in_vietnamese(tmp_path, values, needle):
    flags = {**GOOD, **values}
    with pytest.raises(ConfigError) as err:
        load(None, env={}, flags=flags).validate()
    assert needle in str(err.value)


def test_unknown_keys_and_broken_toml_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="Khóa không biết.*volumee"):
        load(write(tmp_path / "a.toml", **GOOD, volumee=3), env={})
    (tmp_path / "b.toml").write_text("id = \n")
    with pytest.raises(ConfigError, match="sai cú pháp TOML"):
        load(tmp_path / "b.toml", env={})
    with pytest.raises(ConfigError, match="số nguyên"):
        load(None, env={"LOA_NODE_HEARTBEAT_S": "ba mươi"})


def run_loa(*args: str, env: dict | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "system", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_loa_node_does_not_import_the_controller():
    code = (
        "import sys; from system.cli import main; import node_agent.agent, node_agent.check;"
        "sys.argv=['loa','node','--help'];\n"
        "try: main()\nexcept SystemExit: pass\n"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('fastapi','sqlalchemy',"
        "'controller','scheduler','dashboard','firmware_sim','broadcasts','uvicorn',"
        "'alembic','apscheduler')]; print('BAD', bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert "BAD []" in out.stdout, out.stdout + out.stderr
    assert "run" in out.stdout and "check" in out.stdout


def test_check_says_what_works_and_fails_with_a_nonzero_exit(rig):
    ok_clock = rig.tmp / "ok.txt"
    ok_clock.write_text(
        "System time     : 0.001 seconds fast of NTP time\nLeap status     : Normal\n"
    )
    common = [
        "--credentials-line",
        rig.credential_lines["dc-01"],
        "--broker",
        f"mqtt://{rig.broker.host}:{rig.broker.port}",
        "--content-base",
        rig.content_base,
        "--output",
        "pulse:n1",
        "--cache-dir",
        str(rig.tmp / "c"),
        "--clock-source",
        f"file:{ok_clock}",
    ]
    good = run_loa("node", "check", *common, "--no-sound", env=rig.pulse.env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.count("[ĐẠT]") == 4 and "Tất cả đều đạt" in good.stdout
    assert "tài khoản dc-01 được chấp nhận" in good.stdout

    bad = run_loa(
        "node",
        "check",
        *common,
        "--password",
        "sai-mat-khau",
        "--output",
        "pulse:khong-co-sink",
        "--clock-source",
        f"file:{rig.tmp / 'none.txt'}",
        env=rig.pulse.env,
    )
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert any(line.startswith("[LỖI]") and "từ chối tài khoản dc-01" in line for line in lines)
    assert any(line.startswith("[LỖI]") and "pulse:khong-co-sink" in line for line in lines)
    assert any(line.startswith("[LỖI]") and "đồng bộ" in line for line in lines)
    assert "3 mục lỗi" in bad.stdout

    missing = run_loa("node", "check", "--config", str(rig.tmp / "nope.toml"))
    assert missing.returncode == 2 and "Không tìm thấy tệp cấu hình" in missing.stderr


def test_clock_readers_understand_chrony_and_timesyncd(tmp_path):
    chrony = parse_chronyc(
        "System time     : 0.004200000 seconds slow of NTP time\nLeap status     : Normal\n"
    )
    assert (chrony.synchronized, chrony.offset_ms) == (True, -4)
    ts = parse_timedatectl("NTPSynchronized=no\n       Offset: +12.5ms\n")
    assert (ts.synchronized, ts.offset_ms) == (False, 12)
    assert ts.fault(1000) and "chưa đồng bộ" in ts.fault(1000)
    # On this machine (no systemd, no chrony) the reader says so instead of guessing.
    here = read_clock("auto")
    assert here.synchronized is not None or "Không đọc được" in here.fault(1000)


def test_telemetry_comes_from_sys_and_unknowns_stay_none(tmp_path):
    sys_root = tmp_path / "sys"
    zone = sys_root / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("51234\n")
    bat = sys_root / "class" / "power_supply" / "BAT0"
    bat.mkdir(parents=True)
    (bat / "type").write_text("Battery\n")
    (bat / "status").write_text("Discharging\n")
    (bat / "voltage_now").write_text("12150000\n")
    assert telemetry.cpu_temp_c(sys_root) == 51.2
    assert telemetry.power(sys_root) == telemetry.Power("battery", 12.15)
    empty = tmp_path / "empty"
    assert telemetry.cpu_temp_c(empty) is None
    assert telemetry.power(empty) == telemetry.Power("mains", None)
    gpio = sys_root / "class" / "gpio" / "gpio17"
    gpio.mkdir(parents=True)
    (sys_root / "class" / "gpio" / "export").write_text("")
    relay = telemetry.AmpRelay("sysfs:17", sys_root)
    assert relay.set(True) and relay.state() is True
    assert (gpio / "direction").read_text() == "out"
    assert relay.set(False) and relay.state() is False
    assert telemetry.uptime_s() > 0


def test_the_systemd_unit_runs_the_agent_as_its_own_user_and_restarts_it():
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment]
    unit.read(REPO / "node_agent" / "loa-node.service", encoding="utf-8")
    service = unit["Service"]
    assert service["User"] == "loa-node" and service["Restart"] == "on-failure"
    assert int(service["Nice"]) < 0
    assert service["ExecStart"].endswith("loa node run --config /etc/loa-node/node.toml")
    assert {"StateDirectory", "CacheDirectory"} <= set(service)
    assert unit["Install"]["WantedBy"] == "multi-user.target"
