"""How the numbers of a per-call result read on a page and in summary.csv.

Pure functions from JSON values to text. Result JSON read back from disk may hold None, NaN or a string
where a number belongs; each function says what it prints then ('—' on pages, '' in CSV cells).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from .store import finite_number

__all__ = ["channels_text", "clock", "fmt", "lang_tag", "nan_if_none", "peak_agitation", "score_text",
           "seconds_text", "sentiment_class", "sentiment_text", "talk_share_text", "finite_number"]


def nan_if_none(value: Any) -> float:
    x = finite_number(value)
    return math.nan if x is None else x


def peak_agitation(result: Mapping) -> float | None:
    """The summary's peak caller agitation, or the timeline's maximum when the summary lacks it."""
    peak = finite_number((result.get("summary") or {}).get("peak_agitation"))
    if peak is not None:
        return peak
    levels = [x for x in (finite_number(p.get("caller_agitation")) for p in result.get("timeline") or [])
              if x is not None]
    return max(levels) if levels else None


def clock(value: Any) -> str:
    """Seconds as m:ss (h:mm:ss past an hour); '—' when unknown."""
    x = finite_number(value)
    if x is None:
        return "—"
    total = int(round(max(0.0, x)))
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt(value: Any, digits: int) -> str:
    x = finite_number(value)
    return "—" if x is None else f"{x:.{digits}f}"


def seconds_text(value: Any) -> str:
    x = finite_number(value)
    return "—" if x is None else f"{x:.1f} s"


def score_text(value: Any) -> str:
    x = finite_number(value)
    return "—" if x is None else f"{int(round(x)):+d}"


def talk_share_text(share: Any) -> str:
    if not isinstance(share, Mapping) or not share:
        return "—"
    return " / ".join(f"{k} {100.0 * v:.0f}%" for k, v in share.items() if finite_number(v) is not None) or "—"


def channels_text(channels: Any) -> str:
    if isinstance(channels, Mapping):
        return ", ".join(f"{k} = ch {v}" for k, v in channels.items())
    return "mono (mixed)" if channels == "mixed" else (str(channels) if channels else "—")


def sentiment_class(value: float | None) -> str:
    """The CSS class a sentiment in [-1, 1] colours a transcript turn with."""
    if value is None:
        return "unknown"
    if value <= -0.5:
        return "neg-strong"
    if value <= -0.15:
        return "neg"
    if value < 0.15:
        return "neutral"
    if value < 0.5:
        return "pos"
    return "pos-strong"


def sentiment_text(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def lang_tag(language: Any) -> str | None:
    """The HTML ``lang`` of a turn: tells the browser which CJK glyph forms and fonts to use (Simplified
    Chinese, not Japanese); None when the language is unknown."""
    if not language:
        return None
    return {"zh": "zh-Hans"}.get(str(language), str(language))
