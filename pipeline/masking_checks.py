"""Check digits of the numbers PII masking recognises: the Luhn check of payment cards, and the ISO 7064
MOD 11-2 check character and birth date of Chinese resident ID numbers.

Pure functions on digit strings; :mod:`pipeline.masking` decides with them what a digit run is.
"""
from __future__ import annotations


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
