#!/usr/bin/env python
"""Per-second emotion under leave-one-corpus-out at several analysis-window lengths (``[emotion] window_s``).

    python scripts/loco_window_length.py                      # 2.0, 1.5 and 1.0 s; ~15 min cold on 2 cores
    python scripts/loco_window_length.py --windows 2,1.5 --out /tmp/loco_window_length.json

A shorter window holds only the caller's new voice sooner after a change (the floor under alert latency,
models/fusion/README.md "Where the seconds go"), but measures prosody over less speech. The heads are
trained on whole clips (``pipeline.training.loco``), so one model per fold (recipe chosen by nested LOCO
on the fold's training corpora, as ``scripts/train_emotion.py`` does) scores the held-out corpus's
windows at every length: the rows differ only in the window. Windows come one a second, as the engine
reads them. Table: models/fusion/README.md, "Shorter analysis windows".
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from pipeline.training.corpora import (  # noqa: E402
    RATES, TEST_ONLY_CORPORA, TRAIN_CORPORA, default_clip_rows, extract_features,
)
from pipeline.training.emotion import data_dir_default  # noqa: E402
from pipeline.training.loco import HEADLINE, fit_heads, fold_masks, score_heads, select_recipe  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", default="2,1.5,1", help="window lengths in seconds (comma-separated)")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "emotion-loco")
    ap.add_argument("--label-min-confidence", type=float, default=0.6)
    ap.add_argument("--out", type=Path, default=Path("/tmp/loco_window_length.json"))
    args = ap.parse_args(argv)
    windows = [float(w) for w in args.windows.split(",") if w.strip()]
    t0 = time.perf_counter()
    rows = default_clip_rows(data_dir_default(), corpora=list(TRAIN_CORPORA) + list(TEST_ONLY_CORPORA))
    feats = {w: extract_features(rows, cache_dir=args.cache, window_s=w, progress=print) for w in windows}
    base = feats[windows[0]]
    for w, F in feats.items():   # the clips (what the heads learn from) are the same at every length
        assert all(np.array_equal(F.clips[r], base.clips[r], equal_nan=True) for r in RATES), w
    out: dict = {}
    for held, train, test in fold_masks(base, TRAIN_CORPORA, TEST_ONLY_CORPORA):
        rec = select_recipe(base, train, progress=lambda s: None)
        heads = fit_heads(base, train, rec)
        for w, F in feats.items():
            fig = score_heads(F, heads, test, rec, label_min_confidence=args.label_min_confidence)
            out.setdefault(held, {})[f"{w:g}"] = {
                head: {rate: {k: fig[head]["win"][rate][k] for k in HEADLINE + ("n",)} for rate in RATES}
                for head in ("relative", "global")}
        print(f"{held}: scored ({time.perf_counter() - t0:.0f} s)", flush=True)
    head_of = {c: ("global" if c in TEST_ONLY_CORPORA else "relative") for c in out}
    print("\n| held out | head | window s | rate | windows | 4-class UAR | angry vs neutral | angry vs happy | arousal UAR | ECE |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for held, by_w in out.items():
        for w, f in by_w.items():
            for rate in RATES:
                x = f[head_of[held]][rate]
                print(f"| {held} | {head_of[held]} | {w} | {rate} | {x['n']} | {x['uar_4class']:.3f} | "
                      f"{x['uar_angry_vs_neutral']:.3f} | {x['uar_angry_vs_happy']:.3f} | "
                      f"{x['uar_high_vs_low_arousal']:.3f} | {x['ece']:.3f} |")
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
