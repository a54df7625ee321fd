#!/usr/bin/env python
"""Compare the takeover detectors (``[fusion] detector = "level" | "cusum"``) on recorded evaluation calls.

    python scripts/make_eval_calls.py --all-corpora --out .cache/calls-loco
    python scripts/train_fusion.py --calls .cache/calls-loco/calls.csv --folds EmoDB,nEMO   # records cues
    python scripts/compare_detectors.py --calls .cache/calls-loco/calls.csv --report /tmp/detectors.json

**Not yet moved to the per-fusion cue caches.** It reads the rules-recorded caches that the old
``train_fusion.py`` wrote (``--cache``/cues-without-<corpus>.jsonl). Those cues are flawed
(models/fusion/README.md, "Refit with cues recorded by the fusion that scores them"), and the current
``train_fusion.py`` no longer writes them. Porting it means scoring each detector on the cues that
``train_fusion.py --report`` names per fold (``loco[C]["fusion_id"]``). A corpus
whose calls are not all recorded in every fold used is left out and named. Prints:

1. leave-one-corpus-out: for each held-out corpus, the fusion weights and each detector's parameters
   fitted on the other corpora's calls, scored on the held-out corpus's calls;
2. side by side on the out-of-fold calls (each corpus's calls by the emotion model trained without it),
   the shipped fusion weights: the shipped timing, the fitted one, and the CUSUM settings that are at
   least as good as the shipped timing on false takeovers (calm and lively-calm) and early alerts, the
   fastest first.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.training import detector_choice as DC  # noqa: E402
from pipeline.training import fusion as FT  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=Path, default=REPO / ".cache" / "calls-loco" / "calls.csv")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "fusion-loco")
    ap.add_argument("--corpora", default="EmoDB,nEMO,emotiontts-ko", help="held-out corpora to use (comma-separated)")
    ap.add_argument("--report", type=Path, default=None)
    ap.add_argument("--top", type=int, default=8, help="CUSUM settings shown in part 2")
    args = ap.parse_args(argv)
    from pipeline.config import load_config
    from pipeline.fusion import load_learned

    rows = FT.read_calls_manifest(args.calls)
    wanted = [c for c in args.corpora.split(",") if c]
    cached = {c: FT.read_cached_cues(args.cache / f"cues-without-{c}.jsonl") for c in wanted}
    keys = {c: {f"{r['corpus']}/{r['call_id']}" for r in rows if r["corpus"] == c} for c in wanted}
    complete = [c for c in wanted if all(keys[c] <= set(cached[f]) for f in wanted if cached[f]) and cached[c]]
    left_out = sorted(set(wanted) - set(complete))
    if left_out:
        print(f"left out (calls not all recorded in every fold): {', '.join(left_out)}")
    if len(complete) < 2:
        print("compare_detectors: error: need two corpora whose calls are recorded in each other's folds in the old "
              f"rules-recorded caches ({args.cache}/cues-without-<corpus>.jsonl), which scripts/train_fusion.py no "
              "longer writes (see this script's docstring)", file=sys.stderr)
        return 2
    calls_by_fold = {f: [cached[f][k] for c in complete for k in sorted(keys[c])] for f in complete}
    report: dict = {"corpora": complete, "left_out": left_out}

    loco = DC.loco_detectors(calls_by_fold, corpora=complete, progress=lambda s: None)
    report["loco"] = loco
    print("\n1. leave-one-corpus-out (fusion weights and detector fitted without the held-out corpus)")
    _header()
    for held, by_det in loco.items():
        for det, v in by_det.items():
            _row(held, det, v["figures"]["all"], FT.Timing(**v["timing"]).describe())

    oof = [c for f in complete for c in calls_by_fold[f] if c.corpus == f]
    model = load_learned("")
    cfg = load_config()
    shipped = FT.Timing(cfg.fusion.rise_tau_s, cfg.fusion.fall_tau_s, cfg.alerts.caller_agitation.raise_level,
                        cfg.alerts.caller_agitation.min_sustain_s, cfg.fusion.detector, cfg.fusion.cusum_drift,
                        cfg.fusion.cusum_threshold)
    timings = {"shipped": shipped, "fitted": FT.Timing(**{k: v for k, v in model.details.get("timing", {}).items()})}
    base = DC.side_by_side(oof, model, {"shipped": shipped})["shipped"]["figures"]["all"]
    candidates = []
    for drift in DC.DRIFT_GRID:
        for h in DC.THRESHOLD_GRID:
            f = FT.score(oof, model, FT.cusum_timing(drift, h))
            if (f["false_per_calm_call"] <= base["false_per_calm_call"] + 1e-9
                    and f["false_per_lively_call"] <= base["false_per_lively_call"] + 1e-9
                    and f["early_share"] <= base["early_share"] + 1e-9):
                candidates.append((f["latency_median_s"], -f["recall"], drift, h))
    candidates.sort()
    for lat, _, drift, h in candidates[: args.top]:
        timings[f"cusum {drift:g}/{h:g}"] = FT.cusum_timing(drift, h)
    side = DC.side_by_side(oof, model, timings)
    report["side_by_side"] = side
    print(f"\n2. out-of-fold calls of {', '.join(complete)}, shipped fusion weights {model.model_id}")
    _header()
    for name, v in side.items():
        for corpus, f in v["figures"].items():
            _row(corpus, name, f, FT.Timing(**v["timing"]).describe())
    if args.report:
        args.report.write_text(json.dumps(FT._round(_strip(report)), indent=1) + "\n", encoding="utf-8")
    return 0


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k != "per_call"}
    return obj


def _header() -> None:
    print(f"  {'calls of':14s} {'detector':16s} {'esc':>4s} {'calm':>4s} {'recall':>6s} {'early':>5s} {'false/calm':>10s} "
          f"{'false/lively':>12s} {'lat med':>7s} {'p90':>6s}  latency parts (window / evidence / smoothing / sustain)  timing")


def _row(corpus: str, name: str, f: dict, timing: str) -> None:
    p = f.get("latency_parts", {})
    parts = " / ".join("-" if p.get(k) is None or p.get(k) != p.get(k) else f"{p[k]:.1f}"
                       for k in ("full_window_s", "evidence_s", "smoothing_s", "sustain_s")) if p else ""
    print(f"  {corpus:14s} {name:16s} {f['n_escalating']:4d} {f['n_calm']:4d} {f['recall']:6.2f} {f['early_share']:5.2f} "
          f"{f['false_per_calm_call']:10.3f} {f['false_per_lively_call']:12.3f} {f['latency_median_s']:7.1f} "
          f"{f['latency_p90_s']:6.1f}  {parts:>22s}  {timing}")


if __name__ == "__main__":
    sys.exit(main())
