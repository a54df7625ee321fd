"""Human-readable outputs of a batch: one HTML page per call, an index page, and summary.csv.

Pages are self-contained (inline CSS, the timeline as inline SVG drawn by matplotlib's Agg backend), so a
supervisor can open them from a share, mail them or print them without the network; nothing is loaded from
a CDN. Every piece of text from a call (transcripts, reasons, file names) is HTML-escaped: transcripts are
what callers said, and a caller can say "<script>".

Design: this module turns a per-call JSON dict into a frozen page model (``CallPage``, ``BatchPage``:
formatted text only, no markup) and hands it to a Jinja2 template (``templates/call_report.html.j2``,
``batch_report.html.j2``, both extending ``base.html.j2``) that autoescapes everything it prints. The only
markup that crosses from Python is the timeline SVG (``timeline.py``; matplotlib escapes its text).
Number formats are in ``formatting.py``, the CSV in ``summary.py``.

Inputs are per-call JSON dicts (schema callpulse.call/1) as pipeline.engine writes them; optional fields
may be missing or null (a mono call has no agent, a call without ASR has no text) and numbers may be NaN.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import quote

from .files import write_text_atomic
from .formatting import (channels_text, clock, fmt, lang_tag, peak_agitation, score_text, seconds_text,
                         sentiment_class, sentiment_text, talk_share_text)
from .store import finite_number
from .summary import SUMMARY_COLUMNS, first_takeover_s, summary_row, write_summary_csv
from .templating import Markup, render
from .timeline import ACTION_LABELS, _thin_timeline, timeline_svg

log = logging.getLogger(__name__)

# Re-exported: batch.py and the tests import these from here.
__all__ = ["SUMMARY_COLUMNS", "render_batch_html", "render_call_html", "summary_row", "timeline_svg",
           "write_batch_report", "write_call_report", "write_summary_csv", "_thin_timeline"]

_KIND_LABELS = {"caller_agitation": "caller agitation", "agent_strain": "agent strain"}


# -------------------------------------------------------------------------------------------------
# Public API


def write_call_report(result: Mapping, path: Path) -> None:
    """Write one call's HTML page (timeline plot, alerts with reasons, transcript) to ``path``."""
    write_text_atomic(Path(path), render_call_html(result))


def write_batch_report(results: Sequence[Mapping], failures: Sequence[tuple[str, str]], path: Path) -> None:
    """Write the batch index: a table of calls linking to ``<call_id>.html``, and the failures with reasons."""
    write_text_atomic(Path(path), render_batch_html(results, failures))


def render_call_html(result: Mapping) -> str:
    """The HTML of one call's page."""
    page = call_page(result)
    return render("call_report.html.j2", title=f"Call {page.call_id} — callpulse", call=page)


def render_batch_html(results: Sequence[Mapping], failures: Sequence[tuple[str, str]]) -> str:
    """The HTML of the batch index page."""
    return render("batch_report.html.j2", title="callpulse — analysed calls", batch=batch_page(results, failures))


# -------------------------------------------------------------------------------------------------
# Page models: what the templates print, as text (the templates escape it)


@dataclass(frozen=True)
class LevelBar:
    """A 0-1 level drawn as a bar: ``value`` as printed, ``fill_pct`` and ``mark_pct`` (the threshold,
    None without one) as CSS percentages."""

    value: str
    fill_pct: str
    over: bool
    mark_pct: str | None
    compact: bool = False


@dataclass(frozen=True)
class AlertCard:
    title: str
    kind: str
    strain: bool
    onset: str
    raised: str
    cleared: str
    level: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class TurnRow:
    """One transcript turn; ``onset_marker`` (a clock time) puts the agitation-onset row above it."""

    start: str
    end: str
    speaker: str
    text: str
    language: str | None
    lang_tag: str | None
    sentiment: str
    sentiment_class: str
    emotion: str
    arousal: str | None
    flags: tuple[str, ...]
    onset_marker: str | None


@dataclass(frozen=True)
class CallPage:
    call_id: str
    source: str
    n_takeover: int
    n_break: int
    peak: LevelBar | None
    facts: tuple[tuple[str, str], ...]
    timeline_svg: Markup | None     # None: ``timeline_note`` says why there is no plot
    timeline_note: str
    alerts: tuple[AlertCard, ...]
    turns: tuple[TurnRow, ...]
    stage_errors: tuple[tuple[str, str, str], ...]   # (stage, clock time, message)
    footer: str


@dataclass(frozen=True)
class BatchRow:
    href: str
    call_id: str
    source: str
    agent: str
    duration: str
    languages: str
    peak: LevelBar | None
    sentiment: str
    n_takeover: int
    first_takeover: str | None
    recovery_break: bool


@dataclass(frozen=True)
class BatchPage:
    stats: tuple[tuple[str, str], ...]
    rows: tuple[BatchRow, ...]
    failures: tuple[tuple[str, str], ...]


def level_bar(level: float | None, threshold: float | None, *, compact: bool = False) -> LevelBar | None:
    if level is None:
        return None
    return LevelBar(value=f"{level:.2f}", fill_pct=f"{max(0.0, min(1.0, level)) * 100.0:.1f}",
                    over=threshold is not None and level >= threshold,
                    mark_pct=None if threshold is None else f"{max(0.0, min(1.0, threshold)) * 100.0:.1f}",
                    compact=compact)


def call_page(result: Mapping) -> CallPage:
    """The page model of one call."""
    summary = result.get("summary") or {}
    alerts = list(result.get("alerts") or [])
    segments = list(result.get("segments") or [])
    facts = (
        ("Duration", clock(result.get("duration_s"))),
        ("Languages", ", ".join(result.get("languages") or []) or "—"),
        ("Agent", str(result.get("agent_id") or "—")),
        ("Started", str(result.get("started_at") or "—").replace("T", " ")),
        ("Channels", channels_text(result.get("channels"))),
        ("Caller sentiment", score_text(summary.get("caller_sentiment_score"))),
        ("Talk share", talk_share_text(summary.get("talk_share"))),
        ("Over-talk", seconds_text(summary.get("overtalk_s"))),
    )
    svg, note = _timeline(result)
    return CallPage(
        call_id=str(result.get("call_id") or "call"),
        source=str(result.get("source") or ""),
        n_takeover=sum(1 for a in alerts if a.get("action") == "supervisor_takeover"),
        n_break=sum(1 for a in alerts if a.get("action") == "recovery_break"),
        peak=level_bar(peak_agitation(result), finite_number(summary.get("agitation_raise_level"))),
        facts=facts,
        timeline_svg=svg,
        timeline_note=note,
        alerts=tuple(_alert_card(a) for a in alerts),
        turns=_turn_rows(segments, alerts),
        stage_errors=tuple((str(e.get("stage", "?")), clock(e.get("t_s")), str(e.get("message", "")))
                           for e in summary.get("stage_errors") or []),
        footer=_footer_text(summary),
    )


def _timeline(result: Mapping) -> tuple[Markup | None, str]:
    if not result.get("timeline") and not result.get("segments"):
        return None, "This call is too short for a timeline."
    try:
        # matplotlib escapes every text it writes into the SVG, so the element is safe to insert as is.
        return Markup(timeline_svg(result)), ""
    except (ValueError, RuntimeError) as exc:
        # A broken plot must not cost the supervisor the transcript and the alerts; say so on the page.
        log.warning("timeline plot failed for call %s: %s", result.get("call_id"), exc)
        return None, f"The timeline could not be drawn ({exc})."


def _alert_card(a: Mapping) -> AlertCard:
    action = str(a.get("action") or "")
    cleared = finite_number(a.get("cleared_at_s"))
    return AlertCard(
        title=ACTION_LABELS.get(action, action or "alert"),
        kind=str(_KIND_LABELS.get(str(a.get("kind")), a.get("kind") or "")),
        strain=a.get("kind") == "agent_strain",
        onset=clock(a.get("onset_s")),
        raised=clock(a.get("raised_at_s")),
        cleared=clock(cleared) if cleared is not None else "not cleared",
        level=fmt(a.get("level"), 2),
        reasons=tuple(str(r) for r in a.get("reasons") or []),
    )


def _turn_rows(segments: Sequence[Mapping], alerts: Sequence[Mapping]) -> tuple[TurnRow, ...]:
    onsets = sorted(t for t in (finite_number(a.get("onset_s")) for a in alerts
                                if a.get("kind") == "caller_agitation") if t is not None)
    rows = []
    marked = False
    for s in segments:
        end = finite_number(s.get("end_s"))
        marker = None
        # The marker goes above the first turn still running at the onset: the turn where it began.
        if onsets and not marked and end is not None and end > onsets[0]:
            marker = clock(onsets[0])
            marked = True
        sentiment = finite_number(s.get("sentiment"))
        arousal = finite_number(s.get("arousal"))
        language = s.get("language")
        rows.append(TurnRow(
            start=clock(s.get("start_s")),
            end=clock(s.get("end_s")),
            speaker=str(s.get("speaker") or "mixed"),
            text=str(s.get("text") or ""),
            language=str(language) if language else None,
            lang_tag=lang_tag(language),
            sentiment=sentiment_text(sentiment),
            sentiment_class=sentiment_class(sentiment),
            emotion=str((s.get("emotion") or {}).get("label") or ""),
            arousal=None if arousal is None else fmt(arousal, 2),
            flags=tuple(str(f).replace("_", " ") for f in s.get("flags") or []),
            onset_marker=marker,
        ))
    return tuple(rows)


def _footer_text(summary: Mapping) -> str:
    bits = []
    if summary.get("emotion_source"):
        bits.append(f"emotion: {summary['emotion_source']}")
    if summary.get("asr_model"):
        bits.append(f"speech recognition: {summary['asr_model']}")
    if summary.get("callpulse_version"):
        bits.append(f"callpulse {summary['callpulse_version']}")
    return " · ".join(bits)


def batch_page(results: Sequence[Mapping], failures: Sequence[tuple[str, str]]) -> BatchPage:
    """The page model of the batch index."""
    actions = [a.get("action") for r in results for a in r.get("alerts") or []]
    stats = (
        ("Calls analysed", str(len(results))),
        ("Audio", clock(sum(finite_number(r.get("duration_s")) or 0.0 for r in results))),
        ("Supervisor takeovers", str(actions.count("supervisor_takeover"))),
        ("Recovery breaks", str(actions.count("recovery_break"))),
        ("Failed files", str(len(failures))),
    )
    rows = []
    for r in results:
        call_id = str(r.get("call_id") or "")
        summary = r.get("summary") or {}
        alerts = r.get("alerts") or []
        first = first_takeover_s(alerts)
        rows.append(BatchRow(
            href=f"{quote(call_id)}.html",
            call_id=call_id,
            source=str(r.get("source") or ""),
            agent=str(r.get("agent_id") or "—"),
            duration=clock(r.get("duration_s")),
            languages=", ".join(r.get("languages") or []) or "—",
            peak=level_bar(peak_agitation(r), finite_number(summary.get("agitation_raise_level")), compact=True),
            sentiment=score_text(summary.get("caller_sentiment_score")),
            n_takeover=sum(1 for a in alerts if a.get("action") == "supervisor_takeover"),
            first_takeover=None if first is None else clock(first),
            recovery_break=any(a.get("action") == "recovery_break" for a in alerts),
        ))
    return BatchPage(stats=stats, rows=tuple(rows), failures=tuple((str(p), str(why)) for p, why in failures))
