#!/usr/bin/env python
"""Train the acoustic emotion head on EmoDB and write models/emotion/ (weights + model.json).

    python scripts/train_emotion.py                       # LOSO comparison, then train and write
    python scripts/train_emotion.py --data /path/to/data  # folder holding emodb/ (default $CALLPULSE_DATA)
    python scripts/train_emotion.py --no-encoder          # prosody heads only (no Whisper needed)

The per-turn heads use the Whisper encoder of the ASR stage's default model ([asr] model = "base",
assembled offline by pipeline.asr), packed and encoded exactly as transcription does.

Deterministic: the same data, code and library versions give byte-identical weights. Extracted
features are cached under .cache/emotion/ (delete it to re-extract).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.emotion_training import (  # noqa: E402
    CONDITIONS, FEATURE_SETS, TrainOptions, data_dir_default, evaluate_and_train,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="folder holding emodb/ (default $CALLPULSE_DATA "
                    "or ../shared/data)")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "emotion")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "emotion")
    ap.add_argument("--feature-set", default="auto", choices=("auto",) + FEATURE_SETS)
    ap.add_argument("--l2", type=float, default=-1.0, help="L2 penalty (default: chosen by LOSO)")
    ap.add_argument("--no-encoder", action="store_true",
                    help="skip the per-turn heads (prosody + Whisper encoder); the model then has none")
    ap.add_argument("--pack-s", type=float, default=0.0,
                    help="turn heads: pack each speaker's clips into Whisper windows of up to this many seconds "
                    "(default 0: each clip alone, as a one-turn window; packing is a measured comparison)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    options = TrainOptions(data_dir=args.data or data_dir_default(), out_dir=args.out,
                           cache_dir=args.cache, feature_set=args.feature_set, l2=args.l2,
                           pack_s=args.pack_s)
    transcriber = None
    if not args.no_encoder:
        from pipeline.asr import AsrOptions, Transcriber

        # cpu_threads 2: deterministic encodings whatever the machine (int8 GEMM sums in a fixed order)
        transcriber = Transcriber.load(AsrOptions(cpu_threads=2))
    meta = evaluate_and_train(options, transcriber=transcriber)
    loso = meta["loso"]
    print(f"\nmodel {meta['id']} written to {args.out}")
    rows = [(f"{head} {rate}", loso[head][rate])
            for head in ("global", "relative", "relative_all_clips_baseline") for rate in CONDITIONS]
    rows += [(f"2 s windows {head} {rate}", loso["windows"][head][rate])
             for head in ("global", "relative") for rate in CONDITIONS]
    for label, r in rows:
        print(f"  {label:52s} UAR4 {r['uar_4class']:.3f}  angry/neutral {r['uar_angry_vs_neutral']:.3f}  "
              f"arousal {r['uar_high_vs_low_arousal']:.3f}  ECE {r['ece']:.3f}")
    print(f"training took {meta['train_s']:.1f} s (feature extraction, when not cached: "
          f"{meta['feature_extraction_s']:.1f} s)")
    print("relative head, recall per class:",
          json.dumps({r: loso["relative"][r]["recall_per_class"] for r in CONDITIONS}))
    if "turn" in meta:
        turn = meta["turn"]
        print(f"\nturn heads (encoder {turn['encoder_id']}; encoding took "
              f"{1000 * meta['encode_s_per_s']:.1f} ms per s of audio when not cached), LOSO:")
        for key, r in turn["best"].items():
            print(f"  {key:22s} l2={r['l2']:<4g}" + "".join(
                f"  {c}: UAR4 {r[c]['uar_4class']:.3f} a/n {r[c]['uar_angry_vs_neutral']:.3f} "
                f"arousal {r[c]['uar_high_vs_low_arousal']:.3f} ECE {r[c]['ece']:.3f}" for c in CONDITIONS[:2]))
        print("  turn_speaker with a baseline of only N other clips (UAR4 per condition):",
              json.dumps(turn["turn_speaker"].get("few_turn_baselines")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
