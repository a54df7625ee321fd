"""PII masking for transcripts and logs: card numbers, Chinese resident ID numbers, phone numbers.

Numbers arrive written ("6222 0202 1234 5678", "138-1234-5678", "(010) 8888-8888") or, from ASR, spoken
("four five three two ...", "六二二二零二...", "幺三八..." with 幺 for 1, "double five"). Both are read into
one digit string per run and classified:

- ``[CARD]``: 13-19 digits passing the Luhn check. Nothing of the number is kept by default: a transcript
  never needs it, and bank practice (PCI DSS) allows at most the last four digits to be shown, which
  ``card_keep_last_digits`` (0-4) allows ("[CARD ****5678]").
- ``[ID]``: 18-character resident ID (17 digits + digit/X) with a valid ISO 7064 MOD 11-2 check character
  and birth date, or the 15-digit old form with a valid birth date.
- ``[PHONE]``: Chinese mobiles (1[3-9] + 9 digits, optionally +86/0086), Chinese landlines
  (0 + area code + 7-8 digits), North American numbers, and any number written with + or 00 in front.
- ``[SECRET]``: (``mask_secrets``) a short run of 3-9 digits said right after a secret's name (PIN, CVV,
  password, SMS verification code; 密码, 验证码, 动态码, 安全码): PCI DSS forbids storing these at all.
- ``[NUMBER]``: (``mask_long_numbers``) any other run of at least ``long_number_min_digits`` digits. ASR
  gets a digit wrong now and then, and a card number with one wrong digit fails Luhn yet is still a card
  number: in a bank, over-masking a long number is the safe error.

``mask_text`` never raises on any string. ``MaskingFilter`` applies it to log records.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Hashable, Sequence

log = logging.getLogger("pipeline.masking")

CARD = "[CARD]"
NATIONAL_ID = "[ID]"
PHONE = "[PHONE]"
NUMBER = "[NUMBER]"
SECRET = "[SECRET]"

# Longest digit string any classifier accepts (19-digit cards, 0086 + 12-digit landlines = 16, E.164 15).
_MAX_SPAN_DIGITS = 20
# Fewer digits than this can be nothing we mask (the shortest is a 10-digit phone number).
_MIN_RUN_DIGITS = 10


@dataclass(frozen=True)
class MaskingOptions:
    """Options of PII masking; the defaults are the ``[masking]`` section of ``pipeline/callpulse.toml``."""

    enabled: bool = True
    mask_cards: bool = True
    mask_national_ids: bool = True
    mask_phones: bool = True
    spoken_digits: bool = True
    mask_long_numbers: bool = True
    long_number_min_digits: int = 13
    card_keep_last_digits: int = 0
    mask_secrets: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.card_keep_last_digits <= 4:
            raise ValueError(
                f"card_keep_last_digits must be 0..4 (PCI DSS shows at most the last four), "
                f"got {self.card_keep_last_digits}"
            )
        if self.long_number_min_digits < _MIN_RUN_DIGITS:
            raise ValueError(
                f"long_number_min_digits must be >= {_MIN_RUN_DIGITS} (shorter runs are amounts, dates and "
                f"times), got {self.long_number_min_digits}"
            )


# ---------------------------------------------------------------------------------------------------
# Check digits


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (only 0-9) passes the Luhn check used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def id18_check_char(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character of a Chinese resident ID number's first 17 digits."""
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS)) % 11]


def _valid_date(year: int, month: int, day: int) -> bool:
    return 1 <= month <= 12 and 1 <= day <= (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]


def national_id_valid(chars: str) -> bool:
    """True for an 18-character resident ID with valid check character and birth date, or a 15-digit
    old-form ID with a valid birth date (the old form has no check digit)."""
    chars = chars.upper()
    if len(chars) == 18 and chars[:17].isdigit() and (chars[17].isdigit() or chars[17] == "X"):
        year = int(chars[6:10])
        if not (1900 <= year <= 2099 and _valid_date(year, int(chars[10:12]), int(chars[12:14]))):
            return False
        return id18_check_char(chars[:17]) == chars[17]
    if len(chars) == 15 and chars.isdigit() and chars[0] != "0":
        return _valid_date(1900 + int(chars[6:8]), int(chars[8:10]), int(chars[10:12]))
    return False


# ---------------------------------------------------------------------------------------------------
# Finding digit runs, written and spoken

_EN_DIGITS = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "niner": "9",
}
# Digits read in pairs ("forty one eleven ..."): teens are two digits, tens are two digits with or
# without a unit after them ("forty" = 40, "forty one" / "forty-one" = 41).
_EN_TEENS = {
    "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14", "fifteen": "15",
    "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19",
}
_EN_TENS = {
    "twenty": "2", "thirty": "3", "forty": "4", "fourty": "4", "fifty": "5", "sixty": "6", "seventy": "7",
    "eighty": "8", "ninety": "9",
}
_ZH_DIGITS = {
    "零": "0", "〇": "0", "○": "0", "一": "1", "幺": "1", "二": "2", "两": "2", "三": "3", "四": "4",
    "五": "5", "六": "6", "七": "7", "八": "8", "九": "9",
}
_UNIT = re.compile(
    r"(?P<d>\d+)"
    r"|(?P<c>[零〇○一幺二两三四五六七八九])"
    r"|(?<![A-Za-z])(?P<tens>twenty|thirty|forty|fourty|fifty|sixty|seventy|eighty|ninety)"
    r"(?:[ \t-]?(?P<tu>one|two|three|four|five|six|seven|eight|nine)(?![A-Za-z']))?(?![A-Za-z'])"
    r"|(?<![A-Za-z])(?P<teen>ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen)"
    r"(?![A-Za-z'])"
    r"|(?<![A-Za-z])(?:(?P<mult>double|triple)[ \t]+)?"
    r"(?P<w>zero|oh|o|one|two|three|four|five|six|seven|eight|nine|niner)(?![A-Za-z'])"
    r"|(?<![A-Za-z])(?P<x>[Xx])(?![A-Za-z])|(?P<xc>叉)",
    re.IGNORECASE,
)
# What may stand between the digit groups of one number, written or spoken, once it is read as a digit
# stream: any run of separator characters (spaces of any kind and number, tabs, newlines, commas and
# thousands separators, dots, dashes of every width, underscores, slashes, quotes, brackets, zero-width
# characters) and hesitation fillers ("uh", "um", "嗯", "那个"), bounded so that two numbers in
# different sentences stay apart. One grammar for every case, rather than one pattern per way of writing.
_SEPARATOR_CHARS = (
    " \t\n\r\f\v\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"  # spaces and line breaks
    "\u200b\u200c\u200d\u2060\ufeff\u00ad"  # zero-width characters, soft hyphen
    ",\uff0c\u3001\u066b\u066c"  # commas, thousands separators
    ".\u3002\uff0e\u00b7\u30fb"  # dots
    "\\-\u2010-\u2015\u2212\ufe58\ufe63\uff0d"  # hyphens, dashes, minus, full-width hyphen-minus
    "_\uff3f/\uff0f|"  # underscores, slashes
    "'\"`\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u00ab\u00bb\u2039\u203a\uff02\uff07\u300c\u300d\u300e\u300f"
    "()\\[\\]{}\uff08\uff09<>"  # brackets
)
_FILLERS_EN = ("uh", "uhh", "uhm", "um", "umm", "er", "erm", "ah", "ahh", "eh", "hmm", "hm", "mm", "mhm")
_FILLERS_ZH = ("嗯", "呃", "啊", "额", "哦", "噢", "那个", "就是")
_GAP_MAX_CHARS = 16
_GAP_MAX_FILLERS = 3
_GAP = re.compile(
    rf"(?:[{_SEPARATOR_CHARS}]+|(?<![A-Za-z])(?:{'|'.join(_FILLERS_EN)})(?![A-Za-z'])|{'|'.join(_FILLERS_ZH)})*",
    re.IGNORECASE,
)
_FILLER = re.compile(rf"(?<![A-Za-z])(?:{'|'.join(_FILLERS_EN)})(?![A-Za-z'])|{'|'.join(_FILLERS_ZH)}", re.IGNORECASE)
_MIXED_GAP = re.compile(r"[ \t\u00a0\u3000,，、\-]{0,3}")
_LINE_BREAKS = re.compile(r"\n\s*\n")  # a blank line ends a number: it is a new paragraph


def is_number_gap(gap: str) -> bool:
    """True when ``gap`` (the text between two digit groups) can sit inside one number."""
    if len(gap) > _GAP_MAX_CHARS or _LINE_BREAKS.search(gap):
        return False
    if _GAP.fullmatch(gap) is None:
        return False
    return len(_FILLER.findall(gap)) <= _GAP_MAX_FILLERS


# A secret's name, then at most a few non-sentence-ending characters, then the digits ("PIN is 1234",
# "密码是六个数字123456" does not count: the name must be close). CVV, PIN, passwords and one-time codes
# must never be stored at all (PCI DSS 3.2), so their digits go even though they are short.
_SECRET_LOOKBACK = 24
_SECRET_KEYWORD = re.compile(
    r"(?:\b(?:cvv2?|cvc2?|cid|security code|pin(?: number| code)?|passcode|pass code|password|"
    r"verification code|one[- ]time (?:pass)?code|otp|sms code|auth(?:entication)? code)\b"
    r"|密码|验证码|动态码|动态密码|安全码|校验码|口令|短信码)"
    r"[^.!?。！？，；\n]{0,16}$",
    re.IGNORECASE,
)
_PLUS_BEFORE = re.compile(r"(?:\+|\bplus[ \t]*|加)$", re.IGNORECASE)

_CN_MOBILE = re.compile(r"(?:0086|86)?1[3-9]\d{9}")
_CN_LANDLINE = re.compile(r"(?:0|0086|86)[1-9]\d{1,2}[2-9]\d{6,7}")
_NANP = re.compile(r"1?[2-9]\d{2}[2-9]\d{6}")
_INTL = re.compile(r"00\d{8,13}")
# Written shapes (digits per group) that make a 10-12 digit run a landline or North American number
# rather than a date-and-time or an amount.
_LANDLINE_SHAPES = {(3, 8), (4, 7), (4, 8), (3, 4, 4), (4, 3, 4), (4, 4, 4), (3, 3, 4), (4, 4, 3)}
_NANP_SHAPES = {(3, 3, 4), (1, 3, 3, 4)}


@dataclass(frozen=True)
class _Group:
    """Digits that must be masked together: one written digit string (plus an attached X), or one
    spoken digit (or "double five")."""

    start: int
    end: int
    digits: str
    spoken: bool


def _digit_groups(text: str, spoken_digits: bool) -> list[list[_Group]]:
    """The text read as digit streams: runs of digit groups (written digit strings, spoken digit words,
    pairs like "forty one"), each joined only by gaps a number can contain (:func:`is_number_gap`).
    Each group keeps its character span, so a classified stream maps back onto the text."""
    runs: list[list[_Group]] = []
    current: list[_Group] = []
    prev_end = -1
    for m in _UNIT.finditer(text):
        if m.group("d") is not None:
            try:
                digits = "".join(str(unicodedata.decimal(c)) for c in m.group("d"))
            except ValueError:  # a digit-like character without a decimal value: not a number
                digits = ""
            if not digits:
                continue
            group = _Group(m.start(), m.end(), digits, False)
        elif m.group("x") is not None or m.group("xc") is not None:
            group = _Group(m.start(), m.end(), "X", current[-1].spoken if current else True)
        elif not spoken_digits:
            continue
        elif m.group("c") is not None:
            group = _Group(m.start(), m.end(), _ZH_DIGITS[m.group("c")], True)
        elif m.group("tens") is not None:
            unit = m.group("tu")
            group = _Group(m.start(), m.end(),
                           _EN_TENS[m.group("tens").lower()] + (_EN_DIGITS[unit.lower()] if unit else "0"), True)
        elif m.group("teen") is not None:
            group = _Group(m.start(), m.end(), _EN_TEENS[m.group("teen").lower()], True)
        else:
            word = _EN_DIGITS[m.group("w").lower()]
            mult = (m.group("mult") or "").lower()
            group = _Group(m.start(), m.end(), word * (3 if mult == "triple" else 2 if mult == "double" else 1), True)
        is_x = group.digits == "X"
        joined = False
        if current:
            gap = text[prev_end : group.start]
            last = current[-1]
            if last.digits.endswith("X"):
                joined = False  # an X is the last character of an ID number
            elif is_x:
                if gap == "" and not last.spoken:
                    # "11010519491231002X": the X belongs to the written digit string itself.
                    current[-1] = _Group(last.start, group.end, last.digits + "X", False)
                    prev_end = group.end
                    continue
                joined = is_number_gap(gap) and not _FILLER.search(gap)
            elif group.spoken != last.spoken:
                # spoken words then written digits (or back): only a plain pause between them, so that
                # "one ('4532..." is a word before a quoted number, not one 17-digit number
                joined = _MIXED_GAP.fullmatch(gap) is not None
            else:
                joined = is_number_gap(gap)
        if not joined:
            if current:
                runs.append(current)
            current = []
            if is_x or (m.group("w") is not None and m.group("w").lower() in ("o", "oh")):
                # A lone X, or "oh" starting a run, is a letter or an interjection, not a digit.
                prev_end = group.end
                continue
        current.append(group)
        prev_end = group.end
    if current:
        runs.append(current)
    return runs


# ---------------------------------------------------------------------------------------------------
# Classifying and masking


def _classify(digits: str, shape: tuple[int, ...], spoken: bool, has_plus: bool) -> str | None:
    """Which kind of number ``digits`` is (a mask token), or None."""
    if "X" in digits:
        return NATIONAL_ID if digits.index("X") == len(digits) - 1 and national_id_valid(digits) else None
    n = len(digits)
    if has_plus and 8 <= n <= 15:
        return PHONE
    if n == 18 and national_id_valid(digits):
        return NATIONAL_ID
    if 13 <= n <= 19 and luhn_valid(digits):
        return CARD
    if n == 15 and national_id_valid(digits):
        return NATIONAL_ID
    if _CN_MOBILE.fullmatch(digits) or _INTL.fullmatch(digits):
        return PHONE
    # Spoken, one unbroken string, or read out digit by digit ("0 1 0 8 8 8 8 8 8 8 8"): no shape to check.
    free_shape = spoken or len(shape) == 1 or max(shape) == 1
    if _CN_LANDLINE.fullmatch(digits) and (free_shape or shape in _LANDLINE_SHAPES or digits.startswith("0086")):
        return PHONE
    if _NANP.fullmatch(digits) and (free_shape or shape in _NANP_SHAPES):
        return PHONE
    return None


def _enabled(kind: str, options: MaskingOptions) -> bool:
    return {
        CARD: options.mask_cards,
        NATIONAL_ID: options.mask_national_ids,
        PHONE: options.mask_phones,
        NUMBER: options.mask_long_numbers,
    }[kind]


def _card_token(text: str, start: int, end: int, keep: int) -> str:
    if keep == 0:
        return CARD
    digits = "".join(str(unicodedata.decimal(c)) for c in text[start:end] if c.isdecimal())
    if len(digits) < keep:  # spoken card: its digits are words; keep nothing rather than guess
        return CARD
    return f"[CARD ****{digits[-keep:]}]"


def _kind_of(text: str, part: list[_Group]) -> tuple[str, int] | None:
    """(mask token, masked span start) of a stretch of groups, or None when it is no number we know."""
    digits = "".join(g.digits for g in part)
    if len(digits) < _MIN_RUN_DIGITS:
        return None
    # Look back only a few characters: "+", "plus " or "加" must touch the number.
    plus = _PLUS_BEFORE.search(text, max(0, part[0].start - 8), part[0].start)
    kind = _classify(
        digits,
        tuple(len(g.digits) for g in part),
        any(g.spoken for g in part),
        has_plus=plus is not None or digits.startswith("00"),
    )
    if kind is None:
        return None
    start = plus.start() if (plus is not None and kind == PHONE) else part[0].start
    if kind == PHONE and start > 0 and text[start - 1] == "(" and ")" in text[start : part[-1].end]:
        start -= 1
    return kind, start


def _token(text: str, kind: str, start: int, end: int, options: MaskingOptions) -> str:
    return _card_token(text, start, end, options.card_keep_last_digits) if kind == CARD else kind


def _spans_in_run(text: str, run: list[_Group], options: MaskingOptions) -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []
    total_digits = sum(len(g.digits) for g in run)
    whole = _kind_of(text, run) if total_digits <= _MAX_SPAN_DIGITS else None
    if whole is not None:
        kind, start = whole
        if _enabled(kind, options):
            spans.append((start, run[-1].end, _token(text, kind, start, run[-1].end, options)))
        return spans
    if total_digits <= _MAX_SPAN_DIGITS and total_digits >= options.long_number_min_digits:
        # A run short enough to be one number is judged whole: carving a "phone number" out of a card
        # number with a misheard digit would leave the rest of the card in the transcript.
        if options.mask_long_numbers:
            spans.append((run[0].start, run[-1].end, NUMBER))
        return spans

    # Several numbers read in one breath: the cut that recognises the most digits (then the fewest
    # pieces) wins; greedy longest-first would take a chance Luhn match across two numbers.
    n = len(run)
    best: list[tuple[int, int]] = [(0, 0)] * (n + 1)  # (digits recognised, -pieces) from group i on
    choice: list[tuple[int, str, int] | None] = [None] * (n + 1)
    for i in range(n - 1, -1, -1):
        best[i], choice[i] = best[i + 1], None
        total = 0
        for j in range(i, n):
            total += len(run[j].digits)
            if total > _MAX_SPAN_DIGITS:
                break
            found = _kind_of(text, run[i : j + 1]) if total >= _MIN_RUN_DIGITS else None
            if found is not None:
                score = (total + best[j + 1][0], best[j + 1][1] - 1)
                if score > best[i]:
                    best[i], choice[i] = score, (j, found[0], found[1])

    leftover: list[_Group] = []
    # In a run too long to be one number, digits left between recognised numbers are part of the same
    # long string ("3000 0000 0000 0000 0004 5"): they are masked from 4 digits on, not left in the clear.
    min_leftover = 4 if total_digits > _MAX_SPAN_DIGITS else options.long_number_min_digits

    def flush_leftover() -> None:
        if options.mask_long_numbers and sum(len(g.digits) for g in leftover) >= min_leftover:
            spans.append((leftover[0].start, leftover[-1].end, NUMBER))
        leftover.clear()

    i = 0
    while i < n:
        picked = choice[i]
        if picked is None:
            leftover.append(run[i])
            i += 1
            continue
        flush_leftover()
        j, kind, start = picked
        if _enabled(kind, options):
            spans.append((start, run[j].end, _token(text, kind, start, run[j].end, options)))
        i = j + 1
    flush_leftover()
    return spans


def _secret_spans(text: str, runs: list[list[_Group]]) -> list[tuple[int, int, str]]:
    """Short digit runs (3-9 digits) said right after a secret's name: PIN, CVV, password, SMS code."""
    spans = []
    for run in runs:
        n_digits = sum(len(g.digits) for g in run)
        if n_digits < 3:
            continue
        before = text[max(0, run[0].start - _SECRET_LOOKBACK) : run[0].start]
        if _SECRET_KEYWORD.search(before):
            spans.append((run[0].start, run[-1].end, SECRET))
    return spans


def _mask_spans(text: str, options: MaskingOptions) -> list[tuple[int, int, str]]:
    """Sorted, non-overlapping (start, end, token) spans of ``text`` to replace."""
    if not options.enabled or not text:
        return []
    spans: list[tuple[int, int, str]] = []
    short_runs: list[list[_Group]] = []
    for run in _digit_groups(text, options.spoken_digits):
        if sum(len(g.digits) for g in run) < _MIN_RUN_DIGITS:
            short_runs.append(run)
            continue
        spans.extend(_spans_in_run(text, run, options))
    if options.mask_secrets:
        spans.extend(_secret_spans(text, short_runs))
    kept: list[tuple[int, int, str]] = []
    pos = 0
    for start, end, token in sorted(spans):
        if start < pos:  # overlapping (a "+" or "(" claimed twice): keep the first
            continue
        kept.append((start, end, token))
        pos = end
    return kept


def mask_text(text: str, options: MaskingOptions) -> str:
    """``text`` with card, ID and phone numbers (written or spoken) replaced by tokens; never raises on
    a string (anything else is a TypeError: a transcript that is not text is a bug upstream)."""
    if not isinstance(text, str):
        raise TypeError(f"mask_text() needs a str, got {type(text).__name__}")
    spans = _mask_spans(text, options)
    if not spans:
        return text
    out = []
    pos = 0
    for start, end, token in spans:
        out.append(text[pos:start])
        out.append(token)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def mask_words(words: Sequence[str], options: MaskingOptions) -> list[str]:
    """Mask a transcript's word texts together, as the sentence they form.

    A card number is spread over several ASR words (" 4532", " 0151", ...): masking each word alone
    would keep every group. The masked span's token goes to the word where the number starts; the
    other words of the number keep only their text outside it (often ""). The words still join up to
    ``mask_text("".join(words))``, and there are as many of them, so word timings stay aligned.
    """
    words = list(words)
    if not all(isinstance(w, str) for w in words):
        raise TypeError("mask_words() needs a sequence of str")
    joined = "".join(words)
    spans = _mask_spans(joined, options)
    if not spans:
        return words
    out: list[str] = []
    offset = 0
    for word in words:
        a, b = offset, offset + len(word)
        out.append(_mask_piece(joined, a, b, spans))
        offset = b
    return out


# ---------------------------------------------------------------------------------------------------
# A call's text stream: numbers split across ASR segments

HELD = "[…]"  # digits at the end of a segment that the next segment may continue: shown once resolved


@dataclass
class _StreamSegment:
    key: Hashable
    parts: tuple[str, ...]
    emitted: tuple[str, ...] | None = None
    open_tail: bool = False  # part of the digit run open at the stream's end when last masked


def _joins_without_space(left: str, right: str) -> bool:
    # ASR segments carry their own leading space (" 1111"), Mandarin none; only two words that would
    # run together ("four" + "one") need one put between them.
    return not (left[-1:].isascii() and left[-1:].isalpha() and right[:1].isascii() and right[:1].isalpha())


class StreamMasker:
    """Masks one speaker's transcript as one text stream, across the segments ASR cuts it into.

    Each segment is masked together with the segments before it that its masking may depend on: the
    ones holding a digit run still open at the stream's end (a card number "4111 1111" + "1111 1111"
    read over a pause), and the last one (a "PIN is" before the digits). A run still open at the end of
    the newest segment is shown as ``HELD`` until the next segment (or :meth:`finish`) says whether it
    continues, so the live feed shows at most ``hold_min_digits - 1`` digits of a split number, and
    the stored transcript none. :meth:`push` returns the masked parts of the new segment and of every
    earlier segment whose masking changed (the caller replaces what it stored for them).
    """

    def __init__(self, options: MaskingOptions, *, max_segments: int = 8, hold_min_digits: int = 3) -> None:
        self.options = options
        self.max_segments = max(1, max_segments)
        self.hold_min_digits = max(1, hold_min_digits)
        self._window: list[_StreamSegment] = []

    def push(self, key: Hashable, parts: Sequence[str]) -> dict[Hashable, list[str]]:
        """Add a finished segment (its text as one part, or its ASR words). Returns ``{key: masked
        parts}`` for this segment and for each earlier one that needs revising."""
        parts = tuple(parts)
        if not all(isinstance(p, str) for p in parts):
            raise TypeError("StreamMasker.push() needs a sequence of str")
        self._window.append(_StreamSegment(key, parts))
        return self._remask(final=False)

    def preview(self, parts: Sequence[str]) -> list[str]:
        """Masked parts of a segment still being spoken (an interim transcript), in the stream's
        context; nothing is kept."""
        probe = _StreamSegment(object(), tuple(parts))
        masked = self._mask_window(self._window + [probe], final=False)
        return list(masked[-1])

    def finish(self) -> dict[Hashable, list[str]]:
        """The stream has ended: resolve held digits. Returns revisions like :meth:`push`."""
        revised = self._remask(final=True)
        self._window.clear()
        return revised

    # --- internals -------------------------------------------------------------------------------

    def _remask(self, *, final: bool) -> dict[Hashable, list[str]]:
        masked = self._mask_window(self._window, final=final)
        revised: dict[Hashable, list[str]] = {}
        last = len(self._window) - 1
        for i, (seg, parts) in enumerate(zip(self._window, masked)):
            # Only the new segment and those still holding digits are (re)decided; the others are
            # context, and what was shown for them stays (it was masked with at least this context).
            held = seg.emitted is not None and HELD in "".join(seg.emitted)
            if (i == last and not final) or held or seg.open_tail:
                if seg.emitted != parts:
                    revised[seg.key] = list(parts)
                seg.emitted = parts
        if not final:
            joined, _, seg_starts = self._joined(self._window)
            run = self._open_run(joined)
            ends = seg_starts[1:] + [len(joined) + 1]
            for seg, start, end in zip(self._window, seg_starts, ends):
                seg.open_tail = run is not None and end > run[0]
            self._trim()
        return revised

    def _joined(self, window: list[_StreamSegment]) -> tuple[str, list[list[tuple[int, int]]], list[int]]:
        pieces: list[str] = []
        bounds: list[list[tuple[int, int]]] = []
        seg_starts: list[int] = []
        pos = 0
        for seg in window:
            text = "".join(seg.parts)
            if pieces and text and not _joins_without_space(pieces[-1], text):
                pieces.append(" ")
                pos += 1
            seg_starts.append(pos)
            spans = []
            for part in seg.parts:
                spans.append((pos, pos + len(part)))
                pos += len(part)
            if text:
                pieces.append(text)
            bounds.append(spans)
        return "".join(pieces), bounds, seg_starts

    def _open_run(self, joined: str) -> tuple[int, int, int] | None:
        """(start, end, digits) of the digit run at the end of the stream, if nothing but a number's
        gap follows it (the next segment may continue it)."""
        runs = _digit_groups(joined, self.options.spoken_digits)
        if not runs:
            return None
        run = runs[-1]
        if not is_number_gap(joined[run[-1].end:]):
            return None
        return run[0].start, run[-1].end, sum(len(g.digits) for g in run)

    def _mask_window(self, window: list[_StreamSegment], *, final: bool) -> list[tuple[str, ...]]:
        joined, bounds, _ = self._joined(window)
        spans = _mask_spans(joined, self.options)
        if not final and self.options.enabled:
            run = self._open_run(joined)
            if run is not None and run[2] >= self.hold_min_digits:
                start, end, _ = run
                covered = sum(min(e, end) - max(s, start) for s, e, _ in spans if s < end and e > start)
                digits_left = any(ch.isdecimal() or ch.isalpha() for ch in _blank_spans(joined, spans)[start:end])
                if covered < end - start and digits_left:
                    # hold the whole open run: whatever it turns out to be, it is not shown yet
                    hold_start = min([start] + [s for s, e, _ in spans if s < end and e > start])
                    spans = [sp for sp in spans if sp[1] <= hold_start or sp[0] >= end] + [(hold_start, end, HELD)]
                    spans.sort()
        out: list[tuple[str, ...]] = []
        for seg_bounds in bounds:
            out.append(tuple(_mask_piece(joined, a, b, spans) for a, b in seg_bounds))
        return out

    def _trim(self) -> None:
        """Keep the segments the next one's masking may depend on: from the one where the open digit
        run starts (if any), else the last one only; never more than ``max_segments``."""
        joined, _, seg_starts = self._joined(self._window)
        keep_from = len(self._window) - 1
        run = self._open_run(joined)
        if run is not None:
            # the segment where the open run starts, and the one before it as its context
            first = max(i for i, start in enumerate(seg_starts) if start <= run[0])
            keep_from = min(keep_from, max(0, first - 1))
        keep_from = max(keep_from, len(self._window) - self.max_segments)
        del self._window[:keep_from]


def _blank_spans(text: str, spans: list[tuple[int, int, str]]) -> str:
    """``text`` with every span's characters blanked (same length), to see what a span leaves."""
    chars = list(text)
    for start, end, _ in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _mask_piece(joined: str, a: int, b: int, spans: list[tuple[int, int, str]]) -> str:
    """The masked text of ``joined[a:b]``: a span's token goes where the span starts."""
    pieces: list[str] = []
    pos = a
    for start, end, token in spans:
        if end <= a or start >= b:
            continue
        if start > pos:
            pieces.append(joined[pos:start])
        if start >= a:
            pieces.append(token)
        pos = max(pos, min(end, b))
    if pos < b:
        pieces.append(joined[pos:b])
    return "".join(pieces)


class MaskingFilter(logging.Filter):
    """Masks PII in log records (message, arguments, exception text) so logs never carry it.

    Attach it to every handler (``handler.addFilter(MaskingFilter(options))``): a filter on a logger does
    not see records propagated from its children. Records are never dropped.
    """

    def __init__(self, options: MaskingOptions | None = None, name: str = "") -> None:
        super().__init__(name)
        self.options = options if options is not None else MaskingOptions()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.options.enabled:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not leak its arguments unmasked
            message = f"{record.msg!s} {record.args!r}"
        record.msg = mask_text(message, self.options)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text, self.options)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info, self.options)
        return True


def install_log_masking(options: MaskingOptions, logger: logging.Logger | None = None) -> MaskingFilter:
    """Add one MaskingFilter to every handler of ``logger`` (default: the root logger); returns it."""
    target = logger if logger is not None else logging.getLogger()
    masking_filter = MaskingFilter(options)
    for handler in target.handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(masking_filter)
    return masking_filter
