"""Field rules shared by the service, the importer and the API.

One place decides what a valid code or name is, so an import file, a CLI argument and a
REST body are refused with the same Vietnamese sentence."""

from __future__ import annotations

import math
import re
import unicodedata

from loa.protocol import NODE_ID_RE
from loa.text import is_formula_like
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
