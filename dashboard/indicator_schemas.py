"""Request and response models of the indicator API (``routes/indicators.py``), apart from
the tables. Requests are strict (a number is a number, unknown fields are refused); the
responses are what ``indicator.evaluate.evaluation_as_dict`` and friends produce, field by
field (a test validates real answers against them with extra fields forbidden, so the
documentation cannot drift from the answers).

``VietnameseValidationRoute`` turns FastAPI's request validation errors on these routes into
one Vietnamese sentence that names the field (``dashboard.validation``), as the rest of the
indicator API answers.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from dashboard.validation import VietnameseRequestRoute

# --------------------------------------------------------------------------- requests

FIELD_LABELS = {
    "availability_threshold": "Ngưỡng khả dụng",
    "aired_threshold": "Ngưỡng tỉ lệ phát",
    "coverage_threshold": "Ngưỡng thời gian giám sát",
    "broadcasts_per_week_min": "Số buổi phát tối thiểu mỗi tuần",
    "default_period": "Kỳ mặc định",
    "inspector": "Tên người kiểm tra",
    "valid_until": "Ngày hết hiệu lực",
    "attested_on": "Ngày kiểm tra",
    "note": "Ghi chú",
    "station_kind": "Loại đài",
    "indicator_code": "Mã chỉ tiêu",
    "indicator_text": "Nội dung chỉ tiêu",
    "name": "Tên bộ tiêu chí",
    "legal_basis": "Căn cứ pháp lý",
    "scan": "Tệp biên bản",
    "period": "Kỳ báo cáo",
    "scope": "Phạm vi",
    "format": "Định dạng",
}


THRESHOLDS = ("availability_threshold", "aired_threshold", "coverage_threshold")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    # A share refused for its type says what a share is (the one sentence it always gave).
    refusals: ClassVar[dict[str, str]] = {
        name: f"{FIELD_LABELS[name]} phải là một số từ 0 đến 1 (ví dụ 0.9 cho 90%)."
        for name in THRESHOLDS
    }


class SettingsIn(_Request):
    """Changes to the province's thresholds (shares 0-1; fields left out stay)."""

    availability_threshold: float | None = None
    aired_threshold: float | None = None
    broadcasts_per_week_min: int | None = None
    default_period: str | None = Field(None, max_length=60)
    coverage_threshold: float | None = None


class LetterheadIn(_Request):
    """Changes to the letterhead of filed reports (Nghị định 30/2020/NĐ-CP)."""

    superior: str | None = None
    issuer: str | None = None
    number_symbol: str | None = None
    place: str | None = None
    signer_authority: str | None = None
    signer_title: str | None = None
    signer_name: str | None = None
    recipients: str | None = None


class CriteriaIn(_Request):
    """What the province enters for a criteria set (the 2026-2030 annex)."""

    indicator_code: str | None = None
    indicator_text: str | None = None
    name: str | None = None
    legal_basis: str | None = None
    availability_threshold: float | None = None
    aired_threshold: float | None = None
    broadcasts_per_week_min: int | None = None


class AttestationIn(_Request):
    """An inspection of a FM/wired station; dates dd/mm/yyyy (Asia/Ho_Chi_Minh)."""

    inspector: str | None = None
    valid_until: str | None = None
    attested_on: str | None = None
    note: str | None = None
    station_kind: Literal["fm", "wired", ""] | None = None


# --------------------------------------------------------------------------- responses


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SettingsOut(_Out):
    availability_threshold: float
    aired_threshold: float
    broadcasts_per_week_min: int
    default_period: str
    coverage_threshold: float
    changed_at: str | None
    changed_by: str | None


class LetterheadOut(_Out):
    superior: str
    issuer: str
    number_symbol: str
    place: str
    signer_authority: str
    signer_title: str
    signer_name: str
    recipients: str


class CriteriaOut(_Out):
    key: str
    code: str
    name: str
    legal_basis: str
    indicator_text: str
    label: str
    valid_from: str
    valid_to: str | None
    availability_threshold: float | None
    aired_threshold: float | None
    broadcasts_per_week_min: int | None
    changed_by: str | None


class CriteriaList(_Out):
    items: list[CriteriaOut]


class ScanOut(_Out):
    id: int
    attestation_id: int
    filename: str
    media_type: Literal["application/pdf", "image/jpeg", "image/png"]
    kind: str
    size_bytes: int
    sha256: str
    uploaded_at: str | None
    uploaded_by: str | None
    url: str


class AttestationOut(_Out):
    id: int
    commune_id: int
    attested_on: str
    valid_until: str
    inspector: str
    note: str
    station_kind: str
    created_by: str
    scans: list[ScanOut] = []


class AttestationList(_Out):
    commune_id: int
    commune: str
    items: list[AttestationOut]


class ReasonOut(_Out):
    code: str
    text: str
    level: str
    village_id: int | None
    value: float | None
    threshold: float | None
    detail: dict[str, Any]


class ClusterEvidenceOut(_Out):
    node_id: str
    placed_ms: int
    available_ms: int
    availability: float
    observed_ms: int
    bridged_ms: int


class ContinuityOut(_Out):
    node_id: str
    from_ms: int
    to_ms: int
    text: str


class VillageOut(_Out):
    id: int
    code: str
    name: str
    passed: bool | None
    verdict: str
    verdict_text: str
    coverage: float | None
    coverage_text: str | None
    in_service_from: str | None
    observed_hours: float
    continuity: list[ContinuityOut]
    availability: float | None
    aired_ratio: float | None
    aimed: int
    played: int
    clusters: list[ClusterEvidenceOut]
    reasons: list[ReasonOut]


class PredecessorOut(_Out):
    id: int
    code: str
    name: str
    merged_on: str


class WeekOut(_Out):
    from_: str = Field(alias="from")
    to: str
    airings: int


class AttestationBrief(_Out):
    id: int
    attested_on: str
    valid_until: str
    inspector: str
    note: str
    station_kind: str


Verdict = Literal["pass", "fail", "insufficient_data", "not_in_service"]


class CommuneOut(_Out):
    id: int
    code: str
    name: str
    district: str | None
    station_kind: str
    station: str
    passed: bool
    predecessors: list[PredecessorOut]
    verdict: Verdict
    verdict_text: str
    coverage: float | None
    coverage_text: str | None
    in_service_from: str | None
    manual: bool
    reasons: list[ReasonOut]
    clusters: int
    clusters_by_state: dict[str, int]
    airings: int
    hours_aired: float
    hours_by_language: dict[str, float]
    weeks: list[WeekOut]
    attestation: AttestationBrief | None
    villages: list[VillageOut]


class PeriodOut(_Out):
    key: str
    label: str
    from_: str = Field(alias="from")
    to: str
    start_ms: int
    end_ms: int
    complete: bool


class ThresholdsOut(_Out):
    availability: float
    aired: float
    broadcasts_per_week_min: int
    default_period: str
    changed_ms: int
    changed_by: str
    coverage: float


class WatchGapOut(_Out):
    from_: str = Field(alias="from")
    to: str
    from_ms: int
    to_ms: int


class FailingOut(_Out):
    id: int
    code: str
    name: str
    reasons: list[str]


class DistrictOut(_Out):
    id: int
    name: str
    total: int
    passed: int
    text: str


class SummaryOut(_Out):
    total: int
    passed: int
    failed: int
    manual: int
    text: str
    stations: dict[str, int]
    failing: list[FailingOut]
    insufficient_data: int
    not_in_service: int
    observed: float | None
    districts: list[DistrictOut]
    airings: int
    hours_aired: float
    hours_by_language: dict[str, float]
    clusters_by_state: dict[str, int]
    hours_aired_text: str


class SplitOut(_Out):
    text: str | None
    parts: list[EvaluationOut]


class EvaluationOut(_Out):
    """A verdict for every commune of the scope, the criteria set that judged it, and (for a
    period spanning two sets) every part."""

    period: PeriodOut
    criteria: CriteriaOut | None
    split: SplitOut | None
    scope: str
    province: str
    evaluated_ms: int
    thresholds: ThresholdsOut
    observed: float | None
    watch_gaps: list[WatchGapOut]
    summary: SummaryOut
    communes: list[CommuneOut]


SplitOut.model_rebuild()


# --------------------------------------------------------------------------- errors


class VietnameseValidationRoute(VietnameseRequestRoute):
    """Every request error of the indicator API answered 422 in Vietnamese, naming the field
    by its Vietnamese label (``dashboard.validation``, the one builder of these sentences)."""

    labels = FIELD_LABELS
    label_format = "Trường {}"
    unknown_refusal = "Trường không được hỗ trợ: {names} (được phép: {allowed})."
