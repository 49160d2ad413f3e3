"""What the broadcasts API answers, as pydantic models, so ``/openapi.json`` shows the shape
of every answer (issue 15: typed edges).

The domain builds these answers (``BroadcastService._summary`` and friends); the models name
the fields a client relies on and their types. ``extra="allow"``: a field the domain adds
later still reaches the client (the model documents, it does not silently drop)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class RecurrenceOut(_Answer):
    rrule: str
    until: str | None = None
    exceptions: list[str] = []


class BroadcastOut(_Answer):
    """One bulletin as the officer sees it (times ISO 8601 in Asia/Ho_Chi_Minh)."""

    id: int
    title: str
    status: str
    status_label: str
    priority: str
    priority_label: str | None = None
    content_id: str | None = None
    tts_text: str | None = None
    stream_url: str | None = None
    language: str | None = None
    volume: int | None = None
    repeat: int | None = None
    duration_ms: int | None = None
    targets: dict[str, Any]
    start_at: str | None = None
    start_at_ms: int | None = None
    recurrence: RecurrenceOut | None = None
    next_slot_at: str | None = None
    owner_commune_id: int | None = None
    source_broadcast_id: int | None = None
    created_by: str | None = None
    approved_by: str | None = None
    created_at: str | None = None
    places: str | None = None
    previous_version_id: int | None = None
    replayed: bool | None = None


class BroadcastPage(_Answer):
    items: list[BroadcastOut]
    total: int
    limit: int
    offset: int


class BroadcastHistory(_Answer):
    items: list[BroadcastOut]
    total: int


class CheckOut(_Answer):
    """The summary an officer confirms before sending (nothing written)."""

    title: str
    places: Any
    start_at_ms: int | None = None
    now: bool
    when: str
    duration_ms: int
    duration: str
    priority: str
    priority_label: str
    language: str
    language_label: str
    to_inboxes: bool
    long: bool
    long_limit: str | None = None


class InboxItemOut(_Answer):
    id: int
    commune_id: int
    state: str
    received_at: str | None = None
    broadcast_id: int
    title: str
    priority: str
    priority_label: str | None = None
    content_id: str | None = None
    duration_ms: int | None = None
    suggested_start_at: str | None = None
    created_by: str | None = None
    scheduled_broadcast_id: int | None = None


class InboxPage(_Answer):
    items: list[InboxItemOut]
    total: int


class InboxDismissed(_Answer):
    id: int
    state: str


class CalendarOut(_Answer):
    from_: str = Field(alias="from")
    to: str
    items: list[dict[str, Any]]
    total: int


class GroupOut(_Answer):
    id: int
    name: str
    owner_commune_id: int | None = None
    targets: dict[str, Any]
    nodes: int
    created_by: str | None = None
    created_at: str | None = None


class GroupList(_Answer):
    items: list[GroupOut]
    total: int


class NodeCommandOut(_Answer):
    """What a node answered: ``acked`` true/false, or None when it did not answer in time."""

    node_id: str
    command: str
    cmd_id: str | None = None
    sent: bool | None = None
    acked: bool | None = None


class LiveServerOut(_Answer):
    available: bool
    reason: str | None = None
    url: str | None = None
    on_air: list[str] | None = None
    broadcasts: list[dict[str, Any]] | None = None


# --------------------------------------------------------------------------- request bodies
# ``refusals``: the sentence a refused field answers (``dashboard.validation``); unknown
# fields are ignored, as the API always did.


class GroupIn(BaseModel):
    """A saved set of places (the service checks name length and the places)."""

    refusals: ClassVar[dict[str, str]] = {
        "name": "Tên nhóm phải có từ 1 đến 200 ký tự.",
        "targets": "«targets» phải là một đối tượng JSON (communes, villages, nodes).",
    }
    name: StrictStr
    targets: dict[str, Any] | None = None


class VolumeIn(BaseModel):
    refusals: ClassVar[dict[str, str]] = {
        "level": "Âm lượng («level») phải là số nguyên từ 0 đến 100."
    }
    level: StrictInt = Field(ge=0, le=100)


class StopIn(BaseModel):
    refusals: ClassVar[dict[str, str]] = {
        "broadcast_id": "«broadcast_id» phải là chuỗi (mã phát trên cụm loa)."
    }
    broadcast_id: StrictStr | None = None


class SkipIn(BaseModel):
    refusals: ClassVar[dict[str, str]] = {"date": "Hãy chọn ngày bỏ phát («date», dd/mm/yyyy)."}
    date: StrictStr


class RecurrenceEndIn(BaseModel):
    """End date (``until``: dd/mm/yyyy, empty or null for none) and exception dates; a field
    left out keeps its value."""

    refusals: ClassVar[dict[str, str]] = {"exceptions": "«exceptions» phải là danh sách ngày."}
    until: StrictStr | StrictInt | None = None
    exceptions: list[StrictStr] | None = None


class InboxScheduleIn(BaseModel):
    """A commune takes a province bulletin from its inbox; every field may be left out."""

    start_at: StrictStr | None = None
    recurrence: StrictStr | dict[str, Any] | None = None
    targets: dict[str, Any] | None = None
    volume: StrictInt | float | None = None  # range checked by the service, in Vietnamese


Number = StrictInt | StrictFloat  # an integral float (80.0) is accepted, as it always was


class BroadcastIn(BaseModel):
    """A bulletin to create (``POST /broadcasts``, ``/broadcasts/check``).

    The model fixes the fields and their types; what depends on meaning (exactly one source,
    a time in the future, places in the sender's scope, ranges) is checked by
    ``scheduler.request.parse_request``, the one parser the CLI uses too, with a Vietnamese
    sentence each. A field of the wrong type answers the sentence the parser gave for it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Thông báo tiêm chủng",
                    "tts_text": "Sáng mai tiêm chủng tại trạm y tế xã.",
                    "targets": {"communes": [1]},
                    "start_at": "2025-03-01T06:00:00+07:00",
                    "priority": "normal",
                    "volume": 80,
                    "repeat": 2,
                }
            ]
        },
    )
    refusals: ClassVar[dict[str, str]] = {
        "title": "Thiếu tiêu đề bản tin («title»).",
        "tts_text": "Nội dung cần đọc («tts_text») đang trống.",
        "content_id": "«content_id» không hợp lệ.",
        "stream": "«stream» phải là true hoặc false.",
        "stream_url": "«stream_url» phải là địa chỉ http(s) của luồng phát trực tiếp.",
        "language": "«language» không hợp lệ.",
        "voice": "«voice» phải là tên giọng đọc / bộ đọc (chuỗi ngắn).",
        "engine": "«engine» phải là tên giọng đọc / bộ đọc (chuỗi ngắn).",
        "targets": "«targets» phải là một đối tượng {communes, villages, nodes}.",
        "start_at": (
            '«start_at» phải là ngày giờ ISO 8601 (ví dụ 2026-12-05T06:00:00+07:00) hoặc "now".'
        ),
        "recurrence": "«recurrence» cần trường «rrule», ví dụ FREQ=DAILY.",
        "priority": (
            "Mức ưu tiên phải là normal (thường), priority (ưu tiên) hoặc emergency (khẩn cấp)."
        ),
        "volume": "Âm lượng («volume») phải là số nguyên từ 0 đến 100.",
        "repeat": "Số lần phát lặp («repeat») phải là số nguyên từ 1 đến 20.",
        "confirm": "«confirm» phải là true hoặc false.",
        "draft": "«draft» phải là true hoặc false.",
        "duration_s": (
            "Thời lượng phát trực tiếp («duration_s») phải là số nguyên từ 10 đến 21600."
        ),
        "tone": ("Tín hiệu cảnh báo («tone») phải là một đối tượng {hz, on_ms, off_ms, count}."),
    }
    title: StrictStr | None = None
    tts_text: StrictStr | None = None
    content_id: StrictStr | None = None
    stream: StrictBool | None = None
    stream_url: StrictStr | None = None
    language: StrictStr | None = None
    voice: StrictStr | None = None
    engine: StrictStr | None = None
    targets: dict[str, Any] | None = None
    start_at: StrictStr | None = None
    recurrence: StrictStr | dict[str, Any] | None = None
    priority: StrictStr | None = None
    volume: Number | None = None
    repeat: Number | None = None
    confirm: StrictBool | None = None
    draft: StrictBool | None = None
    duration_s: Number | None = None
    # A warning tone the nodes make before the content (docs/protocol.md, ``play.tone``).
    tone: dict[str, Any] | None = None


class BroadcastEditIn(BaseModel):
    """The changes of an edit (``POST /broadcasts/{id}/edit``): only the fields an edit may
    change (``scheduler.control.EDITABLE``), typed as for a new bulletin and refused with the
    same sentences; a field left out keeps its value. The merged bulletin is checked by
    ``parse_request`` as a new one is."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"title": "Sửa"}]})
    refusals: ClassVar[dict[str, str]] = BroadcastIn.refusals
    unknown_refusal: ClassVar[str] = "Không sửa được: {names}."
    title: StrictStr | None = None
    tts_text: StrictStr | None = None
    content_id: StrictStr | None = None
    targets: dict[str, Any] | None = None
    start_at: StrictStr | None = None
    recurrence: StrictStr | dict[str, Any] | None = None
    priority: StrictStr | None = None
    language: StrictStr | None = None
    volume: Number | None = None
    repeat: Number | None = None
    confirm: StrictBool | None = None
