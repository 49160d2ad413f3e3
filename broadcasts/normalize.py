"""Vietnamese administrative text -> what the loudspeaker must say.

A speech engine reads "UBND", "30/6/2023", "09/13 xã" or "6.616 triệu" badly or not at all,
so bulletins are rewritten into plain spoken Vietnamese first. The rules follow how
provincial reports are written (the cases of ``tests/broadcasts/test_content_normalize.py``):

- abbreviations from ``abbreviations_vi.tsv`` plus the province's own file;
- document numbers: "552/KH-STTTT", "39/2020/TT-BTTTT";
- dates "30/6/2023", "ngày 20/6", "tháng 6/2023", "Quý 3/2023", ISO "2023-06-30";
- times "17h30", "7g", "17:30";
- ranges "2021 - 2025" ("đến"), ratios "09/13 xã" ("trên"), percentages, units;
- numbers with Vietnamese separators "6.616" and "1.961,334", leading zeros "02 xã";
- unknown all-capital acronyms are spelled letter by letter ("VTV" = "vê tê vê"), while
  words merely written in capitals ("THÔNG BÁO") are lowered.

Each rule is one regular expression with a replacement, applied in a fixed order (dates
before ratios, ratios before plain numbers) so the more specific reading wins."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path

from broadcasts.vi_numbers import (
    NORTH,
    WEEKDAYS,
    NumberStyle,
    read_day,
    read_decimal,
    read_digits,
    read_int,
    read_month,
)

DEFAULT_ABBREVIATIONS = Path(__file__).with_name("abbreviations_vi.tsv")

_CODE_START = "A-ZĐ"  # document codes start with a capital: "KH-STTTT", "QĐ-UBND"
_VOWELS = "aăâeêioôơuưyàáảãạằắẳẵặầấẩẫậèéẻẽẹềếểễệìíỉĩịòóỏõọồốổỗộờớởỡợùúủũụừứửữựỳýỷỹỵ"
_SYLLABLE = re.compile(
    rf"^(ngh|ng|gh|gi|kh|nh|ph|qu|th|tr|ch|[bcdđghklmnprstvx])?[{_VOWELS}]{{1,3}}"
    r"(ng|nh|ch|[cmnpt])?$"
)

LETTER_NAMES = {
    "A": "a",
    "Ă": "á",
    "Â": "ớ",
    "B": "bê",
    "C": "xê",
    "D": "dê",
    "Đ": "đê",
    "E": "e",
    "Ê": "ê",
    "F": "ép",
    "G": "gờ",
    "H": "hát",
    "I": "i",
    "J": "gi",
    "K": "ca",
    "L": "lờ",
    "M": "mờ",
    "N": "nờ",
    "O": "o",
    "Ô": "ô",
    "Ơ": "ơ",
    "P": "pê",
    "Q": "quy",
    "R": "rờ",
    "S": "ét",
    "T": "tê",
    "U": "u",
    "Ư": "ư",
    "V": "vê",
    "W": "vê kép",
    "X": "ích",
    "Y": "i",
    "Z": "dét",
}

UNITS = {
    "km2": "ki lô mét vuông",
    "km²": "ki lô mét vuông",
    "m2": "mét vuông",
    "m²": "mét vuông",
    "m3": "mét khối",
    "m³": "mét khối",
    "km/h": "ki lô mét trên giờ",
    "km": "ki lô mét",
    "cm": "xen ti mét",
    "mm": "mi li mét",
    "m": "mét",
    "kg": "ki lô gam",
    "ha": "héc ta",
    "kWh": "ki lô oát giờ",
    "kW": "ki lô oát",
    "MW": "mê ga oát",
    "°C": "độ xê",
    "đ": "đồng",
    "VNĐ": "đồng",
    "VND": "đồng",
    "USD": "đô la mỹ",
    "GB": "ghi ga bai",
    "MB": "mê ga bai",
    "Mbps": "mê ga bít trên giây",
}
# "x/y" between words reads "mỗi" when y is what something is counted per.
_PER_WORDS = {
    "người",
    "hộ",
    "năm",
    "tháng",
    "ngày",
    "giờ",
    "tuần",
    "quý",
    "lượt",
    "khẩu",
    "suất",
    "xã",
    "thôn",
    "lần",
    "buổi",
}
_SYMBOLS = {
    "&": " và ",
    "+": " cộng ",
    "=": " bằng ",
    "#": " số ",
    "@": " a còng ",
    "~": " khoảng ",
    "≥": " lớn hơn hoặc bằng ",
    "≤": " nhỏ hơn hoặc bằng ",
    ">": " lớn hơn ",
    "<": " nhỏ hơn ",
    "×": " nhân ",
}
# A bare "dd/mm" is a date after these words ("hạn chót 31/12"), unless a counted noun
# follows ("đến 9/13 xã" stays a ratio).
_DATE_CONTEXT = (
    r"hạn chót|hạn cuối|thời hạn|hạn|trước|sau|đến hết|đến|từ|kể từ|vào|hết|"
    r"chậm nhất|muộn nhất|bắt đầu|khai giảng|diễn ra|tổ chức"
)
_COUNTED = (
    r"xã|thôn|bản|xóm|tổ|hộ|người|cụm|điểm|trường|đơn vị|chỉ tiêu|tiêu chí|loa|đài|"
    r"cơ sở|thành viên|học sinh|huyện|tỉnh|phường|lớp|em|cháu|phiếu|lượt|hồ sơ"
)
_ROMAN = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
_ROMAN_AFTER = (
    r"quý|khóa|khoá|phần|chương|mục|điều|giai đoạn|lần|kỳ|thế kỷ|đợt|vòng|hạng"
    r"|cấp|đại hội|nhiệm kỳ"
)


def load_abbreviations(path: Path) -> dict[str, str]:
    """``ABBR<TAB>spoken`` lines; '#' comments and blank lines are skipped."""
    table: dict[str, str] = {}
    for line_no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        abbr, sep, spoken = line.partition("\t")
        if not sep or not abbr.strip() or not spoken.strip():
            raise ValueError(f"{path}:{line_no}: cần dạng 'VIẾT TẮT<TAB>cách đọc'")
        table[unicodedata.normalize("NFC", abbr.strip())] = unicodedata.normalize(
            "NFC", spoken.strip()
        )
    return table


@lru_cache(maxsize=1)
def default_abbreviations() -> Mapping[str, str]:
    return load_abbreviations(DEFAULT_ABBREVIATIONS)


def _roman_value(text: str) -> int | None:
    total = 0
    for i, ch in enumerate(text):
        v = _ROMAN.get(ch)
        if v is None:
            return None
        nxt = _ROMAN.get(text[i + 1]) if i + 1 < len(text) else 0
        total += -v if nxt and nxt > v else v
    return total if 0 < total < 4000 else None


def spell(word: str) -> str:
    return " ".join(LETTER_NAMES.get(c, c.lower()) for c in word.upper())


Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]
# One written number: "6.616", "1.961,334", "12,5", "4.0", "02".
NUMBER = r"\d{1,3}(?:\.\d{3})+(?:,\d+)?(?![\d.]\d)|\d+(?:[.,]\d+)?"


class Normalizer:
    """Rewrite administrative Vietnamese into its spoken form.

    ``extra`` abbreviations (the province's) override the defaults; ``style`` picks
    northern ("nghìn", "linh") or southern ("ngàn", "lẻ") number words."""

    def __init__(self, extra: Mapping[str, str] | None = None, style: NumberStyle = NORTH) -> None:
        self.style = style
        self.abbreviations = dict(default_abbreviations())
        if extra:
            self.abbreviations.update(extra)
        keys = sorted(self.abbreviations, key=len, reverse=True)
        self._abbr_re = re.compile(
            r"(?<![^\W\d_]|[&.-])("
            + "|".join(re.escape(k) for k in keys)
            + r")(?![^\W\d_]|&|-[^\W\d_])"
        )
        self._rules = self._build_rules()

    # -- helpers ---------------------------------------------------------------------------

    def num(self, digits: str) -> str:
        """A plain integer as written: "02" = "hai", "0912345678" digit by digit."""
        digits = digits.strip()
        if len(digits) > 15 or (digits.startswith("0") and len(digits) >= 4):
            return read_digits(digits)
        return read_int(int(digits), self.style)

    def number_token(self, token: str) -> str:
        """ "6.616", "1.961,334", "12,5", "4.0", "2023" -> words."""
        if re.fullmatch(r"\d{1,3}(?:\.\d{3})+(?:,\d+)?", token):
            whole, _, frac = token.partition(",")
            whole = whole.replace(".", "")
            return (
                read_decimal(whole, frac, self.style) if frac else read_int(int(whole), self.style)
            )
        if m := re.fullmatch(r"(\d+),(\d+)", token):
            return read_decimal(m.group(1), m.group(2), self.style)
        if m := re.fullmatch(r"(\d+)\.(\d+)", token):
            return f"{self.num(m.group(1))} chấm {self.num(m.group(2))}"
        return self.num(token)

    def _date(self, d: int, m: int, y: int | None) -> str | None:
        if not (1 <= d <= 31 and 1 <= m <= 12):
            return None
        out = f"ngày {read_day(d, self.style)} tháng {read_month(m)}"
        if y is not None:
            out += f" năm {read_int(y, self.style)}"
        return out

    def _expand_code_part(self, part: str) -> str:
        return self.abbreviations.get(part) or spell(part)

    # -- rules -----------------------------------------------------------------------------

    def _build_rules(self) -> list[Rule]:
        n = self.number_token
        rules: list[tuple[str, Callable[[re.Match[str]], str]]] = []

        def rule(pattern: str, fn: Callable[[re.Match[str]], str]) -> None:
            rules.append((pattern, fn))

        # Document numbers: "552/KH-STTTT", "39/2020/TT-BTTTT", "15/QĐ".
        def doc_code(m: re.Match[str]) -> str:
            parts = " ".join(self._expand_code_part(p) for p in m.group(3).split("-"))
            year = f" năm {read_int(int(m.group(2)), self.style)}" if m.group(2) else ""
            # "Kế hoạch 552/KH-STTTT" is read "kế hoạch số 552 …": say "số" if not written.
            before = m.string[: m.start()].rstrip().lower()
            number = "" if before.endswith(("số", "số:")) else "số "
            return f"{number}{self.num(m.group(1))}{year}, {parts},"

        rule(
            rf"(?<![\w/])(\d+)(?:/(\d{{4}}))?/([{_CODE_START}][\w&]*(?:-[{_CODE_START}][\w&]*)*)"
            r"(?![\w/])",
            doc_code,
        )

        # Roman numerals after words that take an ordinal: "Quý IV", "khóa XV", "thế kỷ XXI".
        def roman(m: re.Match[str]) -> str:
            value = _roman_value(m.group(2))
            return m.group(0) if value is None else f"{m.group(1)} {read_int(value, self.style)}"

        rule(rf"(?i:\b({_ROMAN_AFTER}))\s+([IVXLCDM]+)(?![\w])", roman)

        # Full dates: "30/6/2023", "30-6-2023", "30.6.2023", optional "ngày" before; ISO.
        def full_date(m: re.Match[str], day: str, month: str, year: str) -> str:
            spoken = self._date(int(m[day]), int(m[month]), int(m[year]))
            return spoken if spoken else m.group(0)

        rule(
            r"(?:(?i:ngày)\s+)?(?<![\w/.,-])(?P<d>\d{1,2})(?P<sep>[/.-])(?P<m>\d{1,2})"
            r"(?P=sep)(?P<y>\d{4})(?![\w/])",
            lambda m: full_date(m, "d", "m", "y"),
        )
        rule(
            r"(?:(?i:ngày)\s+)?(?<![\w/.-])(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})(?![\w/-])",
            lambda m: full_date(m, "d", "m", "y"),
        )

        # Day and month after "ngày": "trước ngày 20/6".
        def day_month(m: re.Match[str]) -> str:
            spoken = self._date(int(m.group(1)), int(m.group(2)), None)
            return spoken if spoken else m.group(0)

        rule(r"(?i:ngày)\s+(\d{1,2})/(\d{1,2})(?![\w/])", day_month)
        # Quarters: "Quý 3/2023", "quý 2".
        rule(
            r"(?i:quý)\s+(\d)\s*/\s*(\d{4})(?![\w/])",
            lambda m: f"quý {read_int(int(m.group(1)))} năm {n(m.group(2))}",
        )
        rule(r"(?i:quý)\s+(\d)(?![\w/])", lambda m: f"quý {read_int(int(m.group(1)))}")

        # Month and year: "tháng 6/2023", "6/2023".
        def month_year(m: re.Match[str]) -> str:
            month, year = int(m.group(1)), int(m.group(2))
            if not 1 <= month <= 12:
                return m.group(0)
            return f"tháng {read_month(month)} năm {read_int(year, self.style)}"

        rule(r"(?:(?i:tháng)\s+)?(?<![\w/.,])(\d{1,2})/((?:19|20)\d\d)(?![\w/])", month_year)
        rule(
            r"(?i:tháng)\s+(\d{1,2})(?![\w/.,])",
            lambda m: (
                f"tháng {read_month(int(m.group(1)))}" if 1 <= int(m.group(1)) <= 12 else m.group(0)
            ),
        )

        # Phone and hotline numbers, digit by digit in their groups: "0987.654.321",
        # "0912 345 678", "1900 1234"; the short emergency numbers after "gọi"/"số" ("gọi 114").
        def phone(m: re.Match[str]) -> str:
            groups = re.split(r"[ .-]", m.group(0))
            if sum(len(g) for g in groups) not in range(8, 12):
                return m.group(0)
            return ", ".join(read_digits(g) for g in groups)

        rule(r"(?<![\w.,/])(?:0\d{2,3}|1[89]00)(?:[ .-]\d{2,4}){1,3}(?![\w/]|[.,]\d)", phone)
        rule(
            r"\b((?i:gọi|số))\s+(11[1-5])(?![\w/]|[.,]\d)",
            lambda m: f"{m.group(1)} {read_digits(m.group(2))}",
        )

        # A bare day/month after a word that announces a date: "hạn chót 31/12".
        def bare_date(m: re.Match[str]) -> str:
            spoken = self._date(int(m.group(2)), int(m.group(3)), None)
            return f"{m.group(1)} {spoken}" if spoken else m.group(0)

        rule(
            rf"(?i:\b({_DATE_CONTEXT}))\s+(\d{{1,2}})/(\d{{1,2}})(?![\w/])"
            rf"(?!\s+(?i:{_COUNTED})\b)",
            bare_date,
        )
        # Weekdays and ordinals: "thứ 2" = "thứ hai", "thứ 4" = "thứ tư", "thứ 1" = "thứ nhất".
        rule(r"(?i:thứ)\s+([1-7])(?![\w/.,])", lambda m: f"thứ {WEEKDAYS[int(m.group(1))]}")
        # Ranges between numbers (and times): "2021 - 2025", "7h00-11h00", "80-90%".
        rule(r"(?<=\d)(\s*(?:[hg]|%)?)\s*[-–]\s*(?=\d)", lambda m: f"{m.group(1)} đến ")

        # Times: "17h30", "7g", "17:30", "17h30'".
        def clock(m: re.Match[str]) -> str:
            hour, minute = int(m.group(1)), int(m.group(3) or 0)
            if hour > 24 or minute > 59 or (m.group(2) == ":" and m.group(3) is None):
                return m.group(0)
            spoken = f"{read_int(hour, self.style)} giờ"
            return spoken + (f" {read_int(minute, self.style)} phút" if minute else "")

        rule(r"(?<![\w.,/:])(\d{1,2})([hg:])(\d{2})?(?:p|ph|')?(?![\w:])", clock)
        # Ratios: "09/13 xã", "101/181".
        rule(
            r"(?<![\w.,/])(\d+)\s*/\s*(\d+)(?![\w/])",
            lambda m: f"{self.num(m.group(1))} trên {self.num(m.group(2))}",
        )
        # Negative numbers: "-5" -> "âm năm".
        rule(r"(?<![\w.,])-(?=\d)", lambda m: "âm ")
        # Percentages and units after a number.
        rule(rf"({NUMBER})\s*%", lambda m: f"{n(m.group(1))} phần trăm")
        unit_alt = "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))

        # "/" between a quantity and a unit or noun reads "trên" ("3 km/điểm", "5.000
        # đồng/m2"), or "mỗi" when the noun is what something is counted per ("đồng/người").
        def per(m: re.Match[str]) -> str:
            a, b = m.group(2), m.group(3)
            if f"{a}/{b}" in UNITS:
                return f"{n(m.group(1))} {UNITS[f'{a}/{b}']}"
            word = "mỗi" if b.lower() in _PER_WORDS else "trên"
            return f"{n(m.group(1))} {UNITS.get(a, a)} {word} {UNITS.get(b, b)}"

        rule(
            rf"({NUMBER})\s*({unit_alt}|[^\W\d_]+)\s*/\s*({unit_alt}|[^\W\d_]+)"
            r"(?![\w²³])",
            per,
        )
        rule(
            rf"({NUMBER})\s*({unit_alt})(?![\w²³])",
            lambda m: f"{n(m.group(1))} {UNITS[m.group(2)]}",
        )
        # Letters glued to digits: "COVID-19", "4G", "H5N1", "QL1A".
        rule(r"(?<=[^\W\d_])-?(?=\d)|(?<=\d)(?=[^\W\d_])", lambda m: " ")
        # Numbers: "6.616", "1.961,334", "12,5", "02".
        rule(NUMBER, lambda m: n(m.group(0)))
        return [(re.compile(p), fn) for p, fn in rules]

    # -- passes ----------------------------------------------------------------------------

    def _abbreviations(self, text: str) -> str:
        return self._abbr_re.sub(lambda m: self.abbreviations[m.group(1)], text)

    def _capitals(self, text: str) -> str:
        def fix(m: re.Match[str]) -> str:
            word = m.group(0)
            if not word.isupper():
                return word
            if len(word) == 1:
                return LETTER_NAMES.get(word, word) if word in "BCDĐFGHJKLMNPQRSTVWXZ" else word
            lower = word.lower()
            return lower if _SYLLABLE.match(lower) else spell(word)

        return re.sub(r"(?<![\w])[^\W\d_]+(?![\w])", fix, text)

    def _punctuation(self, text: str) -> str:
        # "đồng/người" = "đồng mỗi người"; "thôn/bản" = "thôn, bản".
        def slash(m: re.Match[str]) -> str:
            return " mỗi " if m.group(1).lower() in _PER_WORDS else ", "

        text = re.sub(r"(?<=[^\W\d_])\s*/\s*(?=([^\W\d_]+))", slash, text)
        text = re.sub(r"\s[-–—]\s|[()\[\]]", ", ", text)  # "thông tin - viễn thông"
        text = re.sub(r"(?<=\w)-(?=\w)", " ", text)  # "Tày-Nùng"
        text = re.sub(r"(?m)^\s*[-–—•*+]\s*", "", text)  # list bullets
        for sym, spoken in _SYMBOLS.items():
            text = text.replace(sym, spoken)
        text = re.sub(r"[\"“”'‘’*•_|\\/]", " ", text)
        text = re.sub(r"\s+([,.;:!?])", r"\1", text)
        text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)  # ", ," -> ","
        text = re.sub(r",\s*([.!?])", r"\1", text)
        return text

    def normalize(self, text: str) -> str:
        text = unicodedata.normalize("NFC", text)
        text = text.replace("\u00a0", " ").replace("…", ".").replace("–", "-").replace("—", "-")
        doc_codes, *rest = self._rules
        text = doc_codes[0].sub(doc_codes[1], text)
        text = self._abbreviations(text)
        for pattern, fn in rest:
            text = pattern.sub(fn, text)
        text = self._capitals(text)
        text = self._punctuation(text)
        text = re.sub(r"[ \t]+", " ", text)
        text = re.sub(r" *\n *", "\n", text)
        return text.strip(" ,")


@lru_cache(maxsize=8)
def _default_normalizer() -> Normalizer:
    return Normalizer()


def normalize(text: str, extra: Mapping[str, str] | None = None) -> str:
    """Spoken form of ``text`` with the default rules (plus ``extra`` abbreviations)."""
    return (Normalizer(extra) if extra else _default_normalizer()).normalize(text)


def normalizer_for(
    abbreviations_file: Path | None, style: NumberStyle = NORTH, more: Iterable[Path] = ()
) -> Normalizer:
    """A normaliser with the province's abbreviation file(s) applied over the defaults."""
    extra: dict[str, str] = {}
    for path in [p for p in (abbreviations_file, *more) if p]:
        if path.exists():
            extra.update(load_abbreviations(path))
    return Normalizer(extra, style)
