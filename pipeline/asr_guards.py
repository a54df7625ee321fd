"""What Whisper writes, checked: Simplified output, junk characters, repetition loops, too much text.

A window's text is cut where a unit repeats (one unit six times, a unit of 2..10 four times) or where a
turn holds more characters (zh) / words (en) than its duration allows; a re-decode is kept only when it
does not invent text. Used by :class:`pipeline.asr.Transcriber` and by ``evaluate asr``'s loop count.
"""
from __future__ import annotations

import logging
import math
import re
from typing import Sequence

from .asr_models import AsrOptions

log = logging.getLogger("pipeline.asr")


def _simplify(text: str, language: str) -> str:
    if language != "zh" or not text:
        return text
    import zhconv

    return zhconv.convert(text, "zh-cn")



# -- guards against repetition loops and invented text --------------------------------------------------

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Small form variants (U+FE50-FE6F), full-width digits and Latin letters and the replacement character: in
# a zh/en transcript these come only from a byte-level decode gone wrong ("Ｇ", "０", "﹑"). Full-width
# punctuation ("，", "？") is real punctuation and stays.
_JUNK = re.compile(r"[\ufe50-\ufe6f\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\ufffd]")
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
MIN_REPEATS_SINGLE = 6     # "问问问问问问": one unit six times (card digits "0000" stay)
MIN_REPEATS_LONGER = 4     # "1-1-1-1-", "请用简体中文。" x4: a unit of 2..10 four times
MAX_PERIOD = 10
MAX_DIGIT_RUN = 20         # digits repeated in a card number (<= 19) are not a loop
SLACK_UNITS = 3            # a short turn may hold a few more units than its duration's rate


_PUNCT_RUN = re.compile(r"([^\w\s])\1{3,}")


def squeeze_punctuation(text: str) -> str:
    """One mark for a run of four or more of the same ("。。。。…" -> "。"). Whisper attaches trailing
    punctuation to the word before it, so such a loop hides inside one word, out of the unit-level check."""
    return _PUNCT_RUN.sub(r"\1", text)


def _content(text: str) -> str:
    """The text without spaces and punctuation (what a repetition or length check should compare)."""
    return _NON_WORD.sub("", text).lower()


def _text_units(text: str, language: str) -> list[str]:
    """Split text without word timestamps into units that keep their spacing: characters for Mandarin,
    words (with their leading space) otherwise."""
    if language == "zh":
        return list(text)
    return re.findall(r"\s*\S+", text)


def _unit_count(units: Sequence[str], language: str) -> int:
    """How much speech the units claim: CJK characters (plus Latin words) for Mandarin, words otherwise."""
    if language == "zh":
        text = "".join(units)
        return len(_CJK.findall(text)) + len(re.findall(r"[A-Za-z0-9]+", _CJK.sub(" ", text)))
    return sum(1 for u in units if _content(u))


def max_units(duration_s: float, language: str, options: AsrOptions) -> int:
    """The most characters (zh) / words (others) a turn of ``duration_s`` can plausibly hold."""
    rate = options.max_chars_per_s_zh if language == "zh" else options.max_words_per_s
    return SLACK_UNITS + int(math.ceil(rate * max(0.0, duration_s)))


def repetition_cut(units: Sequence[str]) -> list[int]:
    """Indices of the units to keep once repetition loops are collapsed to one copy of their unit.

    A loop is a run of one unit repeated ``MIN_REPEATS_SINGLE`` times, or of 2..``MAX_PERIOD`` units
    repeated ``MIN_REPEATS_LONGER`` times, compared without spaces, case and attached punctuation ("问问问…",
    "1-1-1-…", "请用简体中文。 请用简体中文。 …", "。。。。。。…"). Text after the run is kept.
    """
    # compared without case and punctuation; a unit of punctuation alone is compared as itself ("。" x 200)
    keys = [_content(u) or u.strip() for u in units]
    idx = [i for i, k in enumerate(keys) if k]          # the units that are not blank, in order
    seq = [keys[i] for i in idx]
    drop: set[int] = set()
    pos = 0
    while pos < len(seq):
        found = None
        for period in range(1, MAX_PERIOD + 1):
            if pos + period * 2 > len(seq):
                break
            unit = seq[pos:pos + period]
            reps = 1
            while seq[pos + reps * period: pos + (reps + 1) * period] == unit:
                reps += 1
            need = MIN_REPEATS_SINGLE if period == 1 else MIN_REPEATS_LONGER
            if all(k.isdigit() for k in unit):
                # digits repeat in real card and account numbers ("0000 0000", "1234 1234 1234 1234"):
                # a digit loop must run longer than any of those (19 digits) to count
                need = max(need, -(-MAX_DIGIT_RUN // period))
            if reps >= need:
                found = (period, reps)
                break
        if found is None:
            pos += 1
            continue
        period, reps = found
        # keep the first copy, drop the repeats (and anything between them, e.g. their punctuation)
        first_kept_end = idx[pos + period - 1]
        run_end = idx[pos + reps * period - 1]
        drop.update(range(first_kept_end + 1, run_end + 1))
        # a partial copy right after the run is part of the loop too ("问问…问请" stays, "…请用简" goes)
        tail = pos + reps * period
        while tail < len(seq) and seq[tail] == seq[pos + (tail - pos) % period]:
            drop.add(idx[tail])
            if tail + 1 < len(idx):
                drop.update(range(idx[tail] + 1, idx[tail + 1]))
            tail += 1
        pos = tail
    return [i for i in range(len(units)) if i not in drop]


def guard_units(units: Sequence[str], language: str, duration_s: float, options: AsrOptions) -> list[int]:
    """Indices of a turn's units (words or characters) to keep: junk full-width forms removed, loops
    collapsed, and the text cut at the most units its duration allows. Logs what it cut."""
    keep = [i for i, u in enumerate(units) if not (_JUNK.search(u) and not _content(_JUNK.sub("", u)))]
    if len(keep) < len(units):
        log.info("removed %d junk full-width unit(s) from a %s turn", len(units) - len(keep), language)
    looped = repetition_cut([units[i] for i in keep])
    if len(looped) < len(keep):
        log.warning("cut a repetition loop (%d of %d units) from a %.1f s %s turn: %r", len(keep) - len(looped),
                    len(keep), duration_s, language, "".join(units[i] for i in keep)[:80])
    keep = [keep[i] for i in looped]
    limit = max_units(duration_s, language, options)
    if _unit_count([units[i] for i in keep], language) > limit:
        out: list[int] = []
        for i in keep:
            if _unit_count([units[j] for j in out + [i]], language) > limit:
                break
            out.append(i)
        log.warning("cut a %.1f s %s turn to %d units (it claimed %d): %r", duration_s, language, limit,
                    _unit_count([units[i] for i in keep], language), "".join(units[i] for i in keep)[:80])
        keep = out
    return keep


def redecode_is_acceptable(first: str, second: str, language: str, audio_s: float, options: AsrOptions) -> bool:
    """Whether a sampled re-decode may replace the first decode: it must fit the audio's duration, hold
    no repetition loop, and mostly repeat what the first decode heard (at most a third of its units new:
    a re-decode that adds "I'm a little bit more patient" to "Say the word, tape" invents)."""
    units = _text_units(second, language)
    if _unit_count(units, language) > max_units(audio_s, language, options):
        return False
    if len(repetition_cut(units)) < len(units):
        return False
    heard = {_content(u) for u in _text_units(first, language)} - {""}
    new = [k for k in (_content(u) for u in units) if k and k not in heard]
    return len(new) <= max(1, len([u for u in units if _content(u)]) // 3)


def _segments_text(segments) -> str:
    return "".join(seg.text for seg in segments)


_fullwidth_cache: dict[int, tuple[int, ...]] = {}


def fullwidth_tokens(hf_tokenizer) -> tuple[int, ...]:
    """Ids of the byte-level tokens holding the byte 0xEF, which begins every character U+F000-FFFF
    (full-width and small forms, compatibility forms, the replacement character). Suppressing them
    stops Whisper from starting a three-byte full-width form whose last byte it then gets wrong."""
    key = id(hf_tokenizer)
    if key not in _fullwidth_cache:
        # GPT-2 byte-level alphabet: printable bytes stand for themselves, the rest are shifted to 256+
        printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
        extra = [b for b in range(256) if b not in printable]
        to_byte = {chr(b): b for b in printable} | {chr(256 + n): b for n, b in enumerate(extra)}
        ids = []
        for token, token_id in hf_tokenizer.get_vocab().items():
            if all(ch in to_byte for ch in token) and 0xEF in bytes(to_byte[ch] for ch in token):
                ids.append(token_id)
        _fullwidth_cache[key] = tuple(sorted(ids))
    return _fullwidth_cache[key]
