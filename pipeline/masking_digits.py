"""Reading a text as digit runs for PII masking: written digits ("6222 0202 ..."), spoken digits in English
and Mandarin ("four five three two", "幺三八", "double five", "forty one"), and the gaps a number can
contain (separators of every script, hesitation fillers), bounded so that two numbers stay apart.

:func:`digit_groups` returns the runs, each group keeping its character span so that a classified run
maps back onto the text. :mod:`pipeline.masking` classifies the runs; :mod:`pipeline.masking_stream`
uses :func:`is_number_gap` to see whether a run at a segment's end may continue in the next one.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

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


@dataclass(frozen=True)
class DigitGroup:
    """Digits that must be masked together: one written digit string (plus an attached X), or one
    spoken digit (or "double five")."""

    start: int
    end: int
    digits: str
    spoken: bool


def digit_groups(text: str, spoken_digits: bool) -> list[list[DigitGroup]]:
    """The text read as digit streams: runs of digit groups (written digit strings, spoken digit words,
    pairs like "forty one"), each joined only by gaps a number can contain (:func:`is_number_gap`).
    Each group keeps its character span, so a classified stream maps back onto the text."""
    runs: list[list[DigitGroup]] = []
    current: list[DigitGroup] = []
    prev_end = -1
    for m in _UNIT.finditer(text):
        if m.group("d") is not None:
            try:
                digits = "".join(str(unicodedata.decimal(c)) for c in m.group("d"))
            except ValueError:  # a digit-like character without a decimal value: not a number
                digits = ""
            if not digits:
                continue
            group = DigitGroup(m.start(), m.end(), digits, False)
        elif m.group("x") is not None or m.group("xc") is not None:
            group = DigitGroup(m.start(), m.end(), "X", current[-1].spoken if current else True)
        elif not spoken_digits:
            continue
        elif m.group("c") is not None:
            group = DigitGroup(m.start(), m.end(), _ZH_DIGITS[m.group("c")], True)
        elif m.group("tens") is not None:
            unit = m.group("tu")
            group = DigitGroup(m.start(), m.end(),
                           _EN_TENS[m.group("tens").lower()] + (_EN_DIGITS[unit.lower()] if unit else "0"), True)
        elif m.group("teen") is not None:
            group = DigitGroup(m.start(), m.end(), _EN_TEENS[m.group("teen").lower()], True)
        else:
            word = _EN_DIGITS[m.group("w").lower()]
            mult = (m.group("mult") or "").lower()
            group = DigitGroup(m.start(), m.end(), word * (3 if mult == "triple" else 2 if mult == "double" else 1), True)
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
                    current[-1] = DigitGroup(last.start, group.end, last.digits + "X", False)
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
