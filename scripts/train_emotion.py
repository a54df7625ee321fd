#!/usr/bin/env python
"""Train the acoustic emotion model and write its folder (weights + model.json + README.md card).

Default: the per-second heads on every corpus allowed to train (EmoDB, nEMO, emotiontts-ko), the recipe
chosen by leave-one-corpus-out (``pipeline.training.loco``), LOCO figures for each corpus and URDU (test
only), the EmoDB-only variant's figures beside, written to models/emotion/:

    python scripts/train_emotion.py                       # multi-corpus, LOCO -> models/emotion/
    python scripts/train_emotion.py --corpora EmoDB --out /tmp/emodb-prosody   # any subset of corpora

The EmoDB-only (CC0) model with turn heads, models/emotion-emodb/, is the earlier EmoDB-LOSO recipe:

    python scripts/train_emotion.py --legacy-emodb --out models/emotion-emodb  # LOSO comparison, then train
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

from pipeline.training.emotion import (  # noqa: E402
    CONDITIONS, FEATURE_SETS, TrainOptions, data_dir_default, evaluate_and_train,
)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if "--legacy-emodb" not in argv:
        return multi_corpus(argv)
    argv = [a for a in argv if a != "--legacy-emodb"]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="folder holding emodb/ (default $CALLPULSE_DATA "
                    "or ../shared/data)")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "emotion-emodb")
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
    from pipeline.training.emotion_turn import train_turn_heads

    meta = evaluate_and_train(options, transcriber=transcriber, turn_training=train_turn_heads)
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


def multi_corpus(argv: list[str]) -> int:
    import time

    import numpy as np

    from pipeline.training.corpora import TEST_ONLY_CORPORA, TRAIN_CORPORA, default_clip_rows, extract_features
    from pipeline.training.loco import (
        Heads, fit_heads, loco, score_heads, select_recipe, trained_on, write_card, write_model_dir,
    )
    from pipeline.prosody import ProsodyOptions

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--corpora", default=",".join(TRAIN_CORPORA), help="training corpora (comma-separated)")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "emotion")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "emotion-loco")
    ap.add_argument("--label-min-confidence", type=float, default=0.6)
    ap.add_argument("--emodb-variant", type=Path, default=REPO / "models" / "emotion-emodb",
                    help="EmoDB-only model scored on the other corpora beside (\"\" = skip)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    train_corpora = [c.strip() for c in args.corpora.split(",") if c.strip()]
    data = args.data or data_dir_default()
    rows = default_clip_rows(data, corpora=train_corpora + list(TEST_ONLY_CORPORA))
    prosody = ProsodyOptions()
    F = extract_features(rows, prosody=prosody, cache_dir=args.cache, progress=print)
    print(f"{len(F.rows)} clips; LOCO over {train_corpora} (+ {list(TEST_ONLY_CORPORA)} test only), nested selection")
    result = loco(F, train_corpora=train_corpora, test_only=TEST_ONLY_CORPORA,
                  label_min_confidence=args.label_min_confidence, progress=lambda s: None)
    train = np.isin(F.corpora, train_corpora)
    table: list = []
    recipe = select_recipe(F, train, progress=lambda s: None, table=table)
    heads = fit_heads(F, train, recipe)
    extra = _selection_table(table, recipe)
    if args.emodb_variant and str(args.emodb_variant) and (Path(args.emodb_variant) / "model.json").is_file():
        from pipeline.emotion import EmotionModel, EmotionOptions

        m = EmotionModel.load(EmotionOptions(model_dir=str(args.emodb_variant)))
        emodb_heads = Heads(m._heads["global"], m._heads["relative"])
        others = {c: {"figures": score_heads(F, emodb_heads, F.corpora == c,
                                             label_min_confidence=args.label_min_confidence)}
                  for c in [c for c in train_corpora if c != "EmoDB"] + list(TEST_ONLY_CORPORA)}
        from pipeline.training.loco import figure_table

        extra += (f"\n## The EmoDB-only variant `{m.model_id}` (models/emotion-emodb, CC0) on the corpora it never saw\n\n"
                  "Select it with `[emotion] model_dir = \"models/emotion-emodb\"`. Its EmoDB figures are "
                  "leave-one-speaker-out (its own card); here, per-second windows:\n\nrelative head:\n\n"
                  + figure_table(others, head="relative", kind="win") + "\n\nglobal head:\n\n"
                  + figure_table(others, head="global", kind="win") + "\n")
        result_emodb = others
    else:
        result_emodb = {}
    meta = write_model_dir(args.out, heads, prosody=prosody, names=F.names, recipe=recipe,
                           trained_on=trained_on(F, train), label_min_confidence=args.label_min_confidence,
                           card_figures={"protocol": "leave-one-corpus-out", "folds": result,
                                         "emodb_variant": result_emodb})
    write_card(args.out, meta, protocol="leave-one-corpus-out", folds=result, extra=extra)
    print(f"model {meta['id']} written to {args.out} in {time.perf_counter() - t0:.0f} s; recipe {recipe.describe()}")
    for corpus, r in result.items():
        for rate in ("16k", "8k-mulaw"):
            for head in ("relative", "global"):
                f = r["figures"][head]["win"][rate]
                print(f"  {corpus:14s} {rate:9s} {head:8s} UAR4 {f['uar_4class']:.3f}  A/N {f['uar_angry_vs_neutral']:.3f}"
                      f"  A/H {f['uar_angry_vs_happy']:.3f}  arousal {f['uar_high_vs_low_arousal']:.3f}  ECE {f['ece']:.3f}"
                      f"  neutral->sad {f['neutral_labelled_sad']:.3f}/{f['neutral_labelled_sad_gated']:.3f}")
    return 0


def _selection_table(table: list, chosen) -> str:
    lines = ["\n## How the shipped recipe was chosen\n",
             "Inner LOCO over the three training corpora (train on two, score the third; mean over the three of the "
             "worse of 16 kHz / 8 kHz 4-class UAR on whole clips). The global head is chosen first, then the "
             "relative head with that global head judging which clips look calm.\n",
             "| head | candidate | mean LOCO 4-class UAR |", "|---|---|---|"]
    lines += [f"| {h} | {d} | {s:.3f} |" for h, d, s in table]
    lines.append(f"\nChosen: {chosen.describe()}.\n")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
