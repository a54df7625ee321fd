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

Layout: this module holds the options, the classification and the masking of one text; reading digit
runs (written and spoken) is in :mod:`pipeline.masking_digits`, the check digits in
:mod:`pipeline.masking_checks`, and masking a call's transcript across ASR segments (numbers split over
a pause) in :mod:`pipeline.masking_stream` (``StreamMasker``).
"""
from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

from .masking_checks import id18_check_char, luhn_valid, national_id_valid  # noqa: F401 (public here too)
from .masking_digits import DigitGroup, digit_groups, is_number_gap  # noqa: F401

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


def _kind_of(text: str, part: list[DigitGroup]) -> tuple[str, int] | None:
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


def _spans_in_run(text: str, run: list[DigitGroup], options: MaskingOptions) -> list[tuple[int, int, str]]:
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

    leftover: list[DigitGroup] = []
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


def _secret_spans(text: str, runs: list[list[DigitGroup]]) -> list[tuple[int, int, str]]:
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


def mask_spans(text: str, options: MaskingOptions) -> list[tuple[int, int, str]]:
    """Sorted, non-overlapping (start, end, token) spans of ``text`` to replace."""
    if not options.enabled or not text:
        return []
    spans: list[tuple[int, int, str]] = []
    short_runs: list[list[DigitGroup]] = []
    for run in digit_groups(text, options.spoken_digits):
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
    spans = mask_spans(text, options)
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
    spans = mask_spans(joined, options)
    if not spans:
        return words
    out: list[str] = []
    offset = 0
    for word in words:
        a, b = offset, offset + len(word)
        out.append(mask_piece(joined, a, b, spans))
        offset = b
    return out


def blank_spans(text: str, spans: list[tuple[int, int, str]]) -> str:
    """``text`` with every span's characters blanked (same length), to see what a span leaves."""
    chars = list(text)
    for start, end, _ in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def mask_piece(joined: str, a: int, b: int, spans: list[tuple[int, int, str]]) -> str:
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
