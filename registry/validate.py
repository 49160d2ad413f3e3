"""Field rules shared by the service, the importer and the API.

One place decides what a valid code or name is, so an import file, a CLI argument and a
REST body are refused with the same Vietnamese sentence."""

from __future__ import annotations

import math
import re
import unicodedata

from loa.protocol import NODE_ID_RE
from loa.text import decimal_vi, is_formula_like
from registry.errors import InvalidInputError

# Noun used in messages ("mã xã", "tên thôn") for each kind of unit.
KIND_NOUN = {
    "province": "tỉnh",
    "district": "huyện",
    "commune": "xã",
    "village": "thôn",
    "node": "cụm",
}

# (min, max) code length by kind; node ids follow the protocol (they are MQTT client ids).
CODE_LENGTH = {
    "province": (2, 32),
    "district": (2, 32),
    "commune": (2, 32),
    "village": (2, 48),
    "node": (3, 64),
}
_CODE_RE = {
    kind: re.compile(rf"^[A-Za-z0-9_-]{{{lo},{hi}}}$") for kind, (lo, hi) in CODE_LENGTH.items()
}
_CODE_RE["node"] = NODE_ID_RE

STATION_KINDS = ("ip", "fm", "wired")
MAX_NAME = 200
MAX_LABEL = 200
MAX_SPEAKERS = 4  # a cluster drives 1-4 loudspeakers (see Node)
_SPACES = re.compile(r"\s+")


def code_rule(kind: str) -> str:
    lo, hi = CODE_LENGTH[kind]
    return f"{lo}-{hi} ký tự A-Z a-z 0-9 _ -"


def check_code(kind: str, value: object) -> str:
    """A code as stored: exactly as given (codes are identifiers, never folded)."""
    noun = KIND_NOUN[kind]
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"thiếu mã {noun}")
    if not _CODE_RE[kind].match(value):
        raise InvalidInputError(f"mã {noun} '{value}' không hợp lệ ({code_rule(kind)})")
    return value


def clean_text(value: str) -> str:
    """NFC and single spaces: the same name typed with two input methods compares equal."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", value)).strip()


def _no_formula(text: str, what: str) -> str:
    """Names end up in exported CSV files opened in spreadsheets, where a leading = + - @ (or
    a tab, a carriage return) would run as a formula; no real place name starts that way.
    Exports are guarded as well (``loa.text.spreadsheet_safe``), for names stored before."""
    if is_formula_like(text):
        raise InvalidInputError(
            f"{what} không được bắt đầu bằng dấu =, +, -, @ hoặc ký tự tab/xuống dòng"
        )
    return text


def check_name(kind: str, value: object) -> str:
    noun = KIND_NOUN[kind]
    if not isinstance(value, str) or not clean_text(value):
        raise InvalidInputError(f"thiếu tên {noun}")
    name = clean_text(value)
    if len(name) > MAX_NAME:
        raise InvalidInputError(f"tên {noun} dài quá {MAX_NAME} ký tự")
    return _no_formula(name, f"tên {noun}")


def check_label(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInputError("nhãn cụm phải là chữ")
    label = clean_text(value)
    if len(label) > MAX_LABEL:
        raise InvalidInputError(f"nhãn cụm dài quá {MAX_LABEL} ký tự")
    return _no_formula(label, "nhãn cụm")


def check_station_kind(value: object) -> str:
    if not isinstance(value, str) or value.strip().lower() not in STATION_KINDS:
        raise InvalidInputError(f"loại đài '{value}' không hợp lệ (ip, fm hoặc wired)")
    return value.strip().lower()


def _check_coordinate(value: object, noun: str, limit: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{noun} '{value}' không phải là số")
    number = float(value)
    if not math.isfinite(number) or not -limit <= number <= limit:
        raise InvalidInputError(f"{noun} {number:g} nằm ngoài khoảng -{limit:g}..{limit:g}")
    return round(number, 6)


def check_lat(value: object) -> float | None:
    return _check_coordinate(value, "vĩ độ", 90)


def check_lon(value: object) -> float | None:
    return _check_coordinate(value, "kinh độ", 180)


def check_speakers(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SPEAKERS:
        raise InvalidInputError(f"số loa '{value}' không hợp lệ (số nguyên 1-{MAX_SPEAKERS})")
    return value


def check_heartbeat_s(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 5 <= value <= 3600:
        raise InvalidInputError(f"chu kỳ heartbeat '{value}' không hợp lệ (5-3600 giây)")
    return value


def check_vendor(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(clean_text(value)) > 100:
        raise InvalidInputError("hãng sản xuất phải là chữ, tối đa 100 ký tự")
    return _no_formula(clean_text(value), "hãng sản xuất")


# Vietnam's territory, the Hoàng Sa and Trường Sa archipelagos included (degrees, WGS 84):
# a cluster placed by hand outside it is a typing mistake (lat/lon swapped, a sign or a
# decimal lost), not a loudspeaker. Mainland extremes: 8.4 N (Mũi Cà Mau) to 23.4 N (Lũng
# Cú), 102.1 E (A Pa Chải) to 109.5 E (Mũi Đôi); the islands reach 7 N and 117 E.
VN_LAT = (7.0, 23.5)
VN_LON = (102.0, 117.5)
_COORD_TEXT = re.compile(r"^[+-]?\d{1,3}([.,]\d+)?$")


def _coordinate_text(value: object, noun: str, example: str) -> float | None:
    """A coordinate typed in a form: ``21.8537`` or ``21,8537``; empty is None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise InvalidInputError(f"{noun} '{value}' không phải là số (ví dụ {example})")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        if not _COORD_TEXT.match(text):
            raise InvalidInputError(
                f"{noun} '{text[:40]}' không phải là số thập phân (ví dụ {example})"
            )
        number = float(text.replace(",", "."))
    if not math.isfinite(number):
        raise InvalidInputError(f"{noun} '{value}' không phải là số (ví dụ {example})")
    return number


def check_vn_position(lat: object, lon: object) -> tuple[float | None, float | None]:
    """A cluster's position set by hand (web, API): both or neither (clearing it), inside
    Vietnam (``VN_LAT``/``VN_LON``), rounded to 6 decimals (about 0.1 m)."""
    la = _coordinate_text(lat, "Vĩ độ", "21,8537")
    lo = _coordinate_text(lon, "Kinh độ", "106,7610")
    if la is None and lo is None:
        return None, None
    if la is None or lo is None:
        raise InvalidInputError(
            "Cần nhập cả vĩ độ và kinh độ (hoặc để trống cả hai để xoá toạ độ)."
        )
    lat_ok = VN_LAT[0] <= la <= VN_LAT[1]
    lon_ok = VN_LON[0] <= lo <= VN_LON[1]
    if not (lat_ok and lon_ok):
        if VN_LAT[0] <= lo <= VN_LAT[1] and VN_LON[0] <= la <= VN_LON[1]:
            raise InvalidInputError(
                f"Vĩ độ {decimal_vi(la)} và kinh độ {decimal_vi(lo)} có vẻ bị nhập đảo: "
                f"ở Việt Nam vĩ độ (Bắc) từ {decimal_vi(VN_LAT[0])} đến "
                f"{decimal_vi(VN_LAT[1])}, kinh độ (Đông) từ {decimal_vi(VN_LON[0])} đến "
                f"{decimal_vi(VN_LON[1])}."
            )
        if not lat_ok:
            raise InvalidInputError(
                f"Vĩ độ {decimal_vi(la)} nằm ngoài lãnh thổ Việt Nam "
                f"(từ {decimal_vi(VN_LAT[0])} đến {decimal_vi(VN_LAT[1])} độ Bắc)."
            )
        raise InvalidInputError(
            f"Kinh độ {decimal_vi(lo)} nằm ngoài lãnh thổ Việt Nam "
            f"(từ {decimal_vi(VN_LON[0])} đến {decimal_vi(VN_LON[1])} độ Đông)."
        )
    return round(la, 6), round(lo, 6)
