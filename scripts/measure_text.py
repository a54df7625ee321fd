"""Measure the text scorer on the labelled text in $CALLPULSE_DATA/text (negative vs non-negative).

Prints, per file: rows, UAR and both recalls at the configured threshold, the flag rates, ms per text, and
UAR over a sweep of `negative_below` thresholds (for calibrating [text] negative_below).

    python scripts/measure_text.py [--config my.toml] [--every N] [--backend trained|lexicon|transformers]
    python scripts/measure_text.py --flags     # flag precision/recall on tests/data/text_flag_phrases.tsv
    python scripts/measure_text.py --call-talk # neutral service talk labelled negative (tests/data/text_call_talk.tsv)

The files are the trained backend's training data: its figures here are in-sample (a regression check);
its out-of-domain figures come from `callpulse evaluate text` and `scripts/train_text.py`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config  # noqa: E402
from pipeline.evaluate.text_measure import (  # noqa: E402
    measure_call_talk,
    measure_flags,
    measure_text_file,
    read_call_talk,
    read_flag_phrases,
)
from pipeline.text import TextScorer  # noqa: E402

FILES = ("complaints_en.csv", "chnsenticorp_hotel_zh.csv")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="a callpulse TOML overriding the shipped defaults")
    parser.add_argument("--data", default=None, help="data folder (default $CALLPULSE_DATA or ../shared/data)")
    parser.add_argument("--every", type=int, default=1, help="score every N-th row (files are sorted by label)")
    parser.add_argument("--backend", default=None, help="override [text] backend")
    parser.add_argument("--model-path", default=None, help="override [text] model_path")
    parser.add_argument("--flags", action="store_true", help="measure the flags on the labelled phrase set")
    parser.add_argument("--phrases", default=str(Path(__file__).resolve().parents[1] / "tests" / "data" /
                                                 "text_flag_phrases.tsv"))
    parser.add_argument("--call-talk", action="store_true",
                        help="share of neutral call-centre talk labelled negative, per line and two lines a turn")
    parser.add_argument("--talk", default=str(Path(__file__).resolve().parents[1] / "tests" / "data" /
                                              "text_call_talk.tsv"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    repo = Path(__file__).resolve().parents[1]
    data = Path(args.data or os.environ.get("CALLPULSE_DATA") or repo.parent / "shared" / "data")
    config = load_config(args.config)
    changes = {}
    if args.backend:
        changes["backend"] = args.backend
    if args.model_path:
        changes["model_path"] = args.model_path
    if changes:
        config = config.replace("text", **changes)
    scorer = TextScorer.load(config.text)
    print(f"backend={config.text.backend} negative_below={config.text.negative_below}")
    if args.call_talk:
        lines = read_call_talk(args.talk)
        for lang in ("zh", "en"):
            f = measure_call_talk(scorer, lines, language=lang)
            print(f"  {lang}: lines labelled negative {len(f.negative_lines)} of {f.n_lines} ({f.line_rate:.3f}), "
                  f"two-line turns {len(f.negative_pairs)} of {f.n_pairs} ({f.pair_rate:.3f})")
            for t in f.negative_lines:
                print(f"      negative: {t}")
        return 0
    if args.flags:
        phrases = read_flag_phrases(args.phrases)
        print(f"{args.phrases}: {len(phrases)} phrases")
        for flag, f in measure_flags(scorer, phrases).items():
            print(f"  {flag:20s} expected {f.n_expected:3d} raised {f.n_raised:3d} precision {f.precision:.3f} "
                  f"recall {f.recall:.3f}")
            for t in f.misses:
                print(f"      missed: {t}")
            for t in f.false_alarms:
                print(f"      false alarm: {t}")
        return 0
    for name in FILES:
        m = measure_text_file(scorer, data / "text" / name, every=args.every)
        print(
            f"{name}: n={m.n_texts} negative={m.n_negative} UAR={m.uar:.3f} "
            f"recall_neg={m.recall_negative:.3f} recall_non_neg={m.recall_non_negative:.3f} "
            f"flagged_neg={m.flag_rate_negative:.3f} flagged_non_neg={m.flag_rate_non_negative:.3f} "
            f"ms_per_text={m.ms_per_text:.3f}"
        )
        sweep = "  ".join(f"{t:+.2f}:{m.uar_at(t):.3f}" for t in (-0.4, -0.3, -0.2, -0.1, -0.05, 0.0, 0.05, 0.1))
        print(f"  UAR by negative_below  {sweep}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
