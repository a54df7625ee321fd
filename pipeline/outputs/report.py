"""Human-readable outputs of a batch: one HTML page per call, an index page, and summary.csv.

Pages are self-contained (inline CSS, the timeline as inline SVG drawn by matplotlib's Agg backend), so a
supervisor can open them from a share, mail them or print them without the network; nothing is loaded from
a CDN. Every piece of text from a call (transcripts, reasons, file names) is HTML-escaped: transcripts are
what callers said, and a caller can say "<script>".

Inputs are per-call JSON dicts (schema callpulse.call/1) as pipeline.engine writes them; optional fields
may be missing or null (a mono call has no agent, a call without ASR has no text) and numbers may be NaN.
"""
from __future__ import annotations

import csv
import html
import io
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from .store import finite_number

log = logging.getLogger(__name__)

# Colour-blind-safe pairs that also survive greyscale printing (different lightness).
_AGITATION_COLOUR = "#c0392b"
_STRAIN_COLOUR = "#5b4a9e"
_THRESHOLD_COLOUR = "#7f8c8d"
_SPEAKER_COLOURS = {"agent": "#2e86c1", "caller": "#d35400", "mixed": "#7f8c8d"}
_ACTION_LABELS = {"supervisor_takeover": "Supervisor takeover", "recovery_break": "Recovery break"}
_KIND_LABELS = {"caller_agitation": "caller agitation", "agent_strain": "agent strain"}

SUMMARY_COLUMNS = (
    "call_id", "source", "agent_id", "started_at", "duration_s", "languages", "peak_agitation",
    "mean_agitation", "n_segments", "n_supervisor_takeover", "n_recovery_break", "first_takeover_raised_at_s",
    "caller_sentiment_score", "agent_strain_end", "talk_share_agent", "talk_share_caller", "overtalk_s",
    "long_silences", "n_stage_errors", "emotion_source", "asr_model",
)


# -------------------------------------------------------------------------------------------------
# Public API


def write_call_report(result: Mapping, path: Path) -> None:
    """Write one call's HTML page (timeline plot, alerts with reasons, transcript) to ``path``."""
    _write_text(Path(path), render_call_html(result))


def write_batch_report(results: Sequence[Mapping], failures: Sequence[tuple[str, str]], path: Path) -> None:
    """Write the batch index: a table of calls linking to ``<call_id>.html``, and the failures with reasons."""
    _write_text(Path(path), render_batch_html(results, failures))


def write_summary_csv(results: Sequence[Mapping], path: Path) -> None:
    """Write one row per call (columns ``SUMMARY_COLUMNS``), UTF-8, for spreadsheets and scripts."""
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for result in results:
        writer.writerow(summary_row(result))
    _write_text(Path(path), buf.getvalue())


def summary_row(result: Mapping) -> dict[str, Any]:
    """The summary.csv row of one call: plain values, '' where unknown."""
    summary = result.get("summary") or {}
    alerts = result.get("alerts") or []
    talk_share = summary.get("talk_share") or {}
    takeovers = [a for a in alerts if a.get("action") == "supervisor_takeover"]
    first_takeover = min((finite_number(a.get("raised_at_s")) for a in takeovers if finite_number(a.get("raised_at_s")) is not None),
                         default=None)
    row = {
        "call_id": _safe_cell(result.get("call_id")),
        "source": _safe_cell(result.get("source")),
        "agent_id": _safe_cell(result.get("agent_id")),
        "started_at": _safe_cell(result.get("started_at")),
        "duration_s": _csvfinite_number(result.get("duration_s"), 3),
        "languages": _safe_cell(";".join(result.get("languages") or [])),
        "peak_agitation": _csvfinite_number(_peak_agitation(result), 3),
        "mean_agitation": _csvfinite_number(summary.get("mean_agitation"), 3),
        "n_segments": len(result.get("segments") or []),
        "n_supervisor_takeover": len(takeovers),
        "n_recovery_break": sum(1 for a in alerts if a.get("action") == "recovery_break"),
        "first_takeover_raised_at_s": _csvfinite_number(first_takeover, 2),
        "caller_sentiment_score": _csvfinite_number(summary.get("caller_sentiment_score"), 0),
        "agent_strain_end": _csvfinite_number(summary.get("agent_strain_end"), 3),
        "talk_share_agent": _csvfinite_number(talk_share.get("agent"), 3),
        "talk_share_caller": _csvfinite_number(talk_share.get("caller"), 3),
        "overtalk_s": _csvfinite_number(summary.get("overtalk_s"), 2),
        "long_silences": _csvfinite_number(summary.get("long_silences"), 0),
        "n_stage_errors": len(summary.get("stage_errors") or []),
        "emotion_source": _safe_cell(summary.get("emotion_source")),
        "asr_model": _safe_cell(summary.get("asr_model")),
    }
    return row


# -------------------------------------------------------------------------------------------------
# One call


def render_call_html(result: Mapping) -> str:
    """The HTML of one call's page."""
    call_id = str(result.get("call_id") or "call")
    summary = result.get("summary") or {}
    alerts = list(result.get("alerts") or [])
    segments = list(result.get("segments") or [])
    peak = _peak_agitation(result)
    threshold = finite_number(summary.get("agitation_raise_level"))

    facts = [
        ("Duration", _clock(result.get("duration_s"))),
        ("Languages", ", ".join(result.get("languages") or []) or "—"),
        ("Agent", result.get("agent_id") or "—"),
        ("Started", str(result.get("started_at") or "—").replace("T", " ")),
        ("Channels", _channels_text(result.get("channels"))),
        ("Caller sentiment", _score_text(summary.get("caller_sentiment_score"))),
        ("Talk share", _talk_share_text(summary.get("talk_share"))),
        ("Over-talk", _seconds_text(summary.get("overtalk_s"))),
    ]
    n_takeover = sum(1 for a in alerts if a.get("action") == "supervisor_takeover")
    n_break = sum(1 for a in alerts if a.get("action") == "recovery_break")
    status = (f'<span class="pill pill-alert">{n_takeover} supervisor takeover{"s" if n_takeover != 1 else ""}'
              f'</span>' if n_takeover else '<span class="pill pill-ok">no takeover</span>')
    if n_break:
        status += ' <span class="pill pill-strain">recovery break recommended</span>'

    parts = [
        _page_head(f"Call {call_id} — callpulse"),
        '<header class="call-head">',
        '<div class="crumbs"><a href="index.html">All calls</a></div>',
        f"<h1>Call {_e(call_id)}</h1>",
        f'<div class="source">{_e(result.get("source") or "")}</div>',
        f'<div class="status">{status}</div>',
        '<div class="peak"><span class="label">Peak caller agitation</span>'
        f'{_level_bar(peak, threshold)}</div>',
        '<dl class="facts">',
        *(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in facts),
        "</dl>",
        "</header>",
        '<section><h2>Timeline</h2>',
        _timeline_figure(result),
        "</section>",
        _alerts_section(alerts),
        _transcript_section(segments, alerts),
        _stage_errors_section(summary.get("stage_errors") or []),
        _footer(summary),
        "</body></html>\n",
    ]
    return "\n".join(p for p in parts if p)


def _alerts_section(alerts: Sequence[Mapping]) -> str:
    if not alerts:
        return '<section><h2>Alerts</h2><p class="muted">No alerts were raised on this call.</p></section>'
    cards = []
    for a in alerts:
        action = str(a.get("action") or "")
        cleared = finite_number(a.get("cleared_at_s"))
        reasons = "".join(f"<li>{_e(r)}</li>" for r in a.get("reasons") or []) or "<li>—</li>"
        cls = "alert-card strain" if a.get("kind") == "agent_strain" else "alert-card"
        cards.append(
            f'<article class="{cls}">'
            f'<h3>{_e(_ACTION_LABELS.get(action, action or "alert"))}'
            f'<span class="kind">{_e(_KIND_LABELS.get(str(a.get("kind")), a.get("kind") or ""))}</span></h3>'
            '<dl class="alert-times">'
            f'<div><dt>Onset</dt><dd>{_e(_clock(a.get("onset_s")))}</dd></div>'
            f'<div><dt>Raised</dt><dd>{_e(_clock(a.get("raised_at_s")))}</dd></div>'
            f'<div><dt>Cleared</dt><dd>{_e(_clock(cleared) if cleared is not None else "not cleared")}</dd></div>'
            f'<div><dt>Level</dt><dd>{_e(_fmt(a.get("level"), 2))}</dd></div>'
            "</dl>"
            f'<div class="reasons-title">Why</div><ul class="reasons">{reasons}</ul>'
            "</article>"
        )
    return f'<section><h2>Alerts</h2><div class="alerts">{"".join(cards)}</div></section>'


def _transcript_section(segments: Sequence[Mapping], alerts: Sequence[Mapping]) -> str:
    if not segments:
        return '<section><h2>Transcript</h2><p class="muted">No speech turns were found.</p></section>'
    onsets = sorted(t for t in (finite_number(a.get("onset_s")) for a in alerts if a.get("kind") == "caller_agitation")
                    if t is not None)
    rows = []
    marked = False
    for s in segments:
        end = finite_number(s.get("end_s"))
        # The marker goes above the first turn still running at the onset: the turn where it began.
        if onsets and not marked and end is not None and end > onsets[0]:
            rows.append(f'<tr class="onset-row"><td colspan="5">Caller agitation begins at '
                        f"{_e(_clock(onsets[0]))}</td></tr>")
            marked = True
        speaker = str(s.get("speaker") or "mixed")
        text = s.get("text") or ""
        text_html = _e(text) if text else '<span class="muted">(no transcript)</span>'
        sentiment = finite_number(s.get("sentiment"))
        emotion = (s.get("emotion") or {}).get("label")
        flags = "".join(f'<span class="flag">{_e(str(f).replace("_", " "))}</span>' for f in s.get("flags") or [])
        lang = s.get("language")
        rows.append(
            f'<tr class="turn {_e(_sentiment_class(sentiment))}">'
            f'<td class="time">{_e(_clock(s.get("start_s")))}–{_e(_clock(s.get("end_s")))}</td>'
            f'<td><span class="speaker sp-{_e(speaker)}">{_e(speaker)}</span></td>'
            f'<td class="text"{_lang_attr(lang)}>{text_html}{f"""<span class="lang">{_e(lang)}</span>""" if lang else ""}</td>'
            f'<td class="sent"><span class="chip {_e(_sentiment_class(sentiment))}">{_e(_sentiment_text(sentiment))}'
            f"</span></td>"
            f'<td class="cues">{_e(emotion or "")}{" · arousal " + _e(_fmt(s.get("arousal"), 2)) if finite_number(s.get("arousal")) is not None else ""}'
            f"{flags}</td>"
            "</tr>"
        )
    return (
        '<section><h2>Transcript</h2>'
        '<table class="transcript"><thead><tr><th>Time</th><th>Speaker</th><th>What was said</th>'
        '<th>Sentiment</th><th>Voice &amp; flags</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></section>"
    )


def _stage_errors_section(errors: Sequence[Mapping]) -> str:
    if not errors:
        return ""
    items = "".join(
        f"<li><b>{_e(e.get('stage', '?'))}</b> at {_e(_clock(e.get('t_s')))}: {_e(e.get('message', ''))}</li>"
        for e in errors
    )
    return (f'<section><h2>Processing problems</h2><p class="muted">Parts of this call could not be '
            f"analysed; the scores around these times rest on less evidence.</p><ul>{items}</ul></section>")


def _footer(summary: Mapping) -> str:
    bits = []
    if summary.get("emotion_source"):
        bits.append(f"emotion: {summary['emotion_source']}")
    if summary.get("asr_model"):
        bits.append(f"speech recognition: {summary['asr_model']}")
    if summary.get("callpulse_version"):
        bits.append(f"callpulse {summary['callpulse_version']}")
    text = " · ".join(bits)
    return f'<footer>{_e(text)}<br>Transcripts are masked (card, ID and phone numbers).</footer>'


# -------------------------------------------------------------------------------------------------
# The timeline plot


def _timeline_figure(result: Mapping) -> str:
    timeline = list(result.get("timeline") or [])
    segments = list(result.get("segments") or [])
    if not timeline and not segments:
        return '<p class="muted">This call is too short for a timeline.</p>'
    try:
        svg = timeline_svg(result)
    except (ValueError, RuntimeError) as exc:
        # A broken plot must not cost the supervisor the transcript and the alerts; say so on the page.
        log.warning("timeline plot failed for call %s: %s", result.get("call_id"), exc)
        return f'<p class="muted">The timeline could not be drawn ({_e(exc)}).</p>'
    return f'<figure class="timeline">{svg}</figure>'


def timeline_svg(result: Mapping) -> str:
    """The call's timeline as an inline ``<svg>`` element: levels, threshold, alerts, who spoke when."""
    # A bare Figure (no pyplot) needs no GUI backend and registers no global figure, so worker threads
    # and headless servers can render; matplotlib rasterises with Agg only if asked for PNG.
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    timeline = list(result.get("timeline") or [])
    segments = list(result.get("segments") or [])
    alerts = list(result.get("alerts") or [])
    summary = result.get("summary") or {}
    duration = finite_number(result.get("duration_s")) or max(
        [finite_number(p.get("t_s")) or 0.0 for p in timeline] + [finite_number(s.get("end_s")) or 0.0 for s in segments] + [1.0]
    )
    threshold = finite_number(summary.get("agitation_raise_level"))

    rc = {
        "svg.fonttype": "none",  # text stays text: smaller, selectable, prints sharply
        "svg.hashsalt": "callpulse",  # stable element ids, so the same call renders the same bytes
        "font.family": "sans-serif",
        "font.size": 9,
        "axes.edgecolor": "#b0b7bd",
        "axes.labelcolor": "#333",
        "xtick.color": "#555",
        "ytick.color": "#555",
    }
    with matplotlib.rc_context(rc):
        fig = Figure(figsize=(10.5, 3.7))
        gs = fig.add_gridspec(2, 1, height_ratios=[3.2, 1.0], hspace=0.08)
        ax = fig.add_subplot(gs[0])
        bands = fig.add_subplot(gs[1], sharex=ax)

        onset_labelled = False
        for a in alerts:
            raised = finite_number(a.get("raised_at_s"))
            if raised is None:
                continue
            cleared = finite_number(a.get("cleared_at_s"))
            colour = _STRAIN_COLOUR if a.get("kind") == "agent_strain" else _AGITATION_COLOUR
            ax.axvspan(raised, cleared if cleared is not None else duration, color=colour, alpha=0.08, lw=0)
            ax.axvline(raised, color=colour, lw=1.2)
            label = _ACTION_LABELS.get(str(a.get("action")), str(a.get("action") or "alert"))
            ax.annotate(f"{label} {_clock(raised)}", xy=(raised, 1.0), xytext=(3, -3), textcoords="offset points",
                        va="top", ha="left", fontsize=8, color=colour, fontweight="bold")
            onset = finite_number(a.get("onset_s"))
            if onset is not None:
                ax.plot([onset], [0.02], marker="^", ms=7, color=colour, clip_on=False, zorder=5, ls="none",
                        label="_nolegend_" if onset_labelled else "alert onset")
                onset_labelled = True
        if threshold is not None:
            ax.axhline(threshold, color=_THRESHOLD_COLOUR, lw=1, ls=(0, (4, 3)),
                       label=f"alert threshold {threshold:.2f}")
        if timeline:
            t, ag, st = _thin_timeline(timeline)
            # A call of a second or two has one or two points: draw them as dots, or nothing shows.
            dots = "o" if len(t) < 3 else None
            ax.plot(t, ag, color=_AGITATION_COLOUR, lw=1.8, label="caller agitation", marker=dots, ms=4,
                    clip_on=dots is None)
            ax.fill_between(t, ag, 0, color=_AGITATION_COLOUR, alpha=0.06, lw=0)
            ax.plot(t, st, color=_STRAIN_COLOUR, lw=1.5, ls=(0, (6, 2)), label="agent strain", marker=dots, ms=4,
                    clip_on=dots is None)

        handles, labels = ax.get_legend_handles_labels()
        if handles:
            # The levels first, then what they are judged against.
            order = sorted(range(len(labels)), key=lambda i: (labels[i] not in ("caller agitation", "agent strain"), i))
            ax.legend([handles[i] for i in order], [labels[i] for i in order],loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=4, frameon=False, fontsize=8.5,
                      borderaxespad=0.2)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, duration)
        ax.set_ylabel("level (0–1)")
        ax.grid(axis="y", color="#e5e8eb", lw=0.6)
        ax.tick_params(labelbottom=False)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)

        speakers = [s for s in ("agent", "caller", "mixed") if any(seg.get("speaker") == s for seg in segments)]
        for row, speaker in enumerate(reversed(speakers)):
            spans = [(finite_number(s.get("start_s")), finite_number(s.get("end_s"))) for s in segments if s.get("speaker") == speaker]
            spans = [(a, b - a) for a, b in spans if a is not None and b is not None and b > a]
            bands.broken_barh(spans, (row + 0.18, 0.64), color=_SPEAKER_COLOURS[speaker], lw=0)
        if not speakers:
            bands.text(0.5, 0.5, "no speech found", transform=bands.transAxes, ha="center", va="center",
                       color="#7f8c8d", fontsize=8.5)
        bands.set_yticks([r + 0.5 for r in range(len(speakers))], list(reversed(speakers)))
        bands.set_ylim(0, max(1, len(speakers)))
        bands.set_xlabel("time in call (h:mm:ss)" if duration >= 3600 else "time in call (m:ss)")
        bands.tick_params(axis="y", length=0)
        bands.xaxis.set_major_locator(MultipleLocator(_tick_step_s(duration)))
        bands.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _clock(x)))
        for side in ("top", "right"):
            bands.spines[side].set_visible(False)
        fig.subplots_adjust(left=0.07, right=0.97, top=0.9, bottom=0.14)

        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    start = svg.find("<svg")
    if start < 0:
        raise RuntimeError("matplotlib produced no <svg> element")
    # Let the page's CSS size the figure: keep the viewBox, drop the fixed pt width and height.
    head_end = svg.find(">", start)
    head = svg[start:head_end]
    for attr in ("width", "height"):
        i = head.find(f' {attr}="')
        if i >= 0:
            j = head.find('"', i + len(attr) + 3)
            head = head[:i] + head[j + 1:]
    return head + ' role="img" aria-label="call timeline"' + svg[head_end:]


_MAX_PLOT_POINTS = 2400  # more than the figure has pixels; a 3-hour call has 10,800 points at 1 Hz


def _thin_timeline(timeline: Sequence[Mapping]) -> tuple[list[float], list[float], list[float]]:
    """Times, agitation and strain to plot; long calls are binned, keeping each bin's peak agitation
    (a supervisor must still see a short spike) and its last strain value (strain moves slowly)."""
    t = [_nan_if_none(p.get("t_s")) for p in timeline]
    ag = [_nan_if_none(p.get("caller_agitation")) for p in timeline]
    st = [_nan_if_none(p.get("agent_strain")) for p in timeline]
    if len(t) <= _MAX_PLOT_POINTS:
        return t, ag, st
    size = math.ceil(len(t) / _MAX_PLOT_POINTS)
    bins = range(0, len(t), size)
    peak = [max((x for x in ag[i:i + size] if not math.isnan(x)), default=math.nan) for i in bins]
    return [t[i] for i in bins], peak, [st[min(i + size, len(st)) - 1] for i in bins]


def _tick_step_s(duration_s: float) -> float:
    """A round tick spacing (10 s, 1 min, 15 min, ...) giving at most about 10 ticks."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200):
        if duration_s / step <= 10:
            return float(step)
    return float(3600 * math.ceil(duration_s / 36000))


# -------------------------------------------------------------------------------------------------
# The batch index


def render_batch_html(results: Sequence[Mapping], failures: Sequence[tuple[str, str]]) -> str:
    """The HTML of the batch index page."""
    total_s = sum(finite_number(r.get("duration_s")) or 0.0 for r in results)
    n_takeover = sum(1 for r in results for a in r.get("alerts") or [] if a.get("action") == "supervisor_takeover")
    n_break = sum(1 for r in results for a in r.get("alerts") or [] if a.get("action") == "recovery_break")
    stats = [
        ("Calls analysed", str(len(results))),
        ("Audio", _clock(total_s)),
        ("Supervisor takeovers", str(n_takeover)),
        ("Recovery breaks", str(n_break)),
        ("Failed files", str(len(failures))),
    ]
    rows = []
    for r in results:
        call_id = str(r.get("call_id") or "")
        summary = r.get("summary") or {}
        alerts = r.get("alerts") or []
        alert_bits = []
        takeovers = [a for a in alerts if a.get("action") == "supervisor_takeover"]
        if takeovers:
            first = min((finite_number(a.get("raised_at_s")) for a in takeovers if finite_number(a.get("raised_at_s")) is not None),
                        default=None)
            alert_bits.append(f'<span class="pill pill-alert">takeover{" ×" + str(len(takeovers)) if len(takeovers) > 1 else ""}'
                              f'{" at " + _e(_clock(first)) if first is not None else ""}</span>')
        if any(a.get("action") == "recovery_break" for a in alerts):
            alert_bits.append('<span class="pill pill-strain">recovery break</span>')
        rows.append(
            "<tr>"
            f'<td><a href="{_e(quote(call_id))}.html">{_e(call_id)}</a>'
            f'<div class="source">{_e(r.get("source") or "")}</div></td>'
            f'<td>{_e(r.get("agent_id") or "—")}</td>'
            f'<td class="num">{_e(_clock(r.get("duration_s")))}</td>'
            f'<td>{_e(", ".join(r.get("languages") or []) or "—")}</td>'
            f"<td>{_level_bar(_peak_agitation(r), finite_number(summary.get('agitation_raise_level')), compact=True)}</td>"
            f'<td class="num">{_e(_score_text(summary.get("caller_sentiment_score")))}</td>'
            f'<td>{"".join(alert_bits) or """<span class="muted">none</span>"""}</td>'
            "</tr>"
        )
    calls_table = (
        '<table class="calls"><thead><tr><th>Call</th><th>Agent</th><th>Duration</th><th>Languages</th>'
        "<th>Peak caller agitation</th><th>Caller sentiment</th><th>Alerts</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table>"
    ) if results else '<p class="muted">No call was analysed successfully.</p>'
    failure_html = ""
    if failures:
        items = "".join(f"<tr><td>{_e(p)}</td><td>{_e(reason)}</td></tr>" for p, reason in failures)
        failure_html = (
            '<section><h2>Files that could not be analysed</h2>'
            '<table class="failures"><thead><tr><th>File</th><th>Reason</th></tr></thead>'
            f"<tbody>{items}</tbody></table></section>"
        )
    return "\n".join([
        _page_head("callpulse — analysed calls"),
        '<header class="call-head"><h1>Analysed calls</h1>',
        '<dl class="facts stats">',
        *(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in stats),
        "</dl></header>",
        f"<section><h2>Calls</h2>{calls_table}</section>",
        failure_html,
        "<footer>Per-call pages hold the timeline, alerts with reasons and the masked transcript. "
        "summary.csv has one row per call.</footer>",
        "</body></html>\n",
    ])


# -------------------------------------------------------------------------------------------------
# HTML helpers

_CSS = """
:root { --ink:#1f2933; --muted:#6b7785; --line:#e3e7eb; --bg:#ffffff; --panel:#f6f8fa;
        --red:#c0392b; --red-bg:#fdecea; --green:#1e8449; --green-bg:#e9f7ef; --violet:#5b4a9e; --violet-bg:#efedf8; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans CJK SC",
       "PingFang SC", "Microsoft YaHei", "WenQuanYi Micro Hei", sans-serif; color: var(--ink); background: var(--bg);
       max-width: 1120px; margin: 0 auto; padding: 24px 28px 40px; }
h1 { font-size: 22px; margin: 4px 0 2px; font-weight: 600; }
h2 { font-size: 15px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted);
     border-bottom: 1px solid var(--line); padding-bottom: 4px; margin: 28px 0 12px; font-weight: 600; }
h3 { font-size: 15px; margin: 0 0 8px; }
a { color: #1f5f99; text-decoration: none; } a:hover { text-decoration: underline; }
.crumbs { font-size: 12px; }
.source { color: var(--muted); font-size: 12px; word-break: break-all; }
.status { margin: 10px 0 4px; }
.muted { color: var(--muted); }
.pill { display: inline-block; border-radius: 999px; padding: 2px 10px; font-size: 12px; font-weight: 600; }
.pill-alert { background: var(--red-bg); color: var(--red); border: 1px solid #f5b7b1; }
.pill-ok { background: var(--green-bg); color: var(--green); border: 1px solid #a9dfbf; }
.pill-strain { background: var(--violet-bg); color: var(--violet); border: 1px solid #c9c1ea; }
.peak { display: flex; align-items: center; gap: 12px; margin: 8px 0; }
.peak .label { color: var(--muted); font-size: 12px; }
.bar { display: inline-flex; align-items: center; gap: 8px; }
.bar .track { position: relative; width: 220px; height: 10px; background: var(--panel); border: 1px solid var(--line);
              border-radius: 5px; overflow: hidden; }
.bar.compact .track { width: 110px; }
.bar .fill { position: absolute; left: 0; top: 0; bottom: 0; background: #e6a19a; }
.bar .fill.over { background: var(--red); }
.bar .mark { position: absolute; top: -2px; bottom: -2px; width: 2px; background: #34495e; }
.bar .value { font-variant-numeric: tabular-nums; font-weight: 600; min-width: 32px; }
dl.facts { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 8px 16px; margin: 14px 0 0;
           padding: 12px 14px; background: var(--panel); border: 1px solid var(--line); border-radius: 6px; }
dl.facts.stats { grid-template-columns: repeat(5, minmax(0, 1fr)); }
dl.facts dt { font-size: 11px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
dl.facts dd { margin: 0; font-weight: 500; }
figure.timeline { margin: 0; }
figure.timeline svg { width: 100%; height: auto; display: block; }
.alerts { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; }
.alert-card { border: 1px solid #f5b7b1; border-left: 4px solid var(--red); border-radius: 6px; padding: 12px 14px;
              background: #fffafa; break-inside: avoid; }
.alert-card.strain { border-color: #c9c1ea; border-left-color: var(--violet); background: #fbfaff; }
.alert-card h3 { color: var(--red); } .alert-card.strain h3 { color: var(--violet); }
.alert-card .kind { font-weight: 400; color: var(--muted); font-size: 12px; margin-left: 8px; }
dl.alert-times { display: grid; grid-template-columns: repeat(4, auto); gap: 4px 14px; margin: 0 0 8px; }
dl.alert-times dt { font-size: 11px; color: var(--muted); } dl.alert-times dd { margin: 0; font-variant-numeric: tabular-nums; }
.reasons-title { font-size: 11px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
ul.reasons { margin: 4px 0 0; padding-left: 18px; }
table { width: 100%; border-collapse: collapse; }
th { text-align: left; font-size: 11px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em;
     font-weight: 600; border-bottom: 1px solid var(--line); padding: 6px 8px; }
td { border-bottom: 1px solid var(--line); padding: 7px 8px; vertical-align: top; }
tr { break-inside: avoid; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
table.transcript td.time { white-space: nowrap; font-variant-numeric: tabular-nums; color: var(--muted); width: 90px; }
table.transcript td.text { width: 55%; }
table.transcript td.sent { width: 90px; }
table.transcript td.cues { font-size: 12px; color: var(--muted); }
tr.turn.neg-strong td.text { background: linear-gradient(90deg, rgba(192,57,43,.07), transparent); }
tr.onset-row td { background: var(--red-bg); color: var(--red); font-weight: 600; font-size: 12px; padding: 4px 8px; }
.speaker { display: inline-block; min-width: 52px; text-align: center; border-radius: 4px; padding: 1px 6px;
           font-size: 12px; font-weight: 600; color: #fff; }
.sp-agent { background: #2e86c1; } .sp-caller { background: #d35400; } .sp-mixed { background: #7f8c8d; }
.lang { margin-left: 6px; font-size: 10px; color: var(--muted); border: 1px solid var(--line); border-radius: 3px; padding: 0 3px; }
.chip { display: inline-block; border-radius: 4px; padding: 1px 7px; font-size: 12px; font-variant-numeric: tabular-nums;
        font-weight: 600; white-space: nowrap; }
.chip.neg-strong { background: var(--red); color: #fff; } .chip.neg { background: var(--red-bg); color: var(--red); }
.chip.neutral { background: var(--panel); color: var(--muted); border: 1px solid var(--line); }
.chip.pos { background: var(--green-bg); color: var(--green); } .chip.pos-strong { background: var(--green); color: #fff; }
.chip.unknown { color: var(--muted); }
.flag { display: inline-block; margin: 2px 0 0 6px; border-radius: 3px; padding: 0 5px; font-size: 11px;
        background: #fff4e5; color: #9c5700; border: 1px solid #f8d49b; }
table.calls .source { font-size: 11px; }
table.failures td:first-child { word-break: break-all; width: 40%; }
footer { margin-top: 32px; font-size: 11px; color: var(--muted); border-top: 1px solid var(--line); padding-top: 8px; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  a { color: inherit; } .crumbs { display: none; }
  h2 { break-after: avoid; } figure.timeline, .alert-card { break-inside: avoid; }
}
"""


def _page_head(title: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
    )


def _level_bar(level: float | None, threshold: float | None, *, compact: bool = False) -> str:
    if level is None:
        return '<span class="muted">—</span>'
    pct = max(0.0, min(1.0, level)) * 100.0
    over = threshold is not None and level >= threshold
    mark = (f'<span class="mark" style="left:calc({max(0.0, min(1.0, threshold)) * 100.0:.1f}% - 1px)"></span>'
            if threshold is not None else "")
    return (f'<span class="bar{" compact" if compact else ""}"><span class="track">'
            f'<span class="fill{" over" if over else ""}" style="width:{pct:.1f}%"></span>{mark}</span>'
            f'<span class="value">{level:.2f}</span></span>')


def _lang_attr(language: Any) -> str:
    # Tells the browser which CJK glyph forms and fonts to use (Simplified Chinese, not Japanese).
    if not language:
        return ""
    tag = {"zh": "zh-Hans"}.get(str(language), str(language))
    return f' lang="{_e(tag)}"'


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


# -------------------------------------------------------------------------------------------------
# Formatting helpers




def _nan_if_none(value: Any) -> float:
    x = finite_number(value)
    return math.nan if x is None else x


def _peak_agitation(result: Mapping) -> float | None:
    peak = finite_number((result.get("summary") or {}).get("peak_agitation"))
    if peak is not None:
        return peak
    levels = [x for x in (finite_number(p.get("caller_agitation")) for p in result.get("timeline") or []) if x is not None]
    return max(levels) if levels else None


def _clock(value: Any) -> str:
    """Seconds as m:ss (h:mm:ss past an hour); '—' when unknown."""
    x = finite_number(value)
    if x is None:
        return "—"
    total = int(round(max(0.0, x)))
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt(value: Any, digits: int) -> str:
    x = finite_number(value)
    return "—" if x is None else f"{x:.{digits}f}"


def _seconds_text(value: Any) -> str:
    x = finite_number(value)
    return "—" if x is None else f"{x:.1f} s"


def _score_text(value: Any) -> str:
    x = finite_number(value)
    return "—" if x is None else f"{int(round(x)):+d}"


def _talk_share_text(share: Any) -> str:
    if not isinstance(share, Mapping) or not share:
        return "—"
    return " / ".join(f"{k} {100.0 * v:.0f}%" for k, v in share.items() if finite_number(v) is not None) or "—"


def _channels_text(channels: Any) -> str:
    if isinstance(channels, Mapping):
        return ", ".join(f"{k} = ch {v}" for k, v in channels.items())
    return "mono (mixed)" if channels == "mixed" else (str(channels) if channels else "—")


def _sentiment_class(value: float | None) -> str:
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


def _sentiment_text(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def _csvfinite_number(value: Any, digits: int) -> str:
    x = finite_number(value)
    if x is None:
        return ""
    return str(int(round(x))) if digits == 0 else f"{x:.{digits}f}"


def _safe_cell(value: Any) -> str:
    """Text for a CSV cell that a spreadsheet will not run as a formula (file names come from outside)."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader (the live dashboard) never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)

