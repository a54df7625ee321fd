"""Transcript normalisation for WER/CER: the same rules applied to reference and hypothesis.

Text normalisation (applied identically to reference and hypothesis before WER/CER):

1. Unicode NFKC: full-width letters, digits and punctuation become their half-width forms.
2. Traditional -> Simplified Chinese (``zhconv``, ``zh-hans``: character conversion, no regional vocabulary
   swaps such as 軟體 -> 软件, because those change words, not spelling).
3. Case folding.
4. Numbers written with digits are spelled out in the text's language, so "25" and "twenty five" (or
   "二十五") count as the same words:

   - English: cardinal words ("1,204" -> "one thousand two hundred four", no "and"); four-digit numbers
     1100-1999 and 2010-2099 are read as years ("1961" -> "nineteen sixty one", "1905" -> "nineteen oh
     five", "1900" -> "nineteen hundred"); decimals "3.5" -> "three point five"; ordinals "21st" ->
     "twenty first"; "%" -> "percent".
   - Mandarin: cardinal numerals with 十/百/千/万/亿 ("2015" -> "二千零一十五", "10" -> "十"); a number
     directly before 年 is read digit by digit ("2015年" -> "二零一五年"); decimals "3.5" -> "三点五";
     "50%" -> "百分之五十".
   - Either language: digit strings with a leading zero or of 7 digits or more (phone, card and account
     numbers) are read digit by digit.
5. Punctuation and symbols (Unicode categories P* and S*) become spaces, except apostrophes, which are
   dropped ("don't" -> "dont") so contractions stay one word.
6. Whitespace is collapsed.

Tokens: English is scored in words (WER); Mandarin in characters with all whitespace removed (CER), so a
Latin word inside Mandarin text counts letter by letter.
"""
from __future__ import annotations

import re
import unicodedata

import zhconv

# --- text normalisation --------------------------------------------------------------------------

_EN_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
            "fifteen sixteen seventeen eighteen nineteen").split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_EN_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_EN_ORDINAL_EXCEPTIONS = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                          "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
_ZH_DIGITS = "零一二三四五六七八九"

# A number token: digits with optional thousands separators, optional decimal part, optional ordinal
# suffix or percent sign. Matched after NFKC, so full-width digits are already ASCII.
# Letters before a digit make it part of a word ("mp3"); CJK characters before it do not ("在2015年").
_NUMBER_RE = re.compile(r"(?<![0-9A-Za-z])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(st|nd|rd|th)?(%)?(?![0-9])")
_APOSTROPHES = "'\u2019\u2018`"


def _en_below_1000(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_EN_ONES[n // 100], "hundred"]
        n %= 100
        if n == 0:
            return words
    if n < 20:
        words.append(_EN_ONES[n])
    else:
        words.append(_EN_TENS[n // 10])
        if n % 10:
            words.append(_EN_ONES[n % 10])
    return words


def english_cardinal(n: int) -> str:
    """Spell a non-negative integer in English words (``1204`` -> ``one thousand two hundred four``)."""
    if n < 0:
        raise ValueError(f"expected a non-negative integer, got {n}")
    if n < 1000:
        return " ".join(_en_below_1000(n))
    words: list[str] = []
    for value, name in _EN_SCALES:
        if n >= value:
            words += [english_cardinal(n // value), name]
            n %= value
    if n:
        words += _en_below_1000(n)
    return " ".join(words)


def _english_year(n: int) -> str:
    hi, lo = divmod(n, 100)
    if lo == 0:
        return f"{english_cardinal(hi)} hundred"
    if lo < 10:
        return f"{english_cardinal(hi)} oh {english_cardinal(lo)}"
    return f"{english_cardinal(hi)} {english_cardinal(lo)}"


def _english_ordinal(cardinal: str) -> str:
    head, _, last = cardinal.rpartition(" ")
    if last in _EN_ORDINAL_EXCEPTIONS:
        last = _EN_ORDINAL_EXCEPTIONS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


def chinese_cardinal(n: int) -> str:
    """Spell a non-negative integer with Chinese numerals (``2015`` -> ``二千零一十五``, ``10`` -> ``十``)."""
    if n < 0:
        raise ValueError(f"expected a non-negative integer, got {n}")
    if n == 0:
        return _ZH_DIGITS[0]

    def below_10000(m: int) -> str:
        out = ""
        zero_pending = False
        for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
            digit, m = divmod(m, value)
            if digit == 0:
                zero_pending = bool(out)
                continue
            if zero_pending:
                out += _ZH_DIGITS[0]
                zero_pending = False
            out += _ZH_DIGITS[digit] + unit
        return out

    groups: list[tuple[int, str]] = []
    for value, unit in ((10**8, "亿"), (10**4, "万"), (1, "")):
        groups.append((n // value, unit))
        n %= value
    out = ""
    for count, unit in groups:
        if count == 0:
            continue
        if out and count < 1000:
            out += _ZH_DIGITS[0]  # 一万零五百: a gap inside the number is read as 零
        out += (chinese_cardinal(count) if count >= 10**4 else below_10000(count)) + unit
    # 一十五 is read 十五 when it starts the number.
    return out[1:] if out.startswith("一十") else out


def _digits_one_by_one(digits: str, language: str) -> str:
    if language == "zh":
        return "".join(_ZH_DIGITS[int(d)] for d in digits)
    return " ".join(_EN_ONES[int(d)] for d in digits)


def _spell_number(match: re.Match, text: str, language: str) -> str:
    written, decimal, ordinal, percent = match.groups()
    integer = written.replace(",", "")
    followed_by = text[match.end():match.end() + 1]
    if (integer.startswith("0") and len(integer) > 1) or len(integer) >= 7:
        words = _digits_one_by_one(integer, language)
    elif language == "zh":
        words = _digits_one_by_one(integer, language) if followed_by == "年" and not decimal \
            else chinese_cardinal(int(integer))
    else:
        n = int(integer)
        is_year = len(written) == 4 and not decimal and not ordinal and (1100 <= n <= 1999 or 2010 <= n <= 2099)
        words = _english_year(n) if is_year else english_cardinal(n)
    if decimal:
        sep = "点" if language == "zh" else " point "
        words += sep + _digits_one_by_one(decimal[1:], language)
    if ordinal and language != "zh":
        words = _english_ordinal(words)
    if percent:
        words = f"百分之{words}" if language == "zh" else f"{words} percent"
    pad = "" if language == "zh" else " "
    return f"{pad}{words}{pad}"


def normalize_text(text: str, *, language: str) -> str:
    """Normalise a transcript for scoring (see the module docstring for every rule).

    Parameters
    ----------
    text : str
        Reference or hypothesis text; any string, including empty.
    language : str
        ``"zh"`` for Mandarin (Chinese numerals), anything else reads numbers in English.
    """
    lang = "zh" if language.lower().startswith("zh") else "en"
    text = unicodedata.normalize("NFKC", text)
    text = zhconv.convert(text, "zh-hans")
    text = text.casefold()
    text = _NUMBER_RE.sub(lambda m: _spell_number(m, m.string, lang), text)
    for apostrophe in _APOSTROPHES:
        text = text.replace(apostrophe, "")
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return " ".join(text.split())


def tokens(text: str, *, language: str) -> list[str]:
    """Normalised scoring units: words for English, characters (no whitespace) for Mandarin."""
    normalized = normalize_text(text, language=language)
    if language.lower().startswith("zh"):
        return [ch for ch in normalized if not ch.isspace()]
    return normalized.split()
