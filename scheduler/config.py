"""Scheduling and dispatch settings.

They read the same ``LOA_`` environment as :class:`loa.settings.Settings`, but live here so the
scheduler can grow its knobs without editing the shared settings module. Every figure that a
province may want to tune (lead time, grace window, forced emergency volume, who approves) is
a setting, never a constant in the code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SchedulerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOA_", env_file=None, extra="ignore")

    # `play` goes out this long before start_at, so every node has fetched the file and starts
    # on its own clock together with the others.
    dispatch_lead_s: float = Field(default=120.0, ge=0)
    # A slot whose controller was down at dispatch time is still played when the controller is
    # back within this long after the slot's start; later it is recorded as missed.
    slot_grace_s: float = Field(default=300.0, ge=0)
    # After a slot ends, nodes have this long to report before they count as never acknowledged.
    ack_margin_s: float = Field(default=60.0, ge=0)
    # Emergency bulletins play at this volume, whatever the node is set to (TT 39/2020).
    emergency_volume: int = Field(default=100, ge=0, le=100)
    # Who approves a commune's broadcast: "commune" = the commune officer may approve their own,
    # "province" = only the province role.
    broadcast_approver: Literal["commune", "province"] = "commune"
    # Conflicts of recurring broadcasts are looked for this far ahead.
    conflict_horizon_days: int = Field(default=62, ge=1)
    # A node that comes back online gets a re-send of unacknowledged plays after this delay
    # (its persistent session usually delivers the queued command first).
    resend_delay_s: float = Field(default=3.0, ge=0)
    # Pause between repeats of the same content.
    repeat_gap_s: float = Field(default=3.0, ge=0)
    # Default length of a live stream slot, for conflicts and for closing the airing.
    stream_default_duration_s: int = Field(default=1800, ge=10)
    # Housekeeping: finalise ended airings, record missed slots, pick up broadcasts scheduled by
    # another process.
    housekeeping_s: float = Field(default=5.0, gt=0)
    # Flush of playback/ack updates to the database.
    dispatch_flush_s: float = Field(default=1.0, gt=0)
    # Publishing of one airing's commands, in parallel.
    publish_concurrency: int = Field(default=256, ge=1)
    # Live streaming server (Icecast). Port 0 = a free port chosen at start.
    icecast_port: int = Field(default=0, ge=0, le=65535)
    icecast_host: str = "127.0.0.1"
    # How nodes reach the Icecast server; empty = http://icecast_host:port.
    icecast_public_url: str = ""
    icecast_binary: str = "icecast2"
    # A broadcast asked for "now" starts this long after it is scheduled, so every node has
    # time to fetch the file and they start together.
    start_now_delay_s: float = Field(default=15.0, ge=0)
    # A slot dispatched late (controller was down) starts this long after dispatch.
    late_start_delay_s: float = Field(default=5.0, ge=0)
    # An emergency plays "at once" (start_at = 0): nodes get this long to fetch the file
    # before the slot counts as over.
    emergency_fetch_allowance_s: float = Field(default=30.0, ge=0)
    # An online node that has not acknowledged a play gets it again after this long, at most
    # ``max_sends`` times in all.
    ack_retry_s: float = Field(default=15.0, gt=0)
    max_sends: int = Field(default=5, ge=1)
    # Proof of play must be plausible (scheduler.dispatch): a ``started`` more than this
    # before start_at or after the slot's end is kept as evidence, flagged, and not counted.
    proof_tolerance_s: float = Field(default=10.0, ge=0)
    # Private networks a stream_url may point to besides public addresses and our own
    # Icecast, e.g. the province's VPN: "10.8.0.0/16, 2001:db8::/32" (scheduler.stream_urls).
    stream_allowed_networks: str = ""
    # A bulletin longer than this (seconds) asks the officer for a second confirmation
    # (0 = never): a whole recording sent instead of an excerpt keeps a village's
    # loudspeakers busy for an hour.
    long_bulletin_s: int = Field(default=600, ge=0)
