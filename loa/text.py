"""Vietnamese text helpers shared by search and imports."""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")


def fold(text: str) -> str:
    """Diacritic- and case-insensitive key: "Đội Cấn" and "doi  can" both give "doi can".

    NFD strips the combining marks; đ/Đ are letters of their own in Unicode, so they are
    mapped by hand."""
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SPACES.sub(" ", stripped).strip().lower()


def decimal_vi(value: float) -> str:
    """A number as Vietnamese writes it, shortest form and a decimal comma: 20.0 -> "20",
    21.5 -> "21,5" (for messages and labels people read)."""
    return f"{value:g}".replace(".", ",")


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", fold(text)).strip("-")


# A spreadsheet runs a cell that starts with one of these as a formula (a leading tab or
# carriage return is dropped by some, leaving the formula behind): "-2+3+cmd|' /C calc'!A0".
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def is_formula_like(text: str) -> bool:
    return text[:1] in FORMULA_STARTS


def spreadsheet_safe(value: object) -> object:
    """The one guard for every text cell Loa writes to CSV or XLSX (OWASP "CSV injection"):
    a text that a spreadsheet would run as a formula is written with a leading apostrophe,
    which spreadsheets show as text. Numbers are left alone (-105 dBm stays a number);
    ``spreadsheet_text`` undoes it when Loa reads its own export back."""
    if isinstance(value, str) and is_formula_like(value):
        return "'" + value
    return value


def spreadsheet_text(text: str) -> str:
    """The inverse of ``spreadsheet_safe`` for a cell read from a CSV file."""
    if text.startswith("'") and is_formula_like(text[1:]):
        return text[1:]
    return text
