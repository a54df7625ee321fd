"""Text stage, lexicon part: the hand-written rule files of ``models/text/`` and the Mandarin lexicon scorer.

Readers of the lexicon files (a malformed line raises ``ModelUnavailableError`` naming file and line), the
Mandarin longest-match lexicon with degree words and negation, VADER's normalisation (shared by both
languages, so one word of valence -2 is equally negative in each), negator windows, and the text views
ASR output needs (Mandarin runs, contractions written without apostrophes). ``pipeline/text.py`` puts these
together; the trained models read the lexicon score as one input.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .errors import ModelUnavailableError

# VADER's normalisation constant: raw valence x -> x / sqrt(x^2 + alpha). Using the same one for the
# Mandarin lexicon keeps one word of valence -2 equally negative in both languages.
ALPHA = 15.0

CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# A CJK run keeps its own punctuation so clause boundaries survive for negation windows.
CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]+")
LATIN_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
EN_NEGATOR = re.compile(
    r"\b(not|no|never|don't|dont|doesn't|doesnt|didn't|didnt|isn't|wasn't|won't|wont|can't|cant|cannot|"
    r"without|nor|hardly|neither)\b|n't\b",
    re.IGNORECASE,
)
# Whisper often writes English contractions without the apostrophe ("youre not listening", "i havent");
# the unambiguous ones get it back so VADER, the rules and the flags read them ("its", "ill", "id", "were"
# and "well" are real words and stay).
_BARE_CONTRACTION = re.compile(
    r"\b(do|does|did|is|was|were|are|have|has|had|ca|could|would|should|wo|must|need)nt\b|"
    r"\b(you|they)re\b|\b(i|you|we|they)ve\b|\b(i)m\b",
    re.IGNORECASE,
)


def restore_contractions(text: str) -> str:
    def fix(m: re.Match) -> str:
        word = m.group(0)
        if m.group(1):
            return word[:-2] + "n't"
        if m.group(2):
            return word[:-2] + "'re"
        if m.group(3):
            return word[:-2] + "'ve"
        return word[:-1] + "'m"

    return _BARE_CONTRACTION.sub(fix, text)


ZH_CLAUSE_BREAK = set("，。！？；：、,.!?;:\n\r\t…～~")
ZH_FLAG_NEGATORS = set("不没别勿莫未")


# --------------------------------------------------------------------------------------------------
# Lexicon files


def data_lines(path: Path) -> list[tuple[int, list[str]]]:
    """Non-comment, non-blank lines of a lexicon file, split on tabs, with their line numbers."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ModelUnavailableError(
            f"text lexicon {path} is missing; restore models/text/ from the repository or point "
            "[text] lexicon_dir (or $CALLPULSE_MODELS) at a folder holding it"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelUnavailableError(f"text lexicon {path} cannot be read as UTF-8 text: {exc}") from exc
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        rows.append((number, line.rstrip("\r").split("\t")))
    return rows


def float_field(path: Path, number: int, value: str) -> float:
    try:
        return float(value)
    except ValueError as exc:
        raise ModelUnavailableError(f"{path}:{number}: {value!r} is not a number") from exc


def compile_regex(path: Path, number: int, pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ModelUnavailableError(f"{path}:{number}: bad regular expression {pattern!r}: {exc}") from exc


def read_weighted_patterns(path: Path) -> tuple[tuple[re.Pattern, float], ...]:
    out = []
    for number, cols in data_lines(path):
        if len(cols) != 2:
            raise ModelUnavailableError(f"{path}:{number}: expected '<regex>\\t<valence>', got {cols!r}")
        out.append((compile_regex(path, number, cols[0]), float_field(path, number, cols[1])))
    return tuple(out)


def read_word_values(path: Path) -> dict[str, float]:
    out = {}
    for number, cols in data_lines(path):
        if len(cols) != 2:
            raise ModelUnavailableError(f"{path}:{number}: expected '<word>\\t<number>', got {cols!r}")
        out[cols[0].strip()] = float_field(path, number, cols[1])
    return out


def read_formulas(path: Path) -> re.Pattern | None:
    """One alternation of every formula regex in the file (None when the file lists none)."""
    patterns = []
    for number, cols in data_lines(path):
        compile_regex(path, number, cols[0])  # names the bad line, if any
        patterns.append(f"(?:{cols[0]})")
    return re.compile("|".join(patterns), re.IGNORECASE) if patterns else None


def read_markers(path: Path) -> re.Pattern | None:
    """One alternation of the literal words of an optional word file (None when absent or empty)."""
    if not path.is_file():
        return None
    words = sorted(read_words(path), key=len, reverse=True)
    return re.compile("|".join(re.escape(w) for w in words)) if words else None


def read_words(path: Path) -> set[str]:
    return {cols[0].strip() for _, cols in data_lines(path)}


# --------------------------------------------------------------------------------------------------
# Mandarin lexicon scorer


@dataclass(frozen=True)
class ZhLexicon:
    """Longest-match lexicon with degree words and negation; immutable, so shared across threads."""

    # word -> ("s", valence) | ("d", multiplier) | ("n", 0.0)
    entries: Mapping[str, tuple[str, float]]
    max_len: int

    @classmethod
    def from_folder(cls, folder: Path) -> "ZhLexicon":
        entries: dict[str, tuple[str, float]] = {}
        for word in read_words(folder / "zh_negators.txt"):
            entries[word] = ("n", 0.0)
        for word, mult in read_word_values(folder / "zh_degree.tsv").items():
            entries[word] = ("d", mult)
        # Sentiment words last: a word listed both ways ("太过分") is a sentiment word.
        for word, valence in read_word_values(folder / "zh_sentiment.tsv").items():
            entries[word] = ("s", valence)
        return cls(entries=entries, max_len=max(len(w) for w in entries))

    def raw_valence(self, text: str) -> tuple[float, int]:
        """Sum of matched valences (VADER's raw scale) and the number of sentiment words matched."""
        total = 0.0
        hits = 0
        negated_gap: int | None = None  # unmatched characters since the last negator (None: none pending)
        degree = 1.0
        degree_gap: int | None = None
        i = 0
        n = len(text)
        while i < n:
            ch = text[i]
            if ch in ZH_CLAUSE_BREAK:
                negated_gap = degree_gap = None
                degree = 1.0
                i += 1
                continue
            match = None
            for length in range(min(self.max_len, n - i), 0, -1):
                entry = self.entries.get(text[i : i + length])
                if entry is not None:
                    match = (length, entry)
                    break
            if match is None:
                # An unmatched character widens the gap; negation and degree only reach two characters.
                if negated_gap is not None:
                    negated_gap += 1
                    if negated_gap > 2:
                        negated_gap = None
                if degree_gap is not None:
                    degree_gap += 1
                    if degree_gap > 1:
                        degree_gap, degree = None, 1.0
                i += 1
                continue
            length, (kind, value) = match
            if kind == "n":
                negated_gap = 0
            elif kind == "d":
                degree, degree_gap = value, 0
            else:
                valence = value * (degree if degree_gap is not None else 1.0)
                if negated_gap is not None:
                    # VADER's negation scalar for praise ("不太满意" is negative, milder than "差"); a negated
                    # complaint is only mildly positive ("不差", "我不是要投诉" is no compliment).
                    valence *= -0.74 if valence > 0 else -0.3
                if value != 0.0:
                    hits += 1
                total += valence
                negated_gap = degree_gap = None
                degree = 1.0
            i += length
        return total, hits


def normalise(raw: float) -> float:
    return raw / math.sqrt(raw * raw + ALPHA)


def compound_to_raw(compound: float) -> float:
    # Invert VADER's normalisation so its score can be summed with our rules on one raw scale.
    c = max(-0.9999, min(0.9999, compound))
    return c * math.sqrt(ALPHA / (1.0 - c * c))


def join_cjk_runs(text: str) -> str:
    """The Mandarin parts of a turn; runs split by anything but whitespace are joined by a clause break,
    so a negator in one clause (or before an English phrase) never reaches into the next."""
    parts: list[str] = []
    prev_end = None
    for m in CJK_RUN.finditer(text):
        if prev_end is not None:
            gap = text[prev_end : m.start()]
            parts.append("" if gap.isspace() else "，")
        parts.append(m.group())
        prev_end = m.end()
    return "".join(parts)


def preceded_by_en_negator(text: str, start: int) -> bool:
    words = text[max(0, start - 40) : start].split()[-3:]
    return bool(EN_NEGATOR.search(" ".join(words)))


def preceded_by_zh_negator(text: str, start: int) -> bool:
    window = text[max(0, start - 3) : start]
    for k in range(len(window) - 1, -1, -1):
        if window[k] in ZH_CLAUSE_BREAK:
            window = window[k + 1 :]
            break
    return any(ch in ZH_FLAG_NEGATORS for ch in window)
