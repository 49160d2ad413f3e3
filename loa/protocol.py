"""Loa node protocol v1 (docs/protocol.md): topics, payload models and state rules.

This is the single place that knows the wire format. The controller decodes with it and
``firmware_sim`` encodes with it, so a change here is a change to both sides at once.
Validation errors name the field, because a technician reading a rejection log must be able
to tell a vendor what their firmware got wrong.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

PROTOCOL_VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024
NODE_ID_PATTERN = r"[A-Za-z0-9_-]{3,64}"
NODE_ID_RE = re.compile(rf"^{NODE_ID_PATTERN}$")


# --------------------------------------------------------------------------- topics


class Channel(enum.StrEnum):
    STATUS = "status"
    HEARTBEAT = "heartbeat"
    EVENTS = "events"
    CMD = "cmd"


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under a configurable root (default ``loa/v1``)."""

    root: str = "loa/v1"

    def node(self, node_id: str, channel: Channel) -> str:
        return f"{self.root}/nodes/{node_id}/{channel}"

    def status(self, node_id: str) -> str:
        return self.node(node_id, Channel.STATUS)

    def heartbeat(self, node_id: str) -> str:
        return self.node(node_id, Channel.HEARTBEAT)

    def events(self, node_id: str) -> str:
        return self.node(node_id, Channel.EVENTS)

    def cmd(self, node_id: str) -> str:
        return self.node(node_id, Channel.CMD)

    def uplink_filters(self, share_group: str = "") -> list[str]:
        """Subscriptions the controller needs; ``$share/group/`` splits heartbeats and events
        across controllers. Statuses stay plain: they are retained, and a broker never
        delivers retained messages to a shared subscription."""
        prefix = f"$share/{share_group}/" if share_group else ""
        return [
            f"{self.root}/nodes/+/{Channel.STATUS}",
            *(f"{prefix}{self.root}/nodes/+/{c}" for c in (Channel.HEARTBEAT, Channel.EVENTS)),
        ]

    def parse(self, topic: str) -> tuple[str, Channel] | None:
        """``loa/v1/nodes/{id}/{channel}`` -> (id, channel); None when it is not a node topic."""
        head = f"{self.root}/nodes/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head) :]
        node_id, sep, channel = rest.partition("/")
        if not sep or "/" in channel:
            return None
        try:
            return node_id, Channel(channel)
        except ValueError:
            return None


# --------------------------------------------------------------------------- payloads

# Upper bound: 31/12/9999. A larger number is no time, and would overflow 64-bit storage.
Epoch = Annotated[
    int, Field(ge=0, le=253_402_300_799_999, description="Unix epoch milliseconds, UTC")
]


class _Msg(BaseModel):
    # Unknown fields are kept, not rejected (protocol: additive extension).
    model_config = ConfigDict(extra="allow", strict=False)


class Status(_Msg):
    online: bool
    fw: str | None = None
    boot_id: str | None = None
    ts: Epoch | None = None
    reason: Literal["lost", "shutdown"] | str | None = None


class Heartbeat(_Msg):
    seq: Annotated[int, Field(ge=0)]
    ts: Epoch
    uptime_s: Annotated[int, Field(ge=0)]
    volume: Annotated[int, Field(ge=0, le=100)]
    amp: Literal["ok", "fault", "off"]
    speakers_ok: Annotated[int, Field(ge=0, le=16)]
    speakers_total: Annotated[int, Field(ge=0, le=16)]
    power: Literal["mains", "battery", "solar"]
    net: Literal["4g", "3g", "eth", "wifi"]
    # Any radio reports within these; a value beyond would only be a firmware bug, and one
    # too large for 64-bit storage would hold up every later telemetry write.
    rssi_dbm: Annotated[int, Field(ge=-200, le=50)] | None
    playing: str | None
    battery_v: float | None = None
    temp_c: float | None = None
    ntp_offset_ms: int | None = None
    cache_free_mb: float | None = None
    fw: str | None = None


class CmdAck(_Msg):
    type: Literal["cmd_ack"]
    ts: Epoch
    cmd_id: str
    ok: bool
    error: str | None = None


PlaybackPhase = Literal["fetched", "started", "finished", "preempted", "failed"]


class PlaybackEvent(_Msg):
    type: Literal["playback"]
    ts: Epoch
    broadcast_id: str
    phase: PlaybackPhase
    at: Epoch
    error: str | None = None


# "clock" and "audio_output" were added for the real node agent (docs/protocol.md, additive
# extensions): an unsynchronised clock and a sound output that does not open.
FaultCode = Literal[
    "amp_fault",
    "speaker_line",
    "power_lost",
    "power_restored",
    "tamper",
    "storage",
    "clock",
    "audio_output",
]


class FaultEvent(_Msg):
    type: Literal["fault"]
    ts: Epoch
    code: FaultCode
    detail: str | None = None


class SelftestEvent(_Msg):
    type: Literal["selftest"]
    ts: Epoch
    ok: bool
    speakers_ok: int
    speakers_total: int
    detail: str | None = None


NodeEvent = CmdAck | PlaybackEvent | FaultEvent | SelftestEvent
"""A decoded event, whichever its type (``decode_event`` returns one)."""
Event = Annotated[NodeEvent, Field(discriminator="type")]
_event_adapter: TypeAdapter[Event] = TypeAdapter(Event)

Priority = Literal["normal", "priority", "emergency"]
PRIORITY_RANK: dict[str, int] = {"normal": 0, "priority": 1, "emergency": 2}


class _Cmd(_Msg):
    cmd_id: Annotated[str, Field(min_length=1, max_length=128)]
    issued_at: Epoch
    expires_at: Epoch | None = None


# Limits of a node-made warning tone: wide enough for any pattern a province uses ("3x20/10",
# three 20-second blasts with 10-second gaps), small enough that a node never sounds for
# more than ~19 minutes on a typo.
TONE_HZ = (50, 8000)
TONE_MAX_COUNT = 10
TONE_MAX_ON_MS = 60_000
TONE_MAX_OFF_MS = 60_000
# The pause between the last blast and the speech (as in the tones Loa bakes into audio).
TONE_SPEECH_GAP_MS = 1000


class Tone(BaseModel):
    """A warning tone the node generates itself (docs/protocol.md, additive extension):
    ``count`` blasts of a sine at ``hz``, each ``on_ms`` long, ``off_ms`` of silence between
    them; the speech follows ``TONE_SPEECH_GAP_MS`` after the last blast. Nothing to
    download, so a node can sound the alert the moment the command arrives."""

    model_config = ConfigDict(extra="allow", strict=False)
    hz: Annotated[int, Field(ge=TONE_HZ[0], le=TONE_HZ[1])]
    on_ms: Annotated[int, Field(ge=100, le=TONE_MAX_ON_MS)]
    off_ms: Annotated[int, Field(ge=0, le=TONE_MAX_OFF_MS)] = 0
    count: Annotated[int, Field(ge=1, le=TONE_MAX_COUNT)] = 1

    @property
    def blasts_ms(self) -> int:
        """From the first blast's start to the last one's end."""
        return self.count * self.on_ms + (self.count - 1) * self.off_ms

    @property
    def lead_ms(self) -> int:
        """From the tone's start to the speech's start."""
        return self.blasts_ms + TONE_SPEECH_GAP_MS


class PlayCmd(_Cmd):
    type: Literal["play"] = "play"
    broadcast_id: str
    url: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: Annotated[int, Field(ge=0)]
    duration_ms: Annotated[int, Field(ge=0)]
    start_at: Epoch = 0
    priority: Priority = "normal"
    volume: Annotated[int, Field(ge=0, le=100)] | None = None
    repeat: Annotated[int, Field(ge=1)] = 1
    gap_ms: Annotated[int, Field(ge=0)] = 0
    # Additive: a warning tone made by the node, sounded from start_at while the speech
    # downloads; the speech (``repeat`` times) follows it.
    tone: Tone | None = None


class StreamCmd(_Cmd):
    type: Literal["stream"] = "stream"
    broadcast_id: str
    url: str
    priority: Priority = "normal"
    start_at: Epoch = 0
    volume: Annotated[int, Field(ge=0, le=100)] | None = None


class StopCmd(_Cmd):
    type: Literal["stop"] = "stop"
    broadcast_id: str | None = None


class VolumeCmd(_Cmd):
    type: Literal["volume"] = "volume"
    level: Annotated[int, Field(ge=0, le=100)]


class ConfigCmd(_Cmd):
    type: Literal["config"] = "config"
    heartbeat_s: Annotated[int, Field(ge=5, le=3600)] | None = None
    default_volume: Annotated[int, Field(ge=0, le=100)] | None = None


class SelftestCmd(_Cmd):
    type: Literal["selftest"] = "selftest"


Command = Annotated[
    PlayCmd | StreamCmd | StopCmd | VolumeCmd | ConfigCmd | SelftestCmd, Field(discriminator="type")
]
_command_adapter: TypeAdapter[Command] = TypeAdapter(Command)


def encode(msg: BaseModel) -> bytes:
    """JSON for the wire. None is left out only for optional fields: a required nullable
    field (``rssi_dbm``, ``playing``) must be sent as null."""
    fields = type(msg).model_fields
    omit = {n for n, f in fields.items() if not f.is_required() and getattr(msg, n) is None}
    return msg.model_dump_json(exclude=omit).encode()


def lost_will() -> bytes:
    return b'{"online":false,"reason":"lost"}'


# --------------------------------------------------------------------------- decoding


class Rejection(Exception):
    """A node message the controller refuses, with a stable ``reason`` used as counter key."""

    def __init__(self, reason: str, detail: str = "", node_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.node_id = node_id


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:3]:
        loc = ".".join(str(p) for p in e["loc"]) or "(payload)"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def _validation_reason(err: ValidationError) -> str:
    kinds = {e["type"] for e in err.errors()}
    if "json_invalid" in kinds or "json_type" in kinds:
        return "not_json"
    if kinds <= {"model_type", "model_attributes_type", "dict_type"} and all(
        not e["loc"] for e in err.errors()
    ):
        return "not_object"
    return "missing_field" if kinds == {"missing"} else "invalid_field"


_Model = TypeVar("_Model", bound=_Msg)
_Parsed = TypeVar("_Parsed")


@overload
def _validate_json(model: type[_Model], payload: bytes) -> _Model: ...
@overload
def _validate_json(model: TypeAdapter[_Parsed], payload: bytes) -> _Parsed: ...
def _validate_json(model: type[_Msg] | TypeAdapter[Any], payload: bytes) -> Any:
    """Parse and validate in one pass (pydantic-core parses the JSON itself, which is what
    lets one controller process keep up with a province's heartbeats)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejection("oversized", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_json(payload)
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise Rejection(_validation_reason(exc), _describe(exc)) from None
    except UnicodeDecodeError as exc:  # pragma: no cover - pydantic reports most as json_invalid
        raise Rejection("not_json", str(exc)[:120]) from None


def decode_status(payload: bytes) -> Status:
    return _validate_json(Status, payload)


def decode_heartbeat(payload: bytes) -> Heartbeat:
    hb = _validate_json(Heartbeat, payload)
    if hb.speakers_ok > hb.speakers_total:
        raise Rejection("invalid_field", "speakers_ok: greater than speakers_total")
    return hb


def decode_event(payload: bytes) -> CmdAck | PlaybackEvent | FaultEvent | SelftestEvent:
    return _validate_json(_event_adapter, payload)


def guess_cmd_id(payload: bytes) -> str:
    """Best-effort cmd_id of a command that failed validation, so its failed ``cmd_ack`` can
    be matched (protocol: unreadable -> ``""``). Shared by every node implementation."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return ""
    cmd_id = data.get("cmd_id") if isinstance(data, dict) else None
    return cmd_id if isinstance(cmd_id, str) and 0 < len(cmd_id) <= 128 else ""


def decode_command(
    payload: bytes,
) -> PlayCmd | StreamCmd | StopCmd | VolumeCmd | ConfigCmd | SelftestCmd:
    return _validate_json(_command_adapter, payload)


# --------------------------------------------------------------------------- state rules


class NodeState(enum.StrEnum):
    UNKNOWN = "unknown"
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    battery_low_v: float = 11.5
    weak_signal_dbm: int = -105


def degradation_reasons(hb: Heartbeat, th: HealthThresholds) -> list[str]:
    """Why an online node is ``degraded`` (empty list = healthy)."""
    reasons = []
    if hb.amp != "ok":
        reasons.append(f"amp_{hb.amp}")
    if hb.speakers_ok < hb.speakers_total:
        reasons.append("speaker_line")
    if hb.power == "battery" and hb.battery_v is not None and hb.battery_v < th.battery_low_v:
        reasons.append("battery_low")
    if hb.rssi_dbm is not None and hb.rssi_dbm < th.weak_signal_dbm:
        reasons.append("weak_signal")
    return reasons


def is_audible(hb: Heartbeat) -> bool:
    """Indicator 8.3's "available": amplifier ok and at least one speaker ok (while online)."""
    return hb.amp == "ok" and hb.speakers_ok >= 1


def heartbeat_timeout_ms(heartbeat_s: int) -> int:
    """A node with no heartbeat for 3 x heartbeat_s is offline (protocol: derived state)."""
    return 3 * heartbeat_s * 1000
