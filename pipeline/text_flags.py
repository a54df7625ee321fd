"""Text stage, flags: rule-based, explainable ``abuse`` / ``anger`` / ``escalation_request`` from the pattern
files ``flags_en.tsv`` and ``flags_zh.tsv`` (``flag<TAB>regex``, ASR mis-hearings included).

Flags come from these patterns whatever the sentiment backend, so a supervisor phrase ("我要投诉", "speak
to your manager") never depends on a model's mood. A negator just before an escalation or anger phrase
cancels it ("I don't want to complain", "您别生气"); abuse is abuse anyway.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .errors import ModelUnavailableError
from .text_lexicon import compile_regex, data_lines, preceded_by_en_negator, preceded_by_zh_negator

FLAGS = ("abuse", "anger", "escalation_request")
# Flags that a preceding negator cancels ("I don't want to complain", "您别生气"); abuse is abuse anyway.
NEGATABLE_FLAGS = frozenset({"escalation_request", "anger"})


def read_flag_patterns(path: Path) -> tuple[tuple[str, re.Pattern], ...]:
    out = []
    for number, cols in data_lines(path):
        if len(cols) != 2 or cols[0] not in FLAGS:
            raise ModelUnavailableError(
                f"{path}:{number}: expected '<flag>\\t<regex>' with flag one of {FLAGS}, got {cols!r}"
            )
        out.append((cols[0], compile_regex(path, number, cols[1])))
    return tuple(out)


def load_flag_patterns(folder: Path) -> tuple[tuple[str, str, re.Pattern], ...]:
    """(flag, language, pattern) of both pattern files in ``folder``; English ones read the Latin part of a
    turn, Mandarin ones the whole turn in Simplified (digits too: "我要打12378")."""
    return tuple(
        [(flag, "en", rx) for flag, rx in read_flag_patterns(folder / "flags_en.tsv")]
        + [(flag, "zh", rx) for flag, rx in read_flag_patterns(folder / "flags_zh.tsv")]
    )


def find_flags(patterns: Sequence[tuple[str, str, re.Pattern]], latin_text: str, zh_view: str) -> tuple[str, ...]:
    """The flags a turn raises, sorted; ``latin_text`` / ``zh_view`` as ``TextScorer._views`` makes them."""
    found = set()
    for flag, lang, rx in patterns:
        if flag in found:
            continue
        target = latin_text if lang == "en" else zh_view
        if not target:
            continue
        for m in rx.finditer(target):
            if flag in NEGATABLE_FLAGS:
                negated = (
                    preceded_by_en_negator(target, m.start())
                    if lang == "en"
                    else preceded_by_zh_negator(target, m.start())
                )
                if negated:
                    continue
            found.add(flag)
            break
    return tuple(sorted(found))
