"""Train, compare across domains and write the trained text scorer (``[text] backend = "trained"``).

    python scripts/train_text.py [--data DIR] [--out models/text] [--languages zh,en] [--no-minilm] [--with-nb]

Writes ``trained_zh.npz``, ``trained_en.npz`` and ``trained.json`` (recipe, calibration, decision cut,
every cross-domain figure) into ``--out`` (with one language, only that one's entry and weights: the other
language's stay) and prints the tables the card quotes. Deterministic: the same data
give the same files. Features and embeddings are cached under ``.cache/text/`` (git-ignored). Needs
scikit-learn and scipy (training only). English compares n-gram models, MiniLM-L6 heads and their blends;
the MiniLM embeddings come from ``minilm_en_int8.onnx`` + ``minilm_en_tokenizer.json`` in ``--out``
(``python scripts/export_minilm.py`` writes them), computed by the run-time code one text at a time.
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
    parser.add_argument("--no-minilm", action="store_true",
                        help="English n-gram models only (no MiniLM heads or blends)")
    parser.add_argument("--with-nb", action="store_true",
                        help="add the NB log-count-ratio candidates to the Mandarin grid (measured, not shipped)")
    parser.add_argument("--cache", default=str(REPO / ".cache" / "text"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    if "en" in args.languages.split(",") and not args.no_minilm:
        from pipeline.text_minilm import ONNX_NAME, TOKENIZER_NAME

        # Say so now, not after the Mandarin grid has run for half an hour.
        missing = [n for n in (ONNX_NAME, TOKENIZER_NAME) if not (out / n).is_file()]
        if missing:
            parser.error(f"the English MiniLM candidates need {', '.join(missing)} in {out}: run "
                         f"`python scripts/export_minilm.py --out {out}` (train extra), or pass --no-minilm")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    data = Path(args.data or os.environ.get("CALLPULSE_DATA") or REPO.parent / "shared" / "data") / "text"
    # The label rule: negative when P(negative) > a cut; the equal-prior cut is 0.52 (_NEGATIVE_FROM_P in
    # pipeline/text.py with [text] negative_below), lowered per language by CutRule when its recall needs it.
    from pipeline.text import TextOptions, _NEGATIVE_FROM_P

    negative_below = TextOptions().negative_below
    rule = CutRule(equal_prior_cut=round(_NEGATIVE_FROM_P - negative_below * (1.0 - _NEGATIVE_FROM_P), 4))
    fitted = {}
    for lang in args.languages.split(","):
        fitted[lang] = train_language(lang, data, Path(args.cache), with_minilm=not args.no_minilm,
                                      with_nb=args.with_nb, rule=rule, minilm_folder=out)
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
        for key, title in (("nested_ngram", "the same, choosing among the n-gram candidates only (before the blend):"),
                           ("nested_all", "the same, choosing among all candidates (MiniLM heads alone included):")):
            if f.get(key):
                print(title)
                for r in f[key]:
                    print(f"  {r['unit']:20s} UAR {r['uar']:.3f} recall_neg {r['recall_negative']:.3f} "
                          f"ECE {r['ece']:.3f} cut {r['cut']:.2f}  chosen {r['chosen']}")
                n = len(f[key])
                print(f"  mean UAR {sum(r['uar'] for r in f[key]) / n:.3f}, negative recall "
                      f"{sum(r['recall_negative'] for r in f[key]) / n:.3f}, ECE {sum(r['ece'] for r in f[key]) / n:.3f}")
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
