#!/usr/bin/env python
"""Fit the agitation fusion and takeover timing under leave-one-corpus-out, and ship the fit on all corpora.

    python scripts/make_eval_calls.py --all-corpora --out .cache/calls-loco    # 204 calls, 16 kHz + 8 kHz
    python scripts/train_fusion.py --calls .cache/calls-loco/calls.csv         # -> models/fusion/

For each training corpus C (EmoDB, nEMO, emotiontts-ko): the per-second emotion heads are trained without C
(recipe chosen by nested LOCO on the others, ``pipeline.training.loco``), every call runs through the batch
path with that model (ASR off: the acoustic path), the fusion and timing are fitted on the other corpora's
calls and scored on C's. The cues depend on the fusion the engine runs (the caller's baselines learn only
while its level is low), so each fit is re-recorded with and refitted (``fusion.refit_recorded``: start
with a fusion that never rises, fit, re-record with the fit, refit, at most ``--rounds`` fits or until
the fit stops moving), and C's calls are scored as recorded with the fusion that scores them. The shipped
fusion is refitted the same way on every call, each corpus's calls with the cues of the emotion model that
never saw that corpus (out-of-fold, as a bank's unseen callers would look to the shipped model). Cues are
cached per emotion model and fusion id under ``--cache``; each window's prosody once per call
(``fusion.WindowMemo``). Figures go to ``models/fusion/fusion.json`` and stdout; the card is
models/fusion/README.md. ``--folds C1,C2`` runs only those folds' refits (to share them out over processes).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from pipeline.training import fusion as FT  # noqa: E402
from pipeline.training.corpora import TRAIN_CORPORA, default_clip_rows, extract_features  # noqa: E402
from pipeline.training.loco import fit_heads, select_recipe, trained_on, write_model_dir  # noqa: E402


def recording_config(emotion_dir: Path, fusion: FT.CueFusion, fusion_root: Path, *,
                     window_s: float = FT.ANALYSIS_WINDOW_S):
    """The engine config that records cues with ``emotion_dir``'s heads and ``fusion`` (ASR off: the acoustic
    path; the lexicon text scorer, unused without transcripts)."""
    from pipeline.config import load_config

    clear = load_config().alerts.caller_agitation.clear_level
    return load_config(overrides={"asr": {"enabled": False}, "text": {"backend": "lexicon"},
                                  "emotion": {"model_dir": str(emotion_dir), "window_s": window_s},
                                  **fusion.config_overrides(fusion.write(fusion_root), clear_level=clear)})


class Recorder:
    """Records calls' cues with a fold's emotion model and a given fusion, one engine per (model, fusion)."""

    def __init__(self, rows, cache: Path, *, order: int = 1, window_s: float = FT.ANALYSIS_WINDOW_S):
        self.rows, self.cache, self.order, self.window_s = rows, cache, order, window_s
        self._engines: dict = {}

    def __call__(self, emotion_dir: Path, fusion: FT.CueFusion, rows) -> list:
        from pipeline.engine import Engine

        key = (str(emotion_dir), fusion.fusion_id)
        if key not in self._engines:
            config = recording_config(emotion_dir, fusion, self.cache / "fusions", window_s=self.window_s)
            self._engines = {key: Engine.load(config, warm_up=False)}
        print(f"recording {len(rows)} calls with {emotion_dir.name} and {fusion.fusion_id}", flush=True)
        # --reverse: a second process starts at the other end, so the two share out the window analyses
        todo = rows[::self.order]
        by_key = {f"{c.call_id}": c for c in FT.record_calls(
            todo, engine=self._engines[key], fusion=fusion, cache_dir=self.cache / f"cues-{emotion_dir.name}",
            memo=self.cache / "windows", progress=print)}
        return [by_key[f"{r['corpus']}/{r['call_id']}"] for r in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=Path, default=REPO / ".cache" / "calls-loco" / "calls.csv")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "fusion-loco")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "fusion")
    ap.add_argument("--folds-only", action="store_true", help="LOCO figures only; do not write --out")
    ap.add_argument("--report", type=Path, default=None, help="also write the figures as JSON here")
    ap.add_argument("--folds", default=None, help="run only these held-out corpora's refits (comma-separated) "
                    "and stop: to share the folds out over processes before one full run")
    ap.add_argument("--rounds", type=int, default=FT.MAX_ROUNDS, help="at most this many fits per refit")
    ap.add_argument("--reverse", action="store_true", help="record calls last to first (a second process)")
    ap.add_argument("--window-s", type=float, default=FT.ANALYSIS_WINDOW_S,
                    help="the engine's [emotion] window_s while recording cues (the analysis window of each "
                    "1 s reading; the shipped fit is only valid with the same window_s in the config)")

    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pipeline.training.emotion import data_dir_default

    data = args.data or data_dir_default()
    rows = FT.read_calls_manifest(args.calls)
    if args.folds is None:     # running a share of the folds needs no balance
        FT.check_calls(rows, where=str(args.calls))
    corpora = [c for c in TRAIN_CORPORA if any(r["corpus"] == c for r in rows)]
    if args.folds is not None:
        corpora = [c for c in args.folds.split(",") if c]
    F = extract_features(default_clip_rows(data, corpora=TRAIN_CORPORA), cache_dir=REPO / ".cache" / "emotion-loco")
    record = Recorder(rows, args.cache, order=-1 if args.reverse else 1, window_s=args.window_s)
    emotion_dirs = {}
    for held in corpora:
        model_dir = emotion_dirs[held] = args.cache / f"emotion-without-{held}"
        train = np.isin(F.corpora, [c for c in TRAIN_CORPORA if c != held])
        if not (model_dir / "model.json").is_file():
            print(f"emotion model without {held}: choosing its recipe on the other corpora", flush=True)
            recipe = select_recipe(F, train, progress=lambda s: None)
            write_model_dir(model_dir, fit_heads(F, train, recipe), prosody=_prosody(), names=F.names,
                            recipe=recipe, trained_on=trained_on(F, train))

    def record_fold(held, fusion, scored_only):
        return record(emotion_dirs[held], fusion, [r for r in rows if r["corpus"] == held or not scored_only])

    loco, refits = FT.loco_refit(record_fold, corpora=corpora, max_rounds=args.rounds, progress=print)
    report = {"calls": _shown(args.calls),
              "loco": {c: {**v, "figures": {k: FT.drop_per_call(f) for k, f in v["figures"].items()}}
                       for c, v in loco.items()}}
    _print_loco(loco)
    if args.folds is None and not args.folds_only:
        # The shipped fusion is fitted on out-of-fold cues: each corpus's calls as scored by the emotion
        # model that never saw that corpus -- what the shipped model's cues look like on a bank's callers,
        # whom it never heard either (cues on its own training voices would be cleaner than any real call's).
        def record_oof(fusion, scored_only):
            return [c for held in corpora
                    for c in record(emotion_dirs[held], fusion, [r for r in rows if r["corpus"] == held])]

        print("shipped fusion: fitting on every corpus's out-of-fold calls", flush=True)
        shipped = FT.refit_recorded(record_oof, fit_on=lambda c: True, max_rounds=args.rounds, progress=print)
        model, timing, calls = shipped.fusion.model, shipped.fusion.timing, shipped.calls
        fig = FT.score(calls, model, timing)
        by_corpus = {c: FT.drop_per_call(FT.fold_figures([x for x in calls if x.corpus == c], model, timing))
                     for c in corpora}
        report["shipped"] = {"timing": timing.__dict__, "training_calls": FT.drop_per_call(fig),
                             "by_corpus": by_corpus, "rounds": shipped.rounds}
        FT.write_fusion_dir(args.out, model, timing, {
            "fitted_on": {"calls": report["calls"],
                          "corpora": corpora, "n_calls": len(calls),
                          "cues": "out-of-fold: each corpus's calls scored by the emotion model trained without it, "
                                  "recorded with this fusion",
                          "asr": "off (acoustic path)", "rounds": shipped.rounds},
            "training_call_figures": FT.drop_per_call(fig), "by_corpus": by_corpus, "loco": report["loco"]})
        _card(args.out, model, timing, report, n_calls=len(calls))
        print(f"wrote {args.out / 'fusion.json'}: {model.model_id}, timing {timing}")
    if args.report:
        args.report.write_text(json.dumps(FT._round(report), indent=1) + "\n", encoding="utf-8")
    return 0


def _shown(path: Path) -> str:
    return str(path.resolve().relative_to(REPO)) if path.resolve().is_relative_to(REPO) else str(path)


def _prosody():
    from pipeline.prosody import ProsodyOptions

    return ProsodyOptions()


HAND_WRITTEN = "<!-- hand-written sections below: scripts/train_fusion.py keeps them -->"


def _card(out: Path, model, timing, report: dict, *, n_calls: int) -> None:
    from pipeline.fusion import MODEL_FEATURES

    weights = "\n".join(f"| `{f}` | {w:+.3f} | {FT.SIGNS[f]:+d} |" for f, w in zip(MODEL_FEATURES, model.weights))
    rows, rounds = [], []
    for corpus, v in report["loco"].items():
        for variant, f in v["figures"].items():
            rows.append(f"| {corpus} | {variant} | {_fig_cells(f)} | rise {v['timing']['rise_tau_s']:g} s, "
                        f"raise {v['timing']['raise_level']:g}, sustain {v['timing']['min_sustain_s']:g} s |")
        rounds.append(f"{corpus} held out: {_rounds(v['rounds'])}")
    shipped = report["shipped"]
    rounds.append(f"shipped: {_rounds(shipped['rounds'])}")
    by_corpus = "\n".join(f"| {c} | {_fig_cells(v['all'])} |" for c, v in shipped["by_corpus"].items())
    tr = shipped["training_calls"]
    old = (out / "README.md").read_text(encoding="utf-8") if (out / "README.md").is_file() else ""
    kept = old[old.index(HAND_WRITTEN):] if HAND_WRITTEN in old else HAND_WRITTEN + "\n"
    text = f"""# Caller-agitation fusion `{model.model_id}`

The per-second acoustic evidence of caller agitation (`pipeline/fusion.py`, `[fusion] model = "learned"`):
P(agitated) = sigmoid(bias + w . features) over the caller's current reading, then the noisy-OR with text
and turn cues, the rise/fall smoother and the takeover policy. Fitted by `scripts/train_fusion.py`
(`pipeline/training/fusion.py`) on {n_calls} evaluation calls built from {", ".join(report["loco"])}
(`scripts/make_eval_calls.py --all-corpora`: per corpus, each speaker calls once escalating, once calm and
once lively-calm with happy turns; 16 kHz and 8 kHz mu-law), **with ASR off** (the acoustic path: text
cues are nil in fitting and in these figures). Each corpus's calls carry the cues of the emotion model
trained without that corpus (out-of-fold), as a bank's unseen callers would look to the shipped model,
**recorded with this fusion running** (below). `[fusion] model = "rules"` restores the hand-set weights;
the TOML's timing keys still override.

Licences: the weights are 8 numbers fitted on calls assembled from EmoDB (CC0) and nEMO / emotiontts-ko
(CC BY-NC-SA 4.0) clips: treat them as **non-commercial** like the default emotion model.

| feature | weight | sign constraint |
|---|---|---|
{weights}
| bias | {model.bias:+.3f} | |

Timing fitted with it (most recall with <= {FT.MAX_FALSE} false takeovers per calm call and <= {FT.MAX_EARLY}
early alerts, then the shortest median latency; `fusion.json` "timing"): `rise_tau_s = {timing.rise_tau_s:g}`,
`fall_tau_s = {timing.fall_tau_s:g}`, `raise_level = {timing.raise_level:g}`, `min_sustain_s = {timing.min_sustain_s:g}`.
On the calls it was fitted on: recall {_f(tr['recall'])}, early {_f(tr['early_share'])}, false takeovers per
calm call {_f(tr['false_per_calm_call'], 3)}, latency median {_f(tr['latency_median_s'], 1)} s.

## Cues recorded with the fusion that scores them

A call's cues depend on the fusion the engine runs: `CallSession._tick` lets a reading teach the caller's
baselines only while the tracker's level is below `clear_level`. So every fit is re-recorded with and
refitted (`fusion.refit_recorded`): record every call with a fusion that never rises (every calm-looking
reading teaches the baselines), fit, re-record with the fit, refit; stop when a refit moves no weight nor
the bias by more than {FT.MOVE_TOL} with the same timing (the fusion the cues were recorded with is kept), or
after {FT.MAX_ROUNDS} fits. The scored calls are always those recorded with the fusion that scores them, so a
replay is what `callpulse evaluate alerts` gives (ASR off). Cue caches are keyed by emotion model and
fusion id (`fusion.CueFusion.fusion_id`). Per refit (weights moved: the largest change of a weight or the
bias against the fusion its training cues were recorded with, the first fit's against the silent start):

{chr(10).join("- " + r for r in rounds)}

## Leave-one-corpus-out (the held-out corpus's calls, by an emotion model and a fusion + timing fitted without it)

| held out | variant | escalating | calm + lively | recall | early | false / calm call | false / lively call | latency median s | p90 s | its timing |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

The shipped fusion and its fitted timing on every corpus's out-of-fold calls (recorded with it; the
weights were fitted on these calls, so these are not LOCO figures):

| calls of | escalating | calm + lively | recall | early | false / calm call | false / lively call | latency median s | p90 s |
|---|---|---|---|---|---|---|---|---|
{by_corpus}

Aims (issue 9 / 11): recall >= 0.90, <= 0.05 false takeovers per calm call, <= 0.05 early, median latency
<= 4 s (<= 2.5 s). Reproduce: `python scripts/make_eval_calls.py --all-corpora --out .cache/calls-loco` then
`python scripts/train_fusion.py --calls {report["calls"]} --report /tmp/fusion.json` (cues cached under
`.cache/fusion-loco/`; the folds can run in separate processes first: `--folds EmoDB`, `--folds nEMO --reverse`).

"""
    (out / "README.md").write_text(text + kept, encoding="utf-8")


def _fig_cells(f: dict) -> str:
    return (f"{f['n_escalating']} | {f['n_calm_plain']} + {f['n_lively']} | {_f(f['recall'])} | {_f(f['early_share'])} | "
            f"{_f(f['false_per_calm_call'], 3)} | {_f(f['false_per_lively_call'], 3)} | "
            f"{_f(f['latency_median_s'], 1)} | {_f(f['latency_p90_s'], 1)}")


def _rounds(rounds: list) -> str:
    return "; ".join(f"fit {r['round']} `{r['fitted']}` ({r['timing']}; weights moved {_f(r['moved'], 3)}"
                     f"{', timing changed' if r['timing_changed'] else ''})" for r in rounds)


def _f(v, digits: int = 2) -> str:
    return "-" if v is None or v != v else f"{v:.{digits}f}"


def _print_loco(loco: dict) -> None:
    print("\nfusion LOCO (held-out corpus's calls, fusion fitted without it):")
    print(f"  {'corpus':14s} {'variant':10s} {'esc':>4s} {'calm':>4s} {'recall':>7s} {'early':>6s} {'false/calm':>10s} "
          f"{'false/lively':>12s} {'lat med':>8s} {'lat p90':>8s}  timing")
    for corpus, v in loco.items():
        for variant, f in v["figures"].items():
            print(f"  {corpus:14s} {variant:10s} {f['n_escalating']:4d} {f['n_calm']:4d} {f['recall']:7.2f} "
                  f"{f['early_share']:6.2f} {f['false_per_calm_call']:10.3f} {f['false_per_lively_call']:12.3f} "
                  f"{f['latency_median_s']:8.1f} {f['latency_p90_s']:8.1f}  {v['timing']}")


if __name__ == "__main__":
    sys.exit(main())
