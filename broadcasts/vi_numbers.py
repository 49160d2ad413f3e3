"""Vietnamese number reading, as an announcer says it.

The rules that make a number sound right and that a generic library gets wrong:
- a zero tens digit after hundreds is "linh" (north) or "lẻ" (south): 101 = "một trăm linh một";
- unit 1 after a tens digit >= 2 is "mốt" (21 = "hai mươi mốt"), but 11 = "mười một";
- unit 5 after any tens digit is "lăm" (15, 25), but 105 = "một trăm linh năm";
- unit 4 after a tens digit >= 2 is usually "tư" (24 = "hai mươi tư");
- ten is "mười", tens >= 20 take "mươi";
- an inner group of three with no hundreds still says "không trăm" (2023 = "hai nghìn
  không trăm hai mươi ba");
- groups: nghìn (north) / ngàn (south), triệu, tỷ; beyond tỷ the words repeat (nghìn tỷ).

``num2words`` (0.5.x) has a Vietnamese mode, but it reads 2023 as "hai nghìn lẻ hai mươi
ba" and 1961.334 as "... phẩy ba mươi ba", with no "linh/lẻ" or "nghìn/ngàn" choice
(checked in a scratch venv), so the rules are written out here, small and tested against
the province's own sample file."""

from __future__ import annotations

from dataclasses import dataclass

DIGITS = ("không", "một", "hai", "ba", "bốn", "năm", "sáu", "bảy", "tám", "chín")


@dataclass(frozen=True)
class NumberStyle:
    thousand: str = "nghìn"  # or "ngàn"
    odd: str = "linh"  # or "lẻ"
    four_after_tens: str = "tư"  # or "bốn"


NORTH = NumberStyle()
SOUTH = NumberStyle(thousand="ngàn", odd="lẻ")


def _below_thousand(n: int, full: bool, style: NumberStyle) -> list[str]:
    """Words for 0 < n < 1000. ``full`` = an inner group, which always says its hundreds."""
    hundreds, rest = divmod(n, 100)
    tens, unit = divmod(rest, 10)
    words: list[str] = []
    if hundreds or full:
        words += [DIGITS[hundreds], "trăm"]
    if tens == 0:
        if unit:
            if words:
                words.append(style.odd)
            words.append(DIGITS[unit])
        return words
    if tens == 1:
        words.append("mười")
    else:
        words += [DIGITS[tens], "mươi"]
    if unit == 1:
        words.append("mốt" if tens >= 2 else "một")
    elif unit == 4:
        words.append(style.four_after_tens if tens >= 2 else "bốn")
    elif unit == 5:
        words.append("lăm")
    elif unit:
        words.append(DIGITS[unit])
    return words


def read_int(n: int, style: NumberStyle = NORTH) -> str:
    """Spoken form of a non-negative integer ("âm" is added for negatives)."""
    if n < 0:
        return "âm " + read_int(-n, style)
    if n == 0:
        return "không"
    return " ".join(_read(n, style, full=False))


def _read(n: int, style: NumberStyle, full: bool) -> list[str]:
    billion = 1_000_000_000
    if n >= billion:
        high, low = divmod(n, billion)
        words = _read(high, style, full) + ["tỷ"]
        if low:
            words += _read(low, style, full=True)
        return words
    groups = ((n // 1_000_000) % 1000, (n // 1000) % 1000, n % 1000)
    names = ("triệu", style.thousand, "")
    words: list[str] = []
    for group, name in zip(groups, names, strict=True):
        if group:
            # An inner group (something bigger was said before it) reads all three digits.
            words += _below_thousand(group, full or bool(words), style)
            if name:
                words.append(name)
    return words


def read_digits(text: str) -> str:
    """Digit by digit: phone numbers, codes, long decimals ("0912" = "không chín một hai")."""
    return " ".join(DIGITS[int(c)] for c in text if c.isdecimal())


def read_decimal(int_part: str, frac_part: str, style: NumberStyle = NORTH) -> str:
    """ "12,5" = "mười hai phẩy năm"; up to three fractional digits without a leading zero
    are read as a number ("1.961,334" ends "phẩy ba trăm ba mươi tư"), others digit by
    digit ("0,05" = "không phẩy không năm")."""
    whole = read_int(int(int_part or "0"), style)
    if len(frac_part) <= 3 and not frac_part.startswith("0"):
        frac = read_int(int(frac_part), style)
    else:
        frac = read_digits(frac_part)
    return f"{whole} phẩy {frac}"


MONTHS = {
    1: "một",
    2: "hai",
    3: "ba",
    4: "tư",
    5: "năm",
    6: "sáu",
    7: "bảy",
    8: "tám",
    9: "chín",
    10: "mười",
    11: "mười một",
    12: "mười hai",
}
WEEKDAYS = {1: "nhất", 2: "hai", 3: "ba", 4: "tư", 5: "năm", 6: "sáu", 7: "bảy"}


def read_month(m: int) -> str:
    """April is "tháng tư", never "tháng bốn"."""
    return MONTHS[m]


def read_day(d: int, style: NumberStyle = NORTH) -> str:
    """Days 1-10 take "mồng" in spoken dates: "ngày mồng năm tháng ba"."""
    return ("mồng " if d <= 10 else "") + read_int(d, style)
