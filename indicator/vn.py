"""How indicator 8.3 figures are written in Vietnamese documents.

Decimal comma ("89,9%"), thousands dot ("1.234"), language names, the way a village is
called in a sentence, and the administrative date line of Nghị định 30/2020/NĐ-CP (day
below 10 and months 1-2 get a leading zero: "ngày 05 tháng 01 năm 2027", "ngày 15 tháng 3
năm 2027")."""

from __future__ import annotations

import math
from functools import lru_cache

from loa.text import fold
from loa.timeutil import ms_to_dt

LANGUAGE_NAMES = {
    "vi": "Tiếng Việt",
    "tay": "Tiếng Tày",
    "nung": "Tiếng Nùng",
    "dao": "Tiếng Dao",
    "other": "Khác",
}
LANGUAGE_ORDER = tuple(LANGUAGE_NAMES)

STATE_NAMES = {
    "online": "Hoạt động",
    "degraded": "Suy giảm",
    "offline": "Mất kết nối",
    "unknown": "Chưa rõ",
}
STATE_ORDER = tuple(STATE_NAMES)

STATION_NAMES = {"ip": "IP", "fm": "FM", "wired": "Hữu tuyến", "none": "Chưa có"}

# A name that already starts with its kind of settlement is not prefixed with "Thôn".
_SETTLEMENT_WORDS = ("thon ", "khoi ", "to dan pho ", "khu ", "xom ", "ap ", "lang ", "pho ")


def language_key(code: str | None) -> str:
    code = (code or "").strip().lower()
    return code if code in LANGUAGE_NAMES else "other"


def number(value: float, decimals: int = 1) -> str:
    """``1234.5`` -> ``"1.234,5"``; trailing ",0" dropped."""
    text = f"{value:,.{decimals}f}".replace(",", "\0").replace(".", ",").replace("\0", ".")
    if "," in text:
        text = text.rstrip("0").rstrip(",")
    return text


def percent(share: float | None) -> str:
    """A share 0-1 as a percentage, truncated (not rounded) to one decimal, so a village at
    89,96% reads "89,9%" and never "90%" next to a 90% threshold it failed."""
    if share is None:
        return "—"
    tenths = math.floor(share * 1000 + 1e-9)
    return number(tenths / 10, 1) + "%"


def hours(ms: int) -> str:
    return number(ms / 3_600_000, 1)


@lru_cache(maxsize=65_536)
def village_title(name: str) -> str:
    """ "Bản Cắm" -> "Thôn Bản Cắm"; "Khối 3" stays "Khối 3". Kept per name: a province
    evaluation asks it for every village of every part (folding is the cost)."""
    folded = fold(name) + " "
    if folded.startswith(_SETTLEMENT_WORDS):
        return name
    return f"Thôn {name}"


def admin_date_line(place: str, at_ms: int) -> str:
    """ "Lạng Sơn, ngày 05 tháng 10 năm 2026" (Nghị định 30/2020/NĐ-CP, Phụ lục I)."""
    d = ms_to_dt(at_ms).date()
    day = f"{d.day:02d}"
    mon = f"{d.month:02d}" if d.month < 3 else str(d.month)
    return f"{place}, ngày {day} tháng {mon} năm {d.year}"


def province_place(name: str) -> str:
    """ "Tỉnh Lạng Sơn" -> "Lạng Sơn" for the date line."""
    for prefix in ("Tỉnh ", "tỉnh ", "Thành phố ", "TP. ", "TP "):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def province_heading(name: str) -> str:
    """ "Lạng Sơn" -> "UBND TỈNH LẠNG SƠN" (a city province: "UBND THÀNH PHỐ ...")."""
    place = province_place(name)
    kind = "THÀNH PHỐ" if name.startswith(("Thành phố", "TP")) else "TỈNH"
    return f"UBND {kind} {place.upper()}"
