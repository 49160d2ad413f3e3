"""The province's own abbreviations, added from the web (issue 18).

They are stored in the database (one list for every process of the installation) and read
over the shipped ``abbreviations_vi.tsv`` and the province's file. ``ContentStore.tts``
rebuilds its normaliser when this list changes, so a new entry is read out correctly from
the next preview or bulletin on, without a restart."""

from __future__ import annotations

import re
import unicodedata

from sqlalchemy import select
from sqlalchemy.orm import Session

from broadcasts.errors import ContentError
from broadcasts.models import TtsAbbreviation
from loa.db import upsert
from loa.timeutil import now_ms

MAX_ABBR = 40
MAX_SPOKEN = 200
MSG_BAD_ABBR = f"Từ viết tắt phải có 1–{MAX_ABBR} ký tự, không chứa dấu tab."
MSG_BAD_SPOKEN = (
    f"Cách đọc phải là chữ (1–{MAX_SPOKEN} ký tự), viết như khi nói, ví dụ «ban quản lý dự án»."
)
_ABBR = re.compile(r"[^\s\t]+(?: [^\s\t]+){0,2}")
_SPOKEN = re.compile(r"[^\W\d_]+(?:[ ,][^\W\d_]+)*,?")


def _clean(text: object) -> str:
    return unicodedata.normalize("NFC", " ".join(str(text or "").split()))


def check(abbr: object, spoken: object) -> tuple[str, str]:
    """A written form (no tabs, at most three words) and how to say it (words only: the
    spoken form is what the voice reads, so digits and symbols there would be read
    literally)."""
    a, s = _clean(abbr), _clean(spoken)
    if not a or len(a) > MAX_ABBR or not _ABBR.fullmatch(a):
        raise ContentError(
            "bad_abbreviation",
            MSG_BAD_ABBR,
            f"The abbreviation must be 1-{MAX_ABBR} characters, no tabs.",
        )
    if not s or len(s) > MAX_SPOKEN or not _SPOKEN.fullmatch(s):
        raise ContentError(
            "bad_spoken",
            MSG_BAD_SPOKEN,
            "The spoken form must be words only, as they are said.",
        )
    return a, s.lower()


def custom(s: Session) -> dict[str, str]:
    return {row.abbr: row.spoken for row in s.scalars(select(TtsAbbreviation))}


def listing(s: Session) -> list[dict]:
    return [
        {"id": r.id, "abbr": r.abbr, "spoken": r.spoken, "created_by": r.created_by}
        for r in s.scalars(select(TtsAbbreviation).order_by(TtsAbbreviation.abbr))
    ]


def add(s: Session, abbr: object, spoken: object, username: str) -> dict:
    """Add or replace (same written form) one entry."""
    a, sp = check(abbr, spoken)
    # One statement: the same written form sent twice at once (two officers, a browser
    # retry) is a replace, not a unique-constraint failure.
    upsert(
        s,
        TtsAbbreviation,
        [{"abbr": a, "spoken": sp, "created_by": username, "created_ms": now_ms()}],
        ["abbr"],
    )
    found = select(TtsAbbreviation).where(TtsAbbreviation.abbr == a)
    row = s.scalars(found.execution_options(populate_existing=True)).one()
    return {"id": row.id, "abbr": row.abbr, "spoken": row.spoken, "created_by": username}


def remove(s: Session, entry_id: int) -> bool:
    row = s.get(TtsAbbreviation, entry_id)
    if row is None:
        return False
    s.delete(row)
    return True
