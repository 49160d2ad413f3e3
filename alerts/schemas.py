"""What the alerts API (``dashboard/routes/alerts.py``) takes and answers, as pydantic models
apart from the tables, so ``/openapi.json`` shows every answer's shape (issue 15).

The service builds the answers (``AlertService._row``, ``report``, ``preview`` ...); these
models name each field and its type. ``extra="allow"`` as for the broadcasts API: a field the
service adds later still reaches the client; ``tests/alerts/test_api_schemas.py`` checks that
real answers have exactly the fields named here, so the documentation cannot drift."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class AreaCircleOut(_Answer):
    lat: float
    lon: float
    radius_km: float


class AreaShapeOut(_Answer):
    """One area of the document that has shapes (for the map): polygons as [lat, lon]
    points, circles by centre and radius."""

    desc: str
    polygons: list[list[list[float]]]
    circles: list[AreaCircleOut]


class ClusterOut(_Answer):
    """A targeted loudspeaker cluster and where it is (coordinates may be the commune's)."""

    node_id: str
    label: str | None
    village_id: int | None
    village: str | None
    commune_id: int | None
    commune: str | None
    lat: float | None
    lon: float | None


class ToneOut(_Answer):
    """A warning tone: ``pattern`` ("3x20/10"; "" = no tone), its parts (None without a
    tone), ``hz``, ``source`` (the template's event key, "template" or "default": the
    province setting) and the Vietnamese ``label`` ("3 hồi 20 giây, nghỉ 10 giây")."""

    pattern: str
    hz: float | None
    source: str
    count: int | None
    on_s: float | None
    off_s: float | None
    label: str


class AlertOut(_Answer):
    """One received alert (times ISO 8601, Asia/Ho_Chi_Minh; ``*_ms``: epoch milliseconds)."""

    id: int
    sender: str
    identifier: str
    sent: str
    msg_type: str
    status: str
    severity: str
    urgency: str
    event: str
    headline: str | None
    language: str | None
    area_desc: str | None
    expires_at: str | None
    received_at: str | None
    received_ms: int
    decision: str | None = Field(description="auto | approval | none")
    state: str
    state_label: str
    state_reason: str | None
    drill: bool
    text: str | None
    spoken: str | None
    clusters: int = Field(description="how many clusters it reaches")
    targets: dict[str, Any] | None
    approved_by: str | None
    approved_at: str | None
    approved_ms: int | None
    escalated_at: str | None
    expires_ms: int | None
    broadcast_ids: list[int]
    next_repeat_at: str | None
    closed_by_id: int | None
    closed_at: str | None
    all_clear_broadcast_id: int | None
    references: list[Any]
    message_id: int | None
    tone: ToneOut | None = Field(
        description="the warning tone chosen with the text (None: decided before 0018 or "
        "never aired)"
    )


class AlertReceived(AlertOut):
    """A document accepted (202), or a retry with the same ``Idempotency-Key`` (200)."""

    result: Literal["accepted", "duplicate"]
    replayed: bool | None = None


class AlertDuplicate(_Answer):
    """The same alert (sender, identifier, sent) received before: nothing new (200)."""

    result: Literal["duplicate"]
    alert_id: int
    state: str
    detail: str
    detail_en: str


class AlertPage(_Answer):
    items: list[AlertOut]
    total: int
    limit: int
    offset: int


class VillageClustersOut(_Answer):
    commune: str | None
    village: str | None
    clusters: list[ClusterOut]


class PreviewOut(_Answer):
    """What a document would do; nothing stored, nothing aired."""

    sender: str
    identifier: str
    sent: str
    msg_type: str
    status: str
    signed: bool
    severity: str
    expires_at: str | None
    event: str
    headline: str | None
    decision: Literal["auto", "approval"]
    drill: bool
    clusters: int
    by_village: list[VillageClustersOut]
    empty_areas: list[str]
    unknown_geocodes: list[str]
    text: str
    spoken: str
    node_ids: list[str]
    areas: list[AreaShapeOut]
    tone: ToneOut = Field(description="the warning tone it would sound")


class MessageOut(_Answer):
    """A document as received, refused ones with why (``reason``, Vietnamese)."""

    id: int
    received_at: str | None
    received_at_local: str
    source: str
    source_ref: str
    outcome: Literal["accepted", "refused", "duplicate"]
    reason_code: str | None
    reason: str | None
    size: int
    sha256: str
    signed: bool
    sender: str | None
    identifier: str | None
    alert_id: int | None


class TemplateOut(_Answer):
    """A spoken template by event type; ``*`` is the default (then without ``recordings``)."""

    event_key: str
    template: str
    recordings: list[str] | None = None
    updated_by: str | None
    updated_at: str | None
    tone_pattern: str | None = Field(description='own tone: None = default, "" = none')
    tone_hz: float | None
    tone: ToneOut = Field(description="what its alerts sound, defaults filled in")


class TemplateSaved(_Answer):
    event_key: str
    template: str
    recordings: list[str]
    tone_pattern: str | None
    tone_hz: float | None
    tone: ToneOut


class StepOut(_Answer):
    """One step of the alert's timeline (received, approved, aired, ...)."""

    at: str | None
    at_ms: int
    action: str
    label: str
    actor: str
    detail: dict[str, Any] | None


class NotStartedOut(_Answer):
    node_id: str
    village: str
    commune: str
    phase: str | None
    reason: str


class AiringProofOut(_Answer):
    """Proof of one airing: when the first, 50 % and 99 % of the targeted clusters started
    (``*_s``: seconds after the alert was received), and every cluster that did not."""

    broadcast_id: int
    dispatched_at: str | None
    targeted: int
    started: int
    first_started_at: str | None
    p50_at: str | None
    p99_at: str | None
    first_started_ms: int | None
    p50_ms: int | None
    p99_ms: int | None
    first_started_s: float | None
    p50_s: float | None
    p99_s: float | None
    not_started: list[NotStartedOut]


class AlertReport(AlertOut):
    """The alert with its timeline and proof of play (``proof``: the first airing)."""

    steps: list[StepOut]
    airings: list[AiringProofOut]
    proof: AiringProofOut | None
    clusters_detail: list[ClusterOut]
    areas: list[AreaShapeOut]


# --------------------------------------------------------------------------- request bodies

MSG_TEMPLATE = "Cần «event» (loại sự kiện, hoặc *) và «template» (mẫu lời đọc)."
MSG_TONE = (
    "«tone_pattern»: tín hiệu cảnh báo là chuỗi như 3x20/10 (ba hồi 20 giây, nghỉ 10 giây), "
    '"" để không có tín hiệu, hoặc bỏ trống để dùng mặc định của tỉnh.'
)


class TemplateIn(BaseModel):
    """A spoken template for an event type (``*``: every other type); ``recordings``: at
    most 5 content ids played before the text. Checked further by the service."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"event": "Lũ quét", "template": "Thông báo khẩn cấp về {su_kien}.\n{huong_dan}"}
            ]
        }
    )
    refusals: ClassVar[dict[str, str]] = {
        "event": MSG_TEMPLATE,
        "template": MSG_TEMPLATE,
        "recordings": "«recordings» là danh sách tối đa 5 mã nội dung.",
        "tone_pattern": MSG_TONE,
        "tone_hz": "«tone_hz»: tần số tín hiệu là một số từ 50 đến 8000 Hz.",
    }
    event: StrictStr
    template: StrictStr
    recordings: list[Any] | None = None
    # Absent/null: the default tone; "": no tone for this event; "3x20/10": its own.
    tone_pattern: StrictStr | None = None
    tone_hz: float | None = None


class RejectIn(BaseModel):
    """Why an officer refuses to air an alert (optional)."""

    refusals: ClassVar[dict[str, str]] = {"reason": "Lý do («reason») phải là chuỗi."}
    reason: StrictStr | None = None  # the service keeps the first 1000 characters
