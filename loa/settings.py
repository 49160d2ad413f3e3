"""Runtime settings, read from the environment (prefix ``LOA_``) so one binary serves the
embedded demo, the test suite and a docker-compose deployment without code changes."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Secrets published as examples (``.env.example``, docs): never accepted outside the demo.
KNOWN_EXAMPLE_SECRETS = frozenset(
    {
        "change-me",
        "changeme",
        "change_me",
        "change-this",
        "secret",
        "secret-key",
        "secret_key",
        "password",
        "your-secret-key",
        "loa",
    }
)


class InsecureSettingError(ValueError):
    """A setting that would make the deployment unsafe; the message is Vietnamese first."""


def _cpu_slots() -> int:
    """The API's default database slots: one per CPU, at least 2, at most 8."""
    return max(2, min(8, os.cpu_count() or 2))


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
    # Largest request body of any route but uploads (JSON, forms), refused while streaming
    # (dashboard.body_limit); uploads have their own limits.
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)

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
    # Per-node event limit in ingest (controller.ingest.NodeEventGuard): sustained rate and
    # burst; a node over it has its events counted as "rate_limited" and dropped.
    node_event_rate_per_s: float = Field(default=2.0, gt=0)
    node_event_burst: int = Field(default=60, ge=1)
    # At most this many unknown node ids are kept as pending nodes (an open broker lets anyone
    # invent ids); sightings beyond it are counted (controller stats: dropped_pending_nodes).
    max_pending_nodes: int = Field(default=1000, ge=1)
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

    # Alarm notifications (controller.notify): SMTP for e-mail (empty host = no e-mail),
    # how often the outbox is read, the first retry delay (doubled each try), tries before
    # a delivery is marked failed, and the timeout of one SMTP or webhook call.
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = "loa@localhost"
    smtp_starttls: bool = False
    notify_interval_s: float = Field(default=5.0, gt=0)
    notify_retry_s: float = Field(default=30.0, gt=0)
    notify_max_attempts: int = Field(default=6, ge=1)
    notify_timeout_s: float = Field(default=10.0, gt=0)
    # Networks an alarm webhook may point into (e.g. the province's SMS gateway on its VPN),
    # comma-separated CIDRs; anything else internal is refused (loa.addresses).
    notify_webhook_allowed_networks: str = ""

    # Signs per-node content tokens and UI sessions. Generated into data_dir when unset.
    secret_key: str = ""
    language: str = "vi"

    # API under load (issue 17). At most api_db_concurrency requests hold a database session
    # at once; the others wait on the event loop, holding neither a thread nor a connection.
    # The API's pool is sized above it, so a pool and worker-thread deadlock cannot happen.
    # Default: the CPU count, 2 to 8. A route's ORM and JSON work holds the GIL, so routes
    # beyond the cores only queue for it inside the process, and the ingest loop waits behind
    # each of them at every GIL hand-over (tests/system/test_loop_stall.py on 2 cores: 8 slots
    # gave loop lateness p99 70-110 ms, 2 slots 21-38 ms, and more requests answered).
    api_db_concurrency: int = Field(default_factory=lambda: _cpu_slots(), ge=1, le=32)
    # Indicator answers reused while no row they read changed, at most this long (issue 16;
    # indicator/answers.py). 0 judges every request again.
    indicator_answer_ttl_s: float = Field(default=30.0, ge=0, le=600)
    # Loop-stall monitor (loa/loopwatch.py): a warning, with the stack that held it, each time
    # the event loop that runs the ingest is held longer than this. 0 = off.
    loop_stall_warn_ms: float = Field(default=0.0, ge=0)
    # Requests per client: a token bucket of `burst` refilled at `per_s`; beyond it 429 with
    # Retry-After. Anonymous clients are counted per address, logged-in ones per credential.
    rate_anon_burst: int = Field(default=240, ge=1)
    rate_anon_per_s: float = Field(default=20.0, gt=0)
    rate_user_burst: int = Field(default=600, ge=1)
    rate_user_per_s: float = Field(default=60.0, gt=0)
    # Reverse proxies whose X-Forwarded-For is believed (comma-separated addresses or
    # networks). Empty = none: the client address is the TCP peer, so a spoofed header cannot
    # buy fresh login tries.
    trusted_proxies: str = ""

    def proxy_options(self) -> dict[str, object]:
        """uvicorn's proxy settings: X-Forwarded-For believed only from ``trusted_proxies``
        (uvicorn's own default believes loopback, which every local process can reach)."""
        trusted = [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]
        if not trusted:
            return {"proxy_headers": False, "forwarded_allow_ips": []}
        return {"proxy_headers": True, "forwarded_allow_ips": trusted}

    def check_secret_key(self) -> None:
        """Refuse a secret anyone can read in our own files (``.env.example``) or an explicitly
        empty one: it would let anyone forge session cookies and node download tokens. Unset is
        fine (a random key is generated into data_dir); the demo does not call this."""
        if "secret_key" not in self.model_fields_set and not self.secret_key:
            return
        value = self.secret_key.strip()
        if not value or value.lower() in KNOWN_EXAMPLE_SECRETS:
            raise InsecureSettingError(
                f"LOA_SECRET_KEY đang là giá trị mẫu hoặc rỗng ({value or 'rỗng'!r}): ai cũng "
                "giả được phiên đăng nhập và mã tải âm thanh. Hãy đặt một chuỗi ngẫu nhiên, ví "
                'dụ: python3 -c "import secrets; print(secrets.token_urlsafe(32))", hoặc bỏ '
                "trống biến này để Loa tự tạo khóa trong thư mục dữ liệu. / LOA_SECRET_KEY is "
                "an example or empty value; set a long random secret."
            )

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
