"""Node configuration: a TOML file, overridden by ``LOA_NODE_*`` variables, overridden by
flags. One table of keys drives all three so a key can never exist in one and not another.

A technician enrolls a cluster by pasting its line of ``credentials.csv`` (written by
``loa nodes provision``) as ``credentials_line``: node id, username and password come from
it, so nothing has to be retyped on a phone keyboard."""

from __future__ import annotations

import argparse
import csv
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loa.protocol import NODE_ID_RE

ENV_PREFIX = "LOA_NODE_"


class ConfigError(Exception):
    """A configuration the agent cannot run with; the message is Vietnamese, for the
    technician, and names the key."""


@dataclass
class NodeConfig:
    id: str = ""
    broker: str = "mqtt://127.0.0.1:1883"
    ca_file: str = ""
    username: str = ""
    password: str = ""
    credentials_line: str = ""
    topic_root: str = "loa/v1"
    keepalive_s: int = 60
    heartbeat_s: int = 30
    content_base: str = ""
    stream_base: str = ""
    stream_reconnect_s: int = 8
    output: str = "alsa:default"
    output_latency_ms: int = 100
    capture: str = ""
    speakers_total: int = 1
    default_volume: int = 80
    cache_dir: str = "/var/cache/loa-node"
    cache_max_mb: int = 512
    state_dir: str = "/var/lib/loa-node"
    gpio_amp: str = ""
    sysfs_root: str = "/sys"  # where /sys is: tests and chroots point it elsewhere
    amp_warmup_ms: int = 0
    clock_source: str = "auto"
    clock_max_offset_ms: int = 1000
    max_command_age_s: int = 0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ derived

    @property
    def broker_parts(self) -> tuple[str, str, int]:
        """(scheme, host, port) of ``broker``."""
        u = urlsplit(self.broker if "://" in self.broker else f"mqtt://{self.broker}")
        if u.scheme not in ("mqtt", "mqtts"):
            raise ConfigError(
                f"broker: cần dạng mqtt://máy:cổng hoặc mqtts://máy:cổng (nhận {self.broker!r})"
            )
        try:
            port = u.port or (8883 if u.scheme == "mqtts" else 1883)
        except ValueError:
            raise ConfigError(f"broker: cổng không hợp lệ trong {self.broker!r}") from None
        if not u.hostname:
            raise ConfigError(f"broker: thiếu tên máy trong {self.broker!r}")
        return u.scheme, u.hostname, port

    @property
    def mqtt_username(self) -> str:
        return self.username or self.id

    def validate(self) -> NodeConfig:
        """Fill id/username/password from ``credentials_line`` and check every key the
        agent cannot do without. Returns self so callers can chain."""
        if self.credentials_line:
            row = next(csv.reader([self.credentials_line.strip()]), [])
            if len(row) < 3 or row[0] == "node_id":
                raise ConfigError(
                    "credentials_line: cần một dòng của credentials.csv "
                    "(node_id,mqtt_username,mqtt_password,...), không phải "
                    "dòng tiêu đề"
                )
            self.id = self.id or row[0]
            self.username = self.username or row[1]
            self.password = self.password or row[2]
        if not NODE_ID_RE.match(self.id or ""):
            raise ConfigError(
                f"id: mã cụm loa phải gồm 3-64 ký tự A-Z, a-z, 0-9, '_' hoặc '-' (nhận {self.id!r})"
            )
        self.broker_parts  # noqa: B018 - raises ConfigError on a bad URL
        if self.ca_file and not Path(self.ca_file).is_file():
            raise ConfigError(f"ca_file: không tìm thấy tệp CA {self.ca_file}")
        if not self.content_base:
            raise ConfigError(
                "content_base: cần địa chỉ nội dung của bộ điều khiển, ví dụ "
                "http://dai-xa.local:8080/media/ (chỉ tải âm thanh từ đây)"
            )
        if urlsplit(self.content_base).scheme not in ("http", "https"):
            raise ConfigError(
                f"content_base: phải là http:// hoặc https:// (nhận {self.content_base!r})"
            )
        kind, _, target = self.output.partition(":")
        if kind not in ("pulse", "alsa", "file") or not target:
            raise ConfigError(
                f"output: cần pulse:SINK, alsa:THIẾT_BỊ hoặc file:ĐƯỜNG_DẪN (nhận {self.output!r})"
            )
        if self.capture:
            ckind, _, ctarget = self.capture.partition(":")
            if ckind not in ("pulse", "alsa") or not ctarget:
                raise ConfigError(
                    f"capture: cần pulse:NGUỒN hoặc alsa:THIẾT_BỊ (nhận {self.capture!r})"
                )
        for name, lo, hi in (
            ("heartbeat_s", 5, 3600),
            ("keepalive_s", 5, 3600),
            ("default_volume", 0, 100),
            ("speakers_total", 0, 16),
            ("cache_max_mb", 8, 1_000_000),
            ("output_latency_ms", 5, 2000),
            ("amp_warmup_ms", 0, 60_000),
            ("clock_max_offset_ms", 1, 3_600_000),
            ("max_command_age_s", 0, 30 * 86400),
            ("stream_reconnect_s", 0, 600),
        ):
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ConfigError(f"{name}: phải trong khoảng {lo}-{hi} (nhận {value})")
        return self


_KEYS = {f.name: f for f in fields(NodeConfig) if f.name != "extra"}


def _coerce(name: str, raw: Any) -> Any:
    kind = type(getattr(NodeConfig(), name))
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    if kind is int:
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{name}: cần một số nguyên (nhận {raw!r})") from None
    return str(raw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every key as ``--key-name`` (defaults None: unset flags do not override)."""
    parser.add_argument(
        "--config", metavar="TỆP", help="tệp cấu hình TOML (vd. /etc/loa-node/node.toml)"
    )
    for name in _KEYS:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"cfg_{name}",
            default=None,
            metavar=name.upper(),
            help=f"ghi đè khóa '{name}' (biến môi trường {ENV_PREFIX}{name.upper()})",
        )


def load(
    path: str | os.PathLike | None,
    *,
    env: dict[str, str] | None = None,
    flags: dict[str, Any] | None = None,
) -> NodeConfig:
    """File < environment < flags. Unknown keys in the file are an error: a typo in a key
    must not silently leave the default in place."""
    values: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"Không tìm thấy tệp cấu hình {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Tệp cấu hình {path} sai cú pháp TOML: {exc}") from None
        data = data.get("node", data)
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise ConfigError(f"Khóa không biết trong {path}: {', '.join(unknown)}")
        values.update(data)
    env = os.environ if env is None else env
    for name in _KEYS:
        if f"{ENV_PREFIX}{name.upper()}" in env:
            values[name] = env[f"{ENV_PREFIX}{name.upper()}"]
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = value
    return NodeConfig(**{k: _coerce(k, v) for k, v in values.items()})


def flags_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, f"cfg_{name}", None) for name in _KEYS}
