"""Alert settings: what the province decides about CAP alerts, read from the ``LOA_ALERT_``
environment (as ``scheduler.config`` does) so this package adds its knobs without editing the
shared settings module."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")


class AlertSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOA_ALERT_", env_file=None, extra="ignore")

    # Documents larger than this are refused before any parsing.
    max_bytes: int = Field(default=512 * 1024, ge=4096, le=16 * 1024 * 1024)
    # "require": every document must carry a valid signature from a trusted certificate;
    # "trusted_sources": unsigned documents are accepted from logged-in accounts and from
    # feeds marked trusted (a signature that is present is always checked).
    signature_policy: Literal["require", "trusted_sources"] = "trusted_sources"
    # PEM files or directories of the certificates the province trusts.
    trusted_certs: list[str] = Field(default_factory=list)
    # Senders (CAP <sender>) whose alerts at these severities air at once, without approval.
    auto_senders: list[str] = Field(default_factory=list)
    auto_severities: list[str] = Field(default_factory=lambda: ["Extreme", "Severe"])
    # Per sender, when it differs: {"canhbao@kttv.gov.vn": ["Extreme", "Severe", "Moderate"]}.
    auto_rules: dict[str, list[str]] = Field(default_factory=dict)
    # CAP <status> values that air on the ordinary loudspeakers.
    air_statuses: list[str] = Field(default_factory=lambda: ["Actual"])
    # Saved target groups (scheduler) marked for drills: Exercise/Test alerts air only there.
    drill_group_ids: list[int] = Field(default_factory=list)
    # An alert waiting for approval this long is escalated to the province ("escalate") or
    # aired ("air").
    approval_timeout_s: float = Field(default=600.0, gt=0)
    on_approval_timeout: Literal["escalate", "air"] = "escalate"
    # Repeat an aired alert every N minutes until it expires or is cancelled (0 = once).
    repeat_every_min: float = Field(default=30.0, ge=0)
    # Without <expires>, repeats stop after this long.
    default_duration_min: float = Field(default=180.0, gt=0)
    # After a Cancel, air an "all clear" (priority level) on the same clusters.
    all_clear: bool = True
    # geocode <valueName>s read as commune / province codes (Vietnamese administrative unit
    # codes, or Loa's registry codes).
    geocode_commune_names: list[str] = Field(
        default_factory=lambda: ["MA_XA", "VN-XA", "VN_COMMUNE", "commune"]
    )
    geocode_province_names: list[str] = Field(
        default_factory=lambda: ["MA_TINH", "VN-TINH", "VN_PROVINCE", "province"]
    )
    # Administrative unit code -> registry code, where the two differ ("06040": "ls-doican").
    geocode_map: dict[str, str] = Field(default_factory=dict)
    # Warning tone before the speech: "3x20/10" = three 20-second blasts, 10-second gaps.
    # Empty = none.
    tone_pattern: str = ""
    tone_hz: float = Field(default=880.0, gt=50, lt=8000)
    # Who makes the tone: "node" = each node generates it from the ``tone`` of the ``play``
    # command and sounds it at once while the speech downloads (docs/protocol.md); "file" =
    # baked into the alert's audio before the speech (every node downloads first), for
    # nodes whose firmware does not know the ``tone`` field.
    tone_mode: Literal["node", "file"] = "node"
    # Feeds (Atom/RSS of CAP entries, or a CAP document) polled for alerts.
    feed_urls: list[str] = Field(default_factory=list)
    feed_trusted: bool = False
    feed_interval_s: float = Field(default=60.0, ge=5)
    # How often due repeats, expiries and escalations are looked at.
    tick_s: float = Field(default=5.0, gt=0)

    def automatic(self, sender: str, severity: str) -> bool:
        """Whether an alert from ``sender`` at ``severity`` airs without a person deciding."""
        if sender in self.auto_rules:
            return severity in self.auto_rules[sender]
        return sender in self.auto_senders and severity in self.auto_severities
