"""Tables of indicator 8.3: the province's thresholds and manual attestations.

Verdicts are never stored: they are recomputed from the telemetry and the register each
time, so a change of threshold re-evaluates every period and rewrites nothing. The
thresholds themselves are append-only (one row per change) so a report can say which
figures it applied and who set them.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import JSON, Date, Float, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from loa.db import Base


class ProvinceIndicatorSettings(Base):
    """One version of the thresholds; the row with the highest id is in force."""

    __tablename__ = "indicator_settings"
    id: Mapped[int] = mapped_column(primary_key=True)
    # A village passes when one of its clusters was available this share of the period...
    availability_threshold: Mapped[float] = mapped_column(Float, default=0.90)
    # ...and played this share of the broadcasts aimed at it.
    aired_threshold: Mapped[float] = mapped_column(Float, default=0.80)
    # The station operates when every week of the period has at least this many airings.
    broadcasts_per_week_min: Mapped[int] = mapped_column(default=1)
    default_period: Mapped[str] = mapped_column(String(40), default="last30")
    # A verdict needs Loa to have observed at least this share of the in-service time;
    # below it the answer is "không đủ dữ liệu", never pass or fail.
    coverage_threshold: Mapped[float] = mapped_column(Float, default=0.90, server_default="0.9")
    changed_ms: Mapped[int] = mapped_column(default=0)
    changed_by: Mapped[str] = mapped_column(String(64), default="")


class ManualAttestation(Base):
    """An inspector's record that a wired or FM station (no telemetry) works and reaches
    the villages; it holds from ``attested_on`` to ``valid_until`` (calendar days, ICT)."""

    __tablename__ = "manual_attestation"
    __table_args__ = (Index("ix_attestation_commune_until", "commune_id", "valid_until"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    commune_id: Mapped[int] = mapped_column(ForeignKey("commune.id"))
    attested_on: Mapped[date] = mapped_column(Date)
    valid_until: Mapped[date] = mapped_column(Date)
    inspector: Mapped[str] = mapped_column(String(200))
    note: Mapped[str] = mapped_column(String(2000), default="")
    station_kind: Mapped[str] = mapped_column(String(8))  # "fm" | "wired"
    created_ms: Mapped[int] = mapped_column(default=0)
    created_by: Mapped[str] = mapped_column(String(64), default="")


class CriteriaSet(Base):
    """A national criteria set as the province applies it: its legal basis, the code and
    wording of the radio indicator in it, the dates it is in force, and (optionally) its
    own thresholds; None falls back to the province's thresholds. Rows override the sets
    Loa ships (``indicator.criteria.BUILT_IN``) key by key."""

    __tablename__ = "indicator_criteria"
    key: Mapped[str] = mapped_column(String(16), primary_key=True)  # "2026-2030"
    name: Mapped[str] = mapped_column(String(300))
    legal_basis: Mapped[str] = mapped_column(String(500))
    indicator_code: Mapped[str] = mapped_column(String(32), default="")
    indicator_text: Mapped[str] = mapped_column(String(500), default="")
    valid_from: Mapped[date] = mapped_column(Date)
    valid_to: Mapped[date | None] = mapped_column(Date)
    availability_threshold: Mapped[float | None] = mapped_column(Float)
    aired_threshold: Mapped[float | None] = mapped_column(Float)
    broadcasts_per_week_min: Mapped[int | None]
    changed_ms: Mapped[int] = mapped_column(default=0)
    changed_by: Mapped[str] = mapped_column(String(64), default="")


class ReportSettings(Base):
    """One version of the province's letterhead for filed reports (issuing body, superior,
    number symbol, place, signer, recipients), as JSON; the row with the highest id is in
    force, older rows stay for the record."""

    __tablename__ = "report_settings"
    id: Mapped[int] = mapped_column(primary_key=True)
    doc: Mapped[dict] = mapped_column(JSON)
    changed_ms: Mapped[int] = mapped_column(default=0)
    changed_by: Mapped[str] = mapped_column(String(64), default="")


class AttestationScan(Base):
    """The scanned paper record of an inspection (PDF, JPEG or PNG), kept in the database
    beside the attestation it proves: one backup holds both, the scan commits in the same
    transaction as the attestation and its audit row, and ``loa report --evidence`` copies
    it next to the CSV rows. Checked by content (not by name) when it is received."""

    __tablename__ = "attestation_scan"
    id: Mapped[int] = mapped_column(primary_key=True)
    attestation_id: Mapped[int] = mapped_column(ForeignKey("manual_attestation.id"), index=True)
    filename: Mapped[str] = mapped_column(String(200))
    media_type: Mapped[str] = mapped_column(String(40))
    size_bytes: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_ms: Mapped[int] = mapped_column(default=0)
    created_by: Mapped[str] = mapped_column(String(64), default="")
