"""Runtime settings, read from the environment (prefix ``LOA_``) so one binary serves the
embedded demo, the test suite and a docker-compose deployment without code changes."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOA_", env_file=None, extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="Where SQLite, audio and logs live")
    database_url: str = ""

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    topic_root: str = "loa/v1"
    controller_client_id: str = "loa-controller"
    # Several controllers (controller.cluster): a non-empty group splits ingest through
    # `$share/<group>/` subscriptions; every controller then needs its own client id. Empty =
    # one controller, which does everything itself.
    shared_subscription_group: str = ""
    # Controllers announce themselves this often; one silent for 3 x this is taken as gone.
    controller_presence_s: float = Field(default=5.0, gt=0)
    # The scheduler runs on the holder of a database lease of this length, renewed (and
    # tried for by the others) every leader_renew_s: a dead leader is replaced within
    # leader_lease_s + leader_renew_s.
    leader_lease_s: float = Field(default=15.0, gt=0)
    leader_renew_s: float = Field(default=3.0, gt=0)
    # A JSON snapshot of the controller's figures (ingest lag, messages, leadership),
    # rewritten every controller_stats_interval_s; empty = none.
    controller_stats_file: str = ""
    controller_stats_interval_s: float = Field(default=5.0, gt=0)

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    public_base_url: str = ""

    heartbeat_s: int = 30
    keepalive_s: int = 60
    flush_interval_s: float = 1.0
    # The controller's record of when it watched (controller.watch) is extended this often
    # while connected; a crash loses at most this much observed time, never adds any.
    watch_extend_s: float = Field(default=5.0, gt=0)
    history_sample_s: int = 300
    history_retention_days: int = 120
    battery_low_v: float = 11.5
    weak_signal_dbm: int = -105
    # A heartbeat further ahead than this is refused; any skew over clock_skew_warn_ms is
    # flagged on the node (a +-5 min clock is flagged, not refused).
    max_clock_skew_s: int = 900
    clock_skew_warn_ms: int = 2000

    # InfluxDB 2 telemetry sink (production); empty URL = off.
    influx_url: str = ""
    influx_token: str = ""
    influx_org: str = "loa"
    influx_bucket: str = "telemetry"

    # Alarms: a condition must hold this long to raise, and be gone this long to clear.
    alarm_raise_after_s: float = 30
    alarm_clear_after_s: float = 120
    alarm_interval_s: float = 2

    # Signs per-node content tokens and UI sessions. Generated into data_dir when unset.
    secret_key: str = ""
    language: str = "vi"

    def resolved_secret_key(self) -> str:
        if self.secret_key:
            return self.secret_key
        import secrets

        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "secret_key"
        if not path.exists():
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        self.secret_key = path.read_text().strip()
        return self.secret_key

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.data_dir / 'loa.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
