"""``callpulse evaluate alerts``: supervisor-takeover alerts on calls whose agitation onset is known.

Every call goes through ``pipeline.batch.analyze_file`` with the configured engine (the batch code path,
nothing evaluation-only). A ``supervisor_takeover`` raised at or after the annotated onset detects the
escalation; one raised on a calm call or before the onset is a false alert (see
:func:`.metrics.score_call`).

Agent strain carries across an agent's calls inside the engine, so ``recovery_break`` alerts depend on
call order and are reported, not scored; caller agitation is per call and does not.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EvaluationError
from . import report
from .manifests import read_manifest, parse_optional_float, repo_root
from .metrics import alert_summary, score_call
from .runner import Item, RunOptions, fingerprint, run_items

log = logging.getLogger("pipeline.evaluate.alerts")

TAKEOVER = "supervisor_takeover"


@dataclass(frozen=True)
class AlertEvalOptions:
    """What ``evaluate alerts`` scores."""

    manifest: str = ""        # "" = eval/calls/calls.csv (built by scripts/make_eval_calls.py)
    root: str = ""
    limit: int = 0
    plots: bool = True        # one timeline PNG per call

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError("limit must be >= 0")


def manifest_path(options: AlertEvalOptions) -> Path:
    return Path(options.manifest) if options.manifest else repo_root() / "eval" / "calls" / "calls.csv"


def analyze_call(item: Item, *, engine, config) -> dict[str, Any]:
    """The parts of one call's result that scoring and plotting need (the cached unit of work)."""
    from ..batch import analyze_file

    p = item.payload
    result = analyze_file(p["path"], engine=engine, config=config, agent_channel=p["agent_channel"],
                          agent_id=p["agent_id"], call_id=p["call_id"], started_at=p["started_at"],
                          live_timing=True)  # evaluation measures what a live floor would see
    summary = result.get("summary", {})
    return {
        "duration_s": result.get("duration_s"),
        "alerts": result.get("alerts", []),
        "timeline": [[pt["t_s"], pt["caller_agitation"]] for pt in result.get("timeline", [])],
        "summary": {k: summary.get(k) for k in ("peak_agitation", "mean_agitation", "agitation_raise_level",
                                                "emotion_source", "asr_model", "stage_errors")},
    }


def outcome_raises(alerts: list[dict]) -> list[float]:
    return [float(a["raised_at_s"]) for a in alerts]


def _row_payload(row, manifest: Path) -> dict[str, Any]:
    try:
        agent_channel = int(row.get("agent_channel")) if row.get("agent_channel") else None
    except ValueError as exc:
        raise EvaluationError(f"{manifest}:{row.line}: agent_channel={row.get('agent_channel')!r} is not 0 or 1") \
            from exc
    return {"path": str(row.path), "agent_channel": agent_channel,
            "onset_s": parse_optional_float(row, "agitation_onset_s", manifest=manifest),
            "agent_id": row.get("agent_id") or None, "started_at": row.get("started_at") or None,
            "call_id": Path(str(row.path)).stem, "variant": row.get("variant") or "all"}


def evaluate_alerts(*, options: AlertEvalOptions, config, run: RunOptions, out: Path, cache_dir: Path,
                    engine=None) -> report.EvalResult:
    """Run every call of the manifest, score its takeover alerts, plot its timeline."""
    manifest = manifest_path(options)
    if not manifest.is_file() and not options.manifest:
        raise EvaluationError(f"{manifest} does not exist: build the evaluation calls first with "
                              "`python scripts/make_eval_calls.py`, or pass --manifest")
    rows = read_manifest(manifest, required=("path", "agent_channel", "agitation_onset_s"),
                         root=options.root or None, limit=options.limit or None)
    payloads = [_row_payload(r, manifest) for r in rows]
    if engine is None:
        from ..engine import Engine

        engine = Engine.load(config)
    items = [Item(p["path"], p) for p in payloads]
    signature = fingerprint("alerts/1", dict(config.raw), getattr(engine, "emotion_source", None))
    results = run_items(items, lambda it: analyze_call(it, engine=engine, config=config),
                        cache_dir=cache_dir / "alerts", signature=signature, options=run, desc="alerts")
    failed = [{"key": r.key, "error": r.error} for r in results if r.error]

    raise_level = config.alerts.caller_agitation.raise_level
    clear_level = config.alerts.caller_agitation.clear_level
    calls, outcomes = [], []
    for p, res in zip(payloads, results):
        if res.result is None:
            continue
        r = res.result
        takeovers = [a for a in r["alerts"] if a.get("action") == TAKEOVER]
        outcome = score_call(call_id=p["call_id"], duration_s=float(r["duration_s"]), onset_s=p["onset_s"],
                             raised_at_s=outcome_raises(takeovers))
        outcomes.append((p["variant"], outcome))
        # The reasons shown are the detecting alert's, or, on a call without detection, the first false one's.
        shown_at = outcome.first_raised_at_s if outcome.detected else min(outcome_raises(takeovers), default=None)
        first = next((a for a in takeovers if a["raised_at_s"] == shown_at), None)
        calls.append({**outcome.as_dict(), "variant": p["variant"], "n_takeover": len(takeovers),
                      "n_recovery_break": sum(1 for a in r["alerts"] if a.get("action") == "recovery_break"),
                      "peak_agitation": r["summary"].get("peak_agitation"),
                      "reasons": list(first.get("reasons", [])) if first else [],
                      "emotion_source": r["summary"].get("emotion_source")})
        if options.plots:
            t = [pt[0] for pt in r["timeline"]]
            lv = [pt[1] for pt in r["timeline"]]
            report.plot_timeline(out / "timelines" / f"{p['call_id']}.png",
                                 title=f"{p['call_id']} ({'calm' if p['onset_s'] is None else 'escalating'})",
                                 t_s=t, level=lv, raise_level=raise_level, clear_level=clear_level,
                                 onset_s=p["onset_s"], raised_at_s=[a["raised_at_s"] for a in takeovers],
                                 cleared_at_s=[a["cleared_at_s"] for a in takeovers if a.get("cleared_at_s") is not None],
                                 duration_s=float(r["duration_s"]))
    if not outcomes:
        raise EvaluationError(f"no call of {manifest} could be analysed; first error: {failed[0]['error']}")
    overall = alert_summary([o for _, o in outcomes])
    variants = sorted({v for v, _ in outcomes})
    by_variant = {v: alert_summary([o for vv, o in outcomes if vv == v]) for v in variants} if len(variants) > 1 else {}
    metrics = {"manifest": str(manifest),
               "models": {"emotion_source": getattr(engine, "emotion_source", None),
                          "asr": getattr(getattr(engine, "transcriber", None), "model_id", None)},
               "raise_level": raise_level, "clear_level": clear_level,
               **overall, "by_variant": by_variant, "calls": calls}

    out.mkdir(parents=True, exist_ok=True)
    report.write_csv(out / "predictions.csv",
                     headers=["call_id", "variant", "onset_s", "detected", "first_raised_at_s", "latency_s",
                              "false_alerts", "n_takeover", "peak_agitation", "duration_s", "reasons"],
                     rows=[[c["call_id"], c["variant"], c["onset_s"], c["detected"], c["first_raised_at_s"],
                            c["latency_s"], c["false_alerts"], c["n_takeover"], c["peak_agitation"],
                            c["duration_s"], ";".join(c["reasons"])] for c in calls])

    def line(name: str, s: dict) -> str:
        return (f"  {name}: calls {s['n_calls']} (escalating {s['n_escalating']}, calm {s['n_calm']})  "
                f"recall {report.fmt(s['recall'])}  false alerts/call-hour {report.fmt(s['false_alerts_per_call_hour'], digits=2)}"
                f" ({s['false_alerts_on_calm_calls']} on {s['n_calm']} calm calls; {s['false_alerts_total']} incl. "
                f"pre-onset)  latency median {report.fmt(s['latency_median_s'], digits=1)} s  "
                f"p90 {report.fmt(s['latency_p90_s'], digits=1)} s")

    summary = [f"alerts raise_level={raise_level} emotion={getattr(engine, 'emotion_source', '?')}",
               line("all", overall), *(line(v, s) for v, s in by_variant.items())]
    keys = ["n_calls", "n_escalating", "n_detected", "recall", "n_calm", "false_alerts_on_calm_calls",
            "false_alerts_per_call_hour", "false_alerts_total", "latency_median_s", "latency_p90_s"]
    summary_rows = [["all", *(overall[k] for k in keys)]] + [[v, *(s[k] for k in keys)] for v, s in by_variant.items()]
    call_rows = [[c["call_id"], c["variant"], c["onset_s"], c["detected"], c["first_raised_at_s"], c["latency_s"],
                  c["false_alerts"], c["peak_agitation"], ", ".join(c["reasons"])] for c in calls]
    sections = [
        report.Section("Summary", report.table(["set", *keys], summary_rows)),
        report.Section("Per call", report.table(["call", "variant", "onset s", "detected", "raised at s",
                                                 "latency s", "false alerts", "peak", "reasons"], call_rows),
                       images=tuple(out / "timelines" / f"{c['call_id']}.png" for c in calls) if options.plots else ()),
    ]
    return report.EvalResult(name="alerts", metrics=metrics, sections=sections, summary=summary, failed_items=failed)
