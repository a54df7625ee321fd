"""summary.csv: one row per call with the key figures, for spreadsheets and scripts.

Cells hold plain values and '' where unknown. File names and ids come from outside, so a cell that a
spreadsheet would run as a formula is defused with a leading apostrophe.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

from .files import write_text_atomic
from .formatting import peak_agitation
from .store import finite_number

SUMMARY_COLUMNS = (
    "call_id", "source", "agent_id", "started_at", "duration_s", "languages", "peak_agitation",
    "mean_agitation", "n_segments", "n_supervisor_takeover", "n_recovery_break", "first_takeover_raised_at_s",
    "caller_sentiment_score", "agent_strain_end", "talk_share_agent", "talk_share_caller", "overtalk_s",
    "long_silences", "n_stage_errors", "emotion_source", "asr_model",
)


def write_summary_csv(results: Sequence[Mapping], path: Path) -> None:
    """Write one row per call (columns ``SUMMARY_COLUMNS``), UTF-8, for spreadsheets and scripts."""
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for result in results:
        writer.writerow(summary_row(result))
    write_text_atomic(Path(path), buf.getvalue())


def first_takeover_s(alerts: Sequence[Mapping]) -> float | None:
    """When the first supervisor_takeover of a call was raised (call time, s); None without one."""
    return min((t for t in (finite_number(a.get("raised_at_s")) for a in alerts
                            if a.get("action") == "supervisor_takeover") if t is not None), default=None)


def summary_row(result: Mapping) -> dict[str, Any]:
    """The summary.csv row of one call: plain values, '' where unknown."""
    summary = result.get("summary") or {}
    alerts = result.get("alerts") or []
    talk_share = summary.get("talk_share") or {}
    return {
        "call_id": _safe_cell(result.get("call_id")),
        "source": _safe_cell(result.get("source")),
        "agent_id": _safe_cell(result.get("agent_id")),
        "started_at": _safe_cell(result.get("started_at")),
        "duration_s": _number_cell(result.get("duration_s"), 3),
        "languages": _safe_cell(";".join(result.get("languages") or [])),
        "peak_agitation": _number_cell(peak_agitation(result), 3),
        "mean_agitation": _number_cell(summary.get("mean_agitation"), 3),
        "n_segments": len(result.get("segments") or []),
        "n_supervisor_takeover": sum(1 for a in alerts if a.get("action") == "supervisor_takeover"),
        "n_recovery_break": sum(1 for a in alerts if a.get("action") == "recovery_break"),
        "first_takeover_raised_at_s": _number_cell(first_takeover_s(alerts), 2),
        "caller_sentiment_score": _number_cell(summary.get("caller_sentiment_score"), 0),
        "agent_strain_end": _number_cell(summary.get("agent_strain_end"), 3),
        "talk_share_agent": _number_cell(talk_share.get("agent"), 3),
        "talk_share_caller": _number_cell(talk_share.get("caller"), 3),
        "overtalk_s": _number_cell(summary.get("overtalk_s"), 2),
        "long_silences": _number_cell(summary.get("long_silences"), 0),
        "n_stage_errors": len(summary.get("stage_errors") or []),
        "emotion_source": _safe_cell(summary.get("emotion_source")),
        "asr_model": _safe_cell(summary.get("asr_model")),
    }


def _number_cell(value: Any, digits: int) -> str:
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
