"""The call timeline as inline SVG: caller agitation and agent strain, the alert threshold, the alerts,
and who spoke when.

Drawn with matplotlib's object API on a bare ``Figure`` (no pyplot: no GUI backend, no global figure),
so worker threads and headless servers can render. Text stays text in the SVG (``svg.fonttype = none``)
and matplotlib escapes it, so a label from a call's JSON cannot become markup; the page template inserts
the element as built markup. The same call renders the same bytes (fixed hash salt, no date).
"""
from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

from .formatting import clock, nan_if_none
from .store import finite_number

# Colour-blind-safe pairs that also survive greyscale printing (different lightness).
AGITATION_COLOUR = "#c0392b"
STRAIN_COLOUR = "#5b4a9e"
THRESHOLD_COLOUR = "#7f8c8d"
SPEAKER_COLOURS = {"agent": "#2e86c1", "caller": "#d35400", "mixed": "#7f8c8d"}
ACTION_LABELS = {"supervisor_takeover": "Supervisor takeover", "recovery_break": "Recovery break"}


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
            colour = STRAIN_COLOUR if a.get("kind") == "agent_strain" else AGITATION_COLOUR
            ax.axvspan(raised, cleared if cleared is not None else duration, color=colour, alpha=0.08, lw=0)
            ax.axvline(raised, color=colour, lw=1.2)
            label = ACTION_LABELS.get(str(a.get("action")), str(a.get("action") or "alert"))
            ax.annotate(f"{label} {clock(raised)}", xy=(raised, 1.0), xytext=(3, -3), textcoords="offset points",
                        va="top", ha="left", fontsize=8, color=colour, fontweight="bold")
            onset = finite_number(a.get("onset_s"))
            if onset is not None:
                ax.plot([onset], [0.02], marker="^", ms=7, color=colour, clip_on=False, zorder=5, ls="none",
                        label="_nolegend_" if onset_labelled else "alert onset")
                onset_labelled = True
        if threshold is not None:
            ax.axhline(threshold, color=THRESHOLD_COLOUR, lw=1, ls=(0, (4, 3)),
                       label=f"alert threshold {threshold:.2f}")
        if timeline:
            t, ag, st = _thin_timeline(timeline)
            # A call of a second or two has one or two points: draw them as dots, or nothing shows.
            dots = "o" if len(t) < 3 else None
            ax.plot(t, ag, color=AGITATION_COLOUR, lw=1.8, label="caller agitation", marker=dots, ms=4,
                    clip_on=dots is None)
            ax.fill_between(t, ag, 0, color=AGITATION_COLOUR, alpha=0.06, lw=0)
            ax.plot(t, st, color=STRAIN_COLOUR, lw=1.5, ls=(0, (6, 2)), label="agent strain", marker=dots, ms=4,
                    clip_on=dots is None)

        handles, labels = ax.get_legend_handles_labels()
        if handles:
            # The levels first, then what they are judged against.
            order = sorted(range(len(labels)), key=lambda i: (labels[i] not in ("caller agitation", "agent strain"), i))
            ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=4, frameon=False, fontsize=8.5,
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
            bands.broken_barh(spans, (row + 0.18, 0.64), color=SPEAKER_COLOURS[speaker], lw=0)
        if not speakers:
            bands.text(0.5, 0.5, "no speech found", transform=bands.transAxes, ha="center", va="center",
                       color="#7f8c8d", fontsize=8.5)
        bands.set_yticks([r + 0.5 for r in range(len(speakers))], list(reversed(speakers)))
        bands.set_ylim(0, max(1, len(speakers)))
        bands.set_xlabel("time in call (h:mm:ss)" if duration >= 3600 else "time in call (m:ss)")
        bands.tick_params(axis="y", length=0)
        bands.xaxis.set_major_locator(MultipleLocator(_tick_step_s(duration)))
        bands.xaxis.set_major_formatter(FuncFormatter(lambda x, _: clock(x)))
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
    t = [nan_if_none(p.get("t_s")) for p in timeline]
    ag = [nan_if_none(p.get("caller_agitation")) for p in timeline]
    st = [nan_if_none(p.get("agent_strain")) for p in timeline]
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
