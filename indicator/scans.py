"""Scanned records of FM/wired station inspections: checked, stored, read back.

An attestation is a paper record an inspector signed; the scan is what a province shows an
auditor. It is checked by *content*, not by its name or the type the browser claims: a
PDF starts with ``%PDF-`` and ends with ``%%EOF``; a PNG has its 8-byte signature, an
``IHDR`` first chunk and an ``IEND`` last chunk; a JPEG starts with an SOI marker
(``FF D8 FF``) and ends with EOI (``FF D9``). A truncated upload therefore fails as
clearly as a renamed ``.exe``. Scans are kept in the database (``AttestationScan``) so the
attestation, its scan and the audit row commit together and one backup holds them all.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from sqlalchemy import select
from sqlalchemy.orm import Session

from indicator.errors import InvalidInputError, NotFoundError
from indicator.models import AttestationScan, ManualAttestation
from loa.timeutil import format_datetime, now_ms

MAX_SCAN_BYTES = 10 * 1024 * 1024  # a multi-page 300 dpi scan fits; a film does not
EXTENSIONS = {"application/pdf": "pdf", "image/jpeg": "jpg", "image/png": "png"}
KIND_NAMES = {"application/pdf": "PDF", "image/jpeg": "JPEG", "image/png": "PNG"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MSG_TYPE = (
    "Tệp biên bản phải là bản quét PDF, JPEG hoặc PNG (nội dung tệp '{name}' không "
    "phải định dạng nào trong số đó)."
)


def sniff(data: bytes) -> str | None:
    """The media type ``data`` really is (PDF, JPEG, PNG, complete), or None."""
    tail = data[-2048:].rstrip(b"\x00\r\n\t ")
    if data.startswith(b"%PDF-") and b"%%EOF" in tail[-1024:]:
        return "application/pdf"
    if (
        data.startswith(PNG_SIGNATURE)
        and data[12:16] == b"IHDR"
        and tail.endswith(b"IEND\xaeB`\x82")
    ):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff") and tail.endswith(b"\xff\xd9"):
        return "image/jpeg"
    return None


def _safe_filename(name: str, media_type: str) -> str:
    """A name fit for a Content-Disposition header and a folder: letters (Vietnamese kept),
    digits, dot, dash, underscore; the extension is the one of the real type."""
    base = unicodedata.normalize("NFC", (name or "").replace("\\", "/").rsplit("/", 1)[-1])
    base = base.rsplit(".", 1)[0] if "." in base else base
    base = re.sub(r"[^\w.-]+", "_", base, flags=re.UNICODE).strip("._")[:120] or "bien-ban"
    return f"{base}.{EXTENSIONS[media_type]}"


def check_scan(data: bytes, filename: str) -> str:
    """The real media type of an uploaded scan, or a Vietnamese error naming what is wrong."""
    shown = (filename or "").rsplit("/", 1)[-1][:80] or "tệp tải lên"
    if not data:
        raise InvalidInputError(f"Tệp biên bản '{shown}' rỗng.")
    if len(data) > MAX_SCAN_BYTES:
        raise InvalidInputError(
            f"Tệp biên bản '{shown}' lớn {len(data) / 1048576:.1f} MB, vượt giới hạn "
            f"{MAX_SCAN_BYTES // 1048576} MB."
        )
    media_type = sniff(data)
    if media_type is None:
        raise InvalidInputError(MSG_TYPE.format(name=shown))
    return media_type


def add_scan(
    session: Session,
    attestation: ManualAttestation,
    data: bytes,
    filename: str,
    *,
    by: str = "",
    at_ms: int | None = None,
) -> AttestationScan:
    """Check and store one scan for ``attestation`` (in the caller's transaction)."""
    media_type = check_scan(data, filename)
    row = AttestationScan(
        attestation_id=attestation.id,
        filename=_safe_filename(filename, media_type),
        media_type=media_type,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
        created_ms=now_ms() if at_ms is None else at_ms,
        created_by=by[:64],
    )
    session.add(row)
    session.flush()
    return row


def get_scan(session: Session, scan_id: int) -> AttestationScan:
    row = session.get(AttestationScan, scan_id)
    if row is None:
        raise NotFoundError(f"Không tìm thấy bản quét biên bản số {scan_id}.")
    return row


def scans_of(session: Session, attestation_ids: list[int]) -> dict[int, list[AttestationScan]]:
    """attestation -> its scans (metadata and data; few rows, a handful of MB)."""
    out: dict[int, list[AttestationScan]] = {}
    ids = sorted(set(attestation_ids))
    for i in range(0, len(ids), 900):
        for row in session.scalars(
            select(AttestationScan)
            .where(AttestationScan.attestation_id.in_(ids[i : i + 900]))
            .order_by(AttestationScan.id)
        ):
            out.setdefault(row.attestation_id, []).append(row)
    return out


def scan_as_dict(row: AttestationScan) -> dict:
    return {
        "id": row.id,
        "attestation_id": row.attestation_id,
        "filename": row.filename,
        "media_type": row.media_type,
        "kind": KIND_NAMES[row.media_type],
        "size_bytes": row.size_bytes,
        "sha256": row.sha256,
        "uploaded_at": format_datetime(row.created_ms) if row.created_ms else None,
        "uploaded_by": row.created_by or None,
        "url": f"/api/v1/attestations/{row.attestation_id}/scans/{row.id}",
    }


def evidence_name(row: AttestationScan) -> str:
    """The scan's file name inside an evidence folder (unique, says which attestation)."""
    return f"scans/attestation-{row.attestation_id}-scan-{row.id}.{EXTENSIONS[row.media_type]}"
